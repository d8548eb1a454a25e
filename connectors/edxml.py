"""Documents from edXML (QCVN 102:2016) messages dropped as files into an inbox directory.

The document interchange axis (or the agency's document-management system) writes one
message per `*.xml` file into `inbox`. Each poll reads the oldest files first (modification
time, then name), at most `batch_size` of them. Two message kinds are read, namespaced
(`edXML:` prefix) or in the default namespace alike; unknown extra elements are ignored:

- the *document message* `edXML > edXMLEnvelope > edXMLHeader > MessageHeader`:
  `From/OrganId`, `To/OrganId`, `DocumentId`, `Code` (`CodeNumber/CodeNotation`),
  `DocumentType/Type`, `DueDate` (the deadline: the end of that day, local time), the time
  of the first `TraceHeaderList/TraceHeader/Timestamp` (`yyyy/MM/dd HH:mm:ss`, else
  `PromulgationInfo/PromulgationDate`) as the event time, the attachment count (manifest
  `Reference`s) and size (decoded size of `AttachmentEncoded`, computed from the base64
  length: the content is never decoded nor kept);
- the *status message*: SOAP header `Status` with `ResponseFor/DocumentId`, `From/OrganId`
  (who reports), `StatusCode`, `Timestamp` (`dd/MM/yyyy HH:mm:ss`, local time UTC+7).

Only metadata goes into events: never the subject, attachment content or people's names
(`SignerInfo/FullName`, `StaffInfo/Staff`).

**Signed**: a document is digitally signed when one of its manifest references has an
attachment name containing `.signed.` or ending in `.p7s`, or a `Description` mentioning
"ký số" (digital signature) or "signed"; False when it has references and none is; None
when it has none.

**Document identity.** The sender's copy and each receiver's copy of a document share one
`DocumentId`; the monitor keeps them apart. With `own_organ_ids` (the agencies this IOC
monitors): a document message `To` one of ours is an *incoming* copy keyed
`<DocumentId>@<receiver OrganId>` (one per receiver of ours); `From` one of ours, the
*outgoing* copy keyed `<DocumentId>`. A message between two of our agencies gives both. A
status message `From` one of ours is about our incoming copy (`<DocumentId>@<From OrganId>`);
one from another agency about a document we sent (`ResponseFor/OrganId` ours) updates our
outgoing copy (`<DocumentId>`, so with several receivers the latest status wins). A message
that concerns none of our agencies cannot be mapped. The event's agency is the copy's owner.

**Event ids** are a UUIDv5 of the file's SHA-256, the message kind and the copy key: reading
the same file again publishes the same ids (the worker drops repeats).

**Files after publishing.** The base class stores the cursor only after the broker
acknowledged a batch; the cursor is `{"pending": [[file name, "processed" | "failed",
reason], ...]}`, the files of the last acknowledged batch. The next `fetch` first moves
them to `processed/` or `failed/` (reason beside it in `<name>.error.txt`), then reads new
files; after a batch `fetch` reports `more`, so `run(once=True)` ends with the inbox emptied.
A crash before the cursor is stored re-reads the files (same event ids); after it, the next
run moves them. A file that cannot be read, parsed (a DTD, entities, malformed XML, over
`max_file_bytes`) or mapped goes to the dead-letter topic (its metadata, never its content)
and to `failed/`.
"""

import asyncio
import hashlib
import json
import os
import re
import unicodedata
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID, uuid5
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from pydantic import Field

from connectors.base import Batch, Connector, ConnectorOptions, PermanentError, describe
from ioc.core.events import (
    Direction,
    DocumentEvent,
    DocumentPayload,
    DocumentStatus,
    Kind,
    implausible,
)

VIETNAM = timezone(timedelta(hours=7))  # edXML times: local time, no offset
EVENT_IDS = UUID("b6a0e3c2-5f0e-5c8b-9d4e-2f7a1c9e0d31")  # UUIDv5 namespace of this connector
SIGNED_NAME = re.compile(r"\.signed\.|\.p7s$", re.IGNORECASE)
SIGNED_TEXT = ("ký số", "signed")


class EdxmlOptions(ConnectorOptions):
    """Environment: `IOC_EDXML_INBOX`, `IOC_EDXML_OWN_ORGAN_IDS` (JSON list)..."""

    inbox: Path = Field(description="Directory the edXML files (*.xml) arrive in.")
    own_organ_ids: list[str] = Field(min_length=1, description=(
        "OrganIds of the agencies this IOC monitors: To one of them is incoming, From one of"
        " them outgoing."))
    processed_dir: Path | None = Field(None, description="Default: <inbox>/processed.")
    failed_dir: Path | None = Field(None, description="Default: <inbox>/failed.")
    max_file_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Larger files are refused.")


