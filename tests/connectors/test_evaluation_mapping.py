"""The portal mapping of citizens' evaluations (connectors/mappings/portal.py): a record of its
own or a sync record carrying one gives an evaluation event, with one id whichever way it came;
a sync record without one gives its dossier alone."""

from connectors.dvcqg import DvcqgConnector
from connectors.mappings.common import AgencyPlaces
from connectors.mappings.portal import evaluation_event, parse_time
from ioc.core.events import DossierEvent, EvaluationEvent
from ioc.core.settings import Settings
from tests.support.portal import dossier


def test_a_sync_record_carrying_an_evaluation_gives_both_events() -> None:
    poller = DvcqgConnector(Settings(), {"base_url": "http://unused"})
    plain = dossier(1)
    assert isinstance(poller.map(plain), DossierEvent)
    carried = {**plain, "MucDoHaiLong": "3", "KhieuNai": 1}  # text or number, as _int reads
    mapped = poller.map(carried)
    assert isinstance(mapped, list)
    first, second = mapped
    assert isinstance(first, DossierEvent) and isinstance(second, EvaluationEvent)
    assert first.event_id == poller.map(plain).event_id  # the dossier's own id is unchanged
    assert (second.entity_id, second.payload.level, second.payload.complaint) == (
        plain["MaHoSo"], "unsatisfied", True)
    # No NgayDanhGia: the record's change time (its newest step).
    newest = max(s["ThoiDiemXuLy"] for s in plain["tienTrinhDongBo"])
    assert second.occurred_at == parse_time(newest, "t")
    # The same evaluation pushed on its own has the same id: it counts once.
    alone = {"MaHoSo": plain["MaHoSo"], "DonViXuLy": plain["DonViXuLy"], "MucDoHaiLong": 3,
             "KhieuNai": "1", "NgayDanhGia": newest}
    pushed = evaluation_event(alone, AgencyPlaces("25"), "evaluation_push")
    assert pushed.event_id == second.event_id
    changed = evaluation_event({**alone, "MucDoHaiLong": 2}, AgencyPlaces("25"), "x")
    assert changed.event_id != second.event_id
