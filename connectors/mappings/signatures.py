"""Is an attachment digitally signed? Decided from its bytes, in memory; only the verdict stays.

An agency names and describes its files as it likes ("cong-van-123.pdf", "Văn bản"), so the
name and the description decide nothing. The content does, by what it is (never its name):

- a PDF (`%PDF-` in its first KiB) with a signature field (PAdES, `adbe.pkcs7.detached`,
  `ETSI.CAdES.detached`, `adbe.pkcs7.sha1`), read with pyhanko's PDF reader: intact when the
  digest of the signed byte range is the one the signature signed and the signature verifies;
- CMS SignedData (`.p7s` detached, `.p7m` attached; DER or PEM): the content is the p7m's own,
  or for a detached signature another attachment of the document whose digest it signed;
  without it the signature math alone is checked (intact unknown when it holds);
- XML with a `ds:Signature` (XML-DSig, XAdES): verified by signxml with the certificate it
  embeds, after defusedxml refused any DTD or entity.

"Intact" is integrity (the bytes are the signed ones and the signature verifies with the
signer's certificate), not trust: no chain, revocation or qualified-signature decision. The
signing time is the signer's claim (the `signingTime` attribute, the PDF's `/M`, XAdES
`SigningTime`), kept only when plausible. Hostile input is bounded (sizes, counts) and any
parser error reads as "not a signature" or "not intact", never as an exception.
"""

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any
from xml.etree.ElementTree import Element

from asn1crypto import cms, core, pem
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from defusedxml.ElementTree import fromstring
from pyhanko.pdf_utils.generic import parse_pdf_date
from pyhanko.pdf_utils.reader import PdfFileReader
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier

from ioc.core.events import implausible

MAX_BYTES = 64 * 1024 * 1024  # an attachment larger than this is not inspected (unknown)
MAX_ATTACHMENTS = 64  # per document; past it, the rest is unknown
MAX_SIGNATURES = 16  # per PDF, CMS or XML file; past it, the rest is not read
MAX_FIELDS = 512  # PDF form fields walked looking for signatures
MAX_TOKEN = 1024 * 1024  # bytes without whitespace in a PDF (a signature's hex: tens of KB)
PDF_SUBFILTERS = {"/adbe.pkcs7.detached", "/ETSI.CAdES.detached", "/adbe.pkcs7.sha1"}
DSIG = "http://www.w3.org/2000/09/xmldsig#"


@dataclass(frozen=True)
class Verdict:
    """What is kept of an attachment or a document: never its content."""

    signed: bool | None  # None: unknown (no bytes, or not readable)
    intact: bool | None = None  # None: unsigned, or the signed content is not at hand
    signed_at: datetime | None = None


UNKNOWN, UNSIGNED = Verdict(None), Verdict(False)


def document_verdict(attachments: Sequence[bytes | None]) -> Verdict:
    """A document's verdict from its attachments' bytes (None: an attachment not readable).

    Signed when one of them carries a signature; intact False when any signature is broken,
    True when every one verified; signed at the latest signing time. Unsigned only when every
    attachment was read; without attachments (a status message, a metadata-only import) or
    with one unread and none signed, unknown."""
    if not attachments:
        return UNKNOWN
    readable = [a for a in attachments[:MAX_ATTACHMENTS] if a is not None and len(a) <= MAX_BYTES]
    verdicts = [attachment_verdict(a, readable) for a in readable]
    if any(v.signed for v in verdicts):
        return combine(verdicts)
    unread = len(attachments) - len(readable)
    return UNSIGNED if not unread and all(v.signed is False for v in verdicts) else UNKNOWN


def attachment_verdict(data: bytes, others: Sequence[bytes] = ()) -> Verdict:
    """One attachment's verdict, by its content; `others`: the document's attachments, where
    the content of a detached CMS signature may be. Unknown only for a PDF not read."""
    try:
        if b"%PDF-" in data[:1024]:
            # A PDF ends with startxref and %%EOF: without them pyhanko would scan the whole
            # file backwards, a byte at a time, for its last lines (seconds for a few MB).
            if b"%%EOF" not in data[-1024:] or b"startxref" not in data[-2048:]:
                return UNSIGNED
            # Its reader takes tokens a byte at a time: one of megabytes (no real PDF has
            # any) would cost seconds. Such a file is not read: unknown.
            if max(map(len, data.split()), default=0) > MAX_TOKEN:
                return UNKNOWN
            return combine(pdf_signatures(data))
        if data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
            return xml_verdict(data)
        der = cms_der(data)
        return combine(cms_signatures(der, others)) if der is not None else UNSIGNED
    except Exception:  # any parser's failure on hostile input: no signature read
        return UNSIGNED


