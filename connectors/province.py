"""A province as the simulator sees it: communes, agencies, procedures, report categories.

The commune list is the official two-tier map (`ioc.core.units`, from `vietnam-provinces`).
Everything the package does not have is written here by hand and is *approximate*:
coordinates (a deterministic scatter inside a rough bounding box), agency codes in the
document-interchange shape, procedure codes in the shape of the national database's MaTTHC
(illustrative, not looked up), and legal processing times as the procedures commonly state them.
"""

import csv
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

from ioc.core.report_services import SERVICES, Service
from ioc.core.units import communes, provinces


@dataclass(frozen=True)
class Procedure:
    """A thủ tục hành chính: legal processing time in working days, whether a fee is due."""

    code: str
    name: str
    field_code: str
    days: int
    fee: bool
    weight: float  # how common it is among the agency's dossiers


@dataclass(frozen=True)
class SimulatedAgency:
    """An invented agency of the simulated province (the events' contract is `Agency`)."""

    code: str  # document-interchange code (mã định danh), e.g. 000.00.12.H25
    name: str
    abbr: str  # used in document notations: 1482/SKHCN-VP
    commune_code: str | None  # None: a province-level agency
    procedures: tuple[Procedure, ...]


@dataclass(frozen=True)
class Commune:
    code: str
    name: str
    urban: bool  # a ward (phường): denser, more field reports
    lat: float
    long: float
    agency: SimulatedAgency  # its People's Committee


@dataclass(frozen=True)
class Province:
    code: str
    name: str
    communes: tuple[Commune, ...]
    departments: tuple[SimulatedAgency, ...]
    committee: SimulatedAgency  # UBND tỉnh: sends and receives documents, files no dossiers
    services: tuple[Service, ...]
    bounds: tuple[float, float, float, float] | None  # lat_min, lat_max, long_min, long_max

    @property
    def agencies(self) -> tuple[SimulatedAgency, ...]:
        return (self.committee, *self.departments, *(c.agency for c in self.communes))


# Rough bounding boxes of a few provinces after the July 2025 mergers (lat_min, lat_max,
# long_min, long_max). APPROXIMATE, for plausible map points only; other provinces get none.
BOUNDS: dict[str, tuple[float, float, float, float]] = {
    "01": (20.56, 21.39, 105.28, 106.02),  # Hà Nội
    "08": (21.50, 23.35, 104.35, 105.60),  # Tuyên Quang (+ Hà Giang)
    "11": (21.00, 22.55, 102.15, 103.60),  # Điện Biên
    "19": (21.35, 22.75, 105.45, 106.25),  # Thái Nguyên (+ Bắc Kạn)
    "25": (20.35, 21.75, 104.85, 105.80),  # Phú Thọ (+ Vĩnh Phúc, Hòa Bình)
    "48": (15.00, 16.20, 107.25, 108.75),  # Đà Nẵng (+ Quảng Nam)
    "75": (10.55, 12.30, 106.40, 107.55),  # Đồng Nai (+ Bình Phước)
    "79": (10.35, 11.50, 106.35, 107.55),  # Hồ Chí Minh (+ Bình Dương, Bà Rịa - Vũng Tàu)
}


def _p(code: str, name: str, field: str, days: int, fee: bool, weight: float) -> Procedure:
    return Procedure(code, name, field, days, fee, weight)


