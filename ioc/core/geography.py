"""Where a field report happened and who handles it, from official data and the province's files.

A report's commune comes from, in order: the commune code the app sends; the official name of a
commune/ward found in its address (`vietnam-provinces`, today's map); its lat/long inside the
boundary polygons the province supplies (GeoJSON, `IOC_COMMUNE_BOUNDARIES`); otherwise it stays
unassigned for the duty officer. Its agency comes from the province's directory
(`IOC_AGENCY_DIRECTORY`, CSV `code,name,commune_code`). Nothing here is invented: without the
files, a report is simply not placed.
"""

import csv
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from ioc.core.settings import Settings
from ioc.core.units import communes, provinces

# Combining marks of the five Vietnamese tones (huyền, sắc, hỏi, ngã, nặng): moved to the end of
# their word, so "Thuỷ" and "Thủy" (old and new placement) read the same.
TONES = frozenset("\u0300\u0301\u0309\u0303\u0323")
# Official names start with their division type.
PREFIXES = {"phuong": ("phuong",), "xa": ("xa",), "dac khu": ("dac", "khu")}
ABBREVIATIONS = {"p": "phuong", "x": "xa"}  # "P. Việt Trì", "X.Hy Cương"
# A name right after these words is a street, a village, a former district or the province.
NOT_A_COMMUNE = (("thi", "xa"), ("thanh", "pho"), ("tinh",), ("tp",), ("tx",), ("quan",),
                 ("huyen",), ("q",), ("h",), ("duong",), ("pho",), ("ngo",), ("hem",),
                 ("thon",), ("xom",), ("to",), ("khu",), ("ban",), ("lang",), ("ap",))
COMMUNE_ATTRIBUTE = "commune_code"  # the Open311 service attribute: attribute[commune_code]
UNKNOWN_AGENCY_CODE = "IOC"  # no directory: the IOC holds the report until it is routed
DEFAULT_CODE_PROPERTY = "commune_code"

How = Literal["attribute", "address", "boundary", "unassigned"]


@dataclass(frozen=True)
class Word:
    exact: str  # lower case, diacritics kept, tone mark last
    bare: str  # lower case, no diacritics, đ as d


def words(text: str) -> list[Word]:
    """The words of `text` in both folded forms (letters and digits; the rest separates)."""
    out = []
    for word in re.findall(r"[^\W_]+", unicodedata.normalize("NFC", text.casefold())):
        raw = unicodedata.normalize("NFD", word)
        tones = "".join(c for c in raw if c in TONES)
        exact = "".join(c for c in raw if c not in TONES) + tones
        bare = "".join(c for c in raw.replace("đ", "d") if not unicodedata.combining(c))
        out.append(Word(exact, bare))
    return out


@dataclass(frozen=True)
class Name:
    code: str
    kind: str  # "phuong", "xa", "dac khu"
    core: tuple[Word, ...]  # the name without its division type


class PlaceError(ValueError):
    """A directory or boundary file that cannot be used; the message says why."""


class CommuneNames:
    """The official commune/ward names of one province, found in free-text addresses."""

    def __init__(self, province_code: str) -> None:
        self.names: dict[str, list[Name]] = {}
        for code, (province, name) in communes().items():
            if province != province_code:
                continue
            found = words(name)
            kind = next(k for k, prefix in PREFIXES.items()
                        if tuple(w.bare for w in found[:len(prefix)]) == prefix)
            core = tuple(found[len(PREFIXES[kind]):])
            self.names.setdefault(core[0].bare, []).append(Name(code, kind, core))

    def find(self, address: str) -> str | None:
        """The commune named in `address`: the longest match (its division type before it
        counts), then the one spelt with the same diacritics; None if no name or a tie."""
        text = words(address)
        best: tuple[int, bool] | None = None
        found: set[str] = set()
        for i, word in enumerate(text):
            for name in self.names.get(word.bare, ()):
                span = text[i:i + len(name.core)]
                if [w.bare for w in span] != [w.bare for w in name.core]:
                    continue
                before = [w.bare for w in text[:i]]
                if _follows(before, NOT_A_COMMUNE) and not _prefixed(before, name.kind):
                    continue
                length = len(name.core) + (len(PREFIXES[name.kind]) if _prefixed(
                    before, name.kind) else 0)
                rank = (length, [w.exact for w in span] == [w.exact for w in name.core])
                if best is None or rank > best:
                    best, found = rank, {name.code}
                elif rank == best:
                    found.add(name.code)
        return found.pop() if len(found) == 1 else None


