"""Current state of each dossier, document, field report and dossier evaluation, folded from
its events.

Merging is order-independent: each group of columns has a clock (the newest event that set
it), a newer event's non-null values win, an older one only fills gaps; a sticky flag, once
true, stays true whichever event came first. The same rule runs
in Python (within a batch) and in SQL (against the stored row), so a late or reordered event
lands where it would have landed in order, and replaying an event changes nothing.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from ioc.core.events import (
    DocumentEvent,
    DossierEvent,
    EvaluationEvent,
    Event,
    FieldReportEvent,
    Kind,
    ReportStatus,
)

Row = dict[str, Any]

ROW_CLOCK = "last_occurred_at"
UNIT_COLUMNS = ("province_code", "commune_code", "agency_code", "agency_name",
                "former_district_code")


@dataclass(frozen=True)
class StateTable:
    kind: Kind
    table: str
    key: str
    to_row: Callable[[Any], Row]
    # clock column -> the columns whose newest value it tracks
    clocks: dict[str, tuple[str, ...]]
    earliest: tuple[str, ...] = field(default=("first_occurred_at",))
    sticky: tuple[str, ...] = ()  # flags true once any event said so (a complaint filed)

    @property
    def columns(self) -> tuple[str, ...]:
        tracked = tuple(c for cols in self.clocks.values() for c in cols)
        return (self.key, *tracked, *self.clocks, *self.earliest, *self.sticky, "events")

    @property
    def column_list(self) -> sql.Composed:
        return sql.SQL(", ").join(map(sql.Identifier, self.columns))

    def row(self, event: Event) -> Row:
        row = {"first_occurred_at": event.occurred_at, "events": 1, **self.to_row(event)}
        unit = event.unit
        row.update(province_code=unit.province_code, commune_code=unit.commune_code or "",
                   agency_code=event.agency.code, agency_name=event.agency.name,
                   former_district_code=unit.former_district_code)
        for clock, columns in self.clocks.items():
            carries = clock == ROW_CLOCK or any(row.get(c) is not None for c in columns)
            row[clock] = event.occurred_at if carries else None
        return row

    def merge(self, old: Row, new: Row) -> Row:
        """The Python twin of `upsert_sql`'s ON CONFLICT rule."""
        merged = {self.key: old[self.key]}
        for clock, columns in self.clocks.items():
            newer = new[clock] is not None and (old[clock] is None or new[clock] > old[clock])
            first, second = (new, old) if newer else (old, new)
            for column in columns:
                merged[column] = _coalesce(first.get(column), second.get(column))
            merged[clock] = max((t for t in (old[clock], new[clock]) if t is not None),
                                default=None)
        for column in self.earliest:
            merged[column] = min((t for t in (old[column], new[column]) if t is not None),
                                 default=None)
        for column in self.sticky:
            merged[column] = True if old[column] or new[column] else \
                _coalesce(old[column], new[column])
        merged["events"] = old["events"] + new["events"]
        return merged

    def fold(self, events: Iterable[Event]) -> list[Row]:
        """One row per entity, in key order (a stable lock order for concurrent workers)."""
        rows: dict[str, Row] = {}
        for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
            row = self.row(event)
            key = row[self.key]
            rows[key] = self.merge(rows[key], row) if key in rows else row
        return [rows[key] for key in sorted(rows)]

    def upsert_sql(self) -> sql.Composed:
        t, x = sql.Identifier("t"), sql.Identifier("excluded")
        assignments = []
        for clock, columns in self.clocks.items():
            c = sql.Identifier(clock)
            newer = sql.SQL("{x}.{c} > coalesce({t}.{c}, '-infinity')").format(x=x, t=t, c=c)
            for column in columns:
                col = sql.Identifier(column)
                assignments.append(sql.SQL(
                    "{col} = CASE WHEN {newer} THEN coalesce({x}.{col}, {t}.{col})"
                    " ELSE coalesce({t}.{col}, {x}.{col}) END"
                ).format(col=col, newer=newer, x=x, t=t))
            assignments.append(sql.SQL("{c} = greatest({t}.{c}, {x}.{c})").format(c=c, t=t, x=x))
        for column in self.earliest:
            col = sql.Identifier(column)
            assignments.append(sql.SQL("{col} = least({t}.{col}, {x}.{col})").format(
                col=col, t=t, x=x))
        for column in self.sticky:
            col = sql.Identifier(column)
            assignments.append(sql.SQL(
                "{col} = CASE WHEN {t}.{col} OR {x}.{col} THEN true"
                " ELSE coalesce({t}.{col}, {x}.{col}) END").format(col=col, t=t, x=x))
        assignments.append(sql.SQL("events = {t}.events + {x}.events").format(t=t, x=x))
        assignments.append(sql.SQL("stored_at = now()"))
        return sql.SQL(
            "INSERT INTO {table} AS t ({columns})"
            " SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb)"
            " ON CONFLICT ({key}) DO UPDATE SET {assignments}"
        ).format(table=sql.Identifier(self.table), columns=self.column_list,
                 key=sql.Identifier(self.key), assignments=sql.SQL(", ").join(assignments))


