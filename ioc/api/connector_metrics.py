"""Connectors' health for the API's /metrics, read from `connector_status` (migration 0013).

A connector run as a `--once` job exits before Prometheus can scrape it; the row it leaves in
`connector_status` (connectors/status.py) stays, so the API exposes every connector's last
known health. Times are named `ioc_connector_status_*` to keep them apart from the metrics a
long-running connector serves itself (`ioc_connector_last_success_timestamp_seconds`...):
summing both would count a connector twice.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client.core import GaugeMetricFamily, Metric

from connectors.status import Health

TIMES = {  # column -> (metric, help)
    "last_success_at": ("ioc_connector_status_last_success_timestamp_seconds",
                        "When the connector last published a batch and stored its cursor"),
    "last_record_at": ("ioc_connector_status_last_record_timestamp_seconds",
                       "When a record last arrived from the connector's source"),
    "silent_since": ("ioc_connector_status_silent_since_timestamp_seconds",
                     "Since when the connector is silent (only while it is)"),
    "updated_at": ("ioc_connector_status_updated_timestamp_seconds",
                   "When the connector last wrote its status (its last run, for a job)"),
}
SELECT = ("SELECT connector, kind, health, "
          + ", ".join(f"extract(epoch FROM {c})::float8" for c in TIMES)
          + " FROM connector_status ORDER BY connector")


@dataclass
class ConnectorRow:
    connector: str
    kind: str
    health: str
    times: dict[str, float | None]  # TIMES' columns, Unix seconds


async def connector_rows(conn: psycopg.AsyncConnection[Any]) -> list[ConnectorRow]:
    cur = await conn.execute(SELECT)
    return [ConnectorRow(name, kind, health, dict(zip(TIMES, times, strict=True)))
            for name, kind, health, *times in await cur.fetchall()]


def connector_families(rows: list[ConnectorRow]) -> Iterator[Metric]:
    """Up (health ok), the health as one 0/1 series per state, and the times that are set."""
    up = GaugeMetricFamily("ioc_connector_up", "1 if the connector's last status is ok",
                           labels=["connector", "kind"])
    status = GaugeMetricFamily("ioc_connector_status",
                               "1 for the connector's health as last stored, 0 for the others",
                               labels=["connector", "kind", "health"])
    times = {c: GaugeMetricFamily(name, text, labels=["connector"])
             for c, (name, text) in TIMES.items()}
    for row in rows:
        up.add_metric([row.connector, row.kind], float(row.health == Health.OK))
        for health in Health:
            status.add_metric([row.connector, row.kind, health.value],
                              float(row.health == health))
        for column, value in row.times.items():
            if value is not None:
                times[column].add_metric([row.connector], value)
    yield from (up, status, *times.values())
