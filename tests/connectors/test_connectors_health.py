"""What the connector SDK does around every connector: rate limit, metrics and health endpoint,
health states, and the connector_silent / connector_resumed events. The DVCQG connector runs
against the real HTTP portal of tests/support/portal.py, the real broker and PostgreSQL."""

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.dvcqg import DvcqgConnector
from connectors.mappings.portal import VIETNAM
from connectors.status import ConnectorStatusEvent, Health, StatusChange, load_statuses
from ioc.core.db import connect
from ioc.core.settings import Settings
from tests.support.portal import Portal, changed, connector, dossier
from tests.support.services import free_port, query, wait_until
from tests.support.topics import read_topic


def source_time(record: dict) -> datetime:
    return datetime.strptime(changed(record), "%Y%m%d%H%M%S").replace(tzinfo=VIETNAM)


# --- rate limit ------------------------------------------------------------------------------
def test_requests_are_spaced_by_the_rate_limit(prepared: Settings, portal: Portal) -> None:
    # One record a page: 5 requests. At 5 a second, request j comes at least (j - i) / 5 s
    # after request i, whatever the window; the portal stamps each request as it arrives.
    asyncio.run(connector(prepared, portal, page_size=1, max_requests_per_second=5).run(once=True))
    limited = portal.times[:]
    assert len(limited) == 5
    for i, j in itertools.combinations(range(5), 2):
        assert limited[j] - limited[i] >= (j - i) * 0.2 - 0.01, (i, j, limited)

    # The same from the start without a limit: nothing spaces the requests.
    with connect(prepared) as conn:
        conn.execute("DELETE FROM connector_cursors")
    portal.times.clear()
    asyncio.run(connector(prepared, portal, page_size=1).run(once=True))
    free = portal.times[:]
    assert len(free) == 5
    assert min(b - a for a, b in itertools.pairwise(free)) < 0.1, free


