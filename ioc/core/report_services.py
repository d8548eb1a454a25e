"""The Open311 services (field-report categories) the API offers and their target times.

A common urban catalogue; a province that needs others changes this list.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    """An Open311 service and the hours within which a report of it is expected resolved."""

    code: str
    name: str
    group: str
    hours: float


SERVICES: tuple[Service, ...] = (
    Service("GT-01", "Ổ gà, hư hỏng mặt đường", "Giao thông", 72),
    Service("GT-02", "Đèn tín hiệu giao thông hỏng", "Giao thông", 24),
    Service("TN-01", "Ngập úng, tắc cống thoát nước", "Thoát nước", 12),
    Service("MT-01", "Rác thải, vệ sinh môi trường", "Môi trường", 24),
    Service("MT-02", "Ô nhiễm tiếng ồn, khói bụi", "Môi trường", 72),
    Service("CS-01", "Hư hỏng chiếu sáng công cộng", "Hạ tầng đô thị", 48),
    Service("CX-01", "Cây xanh gãy đổ, nguy hiểm", "Hạ tầng đô thị", 24),
    Service("CN-01", "Sự cố cấp nước", "Hạ tầng đô thị", 24),
    Service("TT-01", "Lấn chiếm vỉa hè, lòng đường", "Trật tự đô thị", 48),
    Service("TT-02", "Xây dựng không phép, sai phép", "Trật tự đô thị", 120),
)
