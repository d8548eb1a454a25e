"""`ioc import --kind evaluations`, and dossier rows that carry an evaluation: through the
real broker and a real worker into the evaluations table and Decision 766's satisfaction,
computed here from the rows themselves."""

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ioc.cli.bulk_import import ImportKind, importer, records, template
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from tests.support.exports import row_of, write_csv
from tests.support.portal import province
from tests.support.services import WorkerProcess, query, wait_until

VN = timezone(timedelta(hours=7))


def ioc_import(settings: Settings, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ioc", "import", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**settings.as_env(), "COLUMNS": "200"})


def test_evaluations_import_and_count_in_the_satisfaction(prepared: Settings,
                                                          tmp_path: Path) -> None:
    dossiers = province()  # on time, late, in process overdue, refused, in process
    code = [r["MaHoSo"] for r in dossiers]
    agency = dossiers[0]["DonViXuLy"]
    rows = [row_of(r) for r in dossiers]
    rows[0].update(MucDoHaiLong=2, NgayDanhGia="20261114100000")  # carried by the dossier row
    evaluations = [
        {"MaHoSo": code[0], "DonViXuLy": agency, "MucDoHaiLong": 1, "KhieuNai": 0,
         "NgayDanhGia": "20261115100000", "ChuHoSo": "Nguyễn Văn A"},  # newer: still satisfied
        {"MaHoSo": code[1], "DonViXuLy": agency, "MucDoHaiLong": 3, "KhieuNai": None,
         "NgayDanhGia": "20261120080000", "ChuHoSo": None},
        {"MaHoSo": code[4], "DonViXuLy": agency, "MucDoHaiLong": None, "KhieuNai": 1,
         "NgayDanhGia": "20261120090000", "ChuHoSo": None},
        {"MaHoSo": code[4], "DonViXuLy": agency, "MucDoHaiLong": 9, "KhieuNai": None,
         "NgayDanhGia": "20261120090000", "ChuHoSo": None},  # row 5: no such level
    ]
    assert template(ImportKind.EVALUATIONS) == \
        "MaHoSo,DonViXuLy,MucDoHaiLong,KhieuNai,NgayDanhGia\n"
    dossier_file = write_csv(tmp_path / "hoso.csv", rows)
    evaluation_file = write_csv(tmp_path / "danhgia.csv", evaluations)

    checked = ioc_import(prepared, evaluation_file, "--kind", "evaluations", "--dry-run",
                         "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 1, checked.stderr
    assert (report["rows"], report["events"]) == (4, 3)
    assert [(r["row"], r["field"]) for r in report["rejected"]] == [(5, "MucDoHaiLong")]

    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        for path, kind in ((dossier_file, "dossiers"), (evaluation_file, "evaluations")):
            job = importer(prepared, ImportKind(kind))
            job.start(records(path, ImportKind(kind))[0], lambda n: None)
            asyncio.run(job.run(once=True))
        wait_until(lambda: query(prepared, "SELECT count(*) FROM events")[0][0] == 5 + 1 + 3,
                   90, "9 events stored", worker.log)
    finally:
        worker.stop()
    assert query(prepared, "SELECT dossier_code, level, complaint, events FROM evaluations"
                           " ORDER BY 1") == [
        (code[0], "very_satisfied", False, 2), (code[1], "unsatisfied", None, 1),
        (code[4], None, True, 1)]
    assert query(prepared, "SELECT count(*) FROM events WHERE body::text ~ 'ChuHoSo|Nguyễn'") \
        == [(0,)]

    # 766 from the rows: to handle all but the refused one; late: finished after the
    # deadline, or in process past it; unsatisfied or complained: dossiers 2 and 5.
    now = datetime.now(VN).strftime("%Y%m%d%H%M%S")
    to_handle = [r for r in dossiers if r["TrangThaiHoSo"] not in (3, 7, 8)]
    late = {r["MaHoSo"] for r in to_handle
            if (r["NgayKetThucXuLy"] > r["NgayHenTra"] if r["TrangThaiHoSo"] in (9, 10)
                else r["NgayHenTra"] < now)}
    bad = late | {code[1], code[4]}
    kpis = read_kpis(prepared)["dossiers"]
    assert kpis["evaluated"] == 3
    assert kpis["dissatisfied_or_late"] == len(bad)
    assert kpis["satisfaction_rate"] == round(100 * (len(to_handle) - len(bad)) / len(to_handle),
                                              2)
