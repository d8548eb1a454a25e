"""The province simulator: reproducible, valid, realistic, and end to end through a worker."""

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from connectors.province import load_province
from connectors.simulator import TOPICS, VIETNAM, Message, Simulator, Stats, run
from ioc.core.db import migrate
from ioc.core.events import parse_event
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from ioc.core.topics import ensure_topics
from ioc.core.units import communes
from tests.support.services import WorkerProcess, query, wait_until


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def events(messages: list[Message]) -> list[tuple[str, dict[str, Any]]]:
    """The valid messages, decoded; each is keyed by its entity id."""
    out = []
    for topic, key, value in messages:
        try:
            entity_id = parse_event(value, TOPICS[topic]).entity_id
        except ValueError:
            continue
        assert key.decode() == entity_id
        out.append((topic, json.loads(value)))
    return out


def final_snapshots(valid: list[tuple[str, dict[str, Any]]],
                    topic: str) -> dict[str, dict[str, Any]]:
    """Each entity's newest snapshot: what the monitor's state tables end up with."""
    newest: dict[str, dict[str, Any]] = {}
    for name, event in valid:
        if name != topic:
            continue
        payload = event["payload"]
        key = payload.get("dossier_code") or payload.get("service_request_id")
        old = newest.get(key)
        if old is None or at(event["occurred_at"]) >= at(old["occurred_at"]):
            newest[key] = {**payload, "occurred_at": event["occurred_at"],
                           "agency": event["agency"]["code"]}
    return newest


def dossier_rates(dossiers: list[dict[str, Any]], now: datetime) -> dict[str, float]:
    """docs/domain.md's definitions, in percent."""
    to_handle = [d for d in dossiers if d["status"] not in (3, 7, 8)]
    late = [d for d in to_handle if d.get("due_at") and (
        (d["status"] in (9, 10) and at(d["finished_at"]) > at(d["due_at"]))
        or (d["status"] in (1, 2, 4, 5, 6) and at(d["due_at"]) < now))]
    # Only dossiers already due or finished can be late: their on-time share is the
    # agency's long-run rate, not diluted by a week's not-yet-due dossiers.
    decided = [d for d in to_handle if d["status"] in (9, 10) or (
        d.get("due_at") and at(d["due_at"]) < now)]
    with_fee = [d for d in dossiers if d["fee_required"]]
    return {
        "received": len(dossiers),
        "online": 100 * sum(d["channel"] == 2 for d in dossiers) / len(dossiers),
        "on_time": 100 - 100 * len(late) / len(to_handle),
        "on_time_decided": 100 - 100 * len(late) / len(decided),
        "digitized": 100 * sum(bool(d["digitized"]) for d in dossiers) / len(dossiers),
        "paid_online": 100 * sum(d["paid_online"] for d in with_fee) / len(with_fee),
    }


def this_monday() -> datetime:
    """The start of this week in Vietnam (Monday 00:00 local time), in the past.

    Runs aligned on a local Monday draw the same numbers whatever the day and the hour."""
    local = datetime.now(VIETNAM)
    return (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0,
                                                            microsecond=0)


@cache
def week() -> tuple[Simulator, list[Message], list[tuple[str, dict[str, Any]]], datetime]:
    """Last Monday-to-Sunday of the whole province, generated in a few seconds."""
    end = this_monday()
    simulator = Simulator(seed=11, start=end - timedelta(days=7))
    messages = simulator.advance(end)
    return simulator, messages, events(messages), end


def test_same_seed_same_messages_however_the_clock_advances() -> None:
    # Last week's Monday and Tuesday morning: a weekend would hold too few messages to tell.
    start = this_monday() - timedelta(days=7)
    one = Simulator(seed=3, rate=0.2, start=start)
    two = Simulator(seed=3, rate=0.2, start=start)
    other = Simulator(seed=4, rate=0.2, start=start)
    end = start + timedelta(hours=30)
    first = one.advance(end)
    second: list[Message] = []
    for hour in range(1, 31):  # in small steps: the same sequence
        second += two.advance(start + timedelta(hours=hour))
    assert len(first) > 1000
    assert first == second
    assert other.advance(end) != first
    assert one.bad_agencies == two.bad_agencies


