"""`ioc import` of CSV and XLSX exports, run as the CLI in a child process, against the real
broker, PostgreSQL and (for the state and KPIs) a real `ioc worker`."""

import asyncio
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from connectors.dvcqg import DvcqgConnector
from ioc.cli.bulk_import import (
    DOCUMENT_COLUMNS,
    DOSSIER_COLUMNS,
    FileRefused,
    ImportKind,
    Report,
    importer,
    records,
)
from ioc.core.events import parse_event
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from tests.support.checks import duplicates
from tests.support.edxml import DOC_ID, RECEIVER, SENDER
from tests.support.exports import PERSONAL_COLUMNS, row_of, write_csv
from tests.support.portal import dossier, expected_kpis, province
from tests.support.services import WorkerProcess, query, wait_until
from tests.support.topics import end_offsets, read_topic


def ioc_import(settings: Settings, *args: str | Path,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ioc", "import", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**settings.as_env(), "COLUMNS": "200", **(env or {})})


def run_import(settings: Settings, path: Path, kind: str, dry_run: bool = False,
               **options: Any) -> Report:
    """What `ioc import` does, in this process (the CLI itself runs once per test)."""
    job = importer(settings, ImportKind(kind), options or None)
    rows, _ = records(path, ImportKind(kind), "Hồ sơ" if path.suffix == ".xlsx" else None)
    job.start(rows, lambda n: None)
    if dry_run:
        return job.check()
    asyncio.run(job.run(once=True))
    return job.report


def write_xlsx(path: Path, rows: list[dict[str, Any]], sheet: str = "Hồ sơ") -> Path:
    """Numbers as numbers and a date as a date cell, the way a spreadsheet holds them."""
    book = Workbook()
    book.active.title = "Ghi chú"
    ws = book.create_sheet(sheet)
    columns = list(rows[0])
    ws.append(columns)
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            if c in ("KenhThucHien", "TrangThaiHoSo", "HoSoCoThanhPhanSoHoa") and value:
                value = int(value)
            elif c == "NgayNopHoSo" and value:
                value = datetime.strptime(value, "%Y%m%d%H%M%S")
            cells.append(value)
        ws.append(cells)
    book.save(path)
    return path


def tables(settings: Settings) -> dict[str, list[tuple]]:
    return {
        "dossiers": query(settings, "SELECT * FROM dossiers ORDER BY dossier_code"),
        "events": query(settings, "SELECT event_id, source, entity_id, stored_at FROM events"
                                  " ORDER BY event_id"),
        "rollups": query(settings, "SELECT * FROM rollup_hour ORDER BY 1, 2, 3, 4, 5, 6"),
    }


def test_csv_and_xlsx_reach_the_kpis_and_a_second_import_changes_nothing(
        prepared: Settings, tmp_path: Path) -> None:
    sources = province()
    rows = [row_of(r) for r in sources]
    as_csv = write_csv(tmp_path / "hoso.csv", rows[:3])
    as_xlsx = write_xlsx(tmp_path / "hoso.xlsx", rows[3:])
    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        done = ioc_import(prepared, as_xlsx, "--kind", "dossiers", "--sheet", "Hồ sơ")
        assert done.returncode == 0, done.stderr
        assert "2 rows: 2 accepted, published 2 events; 0 rejected" in done.stdout
        assert run_import(prepared, as_csv, "dossiers") == Report(rows=3, events=3)

        messages = read_topic(prepared, "dossiers")
        events = [parse_event(m.value) for m in messages]
        assert {e.source for e in events} == {"dvcqg_import"}
        # Each row's event is the one the poller makes of the portal's record: same id.
        poller = DvcqgConnector(prepared, {"base_url": "http://unused"})
        assert sorted(str(e.event_id) for e in events) == \
            sorted(str(poller.map(r).event_id) for r in sources)
        assert not any(r[c].encode() in m.value for r in sources for c in PERSONAL_COLUMNS
                       for m in messages)
        wait_until(lambda: query(prepared, "SELECT count(*) FROM dossiers")[0][0] == 5, 90,
                   "5 dossiers stored", worker.log)
        before = tables(prepared)

        for path in (as_csv, as_xlsx):
            assert run_import(prepared, path, "dossiers").rejected == []
        assert len(read_topic(prepared, "dossiers")) == 10
        wait_until(lambda: duplicates(prepared) == 5, 60, "5 duplicates dropped", worker.log)
        assert tables(prepared) == before
    finally:
        worker.stop()
    expected, actual = expected_kpis(sources), read_kpis(prepared)["dossiers"]
    assert {k: actual[k] for k in expected} == expected
    assert expected["finished_late"] == 1 and expected["late_in_process"] == 1


def bad_rows() -> list[dict[str, Any]]:
    """Rows 2-8 of a file (row 1 is the header); rows 3, 5, 6 and 8 are wrong."""
    rows = [row_of(dossier(n, minute=n)) for n in range(1, 8)]
    rows[1]["TrangThaiHoSo"] = 42  # row 3
    rows[3]["NgayHenTra"] = "2026-11-17"  # row 5
    rows[4]["MaHoSo"] = None  # row 6
    rows[6]["DanhSachLePhi"] = "many"  # row 8
    return rows


BAD = [(3, "TrangThaiHoSo"), (5, "NgayHenTra"), (6, "MaHoSo"), (8, "DanhSachLePhi")]


def test_dry_run_reports_the_bad_rows_and_publishes_nothing(prepared: Settings,
                                                            tmp_path: Path) -> None:
    path = write_csv(tmp_path / "hoso.csv", bad_rows(), bom=False)
    report = run_import(prepared, path, "dossiers", dry_run=True)
    assert [(r.row, r.field) for r in report.rejected] == BAD
    assert report.rejected[0].reason == "TrangThaiHoSo: 42 is not a dossier status (1-10)"
    assert (report.rows, report.accepted, report.events) == (7, 3, 3)
    assert [end_offsets(prepared, t) for t in ("dossiers", "dead_letters")] == [0, 0]

    table = ioc_import(prepared, path, "--kind", "dossiers", "--dry-run")
    assert table.returncode == 1, table.stderr
    assert "7 rows: 3 accepted, would publish 3 events; 4 rejected" in table.stdout
    assert "NgayHenTra: yyyyMMddHHmmss expected, not '2026-11-17'" in table.stdout
    assert end_offsets(prepared, "dossiers") == 0

    # The real run publishes the good rows and dead-letters the bad ones, personal data out.
    assert run_import(prepared, path, "dossiers").rejected == report.rejected
    assert len(read_topic(prepared, "dossiers")) == 3
    letters = read_topic(prepared, "dead_letters")
    found = []
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        body = json.loads(letter.value)
        assert headers["ioc.reason"] == "unmappable"
        assert headers["ioc.source.connector"] == "dvcqg_import"
        assert letter.key == f"hoso.csv:{body['row']}".encode()
        assert set(body) == {"file", "row", "values"} and body["file"] == "hoso.csv"
        assert not set(PERSONAL_COLUMNS) & set(body["values"])
        found.append((body["row"], headers["ioc.error"].split(":")[0]))
    assert sorted(found) == BAD


def document_rows() -> list[dict[str, Any]]:
    """The inbox samples as rows: a document between two agencies of ours, its status, and
    rows 4 and 5 wrong (an unknown message kind, a status code edXML does not have)."""
    base = dict.fromkeys(DOCUMENT_COLUMNS)
    document = {**base, "Message": "document", "DocumentId": DOC_ID, "FromOrganId": SENDER,
                "ToOrganIds": RECEIVER, "CodeNumber": "1482", "CodeNotation": "SKHCN-CĐS",
                "DocumentType": "1", "DueDate": "2026/11/25", "Timestamp": "2026/11/16 09:41:07",
                "AttachmentCount": 1, "AttachmentBytes": 82, "Signed": 1}
    status = {**base, "Message": "status", "DocumentId": DOC_ID, "FromOrganId": RECEIVER,
              "SenderOrganId": SENDER, "StatusCode": "05", "Timestamp": "18/11/2026 14:05:32"}
    return [document, status, {**document, "Message": "memo"}, {**status, "StatusCode": "42"}]


def test_documents_import_into_state_and_kpis(prepared: Settings, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path / "vanban.csv", document_rows())
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"own_organ_ids": [SENDER, RECEIVER]}))
    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        checked = ioc_import(prepared, path, "--kind", "documents", "--config", config,
                             "--dry-run", "--json")
        assert [(r["row"], r["field"]) for r in json.loads(checked.stdout)["rejected"]] == \
            [(4, "Message"), (5, "StatusCode")]
        assert json.loads(checked.stdout)["events"] == 3
        assert end_offsets(prepared, "documents") == 0
        monkeypatch.setenv("IOC_EDXML_IMPORT_OWN_ORGAN_IDS", json.dumps([SENDER, RECEIVER]))
        for _ in range(2):  # the second time changes nothing
            assert run_import(prepared, path, "documents").events == 3
        wait_until(lambda: duplicates(prepared) == 3, 90, "3 duplicates", worker.log)
    finally:
        worker.stop()
    deadline = datetime.fromisoformat("2026-11-25T23:59:59+07:00")
    assert query(prepared, "SELECT document_id, direction, status, signed, deadline, events,"
                           " code_notation, source FROM documents JOIN (SELECT DISTINCT"
                           " entity_id, source FROM events) e ON e.entity_id = document_id"
                           " ORDER BY 1") == [
        # "Signed": 1 in the file is a declaration: without attachment bytes, unknown.
        (DOC_ID, "outgoing", None, None, deadline, 1, "1482/SKHCN-CĐS", "edxml_import"),
        (f"{DOC_ID}@{RECEIVER}", "incoming", "05", None, deadline, 2, "1482/SKHCN-CĐS",
         "edxml_import")]
    kpis = read_kpis(prepared)["documents"]
    assert (kpis["documents"], kpis["incoming"], kpis["outgoing"], kpis["backlog"]) == \
        (2, 1, 1, 1)


