"""`ioc import FILE --kind dossiers|documents|evaluations`: historical records from CSV or XLSX
exports.

A file is one table: the first row names the columns (any order; `ioc import --template
KIND` prints them), each next row is one record. CSV is UTF-8, with or without a BOM; XLSX is
read in openpyxl's read-only mode (the first sheet, or `--sheet NAME`). Empty rows are
skipped; row numbers are the spreadsheet's (the header is row 1).

**Dossiers** (`DOSSIER_COLUMNS`): the national portal's sync payload field names, values as
the portal writes them (dates `yyyyMMddHHmmss`, local time). Two columns stand for lists:
`DanhSachLePhi` holds the number of fees (or the JSON list), `ThoiDiemXuLy` the time of the
latest processing step (`tienTrinhDongBo[].ThoiDiemXuLy`, the record's change time). Rows are
mapped as the portal's records are (`connectors/mappings/portal.py`); source `dvcqg_import`, options
`IOC_DVCQG_IMPORT_*` or `--config` (`agencies`, `province_code`).

**Evaluations** (`EVALUATION_COLUMNS`): citizens' evaluations of dossiers, one per row, in the
portal's style: `MaHoSo`, `DonViXuLy`, `MucDoHaiLong` (1 very satisfied, 2 satisfied,
3 unsatisfied), `KhieuNai` (0/1: a complaint), `NgayDanhGia` (`yyyyMMddHHmmss`, local time);
mapped by `connectors/mappings/portal.py`; source `evaluation_import`, options
`IOC_EVALUATION_IMPORT_*` or `--config`. A dossier row may carry the same three columns: its
evaluation is published too.

**Documents** (`DOCUMENT_COLUMNS`): one edXML message per row, named after its elements.
`Message` is `document` or `status`; `FromOrganId` the sender (of a status: the agency
reporting it), `ToOrganIds` the receivers (`;` between them), `SenderOrganId` the sender of
the document a status is about (`ResponseFor/OrganId`); `Timestamp` when it happened, `DueDate`
the deadline (edXML formats: `dd/MM/yyyy HH:mm:ss`, `yyyy/MM/dd`, ISO...). Whether a document is
signed is read from its attachments' bytes, which a row has not: unknown (a `Signed` column of an
older export is read, then dropped).
Copies and events as for an edXML message (`connectors/mappings/edxml.py`), for the agencies
`own_organ_ids` (`IOC_EDXML_IMPORT_OWN_ORGAN_IDS` or `--config`); source `edxml_import`.

Personal columns (`ChuHoSo`, `SoGiayToChuHoSo`, `LoaiDoiTuong`) are dropped as the file is
read; other unknown columns stop the import before anything is published (a typo must not
silently empty a column).

**Idempotent.** Event ids depend only on the content: a dossier's are the portal mapping's
(a UUIDv5 of the mapped state, the same whether polled, pushed or imported), a document row's
a UUIDv5 of the row's values. Importing a file again publishes the same ids, which the
worker drops as repeats (the `events` primary key): the tables do not change. Rejected rows
are dead-lettered again, each time (the dead-letter topic is a log, not state).

**Dry run** maps every row and reports what would be rejected and why (row, field, reason);
nothing is published. A real run publishes through the connector SDK (idempotent producer,
the broker's acks awaited), dead-letters rejected rows (value: `{"file", "row", "values"}`
without personal columns; headers `ioc.reason`, `ioc.error`, `ioc.source.connector`) and
reports the same table.
"""

import csv
import hashlib
import io
import json
import re
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic import Field

from connectors.base import Batch, Connector, ConnectorOptions, refusal_reason
from connectors.mappings.edxml import document_event, document_records, status_records
from connectors.mappings.portal import (
    EVALUATION_FIELDS,
    PERSONAL,
    carries_evaluation,
    dossier_event,
    evaluation_event,
    parse_time,
)
from ioc.core.events import Event, Kind
from ioc.core.settings import Settings


class ImportKind(StrEnum):
    DOSSIERS = "dossiers"
    DOCUMENTS = "documents"
    EVALUATIONS = "evaluations"