def test_every_message_keeps_or_breaks_the_contract_as_intended() -> None:
    simulator, messages, valid, end = week()
    stats = simulator.stats
    assert len(messages) - len(valid) == stats.malformed > 0
    province = load_province("25")
    assert len(province.communes) == 148
    own = {code for code, (p, _) in communes().items() if p == "25"} | {None}
    ids: Counter[str] = Counter()
    for topic, event in valid:
        assert TOPICS[topic] == event["kind"]
        assert at(event["occurred_at"]) <= end
        assert event["unit"]["province_code"] == "25"
        assert event["unit"].get("commune_code") in own  # None: a provincial department
        ids[event["event_id"]] += 1
    distinct = len(ids)
    assert stats.valid_events == distinct
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates == stats.flaws["duplicate"]
    late = sum(at(e["ingested_at"]) - at(e["occurred_at"]) >= timedelta(hours=1)
               for _, e in valid)
    assert late - duplicates <= stats.flaws["late"] <= late  # a duplicate of a late event
    for share, count in ((0.01, duplicates), (0.005, stats.malformed),
                         (0.02, stats.flaws["late"])):
        assert share * 0.8 < count / distinct < share * 1.2, (share, count, distinct)
    raw = b"\n".join(v for _, _, v in messages)
    assert b"ChuHoSo" in raw  # planted, and every one of them was refused above


def test_a_simulated_week_looks_like_a_province() -> None:
    simulator, _, valid, end = week()
    dossiers = final_snapshots(valid, "dossiers")
    overall = dossier_rates(list(dossiers.values()), end)
    assert 80 <= overall["online"] <= 97, overall
    assert overall["on_time"] >= 99, overall
    assert 81.5 <= overall["digitized"] <= 100, overall
    assert 85 <= overall["paid_online"] <= 95, overall
    assert 2 <= len(simulator.bad_agencies) <= 3
    for agency in simulator.bad_agencies:
        own = dossier_rates([d for d in dossiers.values() if d["agency"] == agency], end)
        assert own["received"] >= 100, own
        assert 55 <= own["online"] <= min(77, overall["online"] - 10), (agency, own)
        assert own["on_time"] < overall["on_time"], (agency, own)
        assert own["on_time_decided"] <= 95 < 99 <= overall["on_time_decided"], (agency, own)

    # Citizens' evaluations: on their own topic, of returned dossiers, most of them satisfied,
    # some unsatisfied, a few complaints (the 766 satisfaction rate subtracts those).
    evaluations = final_snapshots(valid, "evaluations")
    returned = {code for code, d in dossiers.items() if d["status"] == 10}
    assert set(evaluations) <= set(dossiers)  # a dossier's return may be re-sent late
    assert len(set(evaluations) & returned) > 0.6 * len(returned)
    levels = Counter(e["level"] for e in evaluations.values())
    assert 0 < levels["unsatisfied"] < 0.06 * levels.total() < levels["satisfied"]
    assert 0 < sum(e["complaint"] for e in evaluations.values()) < 0.02 * len(evaluations)

    # Documents: outgoing signed ~98%, every incoming copy tells its status story.
    docs = [e for t, e in valid if t == "documents"]
    outgoing = [e["payload"] for e in docs if e["payload"].get("direction") == "outgoing"]
    assert 96 <= 100 * sum(d["signed"] for d in outgoing) / len(outgoing) <= 100
    statuses = Counter(e["payload"].get("status") for e in docs)
    assert statuses["01"] > statuses["03"] > statuses["06"] > statuses["02"] > 0
    assert statuses["13"] > 0 and statuses["15"] > 0

    # Field reports: located near their commune, no reporter identity, some resolved.
    reports = final_snapshots(valid, "field_reports")
    assert Counter(r["status"] for r in reports.values()).keys() >= {"open", "fixed", "closed",
                                                                    "duplicate"}
    lat_min, lat_max, long_min, long_max = load_province("25").bounds or (0, 0, 0, 0)
    assert all(lat_min <= r["lat"] <= lat_max and long_min <= r["long"] <= long_max
               for r in reports.values())
    assert all(r["expected_datetime"] > r["requested_datetime"] for r in reports.values())

    # Rhythm: office hours busy, mornings busiest, nights quiet.
    hours: Counter[str] = Counter()
    for _, event in valid:
        local = at(event["occurred_at"]).astimezone(VIETNAM)
        minute = local.hour * 60 + local.minute
        weekday = local.weekday() < 5
        hours["office" if weekday and (450 <= minute < 690 or 810 <= minute < 1020) else
              "night" if minute >= 22 * 60 or minute < 6 * 60 else "other"] += 1
        if weekday and 450 <= minute < 690:
            hours["morning"] += 1
        elif weekday and 810 <= minute < 1020:
            hours["afternoon"] += 1
    assert hours["office"] > 10 * hours["night"] > 0, hours
    assert hours["morning"] > hours["afternoon"], hours


