"""Open311 GeoReport v2 routes against the real broker, PostgreSQL and an `ioc worker`.

Expected communes are official codes looked up by hand in vietnam-provinces (Phú Thọ, 25), and
the boundaries are squares drawn here: nothing is computed with the code under test."""

import asyncio
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from georeport import GeoReport

from dashboards import field_reports
from dashboards.macros import Context
from dashboards.sdk import to_dict
from ioc.api.app import create_app
from ioc.api.keys import create_key
from ioc.core.db import connect
from ioc.core.events import AdminUnit, Agency, FieldReportEvent, FieldReportPayload, ReportStatus
from ioc.core.kpis import read_kpis
from ioc.core.logs import scrub
from ioc.core.redact import redact
from ioc.core.report_services import SERVICES
from ioc.core.settings import Settings
from tests.support.api import assert_error
from tests.support.boards import run, variable
from tests.support.services import ServedApps, WorkerProcess, free_port, publish, query, wait_until

try:  # parse what the server sends as an untrusted client would
    from defusedxml.ElementTree import fromstring as parse_xml  # type: ignore[import-untyped]
except ImportError:
    parse_xml = ET.fromstring

V2 = "/open311/v2"
FORM = {"content-type": "application/x-www-form-urlencoded"}
VIET_TRI = (21.3227, 105.4019)  # Phú Thọ
# Phường Việt Trì, Phường Nông Trang, Xã Hy Cương; Phường Hoàn Kiếm (Hà Nội)
VIET_TRI_WARD, NONG_TRANG, HY_CUONG, HANOI_WARD = "07900", "07894", "08515", "00070"
PERSONAL = {"first_name": "Thị Hoa-Reporter", "last_name": "Nguyễn-Reporter",
            "email": "hoa.nguyen@example.vn", "phone": "0987654321", "device_id": "dev-5f3a9c",
            "account_id": "acct-778899"}
SERVICE_FIELDS = ["service_code", "service_name", "description", "metadata", "type", "keywords",
                  "group"]
REQUEST_FIELDS = ["service_request_id", "status", "status_notes", "service_name", "service_code",
                  "description", "agency_responsible", "service_notice", "requested_datetime",
                  "updated_datetime", "expected_datetime", "address", "address_id", "zipcode",
                  "lat", "long", "media_url"]


@pytest.fixture
def serve(serve_app: ServedApps) -> Callable[[Settings], httpx.Client]:
    """The monitor's app (Open311 router included), on a free port (lifespan included)."""
    return lambda settings: serve_app(create_app(settings))


@pytest.fixture
def app_key(prepared: Settings) -> str:
    """A citizen app's key: Open311 POSTs need `reports:create`."""
    return create_key(prepared, "citizen-app", ["reports:create"])[1]


