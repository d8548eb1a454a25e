"""The administrative map in force since 1 July 2025: 34 provinces, 3,321 communes/wards."""

from functools import cache

from vietnam_provinces import Province, Ward


def _code(value: int, width: int) -> str:
    return str(value).zfill(width)


@cache
def provinces() -> dict[str, str]:
    """Official province code (two digits) -> name."""
    return {_code(p.code.value, 2): p.name for p in Province.iter_all()}


@cache
def communes() -> dict[str, tuple[str, str]]:
    """Official commune/ward code (five digits) -> (province code, name)."""
    return {
        _code(w.code.value, 5): (_code(w.province_code.value, 2), w.name) for w in Ward.iter_all()
    }


def check_unit(province_code: str, commune_code: str | None) -> None:
    """Raise ValueError unless the codes name a current province and one of its communes."""
    if province_code not in provinces():
        raise ValueError(f"{province_code!r} is not a current province code (two digits)")
    if commune_code is None:
        return
    commune = communes().get(commune_code)
    if commune is None:
        raise ValueError(f"{commune_code!r} is not a current commune/ward code (five digits)")
    if commune[0] != province_code:
        raise ValueError(
            f"commune {commune_code} ({commune[1]}) belongs to province {commune[0]}, "
            f"not {province_code}"
        )
