"""Personal data masked by pattern: one set of patterns for log lines (`ioc/core/logs.py`) and for
the free text citizens and agencies write (Open311 description, address and status notes),
so what is hidden in one place is hidden in the other."""

import re

EMAIL = (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "<e-mail>")
# Vietnamese numbers: 0 or (+)84, then 9-11 digits, optionally grouped by spaces, dots or dashes.
PHONE = (re.compile(r"(?<![\w.])(?:\+?84[ .-]?|0)\d(?:[ .-]?\d){7,9}(?!\w|[.-]?\d)"),
         "<phone>")
# Citizen ID numbers: CMND (9 digits) and CCCD (12 digits).
ID_NUMBER = (re.compile(r"(?<![\w.])(?:\d{12}|\d{9})(?!\w|[.-]?\d)"), "<id-number>")
PERSONAL = (EMAIL, PHONE, ID_NUMBER)
SECRETS = (
    (re.compile(r"ioc_[0-9a-fA-F]{6,}_[A-Za-z0-9_-]+"), "ioc_<key>"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s'\",]+"), r"\1 <hidden>"),
)


def redact(text: str) -> str:
    """`text` with e-mail addresses, phone numbers and ID numbers replaced by placeholders."""
    for pattern, replacement in PERSONAL:
        text = pattern.sub(replacement, text)
    return text


def mask(text: str) -> str:
    """For log lines: credentials too, then personal data."""
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return redact(text)