def combine(verdicts: Sequence[Verdict] | Iterator[Verdict]) -> Verdict:
    """The signed ones' verdict: broken if any is, intact if all are, the latest time."""
    found = [v for v in verdicts if v.signed]
    if not found:
        return UNSIGNED
    intact = (False if any(v.intact is False for v in found)
              else True if all(v.intact for v in found) else None)
    times = [v.signed_at for v in found if v.signed_at is not None]
    return Verdict(True, intact, max(times, default=None))


def plausible(value: Any) -> datetime | None:
    """A claimed signing time, kept only when it is an aware, plausible date."""
    if not isinstance(value, datetime) or value.tzinfo is None or implausible(value):
        return None
    return value


# --- CMS (RFC 5652) -------------------------------------------------------------------------
def cms_der(data: bytes) -> bytes | None:
    """DER of a CMS file (DER as is, or PEM unarmored), None when it is neither."""
    if data[:1] == b"\x30":
        return data
    if pem.detect(data):
        return pem.unarmor(data)[2]
    return None


def cms_signatures(der: bytes, others: Sequence[bytes] = (),
                   external: bytes | None = None) -> Iterator[Verdict]:
    """The verdict of each signer of CMS SignedData (none: not SignedData). `external`: the
    detached content when known (a PDF's byte range); else the encapsulated content, else
    the one of `others` whose digest was signed."""
    info = cms.ContentInfo.load(der)
    if info["content_type"].native != "signed_data":
        return
    signed_data = info["content"]
    encapsulated = signed_data["encap_content_info"]
    content_type = encapsulated["content_type"].native
    content = external
    if content is None and encapsulated["content"] is not core.VOID:
        content = encapsulated["content"].native
        if not isinstance(content, bytes):  # a parsed type (tst_info...): its DER was signed
            content = encapsulated["content"].parsed.dump()
    certificates = [c.chosen for c in signed_data["certificates"] or ()
                    if c.name == "certificate"]
    for signer in list(signed_data["signer_infos"])[:MAX_SIGNATURES]:
        yield signer_verdict(signer, certificates, content_type, content, others)


def signer_verdict(signer: cms.SignerInfo, certificates: list[Any], content_type: str,
                   content: bytes | None, others: Sequence[bytes]) -> Verdict:
    try:
        algorithm = signer["digest_algorithm"]["algorithm"].native
        attributes = signer["signed_attrs"]
        if attributes is core.VOID or not len(attributes):
            # No signed attributes: the signature is over the content itself.
            if content is None:
                return Verdict(True, None)
            return Verdict(True, math_holds(signer, certificates, content, algorithm))
        values = {a["type"].native: a["values"] for a in attributes}
        digest = values["message_digest"][0].native
        claimed = values.get("content_type")
        when = values.get("signing_time")
        signed_at = plausible(when[0].native) if when else None
        holds = math_holds(signer, certificates, b"\x31" + attributes.dump()[1:], algorithm)
        if claimed is not None and claimed[0].native != content_type:
            holds = False
        if content is None:
            matches = [o for o in others if hashlib.new(algorithm, o).digest() == digest]
            if not matches:  # the signed content is not among the attachments
                return Verdict(True, None if holds else False, signed_at)
            content = matches[0]
        return Verdict(True, holds and hashlib.new(algorithm, content).digest() == digest,
                       signed_at)
    except Exception:  # a malformed signer: a signature that does not verify
        return Verdict(True, False)


def math_holds(signer: cms.SignerInfo, certificates: list[Any], message: bytes,
               digest_algorithm: str) -> bool:
    """Does the signer's signature over `message` verify with its certificate's key?"""
    certificate = signer_certificate(signer["sid"], certificates)
    if certificate is None:
        return False
    key = x509.load_der_x509_certificate(certificate.dump()).public_key()
    algorithm = signer["signature_algorithm"]
    try:
        hash_name = algorithm.hash_algo
    except ValueError:  # plain rsassa_pkcs1v15 / ecdsa: the digest algorithm's
        hash_name = digest_algorithm
    signature = signer["signature"].native
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if algorithm.signature_algo == "rsassa_pss":
                params = algorithm["parameters"]
                mgf = hash_of(params["mask_gen_algorithm"]["parameters"]["algorithm"].native)
                pad: padding.AsymmetricPadding = padding.PSS(
                    padding.MGF1(mgf), params["salt_length"].native)
                hash_name = params["hash_algorithm"]["algorithm"].native
            else:
                pad = padding.PKCS1v15()
            key.verify(signature, message, pad, hash_of(hash_name))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hash_of(hash_name)))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, message, hash_of(hash_name))
        else:  # Ed25519 and the like: not used by signing services here
            return False
    except InvalidSignature:
        return False
    return True


def hash_of(name: str) -> hashes.HashAlgorithm:
    algorithm = getattr(hashes, name.upper(), None)
    if not isinstance(algorithm, type) or not issubclass(algorithm, hashes.HashAlgorithm):
        raise ValueError(f"digest algorithm {name!r}")
    return algorithm()


