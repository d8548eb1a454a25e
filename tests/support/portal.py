"""The DVCQG portal stood in for by a real HTTP server on a free port, answering its documented
sync contract, with dossiers made from the portal's own sample and the KPIs they must give."""

import copy
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.dvcqg import DvcqgConnector
from ioc.core.settings import Settings
from tests.support import DATA

# The portal's sync payload sample of shared/samples/dossiers, copied so the suite stands alone.
SAMPLE: dict[str, Any] = json.loads((DATA / "dvcqg-sync.json").read_text("utf-8"))
PERSONAL_VALUES = (b"ChuHoSo", b"SoGiayToChuHoSo", b"LoaiDoiTuong", "Công ty TNHH Mẫu Thử".encode(),
                   b"2601234567")
VN = timezone(timedelta(hours=7))


def changed(record: dict[str, Any]) -> str:
    """When the portal last changed a record: its newest sync step (what `updated_since` reads)."""
    steps = [s["ThoiDiemXuLy"] for s in record.get("tienTrinhDongBo") or []]
    return max(steps) if steps else record.get("NgayTiepNhan") or record["NgayNopHoSo"]


class Portal:
    """The portal's `/hoso` sync endpoint over `records`; can fail, refuse or ask for a token."""

    def __init__(self, records: list[dict[str, Any]], token: str | None = None) -> None:
        self.records, self.token = list(records), token
        self.failures: list[int] = []  # statuses answered before serving again
        self.refuse_after: int | None = None  # answer 403 after this many requests
        self.requests: list[dict[str, list[str]]] = []
        self.times: list[float] = []  # time.monotonic() of each request, as it arrived
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                portal.times.append(time.monotonic())
                url = urlsplit(self.path)
                params = parse_qs(url.query)
                portal.requests.append(params)
                if url.path != "/hoso":
                    return self.answer(404, {"error": "not found"})
                if portal.refuse_after is not None and len(portal.requests) > portal.refuse_after:
                    return self.answer(403, {"error": "forbidden"})
                if portal.failures:
                    return self.answer(portal.failures.pop(0), {"error": "try later"})
                if portal.token and self.headers.get("Authorization") != f"Bearer {portal.token}":
                    return self.answer(401, {"error": "invalid token"})
                since = params.get("updated_since", [""])[0]
                page, size = int(params["page"][0]), int(params["page_size"][0])
                chosen = sorted((r for r in portal.records if changed(r) >= since),
                                key=lambda r: (changed(r), r.get("MaHoSo") or ""))
                items = chosen[(page - 1) * size:page * size]
                more = page * size < len(chosen)
                self.answer(200, {"items": items, "next_page": page + 1 if more else None})

            def answer(self, status: int, body: object) -> None:
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def dossier(n: int, status: int = 10, channel: int = 2, digitized: int = 1, paid: int = 1,
            fee: bool = True, late: bool = False, minute: int = 0) -> dict[str, Any]:
    """The sample with another code and fields; personal data kept, as the source sends it."""
    r = copy.deepcopy(SAMPLE)
    r["MaHoSo"] = f"000.00.12.H25-261103-{n:04d}"
    r.update(TrangThaiHoSo=status, KenhThucHien=channel, HoSoCoThanhPhanSoHoa=digitized,
             DuocThanhToanTrucTuyen=paid)
    if not fee:
        r["DanhSachLePhi"] = []
    last = f"202611130{9 + minute // 60 % 10}{minute % 60:02d}00"  # distinct change times
    r["tienTrinhDongBo"][-1]["ThoiDiemXuLy"] = last
    if late:
        r["NgayKetThucXuLy"] = r["NgayTra"] = "20261118100000"
        r["tienTrinhDongBo"][-1]["ThoiDiemXuLy"] = "20261118100000"
    if status in (1, 2, 4, 5, 6):  # in process: not finished, due in the past or far ahead
        r["NgayKetThucXuLy"] = r["NgayTra"] = None
        r["tienTrinhDongBo"] = r["tienTrinhDongBo"][:2]
        r["tienTrinhDongBo"][-1]["ThoiDiemXuLy"] = last
        r["NgayHenTra"] = "20261110170000" if status == 4 else \
            (datetime.now(VN) + timedelta(days=30)).strftime("%Y%m%d170000")
    if status == 3:
        r["NgayKetThucXuLy"] = r["NgayTra"] = None
        r["NgayTuChoi"] = last
        r["tienTrinhDongBo"] = r["tienTrinhDongBo"][:1]
        r["tienTrinhDongBo"][0]["ThoiDiemXuLy"] = last
    return r


def province() -> list[dict[str, Any]]:
    """Five dossiers: finished on time and late, in process overdue, refused, in process."""
    return [dossier(1, minute=1), dossier(2, channel=1, paid=0, late=True, minute=2),
            dossier(3, status=4, digitized=0, fee=False, minute=3),
            dossier(4, status=3, channel=3, minute=4), dossier(5, status=2, minute=5)]


def expected_kpis(records: list[dict[str, Any]]) -> dict[str, int]:
    """The docs/domain.md definitions, computed from the source records themselves."""
    now = datetime.now(VN).strftime("%Y%m%d%H%M%S")
    in_process = [r for r in records if r["TrangThaiHoSo"] in (1, 2, 4, 5, 6)]
    finished = [r for r in records if r["TrangThaiHoSo"] in (9, 10)]
    fee = [r for r in records if r["DanhSachLePhi"]]
    return {
        "received": len(records),
        "to_handle": sum(r["TrangThaiHoSo"] not in (3, 7, 8) for r in records),
        "finished": len(finished),
        "finished_on_time": sum(r["NgayKetThucXuLy"] <= r["NgayHenTra"] for r in finished),
        "finished_late": sum(r["NgayKetThucXuLy"] > r["NgayHenTra"] for r in finished),
        "in_process": len(in_process),
        "late_in_process": sum(r["NgayHenTra"] < now for r in in_process),
        "online": sum(r["KenhThucHien"] == 2 for r in records),
        "digitized": sum(r["HoSoCoThanhPhanSoHoa"] == 1 for r in records),
        "with_fee": len(fee),
        "paid_online": sum(r["DuocThanhToanTrucTuyen"] == 1 for r in fee),
    }


@pytest.fixture
def portal() -> Iterator[Portal]:
    server = Portal(province())
    yield server
    server.close()


def connector(settings: Settings, portal: Portal, **options: Any) -> DvcqgConnector:
    """A DVCQG connector on that portal: small pages, quick polls and retries."""
    values = {"base_url": portal.url, "page_size": 2, "poll_seconds": 0.1,
              "retry_initial_seconds": 0.05, "retry_max_seconds": 0.2, **options}
    return DvcqgConnector(settings, values)