# Departments as merged from 1 March 2025 (Kế hoạch và Đầu tư into Tài chính, Giao thông vận
# tải into Xây dựng, Tài nguyên và Môi trường with Nông nghiệp...). (number, name, abbr, procs)
DEPARTMENTS: tuple[tuple[str, str, str, tuple[Procedure, ...]], ...] = (
    ("03", "Sở Tài chính", "STC", (
        _p("2.001610", "Đăng ký thành lập doanh nghiệp", "DKKD", 3, True, 5),
        _p("2.001199", "Đăng ký thay đổi nội dung đăng ký doanh nghiệp", "DKKD", 3, True, 6),
        _p("1.009645", "Cấp Giấy chứng nhận đăng ký đầu tư", "DT", 15, False, 1))),
    ("05", "Sở Tư pháp", "STP", (
        _p("2.000488", "Cấp Phiếu lý lịch tư pháp cho công dân Việt Nam", "LLTP", 10, True, 12),
        _p("1.008724", "Đăng ký hoạt động Văn phòng công chứng", "CC", 10, True, 0.3),
        _p("1.001078", "Cấp bản sao trích lục hộ tịch", "HT", 1, True, 1))),
    ("07", "Sở Xây dựng", "SXD", (
        _p("1.009972", "Cấp giấy phép xây dựng công trình", "XD", 20, True, 1),
        _p("1.002809", "Đổi giấy phép lái xe do ngành Giao thông vận tải cấp", "GPLX", 5, True, 8),
        _p("1.009982", "Cấp chứng chỉ hành nghề hoạt động xây dựng", "XD", 20, True, 1))),
    ("09", "Sở Nông nghiệp và Môi trường", "SNNMT", (
        _p("1.004227", "Đăng ký biến động quyền sử dụng đất, tài sản gắn liền với đất", "DD",
           10, True, 5),
        _p("1.010727", "Cấp giấy phép môi trường", "MT", 20, True, 0.5),
        _p("1.003605", "Cấp giấy chứng nhận vùng trồng, cơ sở đóng gói", "TT", 15, False, 0.5))),
    ("10", "Sở Y tế", "SYT", (
        _p("1.012269", "Cấp giấy phép hành nghề khám bệnh, chữa bệnh", "KCB", 20, True, 2),
        _p("1.004616", "Cấp Chứng chỉ hành nghề dược", "DUOC", 20, True, 1),
        _p("1.001646", "Cấp Giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm", "ATTP",
           15, True, 1))),
    ("11", "Sở Giáo dục và Đào tạo", "SGDĐT", (
        _p("2.001914", "Cấp bản sao văn bằng, chứng chỉ từ sổ gốc", "VBCC", 1, True, 4),
        _p("1.005092", "Chỉnh sửa nội dung văn bằng, chứng chỉ", "VBCC", 5, False, 1))),
    ("12", "Sở Khoa học và Công nghệ", "SKHCN", (
        _p("1.001234", "Cấp Giấy chứng nhận đăng ký hoạt động khoa học và công nghệ",
           "KHCN01", 10, True, 0.5),
        _p("1.003589", "Cấp giấy phép bưu chính", "BC", 10, True, 0.3))),
    ("14", "Sở Công Thương", "SCT", (
        _p("2.000620", "Cấp Giấy phép bán lẻ sản phẩm rượu", "LTTN", 10, True, 1),
        _p("2.000181", "Cấp Giấy chứng nhận cửa hàng đủ điều kiện bán lẻ xăng dầu", "XD",
           15, True, 0.3))),
    ("16", "Sở Nội vụ", "SNV", (
        _p("1.000105", "Cấp giấy phép lao động cho người lao động nước ngoài", "LD", 5, True, 1),
        _p("1.001257", "Giải quyết chế độ trợ cấp một lần cho người có công", "NCC", 15, False,
           0.5))),
    ("17", "Sở Văn hóa, Thể thao và Du lịch", "SVHTTDL", (
        _p("1.004580", "Cấp giấy phép kinh doanh dịch vụ lữ hành nội địa", "DL", 10, True, 0.3),
        _p("1.001029", "Cấp Giấy phép đủ điều kiện kinh doanh dịch vụ karaoke", "VH", 5, True,
           0.5))),
)

COMMUNE_PROCEDURES: tuple[Procedure, ...] = (
    _p("1.001193", "Đăng ký khai sinh", "HT", 1, False, 10),
    _p("1.000656", "Đăng ký khai tử", "HT", 1, False, 3),
    _p("1.000894", "Đăng ký kết hôn", "HT", 1, False, 3),
    _p("1.004873", "Cấp Giấy xác nhận tình trạng hôn nhân", "HT", 3, True, 4),
    _p("2.000815", "Chứng thực bản sao từ bản chính giấy tờ, văn bản", "CT", 1, True, 25),
    _p("2.000884", "Chứng thực chữ ký trong các giấy tờ, văn bản", "CT", 1, True, 8),
    _p("2.001035", "Chứng thực hợp đồng, giao dịch liên quan đến tài sản", "CT", 2, True, 3),
    _p("2.000720", "Đăng ký thành lập hộ kinh doanh", "DKKD", 3, True, 4),
    _p("1.009994", "Cấp giấy phép xây dựng nhà ở riêng lẻ", "XD", 15, True, 2),
    _p("1.003583", "Đăng ký đất đai, cấp Giấy chứng nhận quyền sử dụng đất lần đầu", "DD",
       20, True, 2),
    _p("1.001776", "Thực hiện trợ cấp xã hội hằng tháng", "BTXH", 10, False, 1),
)