DOSSIER_COLUMNS = (
    "MaHoSo", "MaTTHC", "TenTTHC", "MaLinhVuc", "DonViXuLy", "KenhThucHien", "TrangThaiHoSo",
    "NgayNopHoSo", "NgayTiepNhan", "NgayHenTra", "NgayKetThucXuLy", "NgayTra", "NgayTuChoi",
    "HoSoCoThanhPhanSoHoa", "DuocThanhToanTrucTuyen", "DanhSachLePhi", "ThoiDiemXuLy",
    *EVALUATION_FIELDS,
)
DOSSIER_REQUIRED = ("MaHoSo", "MaTTHC", "DonViXuLy", "TrangThaiHoSo")
# Payload fields an export may carry that the monitor does not use (read, then dropped).
DOSSIER_UNUSED = frozenset({"TenLinhVuc", "TaiKhoanDuocXacThucVoiVNeID", "NoiNopHoSo",
                            *PERSONAL})
DOCUMENT_COLUMNS = (
    "Message", "DocumentId", "FromOrganId", "ToOrganIds", "SenderOrganId", "CodeNumber",
    "CodeNotation", "DocumentType", "DueDate", "Timestamp", "StatusCode", "AttachmentCount",
    "AttachmentBytes",
)
DOCUMENT_UNUSED = frozenset({"Signed"})  # a declaration, not the attachments' bytes
DOCUMENT_REQUIRED = ("Message", "DocumentId", "FromOrganId", "Timestamp")
EVALUATION_COLUMNS = ("MaHoSo", "DonViXuLy", *EVALUATION_FIELDS)
EVALUATION_REQUIRED = ("MaHoSo", "DonViXuLy", "NgayDanhGia")
# kind -> (its columns, the required ones, the ones read then dropped)
COLUMNS: dict["ImportKind", tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]] = {}
FIELD = re.compile(r"^([\w./\[\]-]+): ")


class FileRefused(ValueError):
    """The file cannot be imported at all (format, header); the message says why."""


@dataclass(frozen=True)
class Rejection:
    row: int
    field: str
    reason: str


@dataclass
class Report:
    rows: int = 0
    events: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.rows - len({r.row for r in self.rejected})


def rejection(row: int, exc: ValueError) -> Rejection:
    reason = refusal_reason(exc)
    found = FIELD.match(reason)
    return Rejection(row, found.group(1) if found else "-", reason)


# --- reading the file -------------------------------------------------------------------------
def cell_text(value: Any, kind: ImportKind) -> str:
    """A cell as the text the mappings read (XLSX cells can be numbers or dates)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        moment = value if isinstance(value, datetime) else datetime.combine(value, time())
        return moment.strftime("%Y-%m-%d %H:%M:%S" if kind is ImportKind.DOCUMENTS
                               else "%Y%m%d%H%M%S")
    return str(value).strip()


def table_rows(path: Path, sheet: str | None) -> tuple[Iterator[Sequence[Any]], int | None]:
    """The rows of the file (header first) and, when known, about how many there are."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        with warnings.catch_warnings():  # style notes of other tools' files: not our concern
            warnings.simplefilter("ignore", UserWarning)
            try:
                book = load_workbook(path, read_only=True, data_only=True)
            except Exception as exc:  # zipfile, KeyError, XML errors: not a workbook
                raise FileRefused(f"{path.name}: not a readable XLSX workbook"
                                   f" ({type(exc).__name__})") from None
        if sheet is not None and sheet not in book.sheetnames:
            raise FileRefused(f"--sheet {sheet!r}: the workbook has {book.sheetnames}")
        ws = book[sheet] if sheet is not None else book.worksheets[0]

        def cells() -> Iterator[Sequence[Any]]:
            try:
                yield from ws.iter_rows(values_only=True)
            finally:
                book.close()  # read-only mode keeps the file open until then

        return cells(), ws.max_row
    if suffix != ".csv":
        raise FileRefused(f"{path.name}: .csv or .xlsx expected")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"{path.name}: not UTF-8 (byte {exc.start}); export as CSV UTF-8")\
            from None
    return csv.reader(io.StringIO(text, newline="")), \
        sum(1 for line in text.splitlines() if line.strip())