class EdxmlInboxConnector(Connector):
    name = "edxml"
    kind = Kind.DOCUMENT
    Options = EdxmlOptions
    # Never read into a record; listed so a dead letter could not carry them either.
    personal_fields = frozenset({"FullName", "Staff", "Subject"})
    options: EdxmlOptions

    statuses: ClassVar[dict[str, DocumentStatus]] = {s.value: s for s in DocumentStatus}

    @property
    def processed_dir(self) -> Path:
        return self.options.processed_dir or self.options.inbox / "processed"

    @property
    def failed_dir(self) -> Path:
        return self.options.failed_dir or self.options.inbox / "failed"

    async def open(self) -> None:
        if not self.options.inbox.is_dir():
            raise PermanentError(f"inbox {self.options.inbox} is not a directory")
        self.processed_dir.mkdir(parents=True, exist_ok=True)
        self.failed_dir.mkdir(parents=True, exist_ok=True)

    # --- reading -------------------------------------------------------------------------
    async def fetch(self, cursor: str | None) -> Batch:
        return await asyncio.to_thread(self.fetch_files, cursor)

    def fetch_files(self, cursor: str | None) -> Batch:
        """`fetch`, blocking: move the acknowledged files, then read the next ones."""
        pending = json.loads(cursor)["pending"] if cursor else []
        for name, destination, reason in pending:  # acknowledged: their files can move
            self._move(name, destination, reason)
        files = self.inbox_files()
        chosen = files[:self.options.batch_size]
        records: list[dict[str, Any]] = []
        moves: list[list[str | None]] = []
        for path in chosen:
            found = self.read_file(path)
            errors = []
            for record in found:
                try:
                    self.map(record)
                except ValueError as exc:
                    errors.append(describe(exc))
            records += found
            moves.append([path.name, "failed" if errors else "processed",
                          "; ".join(errors)[:2000] or None])
        if not chosen and not pending:
            return Batch([], cursor)
        return Batch(records, json.dumps({"pending": moves}, ensure_ascii=False),
                     more=bool(chosen))

    def inbox_files(self) -> list[Path]:
        """The regular `*.xml` files of the inbox, oldest first."""
        found = []
        with os.scandir(self.options.inbox) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".xml") and entry.is_file(follow_symlinks=False):
                    found.append((entry.stat().st_mtime_ns, entry.name))
        return [self.options.inbox / name for _, name in sorted(found)]

    def _move(self, name: str, destination: str, reason: str | None) -> None:
        source = self.options.inbox / name
        if not source.exists():
            return  # moved before a crash
        folder = self.failed_dir if destination == "failed" else self.processed_dir
        os.replace(source, folder / name)
        if reason:
            (folder / f"{name}.error.txt").write_text(reason + "\n", "utf-8")
        self.log.info("edxml.moved", file=name, to=destination)

    def read_file(self, path: Path) -> list[dict[str, Any]]:
        """The records of one file: one per copy of ours, or one saying why it is refused."""
        base: dict[str, Any] = {"file": path.name}
        try:
            size = path.stat().st_size
            base["bytes"] = size
            if size > self.options.max_file_bytes:
                return [{**base, "error": f"{size} bytes: over max_file_bytes"
                                          f" ({self.options.max_file_bytes})"}]
            data = path.read_bytes()
        except FileNotFoundError:
            return []  # taken away since the inbox was listed
        except OSError as exc:
            return [{**base, "error": f"cannot be read: {type(exc).__name__}: {exc}"}]
        return self.read_bytes(data, base)

    def read_bytes(self, data: bytes, base: dict[str, Any]) -> list[dict[str, Any]]:
        """The records of one message's bytes (a file's, or a request body's)."""
        base = {**base, "sha256": hashlib.sha256(data).hexdigest()}
        try:
            root = fromstring(data, forbid_dtd=True, forbid_entities=True,
                              forbid_external=True)
            return [{**base, **r} for r in self.parse(root)]
        except DefusedXmlException as exc:
            return [{**base, "error": f"refused XML ({type(exc).__name__}): {exc}"}]
        except ParseError as exc:
            return [{**base, "error": f"not well-formed XML: {exc}"}]
        except ValueError as exc:
            return [{**base, "error": str(exc)}]

    def parse(self, root: Element) -> list[dict[str, Any]]:
        """A parsed message -> its records (metadata of the copies of ours)."""
        if local(root.tag) == "edXML":
            header = path_of(root, "edXMLEnvelope", "edXMLHeader", "MessageHeader")
            if header is None:
                raise ValueError("edXMLEnvelope/edXMLHeader/MessageHeader: missing")
            return self.document_records(document_fields(root, header))
        status = first(root, "Status") if local(root.tag) == "Envelope" else None
        if status is None:
            raise ValueError(f"<{local(root.tag)}> is neither an edXML document message nor a"
                             " SOAP status message")
        return self.status_records(status_fields(status))

    def document_records(self, fields: dict[str, Any]) -> list[dict[str, Any]]:
        """A document message's fields -> one record per copy of ours (see the module doc)."""
        own = set(self.options.own_organ_ids)
        copies = [("outgoing", fields["from_organ_id"])] \
            if fields["from_organ_id"] in own else []
        copies += [("incoming", to) for to in fields.pop("to") if to in own]
        if not copies:
            raise ValueError(f"neither From ({fields['from_organ_id']}) nor To is one of"
                             " own_organ_ids")
        names = fields.pop("names")
        return [{"message": "document", "copy": copy, "owner": owner,
                 "fields": {**fields, "owner_name": names.get(owner),
                            "to_organ_id": owner if copy == "incoming"
                            else fields["to_organ_id"]}} for copy, owner in copies]

    def status_records(self, fields: dict[str, Any]) -> list[dict[str, Any]]:
        """A status message's fields -> the record of the copy of ours it is about."""
        own = set(self.options.own_organ_ids)
        if fields["from_organ_id"] in own:
            copy, owner = "incoming", fields["from_organ_id"]
        elif fields["sender_organ_id"] in own:
            copy, owner = "outgoing", fields["sender_organ_id"]
        else:
            raise ValueError(f"the status is from {fields['from_organ_id']} about a document of"
                             f" {fields['sender_organ_id']}: neither is one of own_organ_ids")
        return [{"message": "status", "copy": copy, "owner": owner, "fields": fields}]

    def record_key(self, record: Any) -> str | None:
        if not isinstance(record, dict):
            return None
        document_id = (record.get("fields") or {}).get("document_id")
        return document_id or record.get("file")

    # --- mapping -------------------------------------------------------------------------
    def map(self, record: Any) -> DocumentEvent:
        if not isinstance(record, dict):
            raise ValueError(f"a record is a parsed file (dict), not {type(record).__name__}")
        if record.get("error"):
            raise ValueError(f"{record.get('file')}: {record['error']}")
        f, copy, owner = record["fields"], record["copy"], record["owner"]
        if not f.get("document_id"):
            raise ValueError("DocumentId: missing")
        entity = f["document_id"] if copy == "outgoing" else f"{f['document_id']}@{owner}"
        unit, agency = self.place(owner, f.get("owner_name"))  # OrganId
        if record["message"] == "status":
            code = f.get("status")
            if code not in self.statuses:
                raise ValueError(f"StatusCode: {code!r} is not an edXML status code")
            payload = DocumentPayload(document_id=entity, status=self.statuses[code],
                                      direction=Direction(copy))
        else:
            payload = DocumentPayload(
                document_id=entity, direction=Direction(copy), signed=f["signed"],
                deadline=_date(f["deadline"], "DueDate", end_of_day=True),
                document_type=f["document_type"], code_notation=f["code_notation"],
                from_organ_id=f["from_organ_id"], to_organ_id=f["to_organ_id"],
                attachment_count=f["attachment_count"], attachment_bytes=f["attachment_bytes"])
        occurred_at = _date(f.get("occurred_at"), f["occurred_at_field"])
        event_id = uuid5(EVENT_IDS, f"{record['sha256']}:{record['message']}:{entity}")
        return DocumentEvent(event_id=event_id, source=self.name, occurred_at=occurred_at,
                             unit=unit, agency=agency, payload=payload)