def _coalesce(first: Any, second: Any) -> Any:
    return first if first is not None else second


def _dossier_row(event: DossierEvent) -> Row:
    return event.payload.model_dump()


def _document_row(event: DocumentEvent) -> Row:
    row = event.payload.model_dump()
    row["status_at"] = None  # set from the clock
    row["completed_at"] = event.occurred_at if row["status"] == "06" else None
    return row


RESOLVED = {ReportStatus.FIXED.value, ReportStatus.CLOSED.value}


def _field_report_row(event: FieldReportEvent) -> Row:
    row = event.payload.model_dump()
    row["service_group"] = row.pop("group")
    resolved = row["status"] in RESOLVED
    row["resolved_at"] = (row["updated_datetime"] or event.occurred_at) if resolved else None
    return row


def _evaluation_row(event: EvaluationEvent) -> Row:
    return event.payload.model_dump()


# A status message carries no attachments: its None `signed` (unknown) leaves the document's
# as it was, by the coalesce rule (non-null values win; None never overwrites).
DOCUMENT_META = ("direction", "signed", "signature_intact", "signed_at", "deadline",
                 "document_type", "code_notation", "from_organ_id", "to_organ_id",
                 "attachment_count", "attachment_bytes")

STATE_TABLES: dict[Kind, StateTable] = {
    Kind.DOSSIER: StateTable(
        Kind.DOSSIER, "dossiers", "dossier_code", _dossier_row,
        clocks={ROW_CLOCK: (*UNIT_COLUMNS, "procedure_code", "procedure_name", "field_code",
                            "status", "channel", "submitted_at", "received_at", "due_at",
                            "finished_at", "returned_at", "refused_at", "digitized",
                            "fee_required", "paid_online", "satisfaction", "complaint")},
    ),
    Kind.DOCUMENT: StateTable(
        Kind.DOCUMENT, "documents", "document_id", _document_row,
        clocks={ROW_CLOCK: UNIT_COLUMNS, "status_at": ("status",), "meta_at": DOCUMENT_META},
        earliest=("first_occurred_at", "completed_at"),
    ),
    Kind.FIELD_REPORT: StateTable(
        Kind.FIELD_REPORT, "field_reports", "service_request_id", _field_report_row,
        clocks={ROW_CLOCK: (*UNIT_COLUMNS, "service_code", "service_name", "service_group",
                            "status", "lat", "long", "requested_datetime", "updated_datetime",
                            "expected_datetime", "resolved_at", "description", "address_string",
                            "status_notes")},
    ),
    # One row per dossier evaluated: the newest level wins by its own clock (a later
    # complaint without a level keeps it), a complaint stays filed.
    Kind.EVALUATION: StateTable(
        Kind.EVALUATION, "evaluations", "dossier_code", _evaluation_row,
        clocks={ROW_CLOCK: UNIT_COLUMNS, "level_at": ("level",)}, sticky=("complaint",),
    ),
}

