"""edXML (QCVN 102:2016) messages -> `DocumentEvent`s: the bytes of one message in, events out.

Two message kinds are read, namespaced (`edXML:` prefix) or in the default namespace alike;
unknown extra elements are ignored. Bytes are parsed without DTDs or entities (defusedxml):

- the *document message* `edXML > edXMLEnvelope > edXMLHeader > MessageHeader`:
  `From/OrganId`, `To/OrganId`, `DocumentId`, `Code` (`CodeNumber/CodeNotation`),
  `DocumentType/Type`, `DueDate` (the deadline: the end of that day, local time), the time
  of the first `TraceHeaderList/TraceHeader/Timestamp` (`yyyy/MM/dd HH:mm:ss`, else
  `PromulgationInfo/PromulgationDate`) as the event time, the attachment count (manifest
  `Reference`s) and size (decoded size of `AttachmentEncoded`, computed from the base64
  length), and whether they are signed (below);
- the *status message*: SOAP header `Status` with `ResponseFor/DocumentId`, `From/OrganId`
  (who reports), `StatusCode`, `Timestamp` (`dd/MM/yyyy HH:mm:ss`, local time UTC+7).

Only metadata goes into events: never the subject, attachment content or people's names
(`SignerInfo/FullName`, `StaffInfo/Staff`).

**Signed** is decided from the attachments' bytes (`AttachmentEncoded`), decoded in memory
and read by `connectors/mappings/signatures.py` (PAdES PDF, CMS .p7s/.p7m, XML-DSig/XAdES),
never from their names or descriptions: `signed`, `signature_intact` and `signed_at` are kept,
the bytes are dropped. A message without attachment bytes (a status message, a manifest
whose files travel apart) leaves it unknown (None), never False.

**Document identity.** The sender's copy and each receiver's copy of a document share one
`DocumentId`; the monitor keeps them apart. With `own` (the OrganIds of the agencies this IOC
monitors): a document message `To` one of ours is an *incoming* copy keyed
`<DocumentId>@<receiver OrganId>` (one per receiver of ours); `From` one of ours, the
*outgoing* copy keyed `<DocumentId>`. A message between two of our agencies gives both. A
status message `From` one of ours is about our incoming copy (`<DocumentId>@<From OrganId>`);
one from another agency about a document we sent (`ResponseFor/OrganId` ours) updates our
outgoing copy (`<DocumentId>`, so with several receivers the latest status wins). A message
that concerns none of our agencies cannot be mapped. The event's agency is the copy's owner.

**Event ids** are a UUIDv5 of the message's SHA-256, the message kind and the copy key: the
same bytes read again (a file, a pushed body) give the same ids (the worker drops repeats).

Reading is in two steps so that a caller can see why a message is refused before mapping:
`message_records` gives one record per copy of ours (or one carrying `error`), and
`document_event` maps a record.
"""

import binascii
import hashlib
from base64 import b64decode
from collections.abc import Collection
from datetime import datetime, time, timedelta, timezone
from typing import Any
from uuid import UUID, uuid5
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from connectors.mappings.common import AgencyPlaces
from connectors.mappings.signatures import MAX_BYTES, document_verdict
from ioc.core.events import (
    Direction,
    DocumentEvent,
    DocumentPayload,
    DocumentStatus,
    implausible,
)

VIETNAM = timezone(timedelta(hours=7))  # edXML times: local time, no offset
EVENT_IDS = UUID("b6a0e3c2-5f0e-5c8b-9d4e-2f7a1c9e0d31")  # UUIDv5 namespace of document events
STATUSES = {s.value: s for s in DocumentStatus}


def message_records(data: bytes, base: dict[str, Any], own: Collection[str]
                    ) -> list[dict[str, Any]]:
    """The records of one message's bytes: `base` (where it came from) with the copy of ours
    each is about, or one record with the `error` that refuses the message."""
    base = {**base, "sha256": hashlib.sha256(data).hexdigest()}
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        return [{**base, **r} for r in parse_message(root, own)]
    except DefusedXmlException as exc:
        return [{**base, "error": f"refused XML ({type(exc).__name__}): {exc}"}]
    except ParseError as exc:
        return [{**base, "error": f"not well-formed XML: {exc}"}]
    except ValueError as exc:
        return [{**base, "error": str(exc)}]