async def topic_bytes(settings: Settings, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(settings.topic("field_reports"),
                                bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [r.key + b"|" + r.value for r in records]
    finally:
        await consumer.stop()
    return found


def fixed_event(settings: Settings, request_id: str) -> bytes:
    """The worker's row for `request_id` moved to status fixed, as a later event."""
    [(commune, agency, code, lat, long)] = query(
        settings, "SELECT commune_code, agency_code, service_code, lat, long FROM field_reports"
        " WHERE service_request_id = %s", (request_id,))
    now = datetime.now(UTC) + timedelta(seconds=1)
    return FieldReportEvent(
        event_id=uuid.uuid4(), source="test-agency", occurred_at=now,
        unit=AdminUnit(province_code="25", commune_code=commune or None),
        agency=Agency(code=agency),
        payload=FieldReportPayload(service_request_id=request_id, service_code=code,
                                   status=ReportStatus.FIXED, lat=lat, long=long,
                                   updated_datetime=now)).model_dump_json().encode()


# --- services --------------------------------------------------------------------------------

def test_services_match_the_catalogue(
    serve: Callable[[Settings], httpx.Client], settings: Settings
) -> None:
    api = serve(settings)
    catalogue = SERVICES
    response = api.get(f"{V2}/services.json")
    assert response.status_code == 200
    services = response.json()
    assert [s["service_code"] for s in services] == [s.code for s in catalogue]
    for row, service in zip(services, catalogue, strict=True):
        assert list(row) == SERVICE_FIELDS
        assert (row["service_name"], row["group"]) == (service.name, service.group)
        assert row["metadata"] is True and row["type"] == "realtime"

    definition = api.get(f"{V2}/services/{catalogue[0].code}.json")
    assert definition.status_code == 200
    [attribute] = definition.json()["attributes"]
    assert definition.json()["service_code"] == catalogue[0].code
    assert (attribute["code"], attribute["variable"], attribute["datatype"],
            attribute["required"], attribute["order"]) == ("commune_code", True, "string",
                                                           False, 1)
    assert_error(api.get(f"{V2}/services/XX-99.json"), 404, "service_code")
    assert_error(api.get(f"{V2}/services.csv"), 404, "format")

    xml = api.get(f"{V2}/services.xml")
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("text/xml")
    assert xml.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = parse_xml(xml.content)
    assert root.tag == "services"
    elements = root.findall("service")
    assert [e.findtext("service_code") for e in elements] == [s.code for s in catalogue]
    assert [child.tag for child in elements[0]] == SERVICE_FIELDS
    assert elements[0].findtext("service_name") == catalogue[0].name  # UTF-8 Vietnamese
    assert elements[0].findtext("metadata") == "true"

    xml_definition = parse_xml(api.get(f"{V2}/services/{catalogue[0].code}.xml").content)
    assert xml_definition.findtext("attributes/attribute/code") == "commune_code"
    assert xml_definition.findtext("attributes/attribute/required") == "false"

    missing = api.get(f"{V2}/services/XX-99.xml")
    assert missing.status_code == 404
    errors = parse_xml(missing.content)
    assert errors.tag == "errors"
    assert errors.find("error/code").text == "404"  # type: ignore[union-attr]
    assert "service_code" in (errors.findtext("error/description") or "")


# --- a request, end to end -------------------------------------------------------------------

def test_request_reaches_the_kpis_without_personal_data(
    serve: Callable[[Settings], httpx.Client], prepared: Settings, app_key: str, tmp_path: Path
) -> None:
    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        api = serve(prepared)
        lat, long = VIET_TRI
        description = "Ổ gà lớn trước số nhà 12, liên hệ 0987654321"
        response = api.post(f"{V2}/requests.json", headers=FORM, data={
            "service_code": "GT-01", "lat": str(lat), "long": str(long),
            "description": description, "api_key": app_key, **PERSONAL})
        assert response.status_code == 200, response.text
        [answer] = response.json()
        request_id = answer["service_request_id"]
        assert request_id.startswith("PAHT-25-") and answer["service_notice"]

        # JSON bodies too; each POST gets its own id.
        second = api.post(f"{V2}/requests.json", headers={"X-API-Key": app_key}, json={
            "service_code": "MT-01", "lat": lat, "long": long, "email": PERSONAL["email"]})
        assert second.status_code == 200, second.text
        assert second.json()[0]["service_request_id"] != request_id

        wait_until(lambda: query(prepared, "SELECT count(*) FROM field_reports")[0][0] == 2, 60,
                   "both reports in field_reports", worker.log)
        # Coordinates only, no boundary file, no directory: stored unassigned, held by the IOC.
        [(commune, agency, status)] = query(
            prepared, "SELECT commune_code, agency_code, status FROM field_reports"
            " WHERE service_request_id = %s", (request_id,))
        assert (commune, agency, status) == ("", "IOC", "open")
        assert "chưa xác định xã/phường" in answer["service_notice"]
        assert read_kpis(prepared)["field_reports"]["open"] == 2

        # An agency fixes the second one (a status event as a connector would send it).
        fixed_id = second.json()[0]["service_request_id"]
        asyncio.run(publish(prepared, [("field_reports", fixed_id.encode(),
                                        fixed_event(prepared, fixed_id))]))
        wait_until(lambda: read_kpis(prepared)["field_reports"]["open"] == 1, 60,
                   "the fixed report to leave the open count", worker.log)
    finally:
        worker.stop()

    sent = asyncio.run(topic_bytes(prepared, 3))  # two POSTs and the agency's update
    assert sum(b'"source":"open311-api"' in value for value in sent) == 2
    for value in sent:
        for secret in (*PERSONAL.values(), description, "ignored"):
            assert secret.encode() not in value, secret
            assert secret.encode("unicode_escape") not in value, secret
    # No personal field and no value ("<phone>", a redacted number, is no personal data).
    leaked = ("SELECT count(*) FROM events WHERE body::text ~*"
              " '\"(email|phone)\"|reporter|dev-5f3a9c|0987654321'")
    assert query(prepared, leaked) == [(0,)]

    got = api.get(f"{V2}/requests/{request_id}.json")
    assert got.status_code == 200
    [row] = got.json()
    assert list(row) == REQUEST_FIELDS
    assert (row["status"], row["status_notes"], row["service_code"]) == ("open", "open", "GT-01")
    assert row["agency_responsible"] == "IOC"
    assert (row["lat"], row["long"]) == (lat, long)
    assert row["requested_datetime"].endswith("+07:00")
    assert not set(PERSONAL) & set(row)

    listed = api.get(f"{V2}/requests.json").json()
    assert {r["service_request_id"] for r in listed} == {request_id, fixed_id}
    opened = api.get(f"{V2}/requests.json", params={"status": "open"}).json()
    assert [r["service_request_id"] for r in opened] == [request_id]
    [closed] = api.get(f"{V2}/requests.json", params={"status": "closed"}).json()
    assert (closed["service_request_id"], closed["status"], closed["status_notes"]) == \
        (fixed_id, "closed", "fixed")
    assert len(api.get(f"{V2}/requests.json", params={"status": "open,closed"}).json()) == 2
    only = api.get(f"{V2}/requests.json", params={"service_code": "GT-01"}).json()
    assert [r["service_request_id"] for r in only] == [request_id]
    by_id = api.get(f"{V2}/requests.json", params={"service_request_id": f"{request_id},nope"})
    assert [r["service_request_id"] for r in by_id.json()] == [request_id]

    xml = api.get(f"{V2}/requests.xml")
    root = parse_xml(xml.content)
    assert root.tag == "service_requests"
    assert sorted(r.findtext("service_request_id") or "" for r in root.findall("request")) == \
        sorted(r["service_request_id"] for r in listed)
    assert [c.tag for c in root.find("request")] == REQUEST_FIELDS  # type: ignore[union-attr]

    assert_error(api.get(f"{V2}/requests/PAHT-25-NOPE.json"), 404, "service_request_id")


# --- placing a report in a commune, routing it, assigning it --------------------------------

def square(west: float, south: float) -> list[list[float]]:
    """A 0.1° square drawn for the test, GeoJSON order (long, lat)."""
    return [[west, south], [west + 0.1, south], [west + 0.1, south + 0.1],
            [west, south + 0.1], [west, south]]


def place_files(folder: Path) -> tuple[Path, Path]:
    """A directory (Việt Trì and Hy Cương have an agency, Nông Trang none) and two boundaries."""
    directory = folder / "agencies.csv"
    directory.write_text("code,name,commune_code\nTTDH,Trung tâm điều hành,\n"
                         f"UBND-VT,UBND phường Việt Trì,{VIET_TRI_WARD}\n"
                         f"UBND-HC,UBND xã Hy Cương,{HY_CUONG}\n", encoding="utf-8")
    boundaries = folder / "communes.geojson"
    boundaries.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"commune_code": code},
         "geometry": {"type": "Polygon", "coordinates": [square(west, 21.0)]}}
        for code, west in ((VIET_TRI_WARD, 105.0), (NONG_TRANG, 105.1))]}), encoding="utf-8")
    return directory, boundaries


