"""Pure functions of the sampler: CPU shares, memory figures, rates, the empty sample."""

from __future__ import annotations

from dashboard_helpers import CPU, SAMPLE

from agent_dashboard.sampler import CpuTimes, cpu_percent, empty_sample, memory_figures, rate


def test_cpu_percent_is_the_share_of_each_group_between_two_readings():
    before = CpuTimes(user=10, system=5, idle=80, iowait=4, steal=1)
    after = CpuTimes(user=13, system=6, idle=85, iowait=4, steal=2)  # 10 s of CPU time
    assert cpu_percent(before, after) == {"user": 30.0, "system": 10.0, "idle": 50.0, "iowait": 0.0, "steal": 10.0}
    assert cpu_percent(None, after) == dict.fromkeys(CPU)
    assert cpu_percent(after, after) == dict.fromkeys(CPU), "no time passed: no made-up figure"


def test_memory_figures_as_temboard_shows_them():
    gib = 1024**3
    figures = memory_figures(total=8 * gib, free=2 * gib, cached=4 * gib)
    assert figures == {
        "total": 8 * 1024 * 1024,  # kB
        "free": 25.0,
        "active": 25.0,  # neither free nor cache
        "cached": 50.0,
        "total_bytes": 8 * gib,
        "free_bytes": 2 * gib,
        "active_bytes": 2 * gib,
        "cached_bytes": 4 * gib,
    }
    assert memory_figures(total=0, free=0, cached=0)["free"] is None


def test_rate_of_a_cumulative_counter():
    assert rate(130, 100, 2.0) == 15.0
    assert rate(100, None, 2.0) is None, "first sample"
    assert rate(5, 100, 2.0) is None, "statistics reset: the counter went down"
    assert rate(100, 100, 0.0) is None


def test_the_empty_sample_has_the_shape_of_a_sample():
    sample = empty_sample(1.5)
    assert list(sample) == list(SAMPLE)
    assert sample["timestamp"] == 1.5 and sample["databases"] is None
    assert sample["cpu"] == dict.fromkeys(CPU) and all(v is None for v in sample["memory"].values())
