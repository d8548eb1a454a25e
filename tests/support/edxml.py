"""The edXML samples (tests/data/edxml: shared/samples/edxml plus variants) and what they hold."""

from tests.support import DATA as SAMPLES

DATA = SAMPLES / "edxml"
DOCUMENT, STATUS = "document-incoming.xml", "status-05-in-progress.xml"
SENDER, RECEIVER = "000.00.12.H25", "000.79.00.H25"  # a department, a ward People's Committee
DOC_ID = "000.00.12.H25,2026/11/16,1482/SKHCN-CĐS"
# The signer, the staff member and the subject: never in an event nor a dead letter.
PERSONAL = tuple(v.encode() for v in ("Nguyễn Văn A", "Trần Thị B", "V/v báo cáo"))
