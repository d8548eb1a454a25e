"""The connector SDK and the DVCQG dossier connector, against a real HTTP server standing in for
the portal, a real broker, a real PostgreSQL and (for the KPIs) a real `ioc worker`."""

import asyncio
import copy
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from aiokafka.structs import ConsumerRecord

from connectors import registry
from connectors.base import PermanentError
from connectors.dvcqg import DvcqgConnector
from ioc.core.events import DossierEvent, parse_event
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from tests.support.portal import (
    PERSONAL_VALUES,
    SAMPLE,
    Portal,
    changed,
    connector,
    dossier,
    expected_kpis,
)
from tests.support.services import WorkerProcess, query, wait_until
from tests.support.topics import read_topic

# The portal's sync payload sample of shared/samples/dossiers, copied so the suite stands alone.


# --- the portal: a real HTTP server on a free port, answering the documented contract ------


# --- fixtures and helpers --------------------------------------------------------------------


def cursor_row(settings: Settings) -> tuple[str, datetime] | None:
    rows = query(settings, "SELECT cursor, updated_at FROM connector_cursors"
                           " WHERE connector = 'dvcqg'")
    return rows[0] if rows else None


def codes(messages: list[ConsumerRecord]) -> list[str]:
    return sorted(parse_event(m.value).payload.dossier_code for m in messages)  # type: ignore[union-attr]


# --- mapping -----------------------------------------------------------------------------------
def test_the_sample_maps_to_the_expected_event(settings: Settings) -> None:
    event = DvcqgConnector(settings, {"base_url": "http://unused"}).map(SAMPLE)
    at = lambda text: datetime.fromisoformat(text)  # noqa: E731
    assert isinstance(event, DossierEvent)
    assert event.source == "dvcqg"
    assert event.occurred_at == at("2026-11-13T09:00:00+07:00")  # the latest step
    assert event.unit.model_dump() == {
        "province_code": "25", "commune_code": None, "former_province_code": None,
        "former_district_code": None, "former_commune_code": None}
    assert event.agency.model_dump() == {"code": "000.00.12.H25", "name": None}
    assert event.payload.model_dump() == {
        "dossier_code": "000.00.12.H25-261103-0042",
        "procedure_code": "1.001234",
        "procedure_name": "Cấp Giấy chứng nhận đăng ký hoạt động khoa học và công nghệ",
        "field_code": "KHCN01",
        "status": 10,
        "channel": 2,
        "submitted_at": at("2026-11-03T01:15:02+00:00"),
        "received_at": at("2026-11-03T02:11:40+00:00"),
        "due_at": at("2026-11-17T10:00:00+00:00"),
        "finished_at": at("2026-11-12T08:58:20+00:00"),
        "returned_at": at("2026-11-13T02:00:00+00:00"),
        "refused_at": None,
        "digitized": True,
        "fee_required": True,
        "paid_online": True,
        "satisfaction": None,
        "complaint": None,
    }
    raw = event.model_dump_json().encode()
    assert not any(value in raw for value in PERSONAL_VALUES)
    assert parse_event(raw) == event  # the contract accepts it as it goes on the wire

    # The same record state: the same event id; another state: another one.
    assert DvcqgConnector(settings, {"base_url": "http://x"}).map(SAMPLE).event_id == event.event_id
    assert isinstance(event.event_id, UUID)
    assert DvcqgConnector(settings, {"base_url": "http://x"}).map(
        {**SAMPLE, "TrangThaiHoSo": 9}).event_id != event.event_id

    # The administrative unit and agency name come from the configuration.
    configured = DvcqgConnector(settings, {"base_url": "http://x", "agencies": {
        "000.00.12.H25": {"commune_code": "07900", "name": "UBND phường Việt Trì"}}}).map(SAMPLE)
    assert (configured.unit.province_code, configured.unit.commune_code) == ("25", "07900")
    assert configured.agency.name == "UBND phường Việt Trì"


