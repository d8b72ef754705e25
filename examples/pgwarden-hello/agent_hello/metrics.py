"""The hello plugin's metric for GET /metrics: a gauge read from PostgreSQL at
most once per ``[agent] metrics_max_age`` seconds, however often Prometheus
scrapes (``agent.metrics.live``)."""

from prometheus_client.core import GaugeMetricFamily


class Tables:
    """``pgwarden_hello_tables``: ordinary tables of schema public in the default database."""

    def __init__(self, agent):
        self.agent = agent

    def count(self):
        rows = self.agent.postgres.query(
            "SELECT count(*) AS n FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )
        return rows[0]["n"]

    def collect(self):
        tables = self.agent.metrics.live("hello.tables", self.count)
        yield GaugeMetricFamily(
            "pgwarden_hello_tables", "Ordinary tables of schema public in the default database.", tables
        )
