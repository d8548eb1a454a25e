"""KPIs as of a moment (docs/domain.md, "As of a moment"): a closed period's rates, computed
here from the lives the test gives its dossiers, documents and field reports, are what the KPI
functions return as of the period's end; events stored after that end (late finishes,
completions, resolutions) leave them where they were, while the figures as of now move.
`ioc kpis` evaluates a past period at its end, and `--as-of` at the moment given.

The period ends 10 days before now (whole hours); every event is a whole number of hours away
from the end, and every deadline at least an hour from the end, the end + 24 h and now: any
date, any hour.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from psycopg.rows import dict_row

from ioc.core.db import connect, migrate
from ioc.core.events import Kind, parse_event
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from ioc.embedded.servers import Postgres
from streams.store import Store
from tests.support.services import ServedApps

H = timedelta(hours=1)
PROVINCE, COMMUNE, AGENCY = "25", "07900", "000.00.12.H25"  # Phú Thọ
SOON = timedelta(hours=24)  # the due_soon_horizon default
IN_PROCESS = 4


def pct(part: int, whole: int) -> float | None:
    if not whole:
        return None
    return float((Decimal(100 * part) / Decimal(whole)).quantize(Decimal("0.01"), ROUND_HALF_UP))


@dataclass
class Life:
    """An entity's steps: (time, what the payload says then), in order."""

    key: str
    anchor: datetime
    steps: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)


@dataclass
class World:
    now: datetime
    start: datetime
    end: datetime  # the period [start, end) is closed; evaluated as of `end`
    dossiers: list[Life] = field(default_factory=list)
    documents: list[Life] = field(default_factory=list)
    reports: list[Life] = field(default_factory=list)

    def state(self, life: Life, at: datetime) -> dict[str, Any] | None:
        """The entity's newest payload as of `at` (None: nothing known yet)."""
        known = [payload for t, payload in life.steps if t <= at]
        return known[-1] if known else None


