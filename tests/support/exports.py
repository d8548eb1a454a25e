"""Spreadsheet exports as `ioc import` reads them: portal records as rows, written as CSV."""

import csv
from pathlib import Path
from typing import Any

from ioc.cli.bulk_import import DOSSIER_COLUMNS

PERSONAL_COLUMNS = ("ChuHoSo", "SoGiayToChuHoSo")


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    """A portal record as a row of an export: the sync payload's names, lists summarised."""
    row = {c: record.get(c) for c in DOSSIER_COLUMNS}
    row["DanhSachLePhi"] = len(record["DanhSachLePhi"])
    row["ThoiDiemXuLy"] = max(s["ThoiDiemXuLy"] for s in record["tienTrinhDongBo"])
    return {**row, **{c: record[c] for c in PERSONAL_COLUMNS}}


def write_csv(path: Path, rows: list[dict[str, Any]], bom: bool = True) -> Path:
    """The rows as a CSV file, in UTF-8 with a BOM as Excel saves it (or without); None empty."""
    columns = list(rows[0])
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return path

