"""Reading GET /metrics in tests: one scrape parser for the core's and the plugins' metric tests."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent_core.testing import KEY

BEARER = {"Authorization": f"Bearer {KEY}"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(name, frozenset(labels.items())): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def at(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    """The value of ``name`` with exactly these labels in parsed samples, None when absent."""
    return parsed.get((name, frozenset(labels.items())))


def value(text: str, name: str, **labels: str) -> float | None:
    return at(samples(text), name, **labels)


def scrape_text(running: Any, headers: dict[str, str] = BEARER) -> str:
    """GET /metrics with the key as a bearer token (as Prometheus sends it): its text, after a 200."""
    res = running.client().get("/metrics", headers=headers)
    assert res.status == 200, res
    return res.text


def scrape(running: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics parsed (see :func:`samples`)."""
    return samples(scrape_text(running))
