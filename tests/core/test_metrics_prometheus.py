"""GET /metrics scraped by a real Prometheus (Debian's ``prometheus`` package).

An agent with the maintenance plugin serves TLS on loopback (a certificate of
a throwaway CA). A Prometheus of its own, storage and configuration in the
test's temporary directory, scrapes it every second with two jobs: one with
the agent key as its bearer token (``authorization``, the CA in
``tls_config``), one with a wrong token. The test then asks Prometheus's
HTTP API what it stored, as a user would check a new target.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import agent_maintenance.plugin as maintenance_plugin
from agent_core.cluster import free_port
from agent_core.testing import KEY, Client, stop_process, wait_for

trustme = pytest.importorskip("trustme", reason="trustme is not installed (make venv installs it)")

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the `prometheus` binary is not installed (Debian package `prometheus`: apt-get install prometheus)",
)

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1m
scrape_configs:
  - job_name: pgwarden
    scheme: https
    metrics_path: /metrics
    tls_config:
      ca_file: {ca}
    authorization:
      type: Bearer
      credentials_file: {key_file}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
  - job_name: wrong-key
    scheme: https
    metrics_path: /metrics
    tls_config:
      ca_file: {ca}
    authorization:
      type: Bearer
      credentials: not-the-agent-key
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    """``prometheus`` on a free loopback port, everything it writes under ``home``."""

    def __init__(self, home: Path, config: str):
        self.home = home
        self.port = free_port()
        (home / "prometheus.yml").write_text(config)
        self.log = open(home / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            cwd=home,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as res:
            return json.load(res)

    def ready(self) -> bool:
        assert self.proc.poll() is None, (self.home / "prometheus.log").read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as res:
                return res.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def query(self, expr: str) -> float | None:
        """The value of an instant query returning one series, None when it returns none."""
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def target(self, job: str) -> dict[str, Any] | None:
        """The active target of ``job`` once it has been scraped at least once."""
        for t in self.get("/api/v1/targets", state="active")["data"]["activeTargets"]:
            if t["labels"]["job"] == job and t["health"] != "unknown":
                return dict(t)
        return None

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.log.close()


def test_prometheus_scrapes_the_agent_with_its_key(databases, make_agent, pg_cluster, tmp_path):
    # databases first: the agent stops before its databases are dropped
    db = databases.create(
        "prom", setup="CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)"
    )
    # a first connection writes the database's relation cache file (counted by
    # pg_database_size): made here, so the size stays put from now on
    pg_cluster.execute("SELECT 1", dbname=db)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "agent.key").write_text(KEY + "\n")  # Prometheus trims the file's surrounding whitespace
    running = make_agent(
        plugins={"maintenance": maintenance_plugin},
        config={
            "agent": {"tls_cert": str(tmp_path / "cert.pem"), "tls_key": str(tmp_path / "key.pem")},
            # one background read of the sizes, started by the first scrape: the figures served stay those
            "maintenance": {"estimates_max_age": "3600"},
        },
    )
    port = running.agent.server.port
    home = tmp_path / "prometheus"
    home.mkdir()
    prometheus = Prometheus(home, CONFIG.format(ca=tmp_path / "ca.pem", key_file=tmp_path / "agent.key", port=port))
    try:
        wait_for(prometheus.ready, timeout=30, interval=0.2)
        wait_for(lambda: prometheus.query('up{job="pgwarden"}') == 1, timeout=15, interval=0.2)
        assert prometheus.query('pg_up{job="pgwarden"}') == 1

        # requests made now are counted, and Prometheus sees them at its next scrapes
        status = 'pgwarden_http_requests_total{job="pgwarden", route="/status", method="GET", status="200"}'
        assert prometheus.query(status) in (None, 0)
        client = Client(running.url)
        for _ in range(5):
            assert client.get("/status").status == 200
        wait_for(lambda: prometheus.query(status) == 5, timeout=15, interval=0.2)

        # the size served is the maintenance plugin's kept figure, read in the
        # background after the first scrape: it arrives a scrape or two later
        # and is pg_database_size exactly (an idle database does not change size)
        size = f'pg_database_size_bytes{{job="pgwarden", datname="{db}"}}'
        served = wait_for(lambda: prometheus.query(size), timeout=15, interval=0.2)
        assert served == pg_cluster.execute("SELECT pg_database_size(%s)", (db,))[0][0]

        # the job without the key: down, the agent answered 401, counted by the agent too
        wrong = wait_for(lambda: prometheus.target("wrong-key"), timeout=15, interval=0.2)
        assert wrong["health"] == "down"
        assert "401" in wrong["lastError"], wrong["lastError"]
        assert prometheus.query('up{job="wrong-key"}') == 0
        refused = 'pgwarden_http_requests_total{job="pgwarden", route="/metrics", method="GET", status="401"}'
        assert wait_for(lambda: prometheus.query(refused), timeout=15, interval=0.2) >= 1
        good = prometheus.target("pgwarden")
        assert good is not None and good["health"] == "up" and good["lastError"] == ""
        assert good["scrapeUrl"] == f"https://127.0.0.1:{port}/metrics"
    finally:
        prometheus.stop()