def signer_certificate(sid: cms.SignerIdentifier, certificates: list[Any]) -> Any:
    for certificate in certificates:
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            if (certificate.issuer == wanted["issuer"]
                    and certificate.serial_number == wanted["serial_number"].native):
                return certificate
        elif certificate.key_identifier == sid.chosen.native:
            return certificate
    return None


# --- PDF (PAdES) ----------------------------------------------------------------------------
def pdf_signatures(data: bytes) -> Iterator[Verdict]:
    """The verdict of each signature field with a value (an empty field signs nothing)."""
    reader = PdfFileReader(BytesIO(data), strict=False)
    form = _get(reader.root, "/AcroForm")
    fields = list(_get(form, "/Fields") or ()) if form is not None else []
    seen = found = 0
    while fields and seen < MAX_FIELDS and found < MAX_SIGNATURES:
        field = fields.pop().get_object()
        seen += 1
        fields.extend(_get(field, "/Kids") or ())
        value = _get(field, "/V")
        if _get(field, "/FT") != "/Sig" or value is None:
            continue
        if _get(value, "/SubFilter") not in PDF_SUBFILTERS:
            continue  # a document timestamp (ETSI.RFC3161) or a format not read here
        found += 1
        try:
            when = plausible(parse_pdf_date(str(value["/M"]), strict=False))
        except Exception:  # no /M, or not a PDF date
            when = None
        try:
            verdicts = list(pdf_signature(data, value, when))
        except Exception:  # a signature field whose CMS does not parse: broken
            verdicts = []
        yield from verdicts or [Verdict(True, False, when)]


def pdf_signature(data: bytes, value: Any, when: datetime | None) -> Iterator[Verdict]:
    """One signature dictionary: its CMS over the byte range it covers."""
    try:
        a, b, c, d = (int(x) for x in value["/ByteRange"])
        contents = value.raw_get("/Contents").original_bytes
    except Exception:
        yield Verdict(True, False, when)
        return
    gap = data[a + b:c].strip()
    if (a != 0 or min(b, c, d) < 0 or a + b > c or c + d > len(data)
            or not (gap.startswith(b"<") and gap.endswith(b">"))):
        yield Verdict(True, False, when)  # a byte range that does not frame its signature
        return
    signed = data[a:a + b] + data[c:c + d]
    sha1 = _get(value, "/SubFilter") == "/adbe.pkcs7.sha1"
    for verdict in cms_signatures(contents, external=None if sha1 else signed):
        if sha1:  # the encapsulated content is the SHA-1 digest of the byte range
            verdict = _sha1_verdict(contents, signed, verdict)
        yield Verdict(True, verdict.intact, verdict.signed_at or when)


def _get(dictionary: Any, key: str) -> Any:
    """A PDF dictionary's entry, indirect references followed; None when absent."""
    try:
        return dictionary[key]
    except (KeyError, TypeError):
        return None


def _sha1_verdict(contents: bytes, signed: bytes, verdict: Verdict) -> Verdict:
    info = cms.ContentInfo.load(contents)
    digest = info["content"]["encap_content_info"]["content"].native
    return Verdict(True, bool(verdict.intact) and digest == hashlib.sha1(signed).digest(),
                   verdict.signed_at)


# --- XML (XML-DSig, XAdES) ------------------------------------------------------------------
def xml_verdict(data: bytes) -> Verdict:
    """A `ds:Signature` anywhere in the document, verified with its embedded certificate."""
    root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    signatures = [e for e in root.iter() if e.tag == f"{{{DSIG}}}Signature"]
    if not signatures:
        return UNSIGNED
    signature = signatures[0]
    when = None
    for element in signature.iter():
        if _local(element.tag) == "SigningTime" and element.text:
            try:
                when = plausible(datetime.fromisoformat(element.text.strip()))
            except ValueError:
                when = None
            break
    return Verdict(True, _xml_intact(data, signature), when)


def _xml_intact(data: bytes, signature: Element) -> bool:
    certificate = next((e.text for e in signature.iter(f"{{{DSIG}}}X509Certificate")
                        if e.text), None)
    info = signature.find(f"{{{DSIG}}}SignedInfo")
    references = len(info.findall(f"{{{DSIG}}}Reference")) if info is not None else 0
    if certificate is None or not references:
        return False
    pem_text = ("-----BEGIN CERTIFICATE-----\n" + "".join(certificate.split())
                + "\n-----END CERTIFICATE-----\n")
    config = SignatureConfiguration(
        expect_references=references, signature_methods=frozenset(SignatureMethod),
        digest_algorithms=frozenset(DigestAlgorithm), ignore_ambiguous_key_info=True)
    try:
        XMLVerifier().verify(data, x509_cert=pem_text, expect_config=config)
    except Exception:  # InvalidSignature, InvalidDigest, InvalidInput...: not intact
        return False
    return True


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""