def test_the_clock_runs_fast_then_real_time_and_never_ahead() -> None:
    real = datetime.now(UTC).replace(microsecond=0)
    # A week back: office hours fall inside it at any hour of any day (two hours back at
    # night held no events)
    start = real - timedelta(days=7)
    simulator = Simulator(seed=1, rate=0.05, speed=3600, start=start)
    simulator.due(real)  # the clock starts: one real second is one simulated hour
    assert simulator.clock_at(real + timedelta(seconds=1)) == start + timedelta(hours=1)
    # 168 simulated hours behind, gaining 3,599 s a second: caught up after about 168 s
    assert simulator.clock_at(real + timedelta(seconds=169)) == real + timedelta(seconds=169)
    later = real + timedelta(hours=5)  # caught up long ago: real time
    assert simulator.clock_at(later) == later
    messages = simulator.due(datetime.now(UTC) + timedelta(hours=5))  # never past the real now
    assert messages
    assert all(at(e["occurred_at"]) <= datetime.now(UTC) for _, e in events(messages))


def prepare(settings: Settings) -> None:
    migrate(settings)
    asyncio.run(ensure_topics(settings))


def handled(settings: Settings) -> tuple[int, int]:
    stored = query(settings, "SELECT count(*) FROM events")[0][0]
    rows = query(settings, "SELECT counters FROM worker_status")
    dead = sum(sum(r[0].get("dead_letters", {}).values()) for r in rows)
    return stored, dead


def test_run_publishes_a_province_that_a_worker_turns_into_kpis(settings: Settings,
                                                                 tmp_path: Path) -> None:
    prepare(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        # Three days of the province in ~4 s, then real time: the clock has caught up with
        # the database's now() when the KPIs are read, so "late" means late. Those three days
        # hold one to three working days depending on today's weekday (up to ~3 times the
        # messages): the run lasts long enough to publish the busiest of them on a slow host.
        simulator = Simulator(seed=5, rate=0.2, speed=60_000,
                              start=datetime.now(UTC) - timedelta(days=3))
        ticks: list[str] = []
        stats = asyncio.run(run(settings, simulator, seconds=12,
                                on_tick=lambda s: ticks.append(s.line())))
        assert isinstance(stats, Stats) and len(ticks) >= 5
        assert stats.clock is not None
        assert datetime.now(UTC) - stats.clock < timedelta(seconds=5)
        assert all(stats.messages[t] > 0 for t in TOPICS), stats.line()
        wait_until(lambda: handled(settings) == (stats.valid_events, stats.malformed), 120,
                   f"{stats.valid_events} events stored, {stats.malformed} dead letters",
                   lambda: f"{handled(settings)}\n{worker.log()}")
    finally:
        worker.stop()
    kpis = read_kpis(settings)
    dossiers, documents, reports = kpis["dossiers"], kpis["documents"], kpis["field_reports"]
    assert dossiers["received"] > 300, dossiers
    assert 78 <= dossiers["online_rate"] <= 97, dossiers
    assert 97 <= dossiers["on_time_rate"] <= 100, dossiers
    assert 80 <= dossiers["digitized_rate"] <= 100, dossiers
    assert dossiers["finished"] > 0 and dossiers["in_process"] > 0, dossiers
    assert documents["outgoing"] > 0 and documents["incoming"] > documents["outgoing"], documents
    assert 94 <= documents["signed_rate"] <= 100, documents
    assert documents["completed"] > 0 and documents["backlog"] > 0, documents
    assert reports["reports"] > 10 and reports["resolved"] > 0, reports
    assert query(settings, "SELECT count(DISTINCT commune_code) FROM field_reports")[0][0] > 5


def test_the_simulators_directory_is_one_the_api_reads(tmp_path: Path) -> None:
    """`ioc demo` hands the simulated agencies to the API as an agency directory file."""
    from connectors.province import write_directory
    from ioc.core.geography import Directory

    province = load_province("25")
    directory = Directory.load(write_directory(province, tmp_path / "d" / "agencies.csv"), "25")
    assert len(directory.agencies) == len(province.agencies)
    for commune in province.communes:
        assert directory.agency(commune.code) == (commune.agency.code, commune.agency.name)
    assert directory.agency(None) == (province.committee.code, province.committee.name)
