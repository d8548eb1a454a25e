"""The edXML inbox connector, on real files in a temporary inbox, against a real broker, a real
PostgreSQL and (for the state and KPIs) a real `ioc worker`."""

import asyncio
import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from connectors.edxml import EdxmlInboxConnector
from ioc.core.events import DocumentEvent, parse_event
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from tests.support.checks import duplicates
from tests.support.edxml import DATA, DOC_ID, DOCUMENT, PERSONAL, RECEIVER, SENDER, STATUS
from tests.support.services import WorkerProcess, query, wait_until
from tests.support.topics import read_topic

HOSTILE = ("billion-laughs.xml", "external-entity.xml")
VN = timezone(timedelta(hours=7))
at = datetime.fromisoformat


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def drop(inbox: Path, *names: str) -> None:
    """Copy files into the inbox, each one second older than the next (oldest first)."""
    base = datetime.now().timestamp() - 100
    for i, name in enumerate(names):
        target = inbox / name
        shutil.copyfile(DATA / name, target)
        os.utime(target, (base + i, base + i))


def connector(settings: Settings, inbox: Path, own: tuple[str, ...] = (RECEIVER,),
              **options: Any) -> EdxmlInboxConnector:
    return EdxmlInboxConnector(settings, {"inbox": str(inbox), "own_organ_ids": list(own),
                                          "poll_seconds": 0.1, **options})


def events_of(c: EdxmlInboxConnector, name: str) -> list[DocumentEvent]:
    return [c.map(r) for r in c.read_file(DATA / name)]


def comparable(event: DocumentEvent) -> dict[str, Any]:
    return event.model_dump(exclude={"event_id", "ingested_at"})


UNIT = {"province_code": "25", "commune_code": None, "former_province_code": None,
        "former_district_code": None, "former_commune_code": None}


# --- mapping -----------------------------------------------------------------------------------
def test_the_sample_document_maps_to_the_expected_events(settings: Settings, inbox: Path) -> None:
    # Only the ward is ours: one incoming copy.
    [incoming] = events_of(connector(settings, inbox), DOCUMENT)
    assert incoming.source == "edxml"
    assert incoming.occurred_at == at("2026-11-16T02:41:07+00:00")  # the sender's trace
    assert incoming.unit.model_dump() == UNIT
    assert incoming.agency.model_dump() == {"code": RECEIVER,
                                            "name": "Ủy ban nhân dân phường Nông Trang"}
    expected = {
        "document_id": f"{DOC_ID}@{RECEIVER}",
        "status": None,
        "direction": "incoming",
        # Named 1482-SKHCN-CDS.signed.pdf, described "Văn bản ký số": its bytes, a PDF
        # without a signature field, decide.
        "signed": False,
        "signature_intact": None,
        "signed_at": None,
        "deadline": at("2026-11-25T16:59:59+00:00"),  # the end of the due day, UTC+7
        "document_type": "1",
        "code_notation": "1482/SKHCN-CĐS",
        "from_organ_id": SENDER,
        "to_organ_id": RECEIVER,
        "attachment_count": 1,
        "attachment_bytes": 82,  # the decoded PDF; its content is never kept
    }
    assert incoming.payload.model_dump() == expected
    raw = incoming.model_dump_json().encode()
    assert not any(v in raw for v in PERSONAL)
    assert b"JVBERi0x" not in raw
    assert parse_event(raw) == incoming

    # Both agencies ours: the sender's (outgoing) copy too, keyed by the bare DocumentId.
    both = connector(settings, inbox, own=(SENDER, RECEIVER))
    outgoing, again = events_of(both, DOCUMENT)
    assert comparable(again) == comparable(incoming)
    assert again.event_id == incoming.event_id  # the same file, the same copy: the same id
    assert outgoing.agency.model_dump() == {"code": SENDER,
                                            "name": "Sở Khoa học và Công nghệ tỉnh Phú Thọ"}
    assert outgoing.payload.model_dump() == {**expected, "document_id": DOC_ID,
                                             "direction": "outgoing"}
    assert outgoing.event_id != incoming.event_id

    # Neither ours: refused with the reason.
    with pytest.raises(ValueError, match="own_organ_ids"):
        events_of(connector(settings, inbox, own=("000.00.99.H25",)), DOCUMENT)