def records(path: Path, kind: ImportKind, sheet: str | None = None
            ) -> tuple[Iterator[dict[str, Any]], int | None]:
    """`{"file", "row", "values"}` per non-empty row (personal columns dropped), and a row
    count estimate for the progress bar; FileRefused for a file or header that cannot be."""
    rows, total = table_rows(path, sheet)
    header = [cell_text(c, kind) for c in next(rows, [])]
    known, required, unused = COLUMNS[kind]
    named = [h for h in header if h]
    unknown = [h for h in named if h not in known and h not in unused]
    if unknown:
        raise FileRefused(f"unknown columns {unknown}; the {kind} columns are"
                           f" {', '.join(known)} (see `ioc import --template {kind}`)")
    missing = [c for c in required if c not in named]
    if missing:
        raise FileRefused(f"missing columns {missing} (required: {', '.join(required)})")
    twice = sorted({h for h in named if named.count(h) > 1})
    if twice:
        raise FileRefused(f"columns given twice: {twice}")
    keep = [(i, h) for i, h in enumerate(header) if h in known]

    def read() -> Iterator[dict[str, Any]]:
        for number, row in enumerate(rows, start=2):
            cells = list(row)
            values = {h: cell_text(cells[i], kind) if i < len(cells) else "" for i, h in keep}
            if any(values.values()):
                yield {"file": path.name, "row": number,
                       "values": {h: v or None for h, v in values.items()}}

    return read(), (total - 1 if total else None)


# --- rows into the mappings' records ----------------------------------------------------------
def dossier_record(values: Mapping[str, str | None]) -> dict[str, Any]:
    """A dossier row as the sync payload record the portal mapping reads."""
    record: dict[str, Any] = {k: v for k, v in values.items()
                              if k not in ("DanhSachLePhi", "ThoiDiemXuLy")}
    fees = values.get("DanhSachLePhi")
    if fees is not None:
        if fees.isdigit():
            record["DanhSachLePhi"] = [{}] * int(fees)
        else:
            try:
                record["DanhSachLePhi"] = json.loads(fees)
            except ValueError:
                raise ValueError(f"DanhSachLePhi: a number of fees or a JSON list expected,"
                                 f" not {fees!r}") from None
    step = values.get("ThoiDiemXuLy")
    if step is not None:
        parse_time(step, "ThoiDiemXuLy")  # a bad one must not fall back to NgayTiepNhan unseen
        record["tienTrinhDongBo"] = [{"ThoiDiemXuLy": step}]
    return record


def _count(values: Mapping[str, str | None], name: str) -> int | None:
    value = values.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise ValueError(f"{name}: a whole number expected, not {value!r}")
    return int(value)


def document_fields(values: Mapping[str, str | None]) -> tuple[str, dict[str, Any]]:
    """A document row as (message kind, the fields the edXML parser would have read)."""
    def required(name: str) -> str:
        value = values.get(name)
        if value is None:
            raise ValueError(f"{name}: missing")
        return value

    message = required("Message").lower()
    common = {"document_id": required("DocumentId"), "from_organ_id": required("FromOrganId"),
              "occurred_at": required("Timestamp"), "occurred_at_field": "Timestamp"}
    if message == "status":
        return message, {**common, "sender_organ_id": values.get("SenderOrganId"),
                         "owner_name": None, "status": required("StatusCode")}
    if message != "document":
        raise ValueError(f"Message: 'document' or 'status' expected, not {message!r}")
    to = [t.strip() for t in (values.get("ToOrganIds") or "").split(";") if t.strip()]
    code = "/".join(v for v in (values.get("CodeNumber"), values.get("CodeNotation")) if v)
    return message, {**common, "to": to, "to_organ_id": to[0] if len(to) == 1 else None,
                     "names": {}, "code_notation": code or None,
                     "document_type": values.get("DocumentType"),
                     "deadline": values.get("DueDate"),
                     "attachment_count": _count(values, "AttachmentCount"),
                     "attachment_bytes": _count(values, "AttachmentBytes"),
                     "signed": None}


# --- the importers: connectors whose source is a file -----------------------------------------
class ImportOptions(ConnectorOptions):
    """`agencies`, `province_code`, `batch_size`... (`IOC_<NAME>_*` or `--config`)."""


class DocumentImportOptions(ImportOptions):
    own_organ_ids: list[str] = Field(min_length=1, description=(
        "OrganIds of the agencies this IOC monitors (see connectors/mappings/edxml.py)."))