def _follows(before: list[str], markers: tuple[tuple[str, ...], ...]) -> bool:
    return any(tuple(before[-len(m):]) == m for m in markers)


def _prefixed(before: list[str], kind: str) -> bool:
    """`before` ends with the division type `kind` ("xã", "x", not "thị xã")."""
    if kind == "xa" and _follows(before, (("thi", "xa"),)):
        return False
    return _follows(before, (PREFIXES[kind],)) or (
        bool(before) and ABBREVIATIONS.get(before[-1]) == kind)


class Boundaries:
    """Commune polygons from a GeoJSON FeatureCollection; each feature's `code_property` holds
    its official five-digit code. A point on several polygons (a shared edge) goes to the
    lowest code."""

    def __init__(self, path: Path, province_code: str,
                 code_property: str = DEFAULT_CODE_PROPERTY) -> None:
        from shapely import STRtree, make_valid
        from shapely.geometry import shape

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PlaceError(f"{path}: not a readable GeoJSON file ({exc})") from None
        features = data.get("features") if isinstance(data, dict) else None
        if not isinstance(features, list):
            raise PlaceError(f"{path}: a GeoJSON FeatureCollection is expected")
        self.codes: list[str] = []
        geometries = []
        for i, feature in enumerate(features):
            where = f"{path}: feature {i}"
            properties = (feature.get("properties") or {}) if isinstance(feature, dict) else {}
            code = _commune(str(properties.get(code_property, "")).strip(), province_code,
                            f"{where}: {code_property}")
            try:
                geometry = shape(feature["geometry"])
            except Exception as exc:  # shapely raises several kinds for bad geometry
                raise PlaceError(f"{where}: not a geometry ({exc})") from None
            if geometry.geom_type not in ("Polygon", "MultiPolygon"):
                raise PlaceError(f"{where}: a Polygon or MultiPolygon is expected, not"
                                 f" {geometry.geom_type}")
            geometries.append(geometry if geometry.is_valid else make_valid(geometry))
            self.codes.append(code)
        self.tree = STRtree(geometries)

    def find(self, lat: float, long: float) -> str | None:
        from shapely.geometry import Point

        hits = self.tree.query(Point(long, lat), predicate="intersects")  # GeoJSON: long, lat
        return min((self.codes[i] for i in hits), default=None)


@dataclass(frozen=True)
class DirectoryAgency:
    code: str
    name: str
    commune_code: str | None  # None: a province-level agency