def unassigned_panels(settings: Settings) -> tuple[int, list[str], dict[str, int]]:
    """The field-report dashboard's "Chưa xác định" count, list and per-commune counts, run
    as Grafana runs them (every variable "All")."""
    board = to_dict(field_reports.build())
    specs = {v["name"]: v for v in board["templating"]["list"]}
    values = {name: variable(specs[name], None, []) for name in
              ("commune", "agency", "category", "former_district")}
    now = datetime.now(UTC)
    ctx = Context(now - timedelta(days=1), now + timedelta(minutes=5), timescaledb=False,
                  variables=values)
    panels = {p["title"]: p["targets"][0]["rawSql"] for p in board["panels"]}
    with connect(settings) as conn:
        [(count,)] = run(conn, panels["Chưa xác định xã/phường"], ctx)[1]
        listed = [r[0] for r in run(conn, panels["Phản ánh chưa xác định xã/phường"], ctx)[1]]
        by_commune = {r[0]: r[1] for r in run(conn, panels["Theo xã/phường"], ctx)[1]}
    return count, listed, by_commune


def test_reports_are_placed_routed_and_assigned(
    serve: Callable[[Settings], httpx.Client], prepared: Settings, app_key: str, tmp_path: Path
) -> None:
    directory, boundaries = place_files(tmp_path)
    settings = prepared.model_copy(update={"agency_directory": directory,
                                           "commune_boundaries": boundaries})
    _, officer = create_key(settings, "truc-ban", ["reports:assign"])
    _, handler = create_key(settings, "ubnd", ["reports:update"])
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        api = serve(settings)
        in_nong_trang = {"lat": "21.05", "long": "105.15"}
        posts = {  # name -> (form, expected commune, agency code, agency name)
            "attribute": ({"attribute[commune_code]": HY_CUONG,
                           "address_string": "phường Việt Trì", **in_nong_trang},
                          HY_CUONG, "UBND-HC", "UBND xã Hy Cương"),
            "address": ({"address_string": "Số 3 Hùng Vương, phường Việt Trì", **in_nong_trang},
                        VIET_TRI_WARD, "UBND-VT", "UBND phường Việt Trì"),
            "boundary": (in_nong_trang, NONG_TRANG, "TTDH", "Trung tâm điều hành"),
            "nowhere": ({"lat": "21.05", "long": "105.45"}, "", "TTDH", "Trung tâm điều hành"),
        }
        ids = {}
        for name, (form, *_) in posts.items():
            response = api.post(f"{V2}/requests.json", headers=FORM, data={
                "service_code": "GT-01", "api_key": app_key, **form})
            assert response.status_code == 200, (name, response.text)
            ids[name] = response.json()[0]["service_request_id"]
        wait_until(lambda: query(settings, "SELECT count(*) FROM field_reports")[0][0] == 4, 60,
                   "four reports stored", worker.log)
        for name, (_, commune, code, agency) in posts.items():
            assert query(settings, "SELECT commune_code, agency_code, agency_name FROM"
                         " field_reports WHERE service_request_id = %s", (ids[name],)) == \
                [(commune, code, agency)], name
        assert unassigned_panels(settings) == (1, [ids["nowhere"]], {
            "Chưa xác định": 1, NONG_TRANG: 1, VIET_TRI_WARD: 1, HY_CUONG: 1})

        url = f"{V2}/requests/{ids['nowhere']}/commune.json"
        assert_error(api.post(url, data={"commune_code": VIET_TRI_WARD}), 401, "API key")
        assert_error(api.post(url, data={"commune_code": VIET_TRI_WARD},
                              headers={"X-API-Key": handler}), 403, "reports:assign")
        api.headers["X-API-Key"] = officer
        assert_error(api.post(url, data={"commune_code": "7900"}), 400, "commune_code")
        assert_error(api.post(url, data={"commune_code": HANOI_WARD}), 400, "province 25")
        assert_error(api.post(f"{V2}/requests/PAHT-25-NOPE/commune.json",
                              data={"commune_code": VIET_TRI_WARD}), 404, "service_request_id")
        assigned = api.post(url, json={"commune_code": VIET_TRI_WARD})
        assert assigned.status_code == 200, assigned.text
        [row] = assigned.json()
        assert (row["service_request_id"], row["agency_responsible"]) == \
            (ids["nowhere"], "UBND phường Việt Trì")
        wait_until(lambda: query(settings, "SELECT commune_code, agency_code FROM field_reports"
                                 " WHERE service_request_id = %s", (ids["nowhere"],))
                   == [(VIET_TRI_WARD, "UBND-VT")], 60, "the assignment applied", worker.log)
        assert unassigned_panels(settings) == (0, [], {NONG_TRANG: 1, VIET_TRI_WARD: 2,
                                                      HY_CUONG: 1})
        assert read_kpis(settings, unit=VIET_TRI_WARD)["field_reports"]["reports"] == 2
        assert read_kpis(settings, agency="UBND-VT")["field_reports"]["reports"] == 2
        assert read_kpis(settings, agency="TTDH")["field_reports"]["reports"] == 1
    finally:
        worker.stop()
    sent = asyncio.run(topic_bytes(settings, 5))
    assert sum(b'"source":"open311-duty-officer"' in value for value in sent) == 1


