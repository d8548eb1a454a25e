"""The recipients file (setting alert_recipients, by default the packaged
ioc/alerts/defaults/recipients.yaml): a rule's recipient (a role, `role:CODE`, or a name) -> its
addresses, on any channel:

    webhooks:                                  # optional: named webhooks, name -> URL
      dieu-hanh: https://ops.example.vn/hooks/ioc
    chairman: [chu-tich@example.gov.vn, "telegram:-1001234567", "zalo:8437261905123"]
    ioc-duty-officer:
      - truc-ioc@example.gov.vn
      - webhook:dieu-hanh                      # or webhook:https://...

An address is an e-mail address (or `email:` + one), `telegram:<chat id or @channel>`,
`zalo:<user id>` or `webhook:<http(s) URL or a name under webhooks:>`. A value is one address
or a list. Files of e-mail addresses only (the first format) stay valid. Quote an address
that has `?` or `#` inside a `[...]` list. Every mistake is reported, naming the entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import yaml

CHANNELS = ("email", "telegram", "zalo", "webhook")
WEBHOOKS = "webhooks"  # the section of named webhooks
EMAIL = re.compile(r"^[^@\s:]+@[^@\s]+$")
TELEGRAM = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$")
ZALO = re.compile(r"^\d{1,32}$")
FORMS = ("an e-mail address, telegram:<chat id>, zalo:<user id> "
         "or webhook:<URL or webhook name>")


class Address(NamedTuple):
    channel: str  # email | telegram | zalo | webhook
    target: str  # the e-mail address, chat id, user id, URL

    def __str__(self) -> str:
        return self.target if self.channel == "email" else f"{self.channel}:{self.target}"


class RecipientsError(ValueError):
    """The file's mistakes, one line each."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(errors))
        self.errors = errors


def web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_address(text: str, webhooks: dict[str, str] | None = None) -> Address:
    """One address; ValueError saying what is wrong."""
    text = text.strip()
    channel, sep, rest = text.partition(":")
    if sep and channel in CHANNELS:
        if channel == "email" and EMAIL.match(rest):
            return Address("email", rest)
        if channel == "telegram" and TELEGRAM.match(rest):
            return Address("telegram", rest)
        if channel == "zalo" and ZALO.match(rest):
            return Address("zalo", rest)
        if channel == "webhook":
            if web_url(rest):
                return Address("webhook", rest)
            if webhooks and rest in webhooks:
                return Address("webhook", webhooks[rest])
            raise ValueError(f"{text!r}: not an http(s) URL nor a webhook named under "
                             f"`{WEBHOOKS}:` ({', '.join(webhooks or {}) or 'none defined'})")
        want = {"email": "an e-mail address", "telegram": "a numeric chat id or @channel",
                "zalo": "a numeric user id"}[channel]
        raise ValueError(f"{text!r}: {channel}: needs {want}")
    if EMAIL.match(text):
        return Address("email", text)
    raise ValueError(f"{text!r} is not an address: use {FORMS}")


def parse(data: object, path: Path) -> dict[str, list[Address]]:
    """The file's YAML, checked: recipient -> addresses (RecipientsError lists every mistake)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipientsError(path, [f"a mapping of recipient -> addresses ({FORMS})"])
    errors: list[str] = []
    webhooks: dict[str, str] = {}
    section = data.get(WEBHOOKS, {})
    if not isinstance(section, dict):
        errors.append(f"{WEBHOOKS}: a mapping of name -> http(s) URL")
    else:
        for name, url in section.items():
            if isinstance(url, str) and web_url(url.strip()):
                webhooks[str(name)] = url.strip()
            else:
                errors.append(f"{WEBHOOKS}: {name}: {url!r} is not an http(s) URL")
    table: dict[str, list[Address]] = {}
    for key, value in data.items():
        key = str(key)
        if key == WEBHOOKS:
            continue
        if key in CHANNELS:
            errors.append(f"{key}: a channel's name cannot be a recipient's")
            continue
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            errors.append(f"{key}: one address or a list of them ({FORMS})")
            continue
        addresses = []
        for i, item in enumerate(values):
            where = key if isinstance(value, str) else f"{key}[{i}]"
            if not isinstance(item, str):
                errors.append(f"{where}: {item!r} is not an address: use {FORMS}")
                continue
            try:
                addresses.append(parse_address(item, webhooks))
            except ValueError as exc:
                errors.append(f"{where}: {exc}")
        table[key] = addresses
    if errors:
        raise RecipientsError(path, errors)
    return table


def load(path: Path) -> dict[str, list[Address]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipientsError(path, [f"not valid YAML{where}: {problem}; quote addresses "
                                     "that have ? or # inside a [...] list"]) from None
    return parse(data, path)


def resolver(table: dict[str, list[Address]]) -> Callable[[str], list[Address]]:
    """`director:000.00.12.H25` is looked up as itself, then as `director`; a rule recipient
    that is itself an address (e-mail, telegram:..., ...) is used as it is."""
    def resolve(recipient: str) -> list[Address]:
        if recipient in table:
            return table[recipient]
        role = recipient.split(":", 1)[0]
        if role in table:
            return table[role]
        try:
            return [parse_address(recipient)]
        except ValueError:
            return []
    return resolve