# How common each service is among the simulated reports.
SERVICE_WEIGHTS: dict[str, float] = {"GT-01": 20, "GT-02": 4, "TN-01": 8, "MT-01": 25, "MT-02": 6,
                                     "CS-01": 12, "CX-01": 6, "CN-01": 3, "TT-01": 15,
                                     "TT-02": 5}


# --- Working time: 07:30-11:30 and 13:30-17:00 local, Monday to Friday -------------------
# Legal processing times count working days. Work is measured in office minutes since
# Monday 1969-12-29, so "3 working days later" is plain arithmetic. Public holidays and Tết
# are ignored.
OFFICE_DAY = 450.0
VIETNAM = timezone(timedelta(hours=7))  # Asia/Ho_Chi_Minh, no daylight saving time


def iso(ts: float) -> str:
    """POSIX time `ts` as local ISO 8601, to the second (the simulated payloads' times)."""
    return datetime.fromtimestamp(int(ts), VIETNAM).isoformat()


def office_minutes(ts: float) -> float:
    """Office minutes elapsed at POSIX time `ts` (outside office hours: the next opening)."""
    local = ts + 7 * 3600
    day, second = divmod(local, 86400)
    weeks, weekday = divmod(int(day) + 3, 7)
    base = (weeks * 5 + min(weekday, 5)) * OFFICE_DAY
    if weekday >= 5:
        return base
    m = second / 60
    within = min(max(m - 450, 0), 240) + min(max(m - 810, 0), 210)
    return base + within


def from_office(minutes: float) -> float:
    """The POSIX time at which `minutes` office minutes have elapsed."""
    days, rest = divmod(minutes, OFFICE_DAY)
    weeks, weekday = divmod(int(days), 5)
    minute = 450 + rest if rest < 240 else 810 + rest - 240
    return (weeks * 7 + weekday - 3) * 86400 + minute * 60 - 7 * 3600


def later(ts: float, office_mins: float) -> float:
    """The time `office_mins` minutes of office time after `ts`."""
    return from_office(office_minutes(ts) + office_mins)


def _unit_interval(text: str) -> float:
    """A stable pseudo-random number in [0, 1) from a text (same on every machine)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _province_label(name: str) -> str:
    # "Phú Thọ" -> "tỉnh Phú Thọ"; "Thành phố Hà Nội" -> "thành phố Hà Nội"
    return "thành phố" + name[len("Thành phố"):] if name.startswith("Thành phố") else f"tỉnh {name}"


def _committee_name(commune_name: str) -> str:
    # "Phường Việt Trì" -> "UBND phường Việt Trì"
    return f"UBND {commune_name[0].lower()}{commune_name[1:]}"


@cache
def load_province(code: str = "25") -> Province:
    """The province `code` of the current map, with its hand-written catalogue."""
    names = provinces()
    if code not in names:
        raise ValueError(f"{code!r} is not a current province code; known: {sorted(names)}")
    bounds = BOUNDS.get(code)
    own = sorted((c, name) for c, (p, name) in communes().items() if p == code)
    result = []
    for i, (commune_code, name) in enumerate(own):
        agency = SimulatedAgency(f"000.{30 + i // 100}.{i % 100:02d}.H{code}",
                                 _committee_name(name), "UBND", commune_code,
                                 COMMUNE_PROCEDURES)
        lat = long = 0.0
        if bounds:  # deterministic scatter inside the box: approximate, never a real location
            lat_min, lat_max, long_min, long_max = bounds
            lat = lat_min + (lat_max - lat_min) * _unit_interval(f"lat:{commune_code}")
            long = long_min + (long_max - long_min) * _unit_interval(f"long:{commune_code}")
        result.append(Commune(commune_code, name, name.startswith("Phường"), round(lat, 5),
                              round(long, 5), agency))
    label = _province_label(names[code])
    departments = tuple(
        SimulatedAgency(f"000.00.{number}.H{code}", f"{name} {label}", abbr, None, procs)
        for number, name, abbr, procs in DEPARTMENTS)
    committee = SimulatedAgency(f"000.00.00.H{code}", f"Ủy ban nhân dân {label}", "UBND",
                                None, ())
    return Province(code, names[code], tuple(result), departments, committee, SERVICES, bounds)


def write_directory(province: Province, path: Path) -> Path:
    """The simulated province's agencies as an agency directory file (`IOC_AGENCY_DIRECTORY`,
    ioc/core/geography.py), so the demo's API files reports under the simulator's agencies. The
    provincial People's Committee comes first: it receives the reports not placed yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["code", "name", "commune_code"])
        for agency in province.agencies:
            out.writerow([agency.code, agency.name, agency.commune_code or ""])
    return path