class FileImport(Connector):
    """A connector whose source is a file's rows: `fetch` reads the next rows, `map` notes
    each rejection for the report. A subclass maps a row with its kind's mapping."""

    Options = ImportOptions
    rows: Iterator[dict[str, Any]]
    on_batch: Callable[[int], None]  # rows done: for a progress bar
    report: Report

    def start(self, rows: Iterator[dict[str, Any]], on_batch: Callable[[int], None]) -> None:
        """Before `run` or `check`: the rows to import."""
        self.rows, self.on_batch, self.report = rows, on_batch, Report()

    def records_of(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        return [row]

    async def fetch(self, cursor: str | None) -> Batch:
        rows = list(islice(self.rows, self.options.batch_size))
        self.report.rows += len(rows)
        found = [r for row in rows for r in self.records_of(row)]
        self._batch_rows = len(rows)
        return Batch(found, None, more=bool(rows))  # no cursor: ids make a rerun harmless

    async def publish(self, records: Sequence[Any]) -> None:
        await super().publish(records)
        self.on_batch(self._batch_rows)

    def map(self, record: Any) -> Event | list[Event]:
        try:
            event = self.map_row(record)
        except ValueError as exc:
            noted = rejection(record["row"], exc)
            if self.report.rejected[-1:] != [noted]:  # a row's copies fail alike
                self.report.rejected.append(noted)
            raise
        self.report.events += len(event) if isinstance(event, list) else 1
        return event

    @abstractmethod
    def map_row(self, record: dict[str, Any]) -> Event | list[Event]:
        """One record of a row -> its event, with the kind's mapping (ValueError: rejected)."""

    def record_key(self, record: Any) -> str | None:
        return f"{record['file']}:{record['row']}"

    def check(self) -> Report:
        """A dry run: map every row, publish nothing."""
        for row in self.rows:
            self.report.rows += 1
            for record in self.records_of(row):
                with suppress(ValueError):  # noted by `map`, as in a real run
                    self.map(record)
            self.on_batch(1)
        return self.report


class DossierImport(FileImport):
    name = "dvcqg_import"
    kind = Kind.DOSSIER
    personal_fields = PERSONAL

    def map_row(self, record: dict[str, Any]) -> Event | list[Event]:
        """The dossier, and its evaluation when the row carries one."""
        fields = dossier_record(record["values"])
        dossier = dossier_event(fields, self.places, self.name)
        if carries_evaluation(fields):
            return [dossier, evaluation_event(fields, self.places, self.name)]
        return dossier


class EvaluationImport(FileImport):
    name = "evaluation_import"
    kind = Kind.EVALUATION
    personal_fields = PERSONAL

    def map_row(self, record: dict[str, Any]) -> Event:
        return evaluation_event(record["values"], self.places, self.name)


class DocumentImport(FileImport):
    name = "edxml_import"
    kind = Kind.DOCUMENT
    Options = DocumentImportOptions
    options: DocumentImportOptions

    def records_of(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """One record per copy of ours (like an edXML file), or one saying why not."""
        text = json.dumps(row["values"], sort_keys=True, ensure_ascii=False)
        base = {**row, "sha256": hashlib.sha256(text.encode()).hexdigest()}
        own = self.options.own_organ_ids
        try:
            message, fields = document_fields(row["values"])
            copies = document_records(fields, own) if message == "document" \
                else status_records(fields, own)
        except ValueError as exc:
            return [{**base, "error": str(exc)}]
        return [{**base, **copy} for copy in copies]

    def map_row(self, record: dict[str, Any]) -> Event:
        if record.get("error"):
            raise ValueError(record["error"])
        return document_event(record, self.places, self.name)


IMPORTERS: dict[ImportKind, type[FileImport]] = {
    ImportKind.DOSSIERS: DossierImport, ImportKind.DOCUMENTS: DocumentImport,
    ImportKind.EVALUATIONS: EvaluationImport}
COLUMNS.update({
    ImportKind.DOSSIERS: (DOSSIER_COLUMNS, DOSSIER_REQUIRED, DOSSIER_UNUSED),
    ImportKind.DOCUMENTS: (DOCUMENT_COLUMNS, DOCUMENT_REQUIRED, DOCUMENT_UNUSED),
    ImportKind.EVALUATIONS: (EVALUATION_COLUMNS, EVALUATION_REQUIRED, PERSONAL)})


def template(kind: ImportKind) -> str:
    """The CSV header line of a kind."""
    return ",".join(COLUMNS[kind][0]) + "\n"


def importer(settings: Settings, kind: ImportKind,
             options: Mapping[str, Any] | None = None) -> FileImport:
    return IMPORTERS[kind](settings, options)