# --- bad input: 400 in the spec's format, naming the field; never a 500 -------------------------

def test_bad_requests_answer_400_naming_the_field(
    serve: Callable[[Settings], httpx.Client], prepared: Settings, app_key: str
) -> None:
    api = serve(prepared)
    url = f"{V2}/requests.json"
    lat, long = (str(v) for v in VIET_TRI)
    ok = {"service_code": "GT-01", "lat": lat, "long": long}
    assert_error(api.post(url, headers=FORM, data=ok), 401, "API key")
    assert_error(api.post(url, headers=FORM, data={**ok, "api_key": "ioc_000000000000_x"}),
                 401, "not valid")
    _, updater = create_key(prepared, "agency", ["reports:update"])
    assert_error(api.post(url, headers=FORM, data={**ok, "api_key": updater}), 403,
                 "reports:create")
    api.headers["X-API-Key"] = app_key
    cases = [
        ({"lat": lat, "long": long}, "service_code"),
        ({"service_code": "GT-01"}, "location"),
        ({"service_code": "GT-01", "lat": lat}, "lat and long"),
        ({**ok, "lat": "91"}, "lat"),
        ({**ok, "long": "-181"}, "long"),
        ({**ok, "lat": "abc"}, "lat"),
        ({**ok, "lat": "nan"}, "lat"),
        ({**ok, "attribute[commune_code]": "99999"}, "attribute[commune_code]"),
        ({**ok, "attribute[commune_code]": HANOI_WARD}, "province 25"),
        ({**ok, "attribute[commune_code]": "Việt Trì"}, "attribute[commune_code]"),
        ({**ok, "description": "x" * 4001}, "description"),
        ({**ok, "service_code": "XX-99"}, "service_code"),
        ({**ok, "email": "e" * 300}, "email"),
    ]
    for data, field in cases:
        assert_error(api.post(url, headers=FORM, data=data), 400, field)
    assert api.post(url, headers=FORM, data={**ok, "description": "x" * 4000}).status_code == 200
    assert api.post(url, headers=FORM, data={"service_code": "GT-01",
                                             "address_string": "Phố Hòa Phong"}).status_code \
        == 200

    malformed: list[tuple[bytes, str]] = [
        (b"", "application/x-www-form-urlencoded"),
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
        (b"service_code=GT-01&lat=%ZZ&long=1", "application/x-www-form-urlencoded"),
        (b"&&&===", "application/x-www-form-urlencoded"),
        (b'{"service_code": "GT-01", "lat": ', "application/json"),
        (b'["service_code", "GT-01"]', "application/json"),
        (b'{"service_code": ["GT-01"], "lat": {}, "long": true}', "application/json"),
        (b'{"service_code": "GT-01", "lat": 1e999, "long": 105}', "application/json"),
        (b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--",
         "multipart/form-data; boundary=x"),
        (b"<xml/>", "text/xml"),
        (b'{"service_code": "GT-01", "lat": true, "long": false}', "application/json"),
    ]
    for body, kind in malformed:
        response = api.post(url, content=body, headers={"content-type": kind})
        assert response.status_code == 400, (body[:60], response.text)
        assert response.json()[0]["code"] == 400

    huge = api.post(url, content=b"service_code=GT-01&" + b"a" * 300_000,
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413, huge.text  # refused before it is read

    xml = api.post(f"{V2}/requests.xml", headers=FORM, data={"lat": lat, "long": long})
    assert xml.status_code == 400
    assert "service_code" in (parse_xml(xml.content).findtext("error/description") or "")

    lists = f"{V2}/requests.json"
    assert_error(api.get(lists, params={"start_date": "2025-01-01T00:00:00Z",
                                        "end_date": "2025-06-01T00:00:00Z"}), 400, "90 days")
    assert_error(api.get(lists, params={"start_date": "yesterday"}), 400, "start_date")
    assert_error(api.get(lists, params={"end_date": "2025-01-01T00:00:00"}), 400, "time zone")
    assert_error(api.get(lists, params={"status": "fixed"}), 400, "status")
    assert api.get(lists, params={"start_date": "2025-01-01T00:00:00+07:00"}).json() == []


def test_dependencies_down_answer_503_not_500(
    serve: Callable[[Settings], httpx.Client], prepared: Settings, app_key: str
) -> None:
    lat, long = (str(v) for v in VIET_TRI)
    report = {"service_code": "GT-01", "lat": lat, "long": long, "api_key": app_key}
    no_broker = serve(prepared.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"}))
    assert_error(no_broker.post(f"{V2}/requests.json", headers=FORM, data=report), 503, "queued")
    api = serve(prepared.model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",
        "database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/ioc"}))
    response = api.post(f"{V2}/requests.json", headers=FORM, data=report)
    assert_error(response, 503, "API keys cannot be checked")
    assert_error(api.get(f"{V2}/requests.json"), 503, "cannot be read")
    assert api.get(f"{V2}/services.json").status_code == 200  # the catalogue needs neither


