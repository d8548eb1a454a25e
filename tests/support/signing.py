"""Files signed for the test, with a throwaway CA the test makes: a PAdES PDF (pyhanko), CMS
detached (.p7s) and attached (.p7m) signatures (cryptography), an XAdES XML (signxml), their
unsigned twins and a tampered PDF. Independent of connectors/mappings/signatures.py: these are
made by the signing side of the libraries, the module reads them with the verifying side."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from lxml import etree
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko_certvalidator.registry import SimpleCertificateStore
from signxml.xades import XAdESSigner

from tests.support.edxml import DATA, DOCUMENT, SENDER, STATUS


@dataclass(frozen=True)
class Signer:
    """A signing key and its certificate, issued by a CA made for the test."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    ca: x509.Certificate

    def pem(self) -> tuple[bytes, bytes]:
        key = self.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        return key, self.certificate.public_bytes(serialization.Encoding.PEM)


def throwaway_signer(name: str = "Văn thư Sở Khoa học và Công nghệ (thử)") -> Signer:
    now = datetime.now(UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Throwaway test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))
    return Signer(key, certificate, ca)


def unsigned_pdf(text: str = "Cong van so 123") -> bytes:
    """A one-page PDF (pyhanko's writer), without any signature field."""
    writer = PdfFileWriter()
    stream = generic.StreamObject(stream_data=f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
    writer.insert_page(PageObject(contents=writer.add_object(stream),
                                  media_box=(0, 0, 595, 842)))
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def signed_pdf(signer: Signer, text: str = "Cong van so 123") -> bytes:
    """A PAdES signature (ETSI.CAdES.detached) in a new signature field, by pyhanko."""
    der = serialization.Encoding.DER
    signing = signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(signer.certificate.public_bytes(der)),
        signing_key=asn1_keys.PrivateKeyInfo.load(signer.key.private_bytes(
            der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        cert_registry=SimpleCertificateStore.from_certs(
            [asn1_x509.Certificate.load(signer.ca.public_bytes(der))]))
    meta = signers.PdfSignatureMetadata(field_name="Signature1",
                                        subfilter=SigSeedSubFilter.PADES)
    writer = IncrementalPdfFileWriter(BytesIO(unsigned_pdf(text)))
    return signers.sign_pdf(writer, meta, signer=signing).getvalue()


def tampered(pdf: bytes, old: bytes = b"(Cong van so 123)", new: bytes = b"(Cong van so 789)"
             ) -> bytes:
    """The signed PDF with its signed text changed afterwards (same length: the byte range
    still frames the signature, its digest no longer matches)."""
    assert pdf.count(old) >= 1
    return pdf.replace(old, new, 1)


def cms(signer: Signer, content: bytes, *, detached: bool) -> bytes:
    """CMS SignedData (DER) over `content`, by cryptography: detached (.p7s) or with the
    content inside (.p7m); signed attributes with the signing time."""
    options = [pkcs7.PKCS7Options.Binary]
    if detached:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    return (pkcs7.PKCS7SignatureBuilder().set_data(content)
            .add_signer(signer.certificate, signer.key, hashes.SHA256())
            .sign(serialization.Encoding.DER, options))


UNSIGNED_XML = ("<?xml version='1.0' encoding='UTF-8'?>\n<QuyetDinh><So>45/QD-UBND</So>"
                "<NoiDung>Phê duyệt kế hoạch chuyển đổi số</NoiDung></QuyetDinh>").encode()


def signed_xml(signer: Signer, data: bytes = UNSIGNED_XML) -> bytes:
    """An enveloped XAdES-BES signature (signxml), the certificate embedded in KeyInfo."""
    key, cert = signer.pem()
    root = etree.fromstring(data)
    signed = XAdESSigner().sign(root, key=key, cert=cert.decode())
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


# --- edXML messages carrying them ------------------------------------------------------------
EDXML = "http://www.mic.gov.vn/TBT/QCVN_102_2016"


def edxml_document(number: int, sent_at: datetime,
                   attachments: list[tuple[str, str, bytes | None]]) -> bytes:
    """The sample document message (tests/data/edxml) as document `number`, sent at `sent_at`,
    with `attachments` (name, description, bytes; None: in the manifest, bytes not sent)."""
    etree.register_namespace("edXML", EDXML)
    root = etree.fromstring((DATA / DOCUMENT).read_bytes())
    ns = {"e": EDXML}
    header = root.find("e:edXMLEnvelope/e:edXMLHeader/e:MessageHeader", ns)
    header.find("e:Code/e:CodeNumber", ns).text = str(number)
    header.find("e:DocumentId", ns).text = document_id(number, sent_at)
    header.find("e:PromulgationInfo/e:PromulgationDate", ns).text = f"{sent_at:%Y-%m-%d}"
    header.remove(header.find("e:DueDate", ns))
    stamp = root.find("e:edXMLEnvelope/e:edXMLHeader/e:TraceHeaderList/e:TraceHeader/"
                      "e:Timestamp", ns)
    stamp.text = f"{sent_at:%Y/%m/%d %H:%M:%S}"
    manifest = root.find("e:edXMLEnvelope/e:edXMLBody/e:edXMLManifest", ns)
    encoded = root.find("AttachmentEncoded")
    for element in (*manifest, *encoded):
        element.getparent().remove(element)
    for i, (name, description, data) in enumerate(attachments):
        reference = etree.SubElement(manifest, f"{{{EDXML}}}Reference")
        for tag, value in (("ContentId", f"cid:{number}-{i}"), ("ContentType", "application/pdf"),
                           ("Description", description), ("AttachmentName", name)):
            etree.SubElement(reference, f"{{{EDXML}}}{tag}").text = value
        if data is not None:
            attachment = etree.SubElement(encoded, "Attachment")
            etree.SubElement(attachment, "ContentId").text = f"cid:{number}-{i}"
            etree.SubElement(attachment, "ContentTransferEncoded").text = encoded_text(data)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def edxml_status(number: int, sent_at: datetime, at: datetime, code: str = "05") -> bytes:
    """The sample status message, from the receiver, about document `number`."""
    root = etree.fromstring((DATA / STATUS).read_bytes())
    ns = {"e": EDXML}
    status = root.find(".//e:Status", ns)
    status.find("e:ResponseFor/e:DocumentId", ns).text = document_id(number, sent_at)
    status.find("e:StatusCode", ns).text = code
    status.find("e:Timestamp", ns).text = f"{at:%d/%m/%Y %H:%M:%S}"
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def document_id(number: int, sent_at: datetime) -> str:
    return f"{SENDER},{sent_at:%Y/%m/%d},{number}/SKHCN-CĐS"


def encoded_text(data: bytes) -> str:
    """Base64 as edXML's ContentTransferEncoded carries it (lines of 76)."""
    return base64.encodebytes(data).decode()