def test_the_sample_status_maps_to_the_expected_event(settings: Settings, inbox: Path) -> None:
    [status] = events_of(connector(settings, inbox), STATUS)
    assert status.occurred_at == at("2026-11-18T07:05:32+00:00")  # 18/11/2026 14:05:32 UTC+7
    assert status.agency.model_dump() == {"code": RECEIVER,
                                          "name": "Ủy ban nhân dân phường Nông Trang"}
    assert status.unit.model_dump() == UNIT
    assert status.payload.model_dump() == {
        "document_id": f"{DOC_ID}@{RECEIVER}", "status": "05", "direction": "incoming",
        "signed": None, "signature_intact": None, "signed_at": None,  # no attachments: unknown
        "deadline": None, "document_type": None, "code_notation": None,
        "from_organ_id": None, "to_organ_id": None, "attachment_count": None,
        "attachment_bytes": None}
    assert not any(v in status.model_dump_json().encode() for v in PERSONAL)

    # Seen from the sender: the receiver's status updates our outgoing copy.
    [sent] = events_of(connector(settings, inbox, own=(SENDER,)), STATUS)
    assert (sent.payload.document_id, sent.payload.direction, sent.agency.code) == \
        (DOC_ID, "outgoing", SENDER)


@pytest.mark.parametrize(("sample", "variant"), [
    (DOCUMENT, "document-incoming-default-ns.xml"),
    (STATUS, "status-05-in-progress-default-ns.xml"),
    (DOCUMENT, "document-extra-elements.xml"),  # unknown elements, no SignerInfo/OtherInfo
])
def test_variants_give_the_same_events(settings: Settings, inbox: Path, sample: str,
                                       variant: str) -> None:
    c = connector(settings, inbox, own=(SENDER, RECEIVER))
    assert "edXML:" not in (DATA / variant).read_text("utf-8") or "extra" in variant
    expected, found = events_of(c, sample), events_of(c, variant)
    assert [comparable(e) for e in found] == [comparable(e) for e in expected]
    assert {e.event_id for e in found}.isdisjoint(e.event_id for e in expected)  # other files


@pytest.mark.parametrize("name", HOSTILE)
def test_entities_and_dtds_are_refused_never_expanded(settings: Settings, inbox: Path,
                                                      name: str) -> None:
    c = connector(settings, inbox)
    [record] = c.read_file(DATA / name)
    assert set(record) == {"file", "bytes", "sha256", "error"}
    assert "DTDForbidden" in record["error"]
    assert "lollol" not in json.dumps(record) and "root:" not in json.dumps(record)
    with pytest.raises(ValueError, match=f"{name}: refused XML"):
        c.map(record)


def test_files_over_the_size_limit_are_refused_unread(settings: Settings, inbox: Path) -> None:
    c = connector(settings, inbox, max_file_bytes=1000)
    [record] = c.read_file(DATA / DOCUMENT)
    assert record == {"file": DOCUMENT, "bytes": (DATA / DOCUMENT).stat().st_size,
                      "error": f"{(DATA / DOCUMENT).stat().st_size} bytes: over"
                               " max_file_bytes (1000)"}
    with pytest.raises(ValueError, match="over max_file_bytes"):
        c.map(record)


@pytest.mark.parametrize(("old", "new", "reason"), [
    ("<edXML:StatusCode>05</edXML:StatusCode>", "<edXML:StatusCode>42</edXML:StatusCode>",
     "StatusCode: '42' is not an edXML status code"),
    ("<edXML:Timestamp>18/11/2026 14:05:32</edXML:Timestamp>",
     "<edXML:Timestamp>yesterday</edXML:Timestamp>", "Timestamp: 'yesterday' is not a date"),
    ("<edXML:DocumentId>000.00.12.H25,2026/11/16,1482/SKHCN-CĐS</edXML:DocumentId>", "",
     "ResponseFor/DocumentId: missing"),
    ("</SOAP-ENV:Envelope>", "", "not well-formed XML"),
])
def test_broken_status_messages_say_why(settings: Settings, inbox: Path, old: str, new: str,
                                        reason: str) -> None:
    source = (DATA / STATUS).read_text("utf-8")
    assert old in source
    (inbox / "broken.xml").write_text(source.replace(old, new), "utf-8")
    c = connector(settings, inbox)
    with pytest.raises(ValueError, match=reason):
        [c.map(r) for r in c.read_file(inbox / "broken.xml")]


def test_files_move_only_once_their_batch_is_acknowledged(settings: Settings,
                                                          inbox: Path) -> None:
    drop(inbox, STATUS, DOCUMENT, HOSTILE[0])
    c = connector(settings, inbox, batch_size=2)
    asyncio.run(c.open())
    first = asyncio.run(c.fetch(None))
    assert [r["file"] for r in first.records] == [STATUS, DOCUMENT]  # oldest first
    assert first.more and sorted(p.name for p in inbox.glob("*.xml")) == sorted(
        [STATUS, DOCUMENT, HOSTILE[0]])  # nothing moves before the acks
    second = asyncio.run(c.fetch(first.cursor))  # the cursor is stored after the acks
    assert [r["file"] for r in second.records] == [HOSTILE[0]]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted([STATUS, DOCUMENT])
    last = asyncio.run(c.fetch(second.cursor))
    assert (last.records, last.more) == ([], False)
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == \
        [HOSTILE[0], f"{HOSTILE[0]}.error.txt"]
    assert "DTDForbidden" in (inbox / "failed" / f"{HOSTILE[0]}.error.txt").read_text()
    assert asyncio.run(c.fetch(last.cursor)) == last.__class__([], last.cursor)