# --- free text: stored redacted, served, never raw anywhere ---------------------------------

# Personal data planted in the free text, and the same text as it must be served (by hand).
CCCD, CMND = "001203012345", "123456789"
DESCRIPTION = (f"Ổ gà sâu trước số nhà 12. Gọi 0912 345 678 hoặc hoa.nguyen@example.vn,"
               f" CCCD {CCCD}, CMND {CMND}.")
DESCRIPTION_SERVED = ("Ổ gà sâu trước số nhà 12. Gọi <phone> hoặc <e-mail>, CCCD <id-number>,"
                      " CMND <id-number>.")
ADDRESS = "Ngõ 5 tổ 3, nhà ông Ba (+84 987.654.321)"
ADDRESS_SERVED = "Ngõ 5 tổ 3, nhà ông Ba (<phone>)"
NOTES = "Đã vá, đội trưởng 0987654321 xác nhận"
NOTES_SERVED = "Đã vá, đội trưởng <phone> xác nhận"
RAW = ("0912 345 678", "0912345678", "hoa.nguyen@example.vn", CCCD, CMND, "987.654.321",
       "0987654321")


def test_redaction_patterns_serve_text_and_logs_alike() -> None:
    assert redact(DESCRIPTION) == DESCRIPTION_SERVED
    assert redact(ADDRESS) == ADDRESS_SERVED
    assert redact(NOTES) == NOTES_SERVED
    # Not personal: dates, house numbers, decimals, other lengths of digits.
    for kept in ("2026-12-02T03:48:14Z", "số nhà 12", "0.123456789", "1234567890",
                 "mã 12345678901"):
        assert redact(kept) == kept
    line = scrub(None, "info", {"event": f"reply to CCCD {CCCD}", "text": NOTES,
                                "description": "Ổ gà", "status_notes": "Đã vá"})
    assert line == {"event": "reply to CCCD <id-number>", "text": NOTES_SERVED,
                    "description": "<hidden>", "status_notes": "<hidden>"}