@pytest.mark.parametrize(("content", "words"), [
    ("MaHoSo,MaTTHC,DonViXuLy,TrangThaiHoSo,TrangThai\n", "unknown columns ['TrangThai']"),
    ("MaHoSo,MaTTHC,DonViXuLy\n", "missing columns ['TrangThaiHoSo']"),
    ("MaHoSo,MaTTHC,DonViXuLy,TrangThaiHoSo,MaHoSo\n", "columns given twice: ['MaHoSo']"),
])
def test_headers_that_cannot_be_imported_stop_everything(tmp_path: Path, content: str,
                                                         words: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(content, "utf-8")
    with pytest.raises(FileRefused) as refused:
        records(path, ImportKind.DOSSIERS)
    assert words in str(refused.value)


def test_files_that_are_not_exports_are_refused(settings: Settings, tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"MaHoSo\nC\xe1p\n")  # Latin-1, not UTF-8
    fake = tmp_path / "fake.xlsx"
    fake.write_text("not a zip")
    for path, words in ((latin, "not UTF-8"), (fake, "not a readable XLSX"),
                        (tmp_path / "x.json", ".csv or .xlsx expected")):
        with pytest.raises(FileRefused, match=words):
            records(path, ImportKind.DOSSIERS)
    done = ioc_import(settings, latin, "--kind", "dossiers")
    assert done.returncode == 2 and "latin.csv: not UTF-8 (byte 8)" in done.stderr, done.stderr
    template = ioc_import(settings, "--template", "dossiers")
    assert template.stdout == ",".join(DOSSIER_COLUMNS) + "\n"
