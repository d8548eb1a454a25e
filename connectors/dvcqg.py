"""Dossiers from the national public-service portal's sync payload (DVCQG), polled over HTTP.

The query contract (what the endpoint, or a small adapter in front of the provincial system,
answers):

    GET {base_url}/hoso?updated_since=yyyyMMddHHmmss&page=N&page_size=M
    Authorization: Bearer {token}                                   (when a token is set)
    -> 200 {"items": [<sync payload record>, ...], "next_page": N + 1 | null}

The endpoint returns the records whose *change time* (the mapping's `change_time`: the latest
step, else the reception, else the submission) is at or after `updated_since` (every record
when it is absent), ordered by change time then `MaHoSo`; pages start at 1. 401/403 and other
4xx stop the connector; 5xx, 429 and timeouts are retried.

The cursor is `{"since": <the latest change time read>, "seen": [<fingerprints of the records
read at that second>]}`: the boundary second is read again and what was already published is
skipped, so a restart neither skips nor duplicates. The mapping (and the event ids, one per
record state) is `connectors/mappings/portal.py`, shared with the push receiver and imports.
"""

import hashlib
import json
from typing import Any

import aiohttp
from pydantic import Field, SecretStr

from connectors.base import (
    Batch,
    Connector,
    ConnectorOptions,
    PermanentError,
    TransientError,
    http_error,
)
from connectors.mappings.portal import (
    PERSONAL,
    carries_evaluation,
    change_time,
    dossier_event,
    evaluation_event,
)
from ioc.core.events import Event, Kind


class DvcqgOptions(ConnectorOptions):
    """Environment: `IOC_DVCQG_BASE_URL`, `IOC_DVCQG_TOKEN`, `IOC_DVCQG_PAGE_SIZE`..."""

    base_url: str = Field(description="Root of the sync endpoint, e.g. https://dvc.example/api")
    token: SecretStr | None = Field(None, description="Bearer token, if the endpoint wants one.")
    page_size: int = Field(100, ge=1, le=10_000)


class DvcqgConnector(Connector):
    name = "dvcqg"
    kind = Kind.DOSSIER
    Options = DvcqgOptions
    personal_fields = PERSONAL
    options: DvcqgOptions

    async def open(self) -> None:
        headers = {"Accept": "application/json"}
        if self.options.token is not None:
            headers["Authorization"] = f"Bearer {self.options.token.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.options.timeout_seconds))

    async def close(self) -> None:
        session = getattr(self, "_session", None)
        if session is not None:
            await session.close()

    # --- reading -------------------------------------------------------------------------
    async def fetch(self, cursor: str | None) -> Batch:
        since, seen = _parse_cursor(cursor)
        latest, at_latest = since, set(seen)
        records: list[dict[str, Any]] = []
        page, more = 1, False
        while True:
            items, next_page = await self._page(since, page)
            for item in items:
                when, mark = change_time(item), fingerprint(item)
                if since is not None and when == since and mark in seen:
                    continue  # the boundary second, already published
                records.append(item)
                if when is not None and (latest is None or when > latest):
                    latest, at_latest = when, {mark}
                elif when is not None and when == latest:
                    at_latest.add(mark)
            if next_page is None:
                break
            if len(records) >= self.options.batch_size:
                more = True
                break
            page = next_page
        if latest is None:
            return Batch(records, cursor, more)
        return Batch(records, json.dumps({"since": latest, "seen": sorted(at_latest)}), more)

    async def _page(self, since: str | None, page: int) -> tuple[list[Any], int | None]:
        url = f"{self.options.base_url.rstrip('/')}/hoso"
        params = {"page": str(page), "page_size": str(self.options.page_size)}
        if since is not None:
            params["updated_since"] = since
        await self.throttle()
        try:
            async with self._session.get(url, params=params) as response:
                body = await response.text()
                error = http_error(response.status, f"GET {url}", body)
                if error is not None:
                    raise error
        except aiohttp.ClientError as exc:
            raise TransientError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        try:
            data = json.loads(body)
            items, next_page = data["items"], data.get("next_page")
            if not isinstance(items, list) or not isinstance(next_page, int | None):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            raise PermanentError(f"GET {url} did not answer {{'items': [...], 'next_page': N}}:"
                                 f" {body[:200]!r}") from None
        return items, next_page

    def record_key(self, record: Any) -> str | None:
        code = record.get("MaHoSo") if isinstance(record, dict) else None
        return code if isinstance(code, str) and code else None

    def map(self, record: Any) -> Event | list[Event]:
        """The dossier, and the citizen's evaluation where the record carries one."""
        dossier = dossier_event(record, self.places, self.name)
        if carries_evaluation(record):
            return [dossier, evaluation_event(record, self.places, self.name)]
        return dossier


def fingerprint(record: Any) -> str:
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _parse_cursor(cursor: str | None) -> tuple[str | None, set[str]]:
    if cursor is None:
        return None, set()
    data = json.loads(cursor)
    return data.get("since"), set(data.get("seen", []))
