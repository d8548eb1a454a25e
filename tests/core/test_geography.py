"""Placing and routing field reports (ioc/core/geography.py). Every expected commune code below was
looked up by hand in vietnam-provinces 2025.10.1 (`Ward.iter_by_province(25)`), and the
polygons are squares drawn for this test: nothing is computed with the code under test."""

import json
from pathlib import Path
from typing import Any

import pytest

from ioc.core.geography import (
    UNKNOWN_AGENCY_CODE,
    Boundaries,
    CommuneNames,
    Directory,
    Geography,
    PlaceError,
    UnknownCommune,
    attributes,
)
from tests.support import ROOT

VIET_TRI, NONG_TRANG, HY_CUONG = "07900", "07894", "08515"  # Phường Việt Trì, Phường Nông
# Trang, Xã Hy Cương (Phú Thọ, 25)
PHU_THO_WARD, AU_CO = "07942", "07948"  # Phường Phú Thọ, Phường Âu Cơ
TAM_DUONG, TAM_DUONG_BAC = "08869", "08872"  # Xã Tam Dương, Xã Tam Dương Bắc
THANH_THUY, LAC_THUY = "08674", "05392"  # Xã Thanh Thuỷ (old tone placement), Xã Lạc Thủy
VAN_LANG, VAN_LANG_BREVE = "02143", "05665"  # Thái Nguyên (19): Xã Văn Lang, Xã Văn Lăng
HANOI_WARD = "00070"  # Phường Hoàn Kiếm... of Hà Nội (01), not of Phú Thọ


def square(west: float, south: float, size: float = 0.1) -> list[list[float]]:
    """A closed ring, GeoJSON order (long, lat)."""
    return [[west, south], [west + size, south], [west + size, south + size],
            [west, south + size], [west, south]]


def feature(code: Any, geometry: dict[str, Any], key: str = "commune_code") -> dict[str, Any]:
    return {"type": "Feature", "properties": {key: code, "ten": "drawn for the test"},
            "geometry": geometry}


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


@pytest.fixture
def boundaries(tmp_path: Path) -> Path:
    """Việt Trì and Nông Trang share the edge long = 105.1; Hy Cương is two squares with a gap
    between them (its code written as a number, as some exports do)."""
    path = tmp_path / "communes.geojson"
    path.write_text(json.dumps(collection(
        feature(VIET_TRI, {"type": "Polygon", "coordinates": [square(105.0, 21.0)]}),
        feature(NONG_TRANG, {"type": "Polygon", "coordinates": [square(105.1, 21.0)]}),
        feature(int(HY_CUONG), {"type": "MultiPolygon", "coordinates": [
            [square(105.3, 21.0)], [square(105.5, 21.0)]]}),
    )), encoding="utf-8")
    return path


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "agencies.csv"
    path.write_text("code,name,commune_code\n"
                    "SO-XD,Sở Xây dựng,\n"
                    "UBND-VT,UBND phường Việt Trì,07900\n"
                    "CA-VT,Công an phường Việt Trì,7900\n"
                    "UBND-HC,UBND xã Hy Cương,08515\n", encoding="utf-8")
    return path


# --- the order of the sources ------------------------------------------------------------------

def test_the_apps_commune_code_wins(boundaries: Path) -> None:
    places = Geography.load("25", boundaries)
    assert places.resolve(HY_CUONG, "phường Việt Trì", 21.05, 105.15) == (HY_CUONG, "attribute")
    assert places.resolve(" 08515 ") == (HY_CUONG, "attribute")


def test_a_name_in_the_address_wins_over_the_coordinates(boundaries: Path) -> None:
    places = Geography.load("25", boundaries)
    assert places.resolve(None, "Số 3, phường Việt Trì", 21.05, 105.15) == (VIET_TRI, "address")
    # No official name in the address: the coordinates decide.
    assert places.resolve(None, "Phố Hòa Phong, số 12", 21.05, 105.15) == \
        (NONG_TRANG, "boundary")


def test_points_in_polygons(boundaries: Path) -> None:
    places = Geography.load("25", boundaries)
    cases = [((21.05, 105.05), VIET_TRI), ((21.05, 105.15), NONG_TRANG),
             ((21.05, 105.35), HY_CUONG), ((21.05, 105.55), HY_CUONG),  # both parts
             ((21.05, 105.45), None),  # the gap between Hy Cương's two parts
             ((10.8, 106.6), None),  # far outside (Hồ Chí Minh City)
             ((21.05, 105.1), NONG_TRANG),  # the shared edge: the lower code, 07894
             ((21.0, 105.0), VIET_TRI)]  # a corner belongs to its polygon
    for (lat, long), code in cases:
        assert places.resolve(lat=lat, long=long) == \
            ((code, "boundary") if code else (None, "unassigned")), (lat, long)


def test_without_a_boundary_file_coordinates_leave_it_unassigned() -> None:
    places = Geography.load("25")
    assert places.boundaries is None
    assert places.resolve(lat=21.3227, long=105.4019) == (None, "unassigned")
    assert places.resolve(None, None, None, None) == (None, "unassigned")


def test_an_unknown_commune_code_is_refused(boundaries: Path) -> None:
    places = Geography.load("25", boundaries)
    for code in ("99999", HANOI_WARD, "abc", "079000"):
        with pytest.raises(UnknownCommune, match=r"attribute\[commune_code\].*province 25"):
            places.resolve(code, "phường Việt Trì", 21.05, 105.05)


