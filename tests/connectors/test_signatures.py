"""Signatures read from an attachment's bytes (connectors/mappings/signatures.py): files signed
for the test with a throwaway CA, their unsigned and tampered twins, hostile input; and the
edXML mapping deciding "signed" from them, never from names or descriptions."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from connectors.mappings.common import AgencyPlaces
from connectors.mappings.edxml import document_event, message_records
from connectors.mappings.signatures import MAX_BYTES, Verdict, attachment_verdict, document_verdict
from tests.support import signing
from tests.support.edxml import DATA, SENDER

VN = timezone(timedelta(hours=7))


@dataclass(frozen=True)
class Files:
    before: datetime  # the signing times lie between these (second precision)
    after: datetime
    pdf: bytes
    signed_pdf: bytes
    p7m: bytes
    p7s: bytes
    xml: bytes
    signed_xml: bytes


@pytest.fixture(scope="module")
def files() -> Files:
    before = datetime.now(UTC).replace(microsecond=0)
    who = signing.throwaway_signer()
    pdf = signing.unsigned_pdf()
    made = Files(before, before, pdf, signing.signed_pdf(who),
                 signing.cms(who, b"Noi dung cong van 103", detached=False),
                 signing.cms(who, pdf, detached=True), signing.UNSIGNED_XML,
                 signing.signed_xml(who))
    return Files(**{**made.__dict__, "after": datetime.now(UTC) + timedelta(seconds=1)})


def signed_between(verdict: Verdict, files: Files, intact: bool | None) -> None:
    assert (verdict.signed, verdict.intact) == (True, intact)
    assert verdict.signed_at is not None and files.before <= verdict.signed_at <= files.after


def test_each_kind_of_signature_is_read_from_the_bytes(files: Files) -> None:
    signed_between(attachment_verdict(files.signed_pdf), files, True)  # PAdES
    signed_between(attachment_verdict(files.p7m), files, True)  # CMS, content inside
    signed_between(attachment_verdict(files.signed_xml), files, True)  # XAdES
    # Detached: intact when its content is another attachment, unknown without it.
    signed_between(attachment_verdict(files.p7s, [files.pdf]), files, True)
    signed_between(attachment_verdict(files.p7s), files, None)
    for unsigned in (files.pdf, files.xml, b"", b"plain text", b"\x30\x03\x02\x01\x01"):
        assert attachment_verdict(unsigned) == Verdict(False)


def test_changed_bytes_break_the_signature(files: Files) -> None:
    signed_between(attachment_verdict(signing.tampered(files.signed_pdf)), files, False)
    # The content only: a shorter pattern can also hit the signing time (10:3x UTC has "103").
    assert files.p7m.count(b"cong van 103") == 1
    changed = files.p7m.replace(b"cong van 103", b"cong van 999")
    signed_between(attachment_verdict(changed), files, False)
    text = "kế hoạch".encode()
    assert text in files.signed_xml
    signed_between(attachment_verdict(files.signed_xml.replace(text, "ngân sách".encode())),
                   files, False)
    # A detached signature beside a changed content: that content is not the signed one.
    changed = files.pdf.replace(b"123", b"456")
    signed_between(attachment_verdict(files.p7s, [changed]), files, None)


def test_a_document_is_signed_unsigned_or_unknown(files: Files) -> None:
    assert document_verdict([]) == Verdict(None)  # a status message, a metadata-only import
    assert document_verdict([None]) == Verdict(None)  # in the manifest, bytes not sent
    assert document_verdict([files.pdf, files.xml]) == Verdict(False)
    assert document_verdict([files.pdf, None]) == Verdict(None)  # one file unseen
    signed_between(document_verdict([files.pdf, None, files.signed_pdf]), files, True)
    signed_between(document_verdict([files.pdf, files.p7s]), files, True)
    # One broken signature makes the document's "intact" False.
    signed_between(document_verdict([files.signed_pdf, signing.tampered(files.signed_pdf)]),
                   files, False)


def test_hostile_input_reads_as_no_signature_quickly(files: Files) -> None:
    rng = random.Random(14)
    worst = 0.0
    for original in (files.signed_pdf, files.p7m, files.signed_xml):
        for i in range(60):
            data = bytearray(original)
            if i % 2:
                data = data[:rng.randrange(len(data))]
            else:
                for _ in range(rng.randrange(1, 6)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            start = time.process_time()
            verdict = attachment_verdict(bytes(data))  # never raises
            worst = max(worst, time.process_time() - start)
            assert verdict.signed in (True, False, None)  # None: a PDF not read
    assert worst < 5  # a generous bound on CPU time: no runaway parse
    laughs = (DATA / "billion-laughs.xml").read_bytes()
    assert attachment_verdict(laughs) == Verdict(False)  # DTDs refused, nothing expanded
    assert attachment_verdict(b"%PDF-1.7\n" + b"\x00" * 4096) == Verdict(False)  # no %%EOF
    # A token of megabytes (pyhanko reads tokens a byte at a time): not read, unknown.
    long_token = b"%PDF-1.7\n%" + b"A" * (2 * 1024 * 1024) + b"\nstartxref\n9\n%%EOF\n"
    start = time.process_time()
    assert attachment_verdict(long_token) == Verdict(None)
    assert document_verdict([files.pdf, long_token]) == Verdict(None)
    assert time.process_time() - start < 1
    assert document_verdict([b"%PDF-" + b"x" * MAX_BYTES]) == Verdict(None)  # over the limit


PLACES = AgencyPlaces("25")


def mapped(message: bytes) -> dict[str, object]:
    [record] = message_records(message, {"file": "body"}, [SENDER])
    payload = document_event(record, PLACES, "test").payload
    return {k: getattr(payload, k) for k in ("signed", "signature_intact", "signed_at")}


def test_the_mapping_decides_by_content_not_by_names(files: Files) -> None:
    sent = datetime.now(VN).replace(microsecond=0) - timedelta(days=1)
    heuristic = [("cong-van-1.signed.pdf", "Văn bản ký số", files.pdf),
                 ("chu-ky.p7s", "signed", files.xml)]
    assert mapped(signing.edxml_document(1, sent, heuristic)) == {
        "signed": False, "signature_intact": None, "signed_at": None}
    neutral = [("cong-van-2.pdf", "Văn bản", files.signed_pdf)]
    got = mapped(signing.edxml_document(2, sent, neutral))
    assert (got["signed"], got["signature_intact"]) == (True, True)
    assert files.before <= got["signed_at"] <= files.after  # type: ignore[operator]
    no_bytes = [("cong-van-3.pdf", "Văn bản", None)]
    assert mapped(signing.edxml_document(3, sent, no_bytes))["signed"] is None
    assert mapped(signing.edxml_document(4, sent, []))["signed"] is None
    broken = [("cong-van-5.pdf", "Văn bản", files.pdf),
              ("cong-van-5.sig", "Văn bản", b"not base64 at all")]
    message = signing.edxml_document(5, sent, broken).replace(
        signing.encoded_text(b"not base64 at all").encode(), b"@@@ not base64 @@@")
    assert mapped(message)["signed"] is None  # one attachment unreadable: unknown