# --- reading the XML (by local names: any namespace, or none) ----------------------------
def local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def first(element: Element, name: str) -> Element | None:
    """The first descendant (or self) named `name`."""
    return next((e for e in element.iter() if local(e.tag) == name), None)


def child(element: Element | None, name: str) -> Element | None:
    if element is None:
        return None
    return next((e for e in element if local(e.tag) == name), None)


def children(element: Element | None, name: str) -> list[Element]:
    return [] if element is None else [e for e in element if local(e.tag) == name]


def path_of(element: Element | None, *names: str) -> Element | None:
    for name in names:
        element = child(element, name)
    return element


def text(element: Element | None, *names: str, required: str | None = None) -> str | None:
    found = path_of(element, *names)
    value = (found.text or "").strip() if found is not None else ""
    if not value and required:
        raise ValueError(f"{required}: missing")
    return value or None


def document_fields(root: Element, header: Element) -> dict[str, Any]:
    from_id = text(header, "From", "OrganId", required="From/OrganId")
    names = {text(e, "OrganId"): text(e, "OrganName")
             for e in (child(header, "From"), *children(header, "To"))}
    to = [t for t in (text(e, "OrganId") for e in children(header, "To")) if t]
    number, notation = text(header, "Code", "CodeNumber"), text(header, "Code", "CodeNotation")
    code = "/".join(p for p in (number, notation) if p) or None
    trace = path_of(root, "edXMLEnvelope", "edXMLHeader", "TraceHeaderList")
    stamps = [text(t, "Timestamp") for t in children(trace, "TraceHeader")]
    stamp = next((s for s in stamps if s), None)
    promulgated = text(header, "PromulgationInfo", "PromulgationDate")
    references = children(path_of(root, "edXMLEnvelope", "edXMLBody", "edXMLManifest"),
                          "Reference")
    encoded = [text(a, "ContentTransferEncoded") or ""
               for a in children(child(root, "AttachmentEncoded"), "Attachment")]
    return {
        "document_id": text(header, "DocumentId", required="DocumentId"),
        "from_organ_id": from_id,
        "to": to,
        "to_organ_id": to[0] if len(to) == 1 else None,
        "names": names,
        "code_notation": code,
        "document_type": text(header, "DocumentType", "Type"),
        "deadline": text(header, "DueDate"),
        "occurred_at": stamp or promulgated,
        "occurred_at_field": "TraceHeader/Timestamp" if stamp else "PromulgationDate",
        "attachment_count": len(references),
        "attachment_bytes": sum(map(base64_size, encoded)) if encoded else None,
        "signed": any(map(signed, references)) if references else None,
    }