def build(seed: int = 14) -> World:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=10)
    w = World(now=now, start=end - timedelta(days=20), end=end)

    def hours_before_end(low: int, high: int) -> datetime:
        return end - rng.randint(low, high) * H

    def after_end() -> datetime:  # up to 8 days after the end: well before now
        return end + rng.randint(1, 8 * 24) * H

    for i in range(60):
        received = hours_before_end(24, 19 * 24)
        # Due from 2 hours after receipt to 8 days: before now, some soon after the end.
        due = received + rng.randint(2, 8 * 24) * H
        if i % 5 == 0:  # due within the day after the end: due soon as of the end
            due = end + rng.randint(2, 22) * H
        if abs(due - end) < H or abs(due - (end + SOON)) < H:
            due += 2 * H
        base = {"dossier_code": f"D{i:04d}", "procedure_code": "1.0001", "status": 2,
                "received_at": received, "due_at": due}
        life = Life(f"D{i:04d}", received, [(received, base)])
        fate = rng.choice(["finished", "finished", "open", "refused", "cancelled",
                           "finishes_after", "finishes_after", "refused_after"])
        if fate == "finished":  # before the end; its result handed back after it
            done = received + rng.randint(1, (end - received) // H - 1) * H
            life.steps.append((done, {**base, "status": 9, "finished_at": done}))
            if rng.random() < 0.5:
                later = after_end()
                life.steps.append((later, {**base, "status": 10, "finished_at": done,
                                           "returned_at": later}))
        elif fate == "refused":
            at = received + H
            life.steps.append((at, {**base, "status": 3, "refused_at": at}))
        elif fate == "cancelled":
            life.steps.append((received + H, {**base, "status": 7}))
        else:
            life.steps.append((received + H, {**base, "status": IN_PROCESS}))
            if fate == "finishes_after":
                at = after_end()
                life.steps.append((at, {**base, "status": 10, "finished_at": at}))
            elif fate == "refused_after":
                at = after_end()
                life.steps.append((at, {**base, "status": 3, "refused_at": at}))
        w.dossiers.append(life)

    for i in range(40):
        created = hours_before_end(24, 19 * 24)
        deadline = rng.choice([None, created + rng.randint(2, 8 * 24) * H])
        if deadline is not None and abs(deadline - end) < H:
            deadline += 2 * H
        base = {"document_id": f"DOC{i:04d}@X", "direction": "incoming", "deadline": deadline}
        life = Life(base["document_id"], created, [(created, {**base, "status": None})])
        fate = rng.choice(["completed", "rejected", "backlog", "completes_after",
                           "recalled_after"])
        if fate in ("completed", "rejected"):
            at = created + rng.randint(1, (end - created) // H - 1) * H
            life.steps.append((at, {**base, "status": "06" if fate == "completed" else "02"}))
        elif fate != "backlog":
            life.steps.append((created + H, {**base, "status": "05"}))
            code = "06" if fate == "completes_after" else "15"
            life.steps.append((after_end(), {**base, "status": code}))
        w.documents.append(life)

    for i in range(40):
        requested = hours_before_end(24, 19 * 24)
        expected = requested + rng.randint(2, 8 * 24) * H
        if abs(expected - end) < H:
            expected += 2 * H
        base = {"service_request_id": f"R{i:04d}", "service_code": "ROAD",
                "requested_datetime": requested, "expected_datetime": expected}
        life = Life(base["service_request_id"], requested,
                    [(requested, {**base, "status": "open", "updated_datetime": requested})])
        fate = rng.choice(["fixed", "duplicate", "open", "fixed_after", "closed_after",
                           "duplicate_after"])
        if fate in ("fixed", "duplicate"):
            at = requested + rng.randint(1, (end - requested) // H - 1) * H
            life.steps.append((at, {**base, "status": fate, "updated_datetime": at}))
        elif fate != "open":
            at = requested + H
            life.steps.append((at, {**base, "status": "in_progress", "updated_datetime": at}))
            later = after_end()
            life.steps.append((later, {**base, "status": fate.removesuffix("_after"),
                                       "updated_datetime": later}))
        w.reports.append(life)
    return w


# --- the expected KPIs, from the lives alone ------------------------------------------------

def dossier_kpis(w: World, at: datetime) -> dict[str, Any]:
    states = [s for life in w.dossiers if (s := w.state(life, at)) is not None]
    to_handle = [s for s in states if s["status"] not in (3, 7, 8)]
    finished = [s for s in states if s["status"] in (9, 10)]
    late_finished = [s for s in finished if s["finished_at"] > s["due_at"]]
    in_process = [s for s in states if s["status"] in (1, 2, 4, 5, 6)]
    late = [s for s in in_process if s["due_at"] < at]
    soon = [s for s in in_process if at <= s["due_at"] < at + SOON]
    return {"received": len(states), "to_handle": len(to_handle), "finished": len(finished),
            "finished_on_time": len(finished) - len(late_finished),
            "finished_late": len(late_finished), "in_process": len(in_process),
            "late_in_process": len(late), "due_soon": len(soon),
            "not_yet_due": len(in_process) - len(late) - len(soon),
            "on_time_rate": pct(len(to_handle) - len(late_finished) - len(late),
                                len(to_handle))}


def document_kpis(w: World, at: datetime) -> dict[str, Any]:
    states = [(life, s) for life in w.documents if (s := w.state(life, at)) is not None]
    completed = []
    for life, s in states:
        if s["status"] == "06":  # completed at its first 06 status
            first = min(t for t, p in life.steps if p["status"] == "06")
            completed.append(s["deadline"] is None or first <= s["deadline"])
    backlog = [s for _, s in states if s["status"] not in ("02", "06", "15")]
    return {"documents": len(states), "incoming": len(states), "completed": len(completed),
            "completed_on_time": sum(completed), "backlog": len(backlog),
            "backlog_overdue": sum(s["deadline"] is not None and s["deadline"] < at
                                   for s in backlog),
            "on_time_rate": pct(sum(completed), len(completed))}


def report_kpis(w: World, at: datetime) -> dict[str, Any]:
    states = [s for life in w.reports if (s := w.state(life, at)) is not None]
    open_ = [s for s in states if s["status"] in ("open", "investigating", "in_progress")]
    resolved = [s for s in states if s["status"] in ("fixed", "closed")]
    hours = [(s["updated_datetime"] - s["requested_datetime"]) / H for s in resolved]
    return {"reports": len(states), "open": len(open_), "resolved": len(resolved),
            "duplicate": sum(s["status"] == "duplicate" for s in states),
            "overdue": sum(s["expected_datetime"] < at for s in open_),
            "median_hours_to_resolve": round(statistics.median(hours), 2) if hours else None}


def expected(w: World, at: datetime) -> dict[str, dict[str, Any]]:
    return {"dossiers": dossier_kpis(w, at), "documents": document_kpis(w, at),
            "field_reports": report_kpis(w, at)}


# --- the database ---------------------------------------------------------------------------

def events(w: World, until: datetime | None, after: datetime | None = None) -> dict[Kind, list]:
    """The worker's events of every step in (after, until]."""
    out: dict[Kind, list] = {Kind.DOSSIER: [], Kind.DOCUMENT: [], Kind.FIELD_REPORT: []}
    for kind, source, lives in ((Kind.DOSSIER, "dvcqg", w.dossiers),
                                (Kind.DOCUMENT, "edxml", w.documents),
                                (Kind.FIELD_REPORT, "open311", w.reports)):
        for life in lives:
            for at, payload in life.steps:
                if (after is None or at > after) and (until is None or at <= until):
                    out[kind].append(parse_event(json.dumps({
                        "event_id": str(uuid.uuid4()), "source": source,
                        "occurred_at": at.isoformat(), "kind": kind.value,
                        "unit": {"province_code": PROVINCE, "commune_code": COMMUNE},
                        "agency": {"code": AGENCY, "name": "Sở"},
                        "payload": {k: v.isoformat() if isinstance(v, datetime) else v
                                    for k, v in payload.items() if v is not None}}), kind))
    return out


def store(settings: Settings, batch: dict[Kind, list]) -> None:
    async def write() -> None:
        writer = Store(settings)
        try:
            for kind, items in batch.items():
                if items:
                    await writer.write(kind, items)
        finally:
            await writer.close()

    asyncio.run(write())


COLUMNS = {family: list(values) for family, values in expected(build(), datetime.now(UTC)).items()}
FUNCTIONS = {"dossiers": "kpi_dossiers", "documents": "kpi_documents",
             "field_reports": "kpi_field_reports"}


def kpis_sql(settings: Settings, w: World, as_of: datetime | None) -> dict[str, dict[str, Any]]:
    """The KPI functions for the period, as of `as_of` (None: their default, now())."""
    out = {}
    with connect(settings, row_factory=dict_row) as conn:
        for family, function in FUNCTIONS.items():
            args = "%s, %s, NULL, NULL, NULL" + (", %s" if as_of else "")
            row = conn.execute(f"SELECT * FROM {function}({args})",
                               (w.start, w.end, *([as_of] if as_of else []))).fetchone()
            assert row is not None
            out[family] = {k: float(v) if isinstance(v, Decimal) else v
                           for k, v in row.items() if k in COLUMNS[family]}
    return out


def picked(result: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f: {k: v for k, v in values.items() if k in COLUMNS[f]}
            for f, values in result.items() if f in COLUMNS}  # not "missing" (inputs)


@pytest.fixture(scope="module")
def world() -> World:
    return build()


@pytest.fixture(scope="module")
def settings(postgres: Postgres) -> Settings:
    s = Settings(database_url=postgres.url, database_schema=f"t_{uuid.uuid4().hex[:10]}")
    migrate(s)
    return s


def test_a_closed_period_stays_as_it_stood_at_its_end(settings: Settings, world: World) -> None:
    w = world
    at_end, at_now = expected(w, w.end), expected(w, w.now)
    # The lives are rich enough to show something: late, due soon, and changes after the end.
    assert at_end["dossiers"]["late_in_process"] and at_end["dossiers"]["due_soon"]
    assert at_end["dossiers"]["finished_late"] and at_end["documents"]["backlog_overdue"]
    assert at_end["field_reports"]["overdue"] and at_end["field_reports"]["resolved"]
    for family in FUNCTIONS:
        assert at_end[family] != at_now[family], family

    store(settings, events(w, until=w.end))  # what was known at the period's end
    assert kpis_sql(settings, w, w.end) == at_end
    # Then what happened after it, up to now: finishes, completions, resolutions, returns.
    # As of the end, the figures hold; as of now (the functions' default) they moved.
    store(settings, events(w, until=None, after=w.end))
    assert kpis_sql(settings, w, w.end) == at_end
    assert kpis_sql(settings, w, None) == at_now
    assert kpis_sql(settings, w, w.now) == at_now

    # read_kpis (ioc kpis, the wall): a past period as of its end unless told otherwise.
    assert picked(read_kpis(settings, since=w.start, until=w.end)) == at_end
    assert picked(read_kpis(settings, since=w.start, until=w.end, as_of=w.now)) == at_now
    middle = w.end - timedelta(days=5)
    assert picked(read_kpis(settings, since=w.start, until=w.end, as_of=middle)) == \
        expected(w, middle)

    # The wall (all time: here, the period) as of a moment: the demo's simulator clock.
    from ioc.embedded.wall import read_wall

    for at, truth in ((w.end, at_end), (None, at_now)):
        wall = read_wall(settings, lag=None, as_of=at)
        assert picked(wall.kpis) == truth
        (agency,) = wall.agencies
        assert float(agency["on_time_rate"]) == truth["dossiers"]["on_time_rate"]
        assert [(r["open"], r["overdue"]) for r in wall.reports] == [
            (truth["field_reports"]["open"], truth["field_reports"]["overdue"])]


def ioc_kpis(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ioc", "kpis", *args], capture_output=True,
                          text=True, env=settings.as_env(), timeout=120, check=False)


def test_ioc_kpis_as_of(settings: Settings, world: World) -> None:
    w = world
    local = ZoneInfo(settings.timezone)
    period = ["--since", f"{w.start:%Y-%m-%dT%H:%M:%S%z}",  # with its zone
              "--until", f"{w.end.astimezone(local):%Y-%m-%d %H:%M:%S}"]  # local time
    earlier = w.end - timedelta(days=3)
    for extra, at in (([], w.end), (["--as-of", f"{w.now:%Y-%m-%dT%H:%M:%S%z}"], w.now),
                      (["--as-of", f"{earlier.astimezone(local):%Y-%m-%dT%H:%M:%S}"],
                       earlier)):
        result = ioc_kpis(settings, "--json", *period, *extra)
        assert result.returncode == 0, result.stderr
        assert picked(json.loads(result.stdout)) == expected(w, at), extra
    result = ioc_kpis(settings, *period, "--as-of", "1999-12-31T00:00:00+07:00")
    assert result.returncode == 1 and "not a plausible date" in result.stderr


def test_api_kpis_as_of(settings: Settings, world: World, serve_app: ServedApps) -> None:
    from ioc.api.app import create_app
    from ioc.api.keys import create_key

    w = world
    client = serve_app(create_app(settings))
    _, secret = create_key(settings, f"k-{uuid.uuid4().hex[:8]}", ["kpis:read"])
    _, other = create_key(settings, f"k-{uuid.uuid4().hex[:8]}", ["alerts:read"])
    reader, period = {"Authorization": f"Bearer {secret}"}, {"since": w.start.isoformat(),
                                                             "until": w.end.isoformat()}
    assert client.get("/kpis", params=period).status_code == 401
    assert client.get("/kpis", params=period,
                      headers={"Authorization": f"Bearer {other}"}).status_code == 403
    earlier = w.end - timedelta(days=3)
    for as_of, at in ((None, w.end), (w.now, w.now), (earlier, earlier)):
        params = {**period, **({"as_of": as_of.isoformat()} if as_of else {})}
        answer = client.get("/kpis", params=params, headers=reader)
        assert answer.status_code == 200, answer.text
        assert picked(answer.json()) == expected(w, at), as_of
        # No citizen evaluated any of these dossiers: the satisfaction rate says so.
        assert answer.json()["missing"]["dossiers.satisfaction_rate"] == [
            "chưa có dữ liệu đánh giá"]
    for bad, words in (("1999-12-31T00:00:00+07:00", "not a plausible date"),
                       ("2026-10-31T17:00:00", "needs a time zone"),
                       (f"{w.now.year + 11}-01-01T00:00:00Z", "not a plausible date")):
        answer = client.get("/kpis", params={**period, "as_of": bad}, headers=reader)
        assert answer.status_code == 400 and words in answer.json()["detail"], answer.text
    answer = client.get("/kpis", params={**period, "as_of": "yesterday"}, headers=reader)
    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["detail"]] == [["query", "as_of"]]