def test_description_address_and_notes_are_stored_redacted_and_served(
    serve: Callable[[Settings], httpx.Client], prepared: Settings, app_key: str, tmp_path: Path
) -> None:
    _, agency = create_key(prepared, "ubnd", ["reports:update"])
    worker = WorkerProcess(prepared, tmp_path / "worker.log").start()
    try:
        api = serve(prepared)
        lat, long = VIET_TRI
        created = api.post(f"{V2}/requests.json", headers=FORM, data={
            "service_code": "GT-01", "lat": str(lat), "long": str(long), "api_key": app_key,
            "description": DESCRIPTION, "address_string": ADDRESS})
        assert created.status_code == 200, created.text
        request_id = created.json()[0]["service_request_id"]
        stored = "SELECT description, address_string, status_notes FROM field_reports" \
                 " WHERE service_request_id = %s"
        wait_until(lambda: query(prepared, stored, (request_id,))
                   == [(DESCRIPTION_SERVED, ADDRESS_SERVED, None)], 60,
                   "the redacted text in field_reports", worker.log)

        [row] = api.get(f"{V2}/requests/{request_id}.json").json()
        assert (row["description"], row["address"], row["status_notes"]) == \
            (DESCRIPTION_SERVED, ADDRESS_SERVED, "open")

        answer = api.post(f"{V2}/requests/{request_id}/status.json",
                          headers={"X-API-Key": agency},
                          data={"status": "fixed", "status_notes": NOTES})
        assert answer.status_code == 200, answer.text
        assert answer.json()[0]["status_notes"] == NOTES_SERVED
        wait_until(lambda: query(prepared, stored, (request_id,))
                   == [(DESCRIPTION_SERVED, ADDRESS_SERVED, NOTES_SERVED)], 60,
                   "the agency's notes in field_reports", worker.log)

        # The georeport client (as a city's app would read it), JSON and XML alike.
        client = GeoReport(f"{api.base_url}{V2}")
        read = client.get_service_request(request_id)
        assert (read["status"], read["status_notes"], read["description"], read["address"]) \
            == ("closed", NOTES_SERVED, DESCRIPTION_SERVED, ADDRESS_SERVED)
        listed = GeoReport(f"{api.base_url}{V2}", output_format="xml").get_service_requests(
            service_request_id=request_id)
        assert (listed["status_notes"], listed["description"], listed["address"]) == \
            (NOTES_SERVED, DESCRIPTION_SERVED, ADDRESS_SERVED)

        # A later status without notes: the old notes no longer describe it.
        reopened = api.post(f"{V2}/requests/{request_id}/status.json",
                            headers={"X-API-Key": agency}, json={"status": "in_progress"})
        assert reopened.status_code == 200, reopened.text
        wait_until(lambda: query(prepared, "SELECT status, status_notes FROM field_reports"
                                 " WHERE service_request_id = %s", (request_id,))
                   == [("in_progress", "")], 60, "the new status stored", worker.log)
        [row] = api.get(f"{V2}/requests/{request_id}.json").json()
        assert (row["status_notes"], row["description"]) == ("in_progress", DESCRIPTION_SERVED)
    finally:
        worker.stop()

    sent = asyncio.run(topic_bytes(prepared, 3))
    events = query(prepared, "SELECT body::text FROM events")
    logs = (tmp_path / "worker.log").read_text(errors="replace")
    for raw in RAW:
        for value in sent:
            assert raw.encode() not in value, raw
        assert not any(raw in body for (body,) in events), raw
        assert raw not in logs, raw
    assert any(DESCRIPTION_SERVED.encode("unicode_escape") in v or
               DESCRIPTION_SERVED.encode() in v for v in sent)


