"""The signed rate from the attachments, end to end: edXML messages carrying files signed for
the test under neutral names go through the inbox connector, the real broker and a real
`ioc worker` into PostgreSQL; the stored documents and the KPIs are checked against what the
test knows it signed."""

import asyncio
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from connectors.edxml import EdxmlInboxConnector
from ioc.core.kpis import read_kpis
from ioc.core.settings import Settings
from tests.support import signing
from tests.support.edxml import SENDER
from tests.support.services import WorkerProcess, query, wait_until

VN = timezone(timedelta(hours=7))
NEUTRAL = "Văn bản"  # as agencies describe their files: nothing says "signed"


def test_the_signed_rate_comes_from_the_attachments(prepared: Settings, tmp_path: Path) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    who = signing.throwaway_signer()
    pdf = signing.unsigned_pdf()
    signed_pdf = signing.signed_pdf(who)
    files = {  # number -> attachments (name, description, bytes or None: not sent)
        101: [("cong-van-101.pdf", NEUTRAL, signed_pdf)],
        102: [("cong-van-102.signed.pdf", "Văn bản ký số", pdf)],  # named signed, is not
        103: [("cong-van-103.dat", NEUTRAL,
               signing.cms(who, b"Noi dung 103", detached=False))],
        104: [("cong-van-104.pdf", NEUTRAL, pdf),
              ("cong-van-104.sig", NEUTRAL, signing.cms(who, pdf, detached=True))],
        105: [("quyet-dinh-105.xml", NEUTRAL, signing.signed_xml(who))],
        106: [("quyet-dinh-106.xml", NEUTRAL, signing.UNSIGNED_XML)],
        107: [("cong-van-107.pdf", NEUTRAL, signing.tampered(signed_pdf))],
        108: [("cong-van-108.pdf", NEUTRAL, None)],  # the manifest only
        109: [],  # no attachment at all
    }
    after = datetime.now(UTC) + timedelta(seconds=1)
    # What the test made: (signed, intact) per document; None: unknown.
    expected = {101: (True, True), 102: (False, None), 103: (True, True), 104: (True, True),
                105: (True, True), 106: (False, None), 107: (True, False),
                108: (None, None), 109: (None, None)}

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sent = datetime.now(VN).replace(microsecond=0) - timedelta(days=2)
    messages = [(f"doc-{n}.xml", signing.edxml_document(n, sent, a)) for n, a in files.items()]
    # Then a status message about document 101 (no attachments): it stays signed.
    messages.append(("status-101.xml", signing.edxml_status(101, sent, sent + timedelta(days=1))))
    base = datetime.now().timestamp() - 100
    for i, (name, data) in enumerate(messages):
        (inbox / name).write_bytes(data)
        os.utime(inbox / name, (base + i, base + i))

    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        asyncio.run(EdxmlInboxConnector(prepared, {
            "inbox": str(inbox), "own_organ_ids": [SENDER], "poll_seconds": 0.1,
        }).run(once=True))
        wait_until(lambda: query(prepared, "SELECT sum(events) FROM documents")[0][0]
                   == len(messages), 120, f"{len(messages)} document events stored", worker.log)
    finally:
        worker.stop()

    rows = query(prepared, "SELECT document_id, direction, status, signed, signature_intact,"
                           " signed_at FROM documents ORDER BY document_id")
    got = {int(r[0].rsplit(",", 1)[1].split("/")[0]): r[1:] for r in rows}
    assert set(got) == set(files)
    for number, (signed, intact) in expected.items():
        direction, _status, stored_signed, stored_intact, signed_at = got[number]
        assert (direction, stored_signed, stored_intact) == ("outgoing", signed, intact), number
        if signed:
            assert before <= signed_at <= after, number
        else:
            assert signed_at is None, number
    assert got[101][1] == "05"  # the status message arrived, and 101 is still signed

    known = [n for n, (s, _) in expected.items() if s is not None]
    counted = [n for n, (s, i) in expected.items() if s and i is not False]
    kpis = read_kpis(prepared)["documents"]
    assert (len(known), len(counted)) == (7, 4)
    assert {k: kpis[k] for k in ("outgoing", "outgoing_signed", "outgoing_signed_unknown",
                                 "signed_rate")} == {
        "outgoing": len(files), "outgoing_signed": len(counted),
        "outgoing_signed_unknown": len(files) - len(known),
        "signed_rate": round(100 * len(counted) / len(known), 2)}
