"""Dossiers from the national public-service portal's sync payload (DVCQG), polled over HTTP.

The query contract (what the endpoint, or a small adapter in front of the provincial system,
answers):

    GET {base_url}/hoso?updated_since=yyyyMMddHHmmss&page=N&page_size=M
    Authorization: Bearer {token}                                   (when a token is set)
    -> 200 {"items": [<sync payload record>, ...], "next_page": N + 1 | null}

A record's *change time* is its latest step's `tienTrinhDongBo[].ThoiDiemXuLy`, else
`NgayTiepNhan`, else `NgayNopHoSo` (local time, UTC+7). The endpoint returns the records whose
change time is at or after `updated_since` (every record when it is absent), ordered by change
time then `MaHoSo`; pages start at 1. 401/403 and other 4xx stop the connector; 5xx, 429 and
timeouts are retried.

The cursor is `{"since": <the latest change time read>, "seen": [<fingerprints of the records
read at that second>]}`: the boundary second is read again and what was already published is
skipped, so a restart neither skips nor duplicates. Event ids are a UUIDv5 of the mapped
content, so the same record state always gives the same event id (the worker drops repeats).
"""

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from uuid import UUID, uuid5

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
from ioc.core.events import (
    Channel,
    DossierEvent,
    DossierPayload,
    DossierStatus,
    Kind,
    implausible,
)

VIETNAM = timezone(timedelta(hours=7))  # the payload's dates: local time, no offset
DATE = re.compile(r"^\d{14}$")
EVENT_IDS = UUID("4f7d1c1e-8a0b-5d8e-9c39-6b2f0f1d2a77")  # UUIDv5 namespace of this connector
PERSONAL = frozenset({"ChuHoSo", "SoGiayToChuHoSo", "LoaiDoiTuong"})


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

    statuses: ClassVar[dict[int, DossierStatus]] = {s.value: s for s in DossierStatus}

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

    # --- mapping -------------------------------------------------------------------------
    def map(self, record: Any) -> DossierEvent:
        if not isinstance(record, dict):
            raise ValueError(f"a record is a JSON object, not {type(record).__name__}")
        agency_code = _text(record, "DonViXuLy", required=True)
        assert agency_code is not None
        unit, agency = self.place(agency_code)  # DonViXuLy
        status = _int(record, "TrangThaiHoSo", required=True)
        if status not in self.statuses:
            raise ValueError(f"TrangThaiHoSo: {status} is not a dossier status (1-10)")
        channel = _int(record, "KenhThucHien")
        if channel is not None and channel not in {c.value for c in Channel}:
            raise ValueError(f"KenhThucHien: {channel} is not a channel (1, 2 or 3)")
        fees = record.get("DanhSachLePhi")
        if fees is not None and not isinstance(fees, list):
            raise ValueError("DanhSachLePhi: a list was expected")
        payload = DossierPayload(
            dossier_code=_text(record, "MaHoSo", required=True),  # type: ignore[arg-type]
            procedure_code=_text(record, "MaTTHC", required=True),  # type: ignore[arg-type]
            procedure_name=_text(record, "TenTTHC"),
            field_code=_text(record, "MaLinhVuc"),
            status=self.statuses[status],
            channel=Channel(channel) if channel is not None else None,
            submitted_at=_date(record, "NgayNopHoSo"),
            received_at=_date(record, "NgayTiepNhan"),
            due_at=_date(record, "NgayHenTra"),
            finished_at=_date(record, "NgayKetThucXuLy"),
            returned_at=_date(record, "NgayTra"),
            refused_at=_date(record, "NgayTuChoi"),
            digitized=_flag(record, "HoSoCoThanhPhanSoHoa"),
            fee_required=bool(fees) if fees is not None else None,
            paid_online=_flag(record, "DuocThanhToanTrucTuyen"),
        )
        when = change_time(record)
        if when is None:
            raise ValueError("no valid tienTrinhDongBo[].ThoiDiemXuLy, NgayTiepNhan or"
                             " NgayNopHoSo: the time of the record is unknown")
        occurred_at = _parse(when, "change time")
        content = json.dumps({"unit": unit.model_dump(mode="json"),
                              "agency": agency.model_dump(mode="json"),
                              "occurred_at": occurred_at.isoformat(),
                              "payload": payload.model_dump(mode="json")}, sort_keys=True)
        return DossierEvent(event_id=uuid5(EVENT_IDS, content), source=self.name,
                            occurred_at=occurred_at, unit=unit, agency=agency, payload=payload)


def change_time(record: Any) -> str | None:
    """The latest step's ThoiDiemXuLy, else NgayTiepNhan, else NgayNopHoSo (yyyyMMddHHmmss)."""
    if not isinstance(record, dict):
        return None
    steps = record.get("tienTrinhDongBo")
    times = [s.get("ThoiDiemXuLy") for s in steps if isinstance(s, dict)] \
        if isinstance(steps, list) else []
    valid = [t for t in times if isinstance(t, str) and DATE.match(t)]
    if valid:
        return max(valid)
    for name in ("NgayTiepNhan", "NgayNopHoSo"):
        value = record.get(name)
        if isinstance(value, str) and DATE.match(value):
            return value
    return None


def fingerprint(record: Any) -> str:
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _parse_cursor(cursor: str | None) -> tuple[str | None, set[str]]:
    if cursor is None:
        return None, set()
    data = json.loads(cursor)
    return data.get("since"), set(data.get("seen", []))


def _text(record: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"{name}: missing")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: text expected, not {value!r}")
    return value.strip()


def _int(record: dict[str, Any], name: str, required: bool = False) -> int | None:
    value = record.get(name)
    if value is None or value == "":
        if required:
            raise ValueError(f"{name}: missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) \
            or not str(value).strip().isdigit():
        raise ValueError(f"{name}: a whole number expected, not {value!r}")
    return int(value)


def _flag(record: dict[str, Any], name: str) -> bool | None:
    value = _int(record, name)
    if value not in (None, 0, 1):
        raise ValueError(f"{name}: 0 or 1 expected, not {value!r}")
    return None if value is None else value == 1


def _date(record: dict[str, Any], name: str) -> datetime | None:
    value = record.get(name)
    if value is None or value == "":
        return None
    return _parse(value, name)


def _parse(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or not DATE.match(value):
        raise ValueError(f"{name}: yyyyMMddHHmmss expected, not {value!r}")
    try:
        parsed = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=VIETNAM)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a valid date") from None
    reason = implausible(parsed)
    if reason:
        raise ValueError(f"{name}: {value!r} is {reason}")
    return parsed