# --- the spec's error list for any /open311 path; discovery --------------------------------

def test_unmatched_routes_and_methods_answer_the_spec_error_list(
    serve: Callable[[Settings], httpx.Client], settings: Settings
) -> None:
    api = serve(settings)
    for path in ("/open311/v2/nothing.json", "/open311/v2/requests/X/what.json", "/open311/v3",
                 "/open311"):
        assert_error(api.get(path), 404, "discovery.json")
    assert_error(api.put(f"{V2}/services.json"), 405, "PUT")
    deleted = api.delete(f"{V2}/requests/PAHT-25-X/status.json")
    assert_error(deleted, 405, "DELETE")
    assert deleted.headers["allow"] == "POST"

    xml = api.get("/open311/v2/nothing.xml")
    assert xml.status_code == 404 and xml.headers["content-type"].startswith("text/xml")
    assert xml.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = parse_xml(xml.content)
    assert (root.tag, root.findtext("error/code")) == ("errors", "404")
    wrong = api.post(f"{V2}/services.xml")
    assert wrong.status_code == 405
    assert parse_xml(wrong.content).findtext("error/code") == "405"

    other = api.get("/no-such-route")  # outside /open311: FastAPI's own shape stays
    assert (other.status_code, other.json()) == (404, {"detail": "Not Found"})


def test_discovery_names_the_georeport_v2_endpoint(
    serve: Callable[[Settings], httpx.Client], settings: Settings
) -> None:
    api = serve(settings)
    found = api.get("/open311/discovery.json")
    assert found.status_code == 200, found.text
    body = found.json()
    assert set(body) == {"changeset", "contact", "key_service", "endpoints"}
    datetime.fromisoformat(body["changeset"])
    assert body["contact"] and body["key_service"]
    [endpoint] = body["endpoints"]
    assert endpoint == {"specification": "http://wiki.open311.org/GeoReport_v2",
                        "url": f"{api.base_url}{V2}", "changeset": body["changeset"],
                        "type": "production", "formats": ["application/json", "text/xml"]}
    # The endpoint it names serves the spec (the georeport client reads it).
    assert [s["service_code"] for s in GeoReport(endpoint["url"]).get_service_list()] == \
        [s.code for s in SERVICES]

    xml = api.get("/open311/discovery.xml")
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("text/xml")
    root = parse_xml(xml.content)
    assert root.tag == "discovery"
    assert root.findtext("endpoints/endpoint/specification") == \
        "http://wiki.open311.org/GeoReport_v2"
    assert [f.text for f in root.findall("endpoints/endpoint/formats/format")] == \
        ["application/json", "text/xml"]

    public = serve(settings.model_copy(update={"public_api_url": "https://ioc.phutho.gov.vn/"}))
    assert public.get("/open311/discovery.json").json()["endpoints"][0]["url"] == \
        "https://ioc.phutho.gov.vn/open311/v2"