def parse_message(root: Element, own: Collection[str]) -> list[dict[str, Any]]:
    """A parsed message -> its records (metadata of the copies of ours)."""
    if local(root.tag) == "edXML":
        header = path_of(root, "edXMLEnvelope", "edXMLHeader", "MessageHeader")
        if header is None:
            raise ValueError("edXMLEnvelope/edXMLHeader/MessageHeader: missing")
        return document_records(document_fields(root, header), own)
    status = first(root, "Status") if local(root.tag) == "Envelope" else None
    if status is None:
        raise ValueError(f"<{local(root.tag)}> is neither an edXML document message nor a"
                         " SOAP status message")
    return status_records(status_fields(status), own)


def document_records(fields: dict[str, Any], own: Collection[str]) -> list[dict[str, Any]]:
    """A document message's fields -> one record per copy of ours (see the module doc)."""
    copies = [("outgoing", fields["from_organ_id"])] if fields["from_organ_id"] in own else []
    copies += [("incoming", to) for to in fields.pop("to") if to in own]
    if not copies:
        raise ValueError(f"neither From ({fields['from_organ_id']}) nor To is one of"
                         " own_organ_ids")
    names = fields.pop("names")
    return [{"message": "document", "copy": copy, "owner": owner,
             "fields": {**fields, "owner_name": names.get(owner),
                        "to_organ_id": owner if copy == "incoming"
                        else fields["to_organ_id"]}} for copy, owner in copies]


def status_records(fields: dict[str, Any], own: Collection[str]) -> list[dict[str, Any]]:
    """A status message's fields -> the record of the copy of ours it is about."""
    if fields["from_organ_id"] in own:
        copy, owner = "incoming", fields["from_organ_id"]
    elif fields["sender_organ_id"] in own:
        copy, owner = "outgoing", fields["sender_organ_id"]
    else:
        raise ValueError(f"the status is from {fields['from_organ_id']} about a document of"
                         f" {fields['sender_organ_id']}: neither is one of own_organ_ids")
    return [{"message": "status", "copy": copy, "owner": owner, "fields": fields}]


def document_event(record: Any, places: AgencyPlaces, source: str) -> DocumentEvent:
    """One record of `message_records` -> its event; ValueError saying why it cannot be."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a parsed file (dict), not {type(record).__name__}")
    if record.get("error"):
        raise ValueError(f"{record.get('file')}: {record['error']}")
    f, copy, owner = record["fields"], record["copy"], record["owner"]
    if not f.get("document_id"):
        raise ValueError("DocumentId: missing")
    entity = f["document_id"] if copy == "outgoing" else f"{f['document_id']}@{owner}"
    unit, agency = places.place(owner, f.get("owner_name"))  # OrganId
    if record["message"] == "status":
        code = f.get("status")
        if code not in STATUSES:
            raise ValueError(f"StatusCode: {code!r} is not an edXML status code")
        payload = DocumentPayload(document_id=entity, status=STATUSES[code],
                                  direction=Direction(copy))
    else:
        payload = DocumentPayload(
            document_id=entity, direction=Direction(copy), signed=f["signed"],
            signature_intact=f.get("signature_intact"), signed_at=f.get("signed_at"),
            deadline=_date(f["deadline"], "DueDate", end_of_day=True),
            document_type=f["document_type"], code_notation=f["code_notation"],
            from_organ_id=f["from_organ_id"], to_organ_id=f["to_organ_id"],
            attachment_count=f["attachment_count"], attachment_bytes=f["attachment_bytes"])
    occurred_at = _date(f.get("occurred_at"), f["occurred_at_field"])
    event_id = uuid5(EVENT_IDS, f"{record['sha256']}:{record['message']}:{entity}")
    return DocumentEvent(event_id=event_id, source=source, occurred_at=occurred_at,
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
    # Every manifest reference is a file; one without bytes leaves "unsigned" undecided.
    missing = [None] * max(len(references) - len(encoded), 0)
    verdict = document_verdict([*map(decoded, encoded), *missing])
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
        "signed": verdict.signed,
        "signature_intact": verdict.intact,
        "signed_at": verdict.signed_at,
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


def decoded(value: str) -> bytes | None:
    """An attachment's bytes, in memory only; None when not base64 or over the size limit."""
    compact = "".join(value.split())
    if not compact or base64_size(compact) > MAX_BYTES:
        return None
    try:
        return b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


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
