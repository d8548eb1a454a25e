"""Field reports as the dashboards show them, from the scenario's ground truth: each report's
place on the map and the label of its dot."""

import json
from datetime import datetime

from tests.support import scenario

LABELS = {"open": "Mới", "investigating": "Đang xác minh", "in_progress": "Đang xử lý",
          "fixed": "Đã khắc phục", "closed": "Đã đóng", "duplicate": "Trùng lặp"}
OPEN, RESOLVED = ("open", "investigating", "in_progress"), ("fixed", "closed")
SERVICE_NAME, GROUP = "Chiếu sáng", "Hạ tầng"  # every scenario report's category name, group


def places(sc: scenario.Scenario) -> dict[str, tuple[float, float]]:
    """Each report's coordinates as its newest event says (the one the state keeps)."""
    newest: dict[str, tuple[datetime, float, float]] = {}
    for topic, _, value in sc.messages:
        if topic == "field_reports":
            event = json.loads(value)
            at, payload = datetime.fromisoformat(event["occurred_at"]), event["payload"]
            rid = payload["service_request_id"]
            if rid not in newest or at > newest[rid][0]:
                newest[rid] = (at, payload["lat"], payload["long"])
    return {rid: (lat, long) for rid, (_, lat, long) in newest.items()}


def label(sel: scenario.Scenario, r: scenario.Report) -> str:
    return "Quá hạn" if r.status in OPEN and r.expected_at < sel.now else LABELS[r.status]


def points(sel: scenario.Scenario, where: dict[str, tuple[float, float]]) -> list[tuple]:
    """The map's dots, newest request first: (lat, long, label, category, request id)."""
    ordered = sorted(sel.reports, key=lambda r: r.request_id)
    ordered.sort(key=lambda r: r.requested_at, reverse=True)
    return [(*where[r.request_id], label(sel, r), SERVICE_NAME, r.request_id)
            for r in ordered]