# --- metrics and health over HTTP, through `ioc connectors run` ------------------------------
def scrape(port: int) -> dict[tuple[str, str], float]:
    """(sample name, connector or health state) -> value, from /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, s.labels.get("ioc_connector_health", s.labels.get("connector", ""))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def health(port: int) -> tuple[int, dict]:
    answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    return answer.status_code, answer.json()


def until(predicate: Callable[[], bool], what: str, log: Path | None = None) -> None:
    wait_until(predicate, 30, what, lambda: log.read_text(errors="replace") if log else "")


def test_metrics_and_health_of_a_running_connector(prepared: Settings, portal: Portal,
                                                   tmp_path: Path) -> None:
    bad = dossier(8, minute=40)
    bad["TrangThaiHoSo"] = 42  # unmappable: read, then rejected
    portal.records.append(bad)
    good = [r for r in portal.records if r is not bad]
    config = tmp_path / "dvcqg.json"
    config.write_text(json.dumps({"base_url": portal.url, "page_size": 2, "poll_seconds": 0.1,
                                  "retry_initial_seconds": 0.05, "retry_max_seconds": 0.2}))
    port, log = free_port(), tmp_path / "connector.log"
    started = time.time()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ioc", "connectors", "run", "dvcqg",
                                 "--config", str(config), "--metrics-port", str(port)],
                                env=prepared.as_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        def published() -> float:
            try:
                return scrape(port).get(("ioc_connector_events_published_total", "dvcqg"), 0)
            except httpx.HTTPError:
                return -1
        until(lambda: published() == len(good), "every good record published", log)
        metrics, now = scrape(port), time.time()
        assert metrics[("ioc_connector_records_read_total", "dvcqg")] == len(portal.records)
        assert metrics[("ioc_connector_records_rejected_total", "dvcqg")] == 1
        assert started < metrics[("ioc_connector_last_success_timestamp_seconds", "dvcqg")] <= now
        newest = max(source_time(r) for r in good).timestamp()
        assert metrics[("ioc_connector_newest_source_timestamp_seconds", "dvcqg")] == newest
        lag = metrics[("ioc_connector_source_lag_seconds", "dvcqg")]
        assert abs(lag - (now - newest)) < 5
        assert metrics[("ioc_connector_health", "ok")] == 1
        assert metrics[("ioc_connector_health", "degraded")] == 0
        assert health(port) == (200, {"connector": "dvcqg", "kind": "dossier", "status": "ok",
                                      "reason": None})

        portal.failures = [503] * 10_000  # the portal goes down: retried, degraded
        until(lambda: health(port)[0] == 503, "degraded", log)
        body = health(port)[1]
        assert body["status"] == "degraded" and "503" in body["reason"]
        assert scrape(port)[("ioc_connector_health", "degraded")] == 1
        until(lambda: load_statuses(prepared)["dvcqg"].health is Health.DEGRADED, "stored", log)
        assert "503" in (load_statuses(prepared)["dvcqg"].reason or "")

        portal.failures.clear()
        until(lambda: health(port)[0] == 200, "ok again", log)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()

    row = load_statuses(prepared)["dvcqg"]
    assert (row.health, row.reason) == (Health.STOPPED, "cancelled")
    assert row.newest_source_at is not None and row.newest_source_at.timestamp() == newest
    assert row.last_success_at is not None and started < row.last_success_at.timestamp()

    listed = subprocess.run([sys.executable, "-m", "ioc", "connectors", "list"],
                            env=prepared.as_env(), capture_output=True, text=True,
                            timeout=60, check=True).stdout
    line = next(x for x in listed.splitlines() if x.startswith("dvcqg "))
    success = row.last_success_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert line.split()[:5] == ["dvcqg", "dossier", "built-in", "stopped", success]
    assert line.endswith("(cancelled)")


# --- health states and the silence events ----------------------------------------------------
def test_silence_is_announced_once_and_its_end_too(prepared: Settings, portal: Portal) -> None:
    silence = 2.0

    async def scenario() -> None:
        first = connector(prepared, portal, silence_seconds=silence, poll_seconds=0.05)
        task = asyncio.create_task(first.run())

        async def until(what: str, check: Callable[[], bool]) -> None:
            async with asyncio.timeout(30):
                while not check():
                    assert not task.done(), task
                    await asyncio.sleep(0.02)

        def value(name: str, state: str | None = None) -> float | None:
            labels = {"connector": "dvcqg"} | ({"ioc_connector_health": state} if state else {})
            return first.metrics.get_sample_value(name, labels)

        await until("published", lambda: value("ioc_connector_events_published_total") == 5)
        assert first.health.state() == (Health.OK, None)

        portal.failures = [503] * 10_000
        await until("degraded", lambda: first.health.state()[0] is Health.DEGRADED)
        assert "503" in (first.health.state()[1] or "")
        await until("stored", lambda: load_statuses(prepared)["dvcqg"].health is Health.DEGRADED)

        await until("silent", lambda: first.health.state()[0] is Health.SILENT)
        reason = first.health.state()[1] or ""
        assert reason.startswith("no new record since") and "retrying" in reason
        await until("stored", lambda: load_statuses(prepared)["dvcqg"].health is Health.SILENT)
        assert value("ioc_connector_health", "silent") == 1
        row = load_statuses(prepared)["dvcqg"]
        assert row.silent_since is not None and row.silent_since == row.last_record_at

        task.cancel()  # a restart while silent: the silence is not announced again
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(30):  # a swallowed cancellation fails, not hangs
                await task
        assert first.health.state() == (Health.STOPPED, "cancelled")
        row = load_statuses(prepared)["dvcqg"]
        assert row.health is Health.STOPPED and row.silent_since is not None

        portal.failures.clear()
        fresh = dossier(30)
        fresh["tienTrinhDongBo"][-1]["ThoiDiemXuLy"] = "20261119080000"  # after the cursor
        portal.records.append(fresh)
        second = connector(prepared, portal, silence_seconds=silence)
        await second.run(once=True)
        assert second.health.state() == (Health.STOPPED, "finished: nothing more to read (--once)")

    asyncio.run(scenario())
    row = load_statuses(prepared)["dvcqg"]
    assert row.silent_since is None and row.last_record_at is not None

    messages = read_topic(prepared, "connector_status")
    events = [ConnectorStatusEvent.model_validate_json(m.value) for m in messages]
    assert [(e.type, e.connector, e.kind) for e in events] == [
        (StatusChange.SILENT, "dvcqg", "dossier"), (StatusChange.RESUMED, "dvcqg", "dossier")]
    assert all(m.key == b"dvcqg" for m in messages)
    silent, resumed = events
    assert silent.silent_since == resumed.silent_since
    assert (silent.occurred_at - silent.silent_since).total_seconds() > silence
    assert silent.silence_seconds == silence and silent.event_id != resumed.event_id
    assert silent.occurred_at < resumed.occurred_at
    stored = query(prepared, "SELECT event_id, type, silent_since FROM connector_status_events"
                             " ORDER BY occurred_at")
    assert stored == [(e.event_id, str(e.type), e.silent_since) for e in events]


def test_no_silence_watch_when_disabled(prepared: Settings, portal: Portal) -> None:
    async def scenario() -> DvcqgConnector:
        quiet = connector(prepared, portal, silence_seconds=0, poll_seconds=0.05)
        task = asyncio.create_task(quiet.run())
        await asyncio.sleep(0.5)  # nothing new after the first batch; 0 means never silent
        assert quiet.health.state() == (Health.OK, None)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(30):
                await task
        return quiet

    asyncio.run(scenario())
    assert read_topic(prepared, "connector_status") == []
    assert load_statuses(prepared)["dvcqg"].silence_seconds == 0
