"""A connector's health, its `connector_silent` / `connector_resumed` events and the
`connector_status` table that `ioc connectors list` and the alerting read.

One row per connector (migration 0013) says how it is now: `ok`, `degraded` (retrying a
transient error), `silent` (no new record for longer than its `silence_seconds`) or
`stopped`, with the reason, and when it last published, last read a record and the newest
source time seen. A silence is announced once on the `<prefix>connector_status` topic and
stored in `connector_status_events` with the same event id, so the broker and the database
tell the same story; `silent_since` stays set on the row until records flow again.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID, uuid5

from pydantic import AwareDatetime, Field

from ioc.core.db import connect
from ioc.core.events import Code, Contract, Kind
from ioc.core.settings import Settings

TOPIC = "connector_status"
EVENT_IDS = UUID("0c5f2a8e-3b1d-5e47-9a62-7d4e1f0b8c93")  # UUIDv5 namespace of status events


class Health(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # a transient error is being retried
    SILENT = "silent"  # nothing new for longer than the silence threshold
    STOPPED = "stopped"


class StatusChange(StrEnum):
    SILENT = "connector_silent"
    RESUMED = "connector_resumed"


class ConnectorStatusEvent(Contract):
    """A connector fell silent or resumed; keyed by connector name on `<prefix>connector_status`.

    The same silence always gives the same `event_id` (connector, type, `silent_since`), so an
    announcement repeated after a crash counts once.
    """

    event_id: UUID
    type: StatusChange
    connector: Code
    kind: Kind
    occurred_at: AwareDatetime = Field(description="When the change was seen.")
    silent_since: AwareDatetime = Field(
        description="The last record's arrival before the silence (or the first run, if none).")
    silence_seconds: float = Field(ge=0, description="The threshold in force.")
    schema_version: Literal[1] = 1

    @classmethod
    def of(cls, change: StatusChange, connector: str, kind: Kind, silent_since: datetime,
           silence_seconds: float, now: datetime) -> "ConnectorStatusEvent":
        key = f"{connector}|{change.value}|{silent_since.isoformat()}"
        return cls(event_id=uuid5(EVENT_IDS, key), type=change, connector=connector, kind=kind,
                   occurred_at=now, silent_since=silent_since, silence_seconds=silence_seconds)


@dataclass
class StatusRow:
    connector: str
    kind: str
    health: Health
    reason: str | None
    first_run_at: datetime
    last_success_at: datetime | None
    last_record_at: datetime | None
    newest_source_at: datetime | None
    silent_since: datetime | None
    silence_seconds: float
    updated_at: datetime | None = None


COLUMNS = ("connector", "kind", "health", "reason", "first_run_at", "last_success_at",
           "last_record_at", "newest_source_at", "silent_since", "silence_seconds")
UPSERT = """
INSERT INTO connector_status (connector, kind, health, reason, first_run_at, last_success_at,
                              last_record_at, newest_source_at, silent_since, silence_seconds)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (connector) DO UPDATE SET
    kind = excluded.kind, health = excluded.health, reason = excluded.reason,
    last_success_at = excluded.last_success_at, last_record_at = excluded.last_record_at,
    newest_source_at = excluded.newest_source_at, silent_since = excluded.silent_since,
    silence_seconds = excluded.silence_seconds, updated_at = now()
"""
SELECT = """
SELECT connector, kind, health, reason, first_run_at, last_success_at, last_record_at,
       newest_source_at, silent_since, silence_seconds, updated_at
FROM connector_status WHERE %(connector)s::text IS NULL OR connector = %(connector)s
"""


def save_status(settings: Settings, row: StatusRow,
                event: ConnectorStatusEvent | None = None) -> None:
    """Store the row (and the event it announces, once) in one transaction."""
    with connect(settings) as conn:
        conn.execute(UPSERT, tuple(getattr(row, c) for c in COLUMNS))
        if event is not None:
            conn.execute(
                "INSERT INTO connector_status_events (event_id, connector, type, occurred_at,"
                " silent_since, silence_seconds) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (event_id) DO NOTHING",
                (event.event_id, event.connector, event.type, event.occurred_at,
                 event.silent_since, event.silence_seconds))


def load_statuses(settings: Settings, connector: str | None = None) -> dict[str, StatusRow]:
    """Connector name -> its row (every connector, or just `connector`)."""
    with connect(settings) as conn:
        rows = conn.execute(SELECT, {"connector": connector}).fetchall()
    return {r[0]: StatusRow(r[0], r[1], Health(r[2]), *r[3:]) for r in rows}