# --- publishing ----------------------------------------------------------------------------
def test_the_inbox_becomes_documents_and_kpis(prepared: Settings, inbox: Path,
                                              tmp_path: Path) -> None:
    drop(inbox, DOCUMENT, STATUS, "document-extra-elements.xml", *HOSTILE)
    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        asyncio.run(connector(prepared, inbox, own=(SENDER, RECEIVER)).run(once=True))

        assert list(inbox.glob("*.xml")) == []
        assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted(
            [DOCUMENT, STATUS, "document-extra-elements.xml"])
        assert sorted(p.name for p in (inbox / "failed").glob("*.xml")) == sorted(HOSTILE)

        messages = read_topic(prepared, "documents")
        events = [parse_event(m.value) for m in messages]
        # The document twice (two copies of ours, two files), its status once.
        assert sorted(e.payload.document_id for e in events) == sorted(
            [DOC_ID, DOC_ID, f"{DOC_ID}@{RECEIVER}", f"{DOC_ID}@{RECEIVER}",
             f"{DOC_ID}@{RECEIVER}"])
        assert all(m.key == e.entity_id.encode() for m, e in zip(messages, events, strict=True))
        assert len({e.event_id for e in events}) == 5
        assert not any(v in m.value for m in messages for v in PERSONAL)

        letters = read_topic(prepared, "dead_letters")
        assert len(letters) == 2
        for letter in letters:
            headers = {k: v.decode() for k, v in letter.headers}
            assert headers["ioc.reason"] == "unmappable"
            assert headers["ioc.source.connector"] == "edxml"
            assert "refused XML (DTDForbidden)" in headers["ioc.error"]
            body = json.loads(letter.value)
            assert body["file"] in HOSTILE and letter.key == body["file"].encode()
            assert b"lollol" not in letter.value and b"root:" not in letter.value

        wait_until(lambda: query(prepared, "SELECT sum(events) FROM documents")[0][0] == 5, 90,
                   "5 document events stored", worker.log)

        # Again: nothing new in the inbox, nothing published, the cursor stays.
        cursor = query(prepared, "SELECT cursor FROM connector_cursors"
                                 " WHERE connector = 'edxml'")
        asyncio.run(connector(prepared, inbox, own=(SENDER, RECEIVER)).run(once=True))
        assert len(read_topic(prepared, "documents")) == 5
        assert query(prepared, "SELECT cursor FROM connector_cursors"
                               " WHERE connector = 'edxml'") == cursor

        # A file delivered again publishes the same event ids: the worker drops the repeats.
        shutil.copyfile(inbox / "processed" / DOCUMENT, inbox / DOCUMENT)
        asyncio.run(connector(prepared, inbox, own=(SENDER, RECEIVER)).run(once=True))
        replayed = [parse_event(m.value) for m in read_topic(prepared, "documents")]
        assert len(replayed) == 7
        assert {e.event_id for e in replayed} == {e.event_id for e in events}
        assert (inbox / "processed" / DOCUMENT).exists() and not (inbox / DOCUMENT).exists()
        wait_until(lambda: duplicates(prepared) == 2, 60, "2 duplicates dropped", worker.log)
        assert query(prepared, "SELECT sum(events) FROM documents")[0][0] == 5
        assert query(prepared, "SELECT count(*) FROM events WHERE kind = 'document'")[0][0] == 5
    finally:
        worker.stop()

    rows = query(prepared, "SELECT document_id, direction, status, signed, deadline,"
                           " agency_code, from_organ_id, to_organ_id, attachment_count"
                           " FROM documents ORDER BY document_id")
    deadline = at("2026-11-25T23:59:59+07:00")
    assert rows == [
        (DOC_ID, "outgoing", None, False, deadline, SENDER, SENDER, RECEIVER, 1),
        (f"{DOC_ID}@{RECEIVER}", "incoming", "05", False, deadline, RECEIVER, SENDER,
         RECEIVER, 1),
    ]
    kpis = read_kpis(prepared)["documents"]
    overdue = int(datetime.now(VN) > deadline)
    assert {k: kpis[k] for k in ("documents", "incoming", "outgoing", "outgoing_signed",
                                 "completed", "backlog", "backlog_overdue", "signed_rate")} \
        == {"documents": 2, "incoming": 1, "outgoing": 1, "outgoing_signed": 0, "completed": 0,
            "backlog": 1, "backlog_overdue": overdue, "signed_rate": 0.0}