def test_attributes_from_form_fields_and_json() -> None:
    assert attributes({"attribute[commune_code]": "07900", "lat": "21"}) == \
        {"commune_code": "07900"}
    assert attributes({"attribute": {"commune_code": 7900}}) == {"commune_code": "7900"}
    assert attributes({"attribute": "07900", "attribute[]": "x"}) == {}


# --- official names in addresses -----------------------------------------------------------------

@pytest.mark.parametrize(("address", "code"), [
    ("12 Hùng Vương, phường Việt Trì, tỉnh Phú Thọ", VIET_TRI),
    ("12 HÙNG VƯƠNG, PHƯỜNG VIỆT TRÌ", VIET_TRI),
    ("12 hung vuong, phuong viet tri", VIET_TRI),  # typed without diacritics
    ("P.Việt Trì", VIET_TRI),
    ("số 5 đường Âu Cơ, P. Việt Trì", VIET_TRI),  # a street named like a ward is not it
    ("Âu Cơ", AU_CO),
    ("xã Tam Dương Bắc", TAM_DUONG_BAC),  # the longest name wins
    ("Tam Dương", TAM_DUONG),
    ("thôn Phú Thọ, xã Hy Cương", HY_CUONG),  # a village named like a ward is not it
    ("Phú Thọ", PHU_THO_WARD),
    ("xã Thanh Thủy", THANH_THUY),  # new tone placement, the package writes Thuỷ
    ("Lạc Thuỷ", LAC_THUY),  # old tone placement, the package writes Thủy
    ("Xa Thanh Thuy", THANH_THUY),
    ("Tổ 3, Khu 5, xã Hy Cương", HY_CUONG),
    ("phu\u031bo\u031b\u0300ng Vie\u0302\u0323t Tri\u0300", VIET_TRI),  # decomposed (NFD)
])
def test_official_names(address: str, code: str) -> None:
    assert CommuneNames("25").find(address) == code


@pytest.mark.parametrize("address", [
    "tỉnh Phú Thọ",  # the province, not Phường Phú Thọ
    "thị xã Phú Thọ",  # the former town
    "thành phố Việt Trì",  # the former city
    "huyện Tam Dương",  # the former district
    "Âu Cơ, Việt Trì",  # two wards named: not guessed
    "Phố Hòa Phong",
    "",
])
def test_no_name_or_an_ambiguous_one_is_not_guessed(address: str) -> None:
    assert CommuneNames("25").find(address) is None


def test_names_differing_only_by_diacritics() -> None:
    names = CommuneNames("19")  # Thái Nguyên has both Văn Lang and Văn Lăng
    assert names.find("xã Văn Lăng") == VAN_LANG_BREVE
    assert names.find("xã Văn Lang") == VAN_LANG
    assert names.find("xa van lang") is None  # either: not guessed


# --- the directory ------------------------------------------------------------------------------

def test_directory_routes_by_commune(directory: Path) -> None:
    places = Geography.load("25", directory=directory)
    assert places.directory.agency(VIET_TRI) == ("UBND-VT", "UBND phường Việt Trì")  # first
    assert places.directory.agency(HY_CUONG) == ("UBND-HC", "UBND xã Hy Cương")
    assert places.directory.agency(NONG_TRANG) == ("SO-XD", "Sở Xây dựng")  # none listed
    assert places.directory.agency(None) == ("SO-XD", "Sở Xây dựng")
    assert Directory([]).agency(VIET_TRI) == (UNKNOWN_AGENCY_CODE, None)


def test_the_shipped_sample_directory_loads() -> None:
    sample = Directory.load(ROOT / "deploy" / "province" / "agencies.sample.csv", "25")
    assert sample.agency(VIET_TRI)[1] == "UBND phường Việt Trì"
    assert sample.agency(None)[1] == "Ủy ban nhân dân tỉnh Phú Thọ"


@pytest.mark.parametrize(("text", "message"), [
    ("code,name\nA,B\n", "header"),
    ("code,name,commune_code\n,Sở,\n", ":2: code"),
    ("code,name,commune_code\nA,Sở,\nA,Sở khác,\n", ":3: agency A is listed twice"),
    ("code,name,commune_code\nA,UBND,00070\n", ":2: commune_code: '00070'"),
])
def test_a_bad_directory_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlaceError, match=message):
        Directory.load(path, "25")


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "not a readable GeoJSON"),
    (json.dumps({"type": "Feature"}), "FeatureCollection"),
    (json.dumps(collection(feature("07070", {"type": "Polygon",
                                             "coordinates": [square(0, 0)]}))), "feature 0"),
    (json.dumps(collection(feature(VIET_TRI, {"type": "Point", "coordinates": [105, 21]}))),
     "Polygon or MultiPolygon"),
    (json.dumps(collection(feature(VIET_TRI, {"type": "Polygon", "coordinates": "x"}))),
     "not a geometry"),
    (json.dumps(collection(feature(VIET_TRI, {"type": "Polygon",
                                              "coordinates": [square(0, 0)]}, key="ma_xa"))),
     "commune_code"),
])
def test_a_bad_boundary_file_says_why(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PlaceError, match=message):
        Boundaries(path, "25")


def test_the_code_property_is_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "ma_xa.geojson"
    path.write_text(json.dumps(collection(feature(
        VIET_TRI, {"type": "Polygon", "coordinates": [square(105.0, 21.0)]}, key="ma_xa"))))
    assert Boundaries(path, "25", "ma_xa").find(21.05, 105.05) == VIET_TRI
