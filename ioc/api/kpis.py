"""HTTP route of the KPIs: what `ioc kpis --json` prints, for dashboards and reports elsewhere.

    GET /kpis?since=&until=&unit=&agency=&as_of=     key scope `kpis:read`

`since` / `until` bound the period (a cohort, docs/domain.md), `as_of` the moment the KPIs are
evaluated at (late, open...): default the period's end when it is past, else now. Times are
ISO 8601 with a zone and plausible dates (2000 to 10 years ahead). Errors: 401/403 key, 400 a
time without a zone, implausible, or a period that ends before it starts, 422 a malformed
value (naming it), 503 database down.
"""

import asyncio
from datetime import datetime
from typing import Annotated, Any

import psycopg
import structlog
from fastapi import APIRouter, Depends, HTTPException, Query

from ioc.api.auth import require_key
from ioc.api.keys import ApiKey
from ioc.core.events import implausible
from ioc.core.kpis import missing_inputs, read_kpis
from ioc.core.settings import Settings

log = structlog.get_logger()

SCOPE_READ = "kpis:read"
Code = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[\w.-]+$")]
When = Annotated[datetime | None, Query(description="ISO 8601 with a zone")]


def _checked(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise HTTPException(400, f"{name}: needs a time zone (e.g. +07:00 or Z)")
    if reason := implausible(value):
        raise HTTPException(400, f"{name}: {reason}")
    return value


def kpis_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["kpis"])
    reader = Annotated[ApiKey, Depends(require_key(SCOPE_READ))]

    @router.get("/kpis")
    async def kpis(key: reader, since: When = None, until: When = None, unit: Code = None,
                   agency: Code = None, as_of: When = None) -> dict[str, dict[str, Any]]:
        """The KPIs of the period and scope as of `as_of` ({"dossiers": {...}, ...}), with
        "missing": what a value lacks ({"dossiers.satisfaction_rate": ["chưa có dữ liệu
        đánh giá"]}), as `ioc kpis --json` prints them."""
        since, until = _checked("since", since), _checked("until", until)
        as_of = _checked("as_of", as_of)
        if since is not None and until is not None and until < since:
            raise HTTPException(400, "until: before since")
        try:
            result = await asyncio.to_thread(read_kpis, settings, since, until, unit, agency,
                                             as_of)
        except psycopg.Error as exc:
            log.warning("kpis: database error", error=type(exc).__name__)
            raise HTTPException(503, "the KPIs cannot be read now; try again") from None
        return {**result, "missing": missing_inputs(result)}

    return router