def status_fields(status: Element) -> dict[str, Any]:
    return {
        "document_id": text(status, "ResponseFor", "DocumentId",
                            required="ResponseFor/DocumentId"),
        "sender_organ_id": text(status, "ResponseFor", "OrganId"),
        "from_organ_id": text(status, "From", "OrganId", required="From/OrganId"),
        "owner_name": text(status, "From", "OrganName"),
        "status": text(status, "StatusCode", required="StatusCode"),
        "occurred_at": text(status, "Timestamp", required="Timestamp"),
        "occurred_at_field": "Timestamp",
    }


def signed(reference: Element) -> bool:
    name = text(reference, "AttachmentName") or ""
    description = unicodedata.normalize("NFC", (text(reference, "Description") or "").lower())
    return bool(SIGNED_NAME.search(name)) or any(t in description for t in SIGNED_TEXT)


def base64_size(value: str) -> int:
    """Decoded size of base64 text, without decoding it."""
    compact = "".join(value.split())
    return len(compact) * 3 // 4 - len(compact) + len(compact.rstrip("="))


DATE_FORMATS = ("%d/%m/%Y %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%d/%m/%Y", "%Y/%m/%d", "%Y-%m-%d")


def _date(value: str | None, name: str, end_of_day: bool = False) -> datetime | None:
    """edXML local times (UTC+7 when there is no offset); a bare date at `end_of_day`."""
    if value is None:
        if end_of_day:
            return None
        raise ValueError(f"{name}: missing")
    for fmt in DATE_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        if end_of_day and "%H" not in fmt:
            parsed = datetime.combine(parsed.date(), time(23, 59, 59))
        return _plausible(parsed.replace(tzinfo=VIETNAM), value, name)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a date (dd/MM/yyyy HH:mm:ss)") from None
    return _plausible(parsed if parsed.tzinfo else parsed.replace(tzinfo=VIETNAM), value, name)


def _plausible(parsed: datetime, value: str, name: str) -> datetime:
    """The one date rule of the contracts (ioc/core/events.py), said with the edXML field."""
    reason = implausible(parsed)
    if reason:
        raise ValueError(f"{name}: {value!r} is {reason}")
    return parsed