class Directory:
    """The province's agencies (CSV, header `code,name,commune_code`). A commune's reports go to
    its first agency listed; reports not placed, and communes with none, to the first
    province-level agency (empty `commune_code`)."""

    def __init__(self, agencies: list[DirectoryAgency]) -> None:
        self.agencies = agencies
        self.by_commune: dict[str, DirectoryAgency] = {}
        for agency in agencies:
            if agency.commune_code:
                self.by_commune.setdefault(agency.commune_code, agency)
        self.receiving = next((a for a in agencies if a.commune_code is None), None)

    @classmethod
    def load(cls, path: Path, province_code: str) -> "Directory":
        try:
            with path.open(encoding="utf-8-sig", newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise PlaceError(f"{path}: not a readable CSV file ({exc})") from None
        if rows and not {"code", "name", "commune_code"} <= set(rows[0]):
            raise PlaceError(f"{path}: the header must name code, name, commune_code")
        agencies, seen = [], set()
        for line, row in enumerate(rows, start=2):
            code, name = (row.get("code") or "").strip(), (row.get("name") or "").strip()
            commune = (row.get("commune_code") or "").strip()
            if not code or not name or len(code) > 64 or len(name) > 256:
                raise PlaceError(f"{path}:{line}: code (≤ 64) and name (≤ 256) are required")
            if code in seen:
                raise PlaceError(f"{path}:{line}: agency {code} is listed twice")
            seen.add(code)
            agencies.append(DirectoryAgency(code, name, _commune(
                commune, province_code, f"{path}:{line}: commune_code") if commune else None))
        return cls(agencies)

    def agency(self, commune_code: str | None) -> tuple[str, str | None]:
        """(code, name) of the agency that handles a report of `commune_code`."""
        chosen = self.by_commune.get(commune_code or "") or self.receiving
        return (chosen.code, chosen.name) if chosen else (UNKNOWN_AGENCY_CODE, None)


def _commune(code: str, province_code: str, where: str) -> str:
    """`code` as an official commune/ward code of the province, or PlaceError."""
    code = code.zfill(5) if code.isdigit() else code
    found = communes().get(code)
    if found is None or found[0] != province_code:
        raise PlaceError(f"{where}: {code!r} is not a commune/ward code of province"
                         f" {province_code} ({provinces().get(province_code, '?')})")
    return code


class UnknownCommune(ValueError):
    """A commune code the app sent that is not one of the province's."""


@dataclass(frozen=True)
class Geography:
    """Everything needed to place and route a report in one province."""

    province_code: str
    names: CommuneNames
    boundaries: Boundaries | None
    directory: Directory

    @classmethod
    def load(cls, province_code: str, boundaries: Path | None = None,
             directory: Path | None = None,
             code_property: str = DEFAULT_CODE_PROPERTY) -> "Geography":
        return cls(province_code, CommuneNames(province_code),
                   Boundaries(boundaries, province_code, code_property) if boundaries else None,
                   Directory.load(directory, province_code) if directory else Directory([]))

    def commune_name(self, code: str) -> str:
        return communes()[code][1]

    def check(self, commune_code: str) -> str:
        """The official code, or UnknownCommune naming the province."""
        try:
            return _commune(commune_code.strip(), self.province_code,
                            f"attribute[{COMMUNE_ATTRIBUTE}]")
        except PlaceError as exc:
            raise UnknownCommune(str(exc)) from None

    def resolve(self, commune_code: str | None = None, address: str | None = None,
                lat: float | None = None, long: float | None = None) -> tuple[str | None, How]:
        """The report's commune and how it was found, in the documented order."""
        if commune_code:
            return self.check(commune_code), "attribute"
        if address and (found := self.names.find(address)):
            return found, "address"
        if (self.boundaries and lat is not None and long is not None
                and (found := self.boundaries.find(lat, long))):
            return found, "boundary"
        return None, "unassigned"


def geography(settings: Settings) -> Geography:
    """The province's geography from the settings' files, read once per process."""
    return _load(settings.province_code, settings.commune_boundaries, settings.agency_directory,
                 settings.commune_boundaries_code_property)


@cache
def _load(province_code: str, boundaries: Path | None, directory: Path | None,
          code_property: str) -> Geography:
    return Geography.load(province_code, boundaries, directory, code_property)


def attributes(body: dict[str, Any]) -> dict[str, str]:
    """Open311 service attributes: `attribute[code]=value` form fields, or a JSON `attribute`
    object."""
    found = {m.group(1): str(v) for k, v in body.items()
             if (m := re.fullmatch(r"attribute\[([^\]]{1,64})\]", k))}
    nested = body.get("attribute")
    if isinstance(nested, dict):
        found.update({str(k): str(v) for k, v in nested.items() if v is not None})
    return found
