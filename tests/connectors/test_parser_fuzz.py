"""Property tests of the parsers that read what outsiders send: whatever the input, a record
is either mapped or refused with a ValueError that says why; nothing else escapes.

Inputs are the real samples, mutated by Hypothesis (derandomized: CI sees the same examples).
No broker or database is needed: the mappings (connectors/mappings/) are pure.
"""

import json
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.mappings.common import AgencyPlaces
from connectors.mappings.edxml import document_event, message_records
from connectors.mappings.portal import dossier_event
from ioc.core.events import DocumentEvent, DossierEvent
from tests.support import DATA

DOSSIER: dict[str, Any] = json.loads((DATA / "dvcqg-sync.json").read_text(encoding="utf-8"))
EDXML = sorted((DATA / "edxml").glob("*.xml"))
RECEIVER = "000.79.00.H25"  # the ward People's Committee the samples are addressed to
PLACES = AgencyPlaces("25")  # every agency a province-level one of Phú Thọ
# The payload's whole-number fields and where the event carries them (None: checked only).
WHOLE_NUMBERS = {"TrangThaiHoSo": "status", "KenhThucHien": "channel",
                 "HoSoCoThanhPhanSoHoa": "digitized", "DuocThanhToanTrucTuyen": "paid_online"}

T = TypeVar("T")
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=30) | st.sampled_from(["", "20251117083000", "99999999999999", "1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)


@st.composite
def mutated_dossiers(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)  # not even an object
    record = dict(DOSSIER)
    for key in draw(st.lists(st.sampled_from(sorted(DOSSIER)), max_size=4, unique=True)):
        if draw(st.booleans()):
            del record[key]
        else:
            record[key] = draw(json_values)
    record.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return record


@st.composite
def mutated_xml(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(EDXML)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        end = min(len(data), at + draw(st.integers(0, 40)))
        data[at:end] = draw(st.binary(max_size=12) | st.sampled_from(
            [b"", b"<", b">", b"</", b"&amp;", b"&x;", b"<!DOCTYPE a [<!ENTITY x 'y'>]>",
             b"32/13/2025 25:61:00", b"\xff\xfe", b"000.00.12.H25"]))
    return bytes(data)


def test_the_samples_map() -> None:
    """The properties below are only worth something if the unmutated inputs pass."""
    assert isinstance(dossier_event(DOSSIER, PLACES, "fuzz"), DossierEvent)
    mapped = [document_event(r, PLACES, "fuzz") for path in EDXML for r in message_records(
        path.read_bytes(), {"file": path.name}, [RECEIVER]) if not r.get("error")]
    assert mapped and all(isinstance(e, DocumentEvent) for e in mapped)


def whole_number(value: Any) -> int | None:
    """What a whole-number field of the payload may hold, read without the mapping: a JSON
    number >= 0 that is no JSON true/false, or its digits as text; None when it is neither."""
    if type(value) is int and value >= 0:
        return value
    if type(value) is str and value.strip().isdigit():
        return int(value)
    return None


def mapped_or_refused(map_one: Callable[[], T]) -> T | None:
    """The event, or None when the record was refused with a ValueError that says why;
    any other exception escapes and fails the test."""
    try:
        return map_one()
    except ValueError as exc:
        assert str(exc).strip()
        return None


@FUZZ
@given(record=mutated_dossiers())
def test_any_dossier_record_is_mapped_or_refused_with_a_reason(record: Any) -> None:
    event = mapped_or_refused(lambda: dossier_event(record, PLACES, "fuzz"))
    if event is None:
        return
    assert isinstance(event, DossierEvent)
    # Mapped: each whole-number field was absent or a whole number, read as written.
    for name, field in WHOLE_NUMBERS.items():
        value, mapped = record.get(name), getattr(event.payload, field)
        if value is None or value == "":
            assert mapped is None, name
        else:
            assert whole_number(value) is not None, f"{name}: {value!r} was accepted"
            assert int(mapped) == whole_number(value), name


@FUZZ
@given(data=mutated_xml())
def test_any_edxml_bytes_are_read_or_refused_with_a_reason(data: bytes) -> None:
    records = message_records(data, {"file": "fuzz.xml"}, [RECEIVER])
    assert isinstance(records, list)
    for record in records:
        if record.get("error"):
            assert isinstance(record["error"], str) and record["error"].strip()
            continue
        event = mapped_or_refused(lambda r=record: document_event(r, PLACES, "fuzz"))
        assert event is None or isinstance(event, DocumentEvent)