@pytest.mark.parametrize(("change", "reason"), [
    ({"TrangThaiHoSo": 42}, "TrangThaiHoSo: 42"), ({"MaHoSo": None}, "MaHoSo: missing"),
    ({"KenhThucHien": 7}, "KenhThucHien: 7"), ({"NgayHenTra": "2026-11-17"}, "NgayHenTra"),
    ({"DonViXuLy": ""}, "DonViXuLy: missing"),
])
def test_unmappable_records_say_why(settings: Settings, change: dict[str, Any],
                                    reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        DvcqgConnector(settings, {"base_url": "http://x"}).map({**SAMPLE, **change})


# --- publishing ----------------------------------------------------------------------------
def test_pages_become_exact_kpis(prepared: Settings, portal: Portal, tmp_path: Path) -> None:
    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        asyncio.run(connector(prepared, portal).run(once=True))
        pages = {p["page"][0] for p in portal.requests}
        assert pages == {"1", "2", "3"}  # 5 records, 2 a page

        messages = read_topic(prepared, "dossiers")
        assert codes(messages) == sorted(r["MaHoSo"] for r in portal.records)
        assert all(m.key == parse_event(m.value).entity_id.encode() for m in messages)
        assert not any(v in m.value for m in messages for v in PERSONAL_VALUES)

        wait_until(lambda: query(prepared, "SELECT count(*) FROM dossiers")[0][0] == 5, 90,
                   "5 dossiers stored", worker.log)
    finally:
        worker.stop()
    expected = expected_kpis(portal.records)
    actual = read_kpis(prepared)["dossiers"]
    assert {k: actual[k] for k in expected} == expected
    assert expected["finished_late"] == 1 and expected["late_in_process"] == 1  # a real mix


def test_a_restart_publishes_only_what_is_new(prepared: Settings, portal: Portal) -> None:
    # Batches of 2 (one page each): the cursor moves after each acknowledged batch.
    asyncio.run(connector(prepared, portal, batch_size=2).run(once=True))
    first = read_topic(prepared, "dossiers")
    assert len(first) == 5
    row = cursor_row(prepared)
    assert row is not None and json.loads(row[0])["since"] == max(map(changed, portal.records))
    newest_ack = max(m.timestamp for m in first) / 1000
    assert row[1].timestamp() >= newest_ack - 1  # stored after the last send

    # Nothing new: nothing published, the cursor stays.
    asyncio.run(connector(prepared, portal).run(once=True))
    assert len(read_topic(prepared, "dossiers")) == 5
    assert cursor_row(prepared)[0] == row[0]  # type: ignore[index]

    # New records, one in the very second of the cursor (a tie), and a record with a new step.
    tie = dossier(6)
    tie["tienTrinhDongBo"][-1]["ThoiDiemXuLy"] = json.loads(row[0])["since"]
    newer = dossier(7)
    newer["tienTrinhDongBo"][-1]["ThoiDiemXuLy"] = "20261119080000"
    updated = copy.deepcopy(portal.records[2])
    updated["TrangThaiHoSo"] = 5
    updated["tienTrinhDongBo"].append({**updated["tienTrinhDongBo"][-1],
                                       "ThoiDiemXuLy": "20261120080000", "TrangThai": 5})
    portal.records[2] = updated
    portal.records += [tie, newer]
    asyncio.run(connector(prepared, portal).run(once=True))
    messages = read_topic(prepared, "dossiers")
    assert len(messages) == 8
    assert codes(messages) == sorted(
        [*codes(first), tie["MaHoSo"], updated["MaHoSo"], newer["MaHoSo"]])
    assert len({parse_event(m.value).event_id for m in messages}) == 8


def test_the_cursor_covers_only_acknowledged_batches(prepared: Settings, portal: Portal) -> None:
    # The portal refuses everything after the first page: that batch is published and its
    # cursor stored; nothing past it.
    portal.refuse_after = 1
    with pytest.raises(PermanentError, match="403"):
        asyncio.run(connector(prepared, portal, batch_size=2).run(once=True))
    messages = read_topic(prepared, "dossiers")
    row = cursor_row(prepared)
    assert row is not None
    served = sorted(portal.records, key=lambda r: (changed(r), r["MaHoSo"]))[:2]
    assert codes(messages) == sorted(r["MaHoSo"] for r in served)
    assert json.loads(row[0])["since"] == changed(served[-1])


def test_unmappable_records_go_to_the_dead_letters(prepared: Settings, portal: Portal) -> None:
    bad_status = dossier(8, minute=40)
    bad_status["TrangThaiHoSo"] = 42
    no_code = dossier(9, minute=41)
    del no_code["MaHoSo"]
    portal.records += [bad_status, no_code, dossier(10, minute=42)]
    asyncio.run(connector(prepared, portal).run(once=True))

    assert len(read_topic(prepared, "dossiers")) == 6  # the connector went on
    letters = read_topic(prepared, "dead_letters")
    assert len(letters) == 2
    by_reason = {dict(m.headers)["ioc.error"].decode(): m for m in letters}
    assert set(by_reason) == {"TrangThaiHoSo: 42 is not a dossier status (1-10)",
                              "MaHoSo: missing"}
    for error, source in (("TrangThaiHoSo: 42 is not a dossier status (1-10)", bad_status),
                          ("MaHoSo: missing", no_code)):
        letter = by_reason[error]
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["ioc.reason"] == "unmappable"
        assert headers["ioc.source.connector"] == "dvcqg"
        kept = {k: v for k, v in source.items()
                if k not in ("ChuHoSo", "SoGiayToChuHoSo", "LoaiDoiTuong")}
        assert json.loads(letter.value) == kept  # the source payload, without personal data
        assert not any(v in letter.value for v in PERSONAL_VALUES)
    assert by_reason["MaHoSo: missing"].key is None
    assert by_reason["TrangThaiHoSo: 42 is not a dossier status (1-10)"].key == \
        bad_status["MaHoSo"].encode()


def test_transient_errors_are_retried(prepared: Settings, portal: Portal) -> None:
    portal.failures = [503, 503, 502]
    sent = connector(prepared, portal)
    asyncio.run(sent.run(once=True))
    assert portal.failures == []
    assert len(read_topic(prepared, "dossiers")) == 5
    assert sent.metrics.get_sample_value("ioc_connector_events_published_total",
                                         {"connector": "dvcqg"}) == 5
    assert sent.metrics.get_sample_value("ioc_connector_records_read_total",
                                         {"connector": "dvcqg"}) == 5
    assert sent.metrics.get_sample_value("ioc_connector_last_success_timestamp_seconds",
                                         {"connector": "dvcqg"}) > 0


def test_bad_credentials_stop_the_connector(prepared: Settings, portal: Portal,
                                            tmp_path: Path) -> None:
    portal.token = "right"
    with pytest.raises(PermanentError, match=r"answered 401 \(check the credentials\)"):
        asyncio.run(connector(prepared, portal, token="wrong").run(once=True))
    assert cursor_row(prepared) is None

    # The same through the command line: a clear message and a failing exit code.
    config = tmp_path / "dvcqg.toml"
    config.write_text(f'base_url = "{portal.url}"\ntoken = "wrong"\nretry_attempts = 1\n')
    result = subprocess.run([sys.executable, "-c", "from ioc.cli.connectors import app; app()",
                             "run", "dvcqg", "--once", "--config", str(config)],
                            env=prepared.as_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, result.stderr
    assert "connector dvcqg stopped" in result.stderr and "401" in result.stderr

    portal.token = None
    config.write_text(json.dumps({"base_url": portal.url}))
    config = config.rename(tmp_path / "dvcqg.json")
    result = subprocess.run([sys.executable, "-c", "from ioc.cli.connectors import app; app()",
                             "run", "dvcqg", "--once", "--config", str(config)],
                            env=prepared.as_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(read_topic(prepared, "dossiers")) == 5


def test_the_registry_names_what_it_knows() -> None:
    assert registry.load("dvcqg") is DvcqgConnector
    with pytest.raises(registry.UnknownConnector, match="known: dvcqg"):
        registry.load("nope")
    result = subprocess.run([sys.executable, "-c", "from ioc.cli.connectors import app; app()",
                             "list"], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split()[:3] == ["dvcqg", "dossier", "built-in"]
