"""API keys: created once (the secret is shown then, never stored), revoked, verified.

A key reads `ioc_<key id>_<secret>`: the key id finds its row (no scan of every key), the
secret (256 random bits) is checked against HMAC-SHA-256(pepper, secret) with a
constant-time comparison. The pepper is a server-side secret (`IOC_API_KEY_PEPPER` or
`IOC_API_KEY_PEPPER_FILE`), never in the database: a stolen table alone checks nothing. A
random 256-bit secret needs no slow KDF (no dictionary to guess from); scrypt cost ~50 ms of
CPU per request and made every failure a denial of service. Keys made before (kdf
`scrypt:...`) keep working: checked once with scrypt, then rehashed in place (`upgrade`).
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from ioc.core.db import connect
from ioc.core.settings import Settings

PREFIX = "ioc"
KDF = "hmac-sha256"
LEGACY_KDF = "scrypt:16384:8:1"  # keys made before: n, r, p (16 MiB, ~50 ms per check)
SCOPE = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")
NAME = re.compile(r"^[\w.@-]{1,64}$")
KEY = re.compile(r"^ioc_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
# The scopes routes ask for today; others are accepted.
SCOPES = ("reports:create", "reports:update", "reports:assign", "ingest:dossiers", "ingest:edxml",
          "ingest:evaluations", "alerts:read", "alerts:ack", "kpis:read")


class KeyRequestError(ValueError):
    """A name or scope that cannot be used; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


def pepper(settings: Settings) -> bytes:
    """The HMAC key: IOC_API_KEY_PEPPER, else the content of IOC_API_KEY_PEPPER_FILE."""
    if settings.api_key_pepper:
        return settings.api_key_pepper.encode()
    if settings.api_key_pepper_file:
        return Path(settings.api_key_pepper_file).read_text(encoding="utf-8").strip().encode()
    return b""


def digest(key: bytes, secret: str) -> bytes:
    return hmac.new(key, secret.encode(), hashlib.sha256).digest()


def _legacy_hash(kdf: str, salt: bytes, secret: str) -> bytes:
    name, n, r, p = kdf.split(":")
    if name != "scrypt":
        raise ValueError(f"unknown key derivation {name!r}")
    return hashlib.scrypt(secret.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=32)


def is_legacy(row: dict[str, Any]) -> bool:
    return bool(row["kdf"] != KDF)


def parse(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = KEY.match(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def check_scopes(scopes: list[str]) -> tuple[str, ...]:
    if not scopes:
        raise KeyRequestError("at least one --scope is required, e.g. --scope reports:update")
    for scope in scopes:
        if not SCOPE.match(scope):
            raise KeyRequestError(f"scope {scope!r}: expected area:action, e.g. reports:update")
    return tuple(dict.fromkeys(scopes))


def create_key(settings: Settings, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Store a new key; return it with the plaintext, which nothing keeps."""
    if not NAME.match(name):
        raise KeyRequestError(f"name {name!r}: 1-64 letters, digits, '.', '_', '-' or '@'")
    wanted = check_scopes(scopes)
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with connect(settings) as conn:
        try:
            row = conn.execute(
                "INSERT INTO api_keys (key_id, name, scopes, kdf, salt, secret_hash)"
                " VALUES (%s, %s, %s, %s, '', %s) RETURNING created_at",
                (key_id, name, list(wanted), KDF, digest(pepper(settings), secret))).fetchone()
        except psycopg.errors.UniqueViolation:
            raise KeyRequestError(f"a live key named {name!r} exists; revoke it first") from None
    assert row is not None
    return ApiKey(key_id, name, wanted, row[0]), f"{PREFIX}_{key_id}_{secret}"


def list_keys(settings: Settings) -> list[ApiKey]:
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT key_id, name, scopes, created_at, revoked_at, last_used_at FROM api_keys"
            " ORDER BY created_at, key_id").fetchall()
    return [ApiKey(r[0], r[1], tuple(r[2]), r[3], r[4], r[5]) for r in rows]


def revoke_key(settings: Settings, name: str) -> int:
    """Revoke the live key of that name (or with that key id); return how many were."""
    with connect(settings) as conn:
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = now()"
            " WHERE (name = %s OR key_id = %s) AND revoked_at IS NULL", (name, name))
        return cur.rowcount


DUMMY = bytes(32)  # compared against when there is no row: every failure costs the same


def matches(key: bytes, row: dict[str, Any] | None, secret: str) -> bool:
    """Constant-time check of `secret` against a live HMAC row; one HMAC whatever the row
    (None, revoked, legacy: False). Legacy rows: `matches_legacy`, off the event loop."""
    computed = digest(key, secret)
    usable = row is not None and row["revoked_at"] is None and not is_legacy(row)
    stored = bytes(row["secret_hash"]) if usable and row is not None else DUMMY
    return hmac.compare_digest(computed, stored) and usable


def matches_legacy(row: dict[str, Any], secret: str) -> bool:
    """The scrypt check of a key made before HMAC (CPU-bound, ~50 ms: run it in a thread)."""
    try:
        expected = _legacy_hash(row["kdf"], bytes(row["salt"]), secret)
    except ValueError:
        return False
    return hmac.compare_digest(expected, bytes(row["secret_hash"]))


UPGRADE = ("UPDATE api_keys SET kdf = %s, salt = '', secret_hash = %s"
           " WHERE key_id = %s AND kdf = %s")


LOOKUP = ("SELECT key_id, name, scopes, kdf, salt, secret_hash, created_at, revoked_at,"
          " last_used_at FROM api_keys WHERE key_id = %s")
TOUCH = ("UPDATE api_keys SET last_used_at = now() WHERE key_id = %s"
         " AND (last_used_at IS NULL OR last_used_at < now() - INTERVAL '1 minute')")


def as_key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(row["key_id"], row["name"], tuple(row["scopes"]), row["created_at"],
                  row["revoked_at"], row["last_used_at"])


def verify(settings: Settings, presented: str) -> ApiKey | None:
    """The live key `presented` is, or None (unknown, malformed, revoked or wrong secret)."""
    parsed = parse(presented)
    if parsed is None:
        return None
    key_id, secret = parsed
    with connect(settings) as conn:
        cur = conn.execute(LOOKUP, (key_id,))
        names = [c.name for c in cur.description or ()]
        found = cur.fetchone()
        if found is None:
            return None
        row = dict(zip(names, found, strict=True))
        key = pepper(settings)
        if row["revoked_at"] is not None:
            return None
        if is_legacy(row):
            if not matches_legacy(row, secret):
                return None
            conn.execute(UPGRADE, (KDF, digest(key, secret), key_id, row["kdf"]))
        elif not matches(key, row, secret):
            return None
        conn.execute(TOUCH, (key_id,))
    return as_key(row)
