"""A province's worth of ground truth, the events that tell it (shuffled, duplicated, some
malformed), and the KPIs computed from the ground truth by docs/domain.md's definitions.

The expected values never go through the code under test: they come from the truth tables
here, so a wrong SQL view or a lost/double-counted event makes the comparison fail.
"""

import json
import random
import statistics
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

PROVINCE = "25"  # Phú Thọ
VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")
COMMUNES = ["07900", "07894", "07909", "07918"]  # wards of Phú Thọ (checked by a test)
AGENCIES = ["000.00.12.H25", "000.00.13.H25", "000.79.00.H25"]
# Districts of the former Phú Thọ (before 1 July 2025): Việt Trì, Phú Thọ town, Đoan Hùng. The
# i-th entity of each kind carries FORMER_DISTRICTS[i % 5] (none for 3 and 4), as an old
# record would: no random draw, so every other value of a seeded scenario stays the same.
FORMER_DISTRICTS = ["227", "228", "230"]
DUE_SOON = timedelta(hours=24)
MARGIN = timedelta(hours=2)  # keeps every deadline away from the now() boundaries

Message = tuple[str, bytes, bytes]  # topic name (dossiers...), key, value


def pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100 * part / whole, 2)


@dataclass
class Dossier:
    code: str
    commune: str
    agency: str
    channel: int
    received_at: datetime
    due_at: datetime
    status: int
    finished_at: datetime | None
    digitized: bool
    fee_required: bool
    paid_online: bool
    satisfaction: str | None
    complaint: bool
    former_district: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in (9, 10)

    @property
    def in_process(self) -> bool:
        return self.status in (1, 2, 4, 5, 6)

    @property
    def to_handle(self) -> bool:
        return self.status not in (3, 7, 8)


def signed_of(draw: float) -> bool | None:
    """~90 % signed, ~5 % unknown (sent without attachment bytes), ~5 % unsigned."""
    return True if draw < 0.90 else None if draw < 0.95 else False


@dataclass
class Document:
    document_id: str
    commune: str
    agency: str
    direction: str
    signed: bool | None  # None: unknown (no attachment bytes)
    deadline: datetime | None
    created_at: datetime
    statuses: list[tuple[str, datetime]]  # in the order they happened
    former_district: str | None = None

    @property
    def status(self) -> str:
        return self.statuses[-1][0] if self.statuses else "01"

    @property
    def completed_at(self) -> datetime | None:
        return next((t for s, t in self.statuses if s == "06"), None)


@dataclass
class Report:
    request_id: str
    commune: str  # "": not placed in a commune yet (the API's "unassigned")
    agency: str
    service_code: str
    requested_at: datetime
    expected_at: datetime
    status: str
    updated_at: datetime
    former_district: str | None = None


@dataclass
class Scenario:
    now: datetime
    dossiers: list[Dossier] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    valid_event_ids: set[str] = field(default_factory=set)
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (topic, expected reason)

    def subset(self, commune: str | None = None, since: datetime | None = None,
               former_district: str | None = None, agency: str | None = None) -> "Scenario":
        """The part of the province a `--unit` / `--since` query (or a dashboard's agency and
        former district) looks at."""
        def keep(e: Dossier | Document | Report, anchor: datetime) -> bool:
            return ((commune is None or e.commune == commune)
                    and (agency is None or e.agency == agency)
                    and (since is None or anchor >= since)
                    and (former_district is None or e.former_district == former_district))
        return Scenario(
            now=self.now,
            dossiers=[d for d in self.dossiers if keep(d, d.received_at)],
            documents=[d for d in self.documents if keep(d, d.created_at)],
            reports=[r for r in self.reports if keep(r, r.requested_at)],
        )

    def as_of(self, at: datetime) -> "Scenario":
        """The province as it stood at `at` (docs/domain.md, "As of a moment"): what was not
        received, seen or requested yet left out; a dossier finished later in process, a
        document's statuses after `at` undone, a report updated later still open."""
        def dossier(d: Dossier) -> Dossier:
            if d.finished and d.finished_at is not None and d.finished_at > at:
                return replace(d, status=4, finished_at=None)
            return d

        def report(r: Report) -> Report:
            return replace(r, status="open") if r.updated_at > at else r

        return Scenario(
            now=at,
            dossiers=[dossier(d) for d in self.dossiers if d.received_at <= at],
            documents=[replace(d, statuses=[(s, t) for s, t in d.statuses if t <= at])
                       for d in self.documents if d.created_at <= at],
            reports=[report(r) for r in self.reports if r.requested_at <= at],
        )

    # --- expected KPIs, straight from the ground truth --------------------------------
    def expected_dossier_kpis(self) -> dict[str, Any]:
        ds, now = self.dossiers, self.now
        to_handle = [d for d in ds if d.to_handle]
        late_finished = [d for d in ds if d.finished and d.finished_at > d.due_at]
        in_process = [d for d in ds if d.in_process]
        late_in_process = [d for d in in_process if d.due_at < now]
        due_soon = [d for d in in_process if now <= d.due_at < now + DUE_SOON]
        late = len(late_finished) + len(late_in_process)
        bad = [d for d in to_handle if d.satisfaction == "unsatisfied" or d.complaint
               or (d.finished and d.finished_at > d.due_at) or (d.in_process and d.due_at < now)]
        with_fee = [d for d in ds if d.fee_required]
        return {
            "received": len(ds),
            "to_handle": len(to_handle),
            "finished": sum(d.finished for d in ds),
            "finished_on_time": sum(d.finished for d in ds) - len(late_finished),
            "finished_late": len(late_finished),
            "in_process": len(in_process),
            "late_in_process": len(late_in_process),
            "due_soon": len(due_soon),
            "not_yet_due": len(in_process) - len(late_in_process) - len(due_soon),
            "online": sum(d.channel == 2 for d in ds),
            "digitized": sum(d.digitized for d in ds),
            "with_fee": len(with_fee),
            "paid_online": sum(d.paid_online for d in with_fee),
            # the final snapshot carries the evaluation fields (complaint: never None)
            "evaluated": len(to_handle),
            "on_time_rate": pct(len(to_handle) - late, len(to_handle)),
            "online_rate": pct(sum(d.channel == 2 for d in ds), len(ds)),
            "digitized_rate": pct(sum(d.digitized for d in ds), len(ds)),
            "paid_online_rate": pct(sum(d.paid_online for d in with_fee), len(with_fee)),
            "satisfaction_rate": pct(len(to_handle) - len(bad), len(to_handle)),
        }

    def expected_document_kpis(self) -> dict[str, Any]:
        docs, now = self.documents, self.now
        outgoing = [d for d in docs if d.direction == "outgoing"]
        completed = [d for d in docs if d.status == "06"]
        on_time = [d for d in completed if d.deadline is None or d.completed_at <= d.deadline]
        backlog = [d for d in docs if d.direction == "incoming"
                   and d.status not in ("02", "06", "15")]
        return {
            "documents": len(docs),
            "incoming": sum(d.direction == "incoming" for d in docs),
            "outgoing": len(outgoing),
            "outgoing_signed": sum(d.signed is True for d in outgoing),
            "outgoing_signed_unknown": sum(d.signed is None for d in outgoing),
            "completed": len(completed),
            "completed_on_time": len(on_time),
            "backlog": len(backlog),
            "backlog_overdue": sum(d.deadline is not None and d.deadline < now for d in backlog),
            "signed_rate": pct(sum(d.signed is True for d in outgoing),
                               sum(d.signed is not None for d in outgoing)),
            "on_time_rate": pct(len(on_time), len(completed)),
        }

    def expected_report_kpis(self) -> dict[str, Any]:
        rs, now = self.reports, self.now
        open_ = [r for r in rs if r.status in ("open", "investigating", "in_progress")]
        resolved = [r for r in rs if r.status in ("fixed", "closed")]
        hours = [(r.updated_at - r.requested_at).total_seconds() / 3600 for r in resolved]
        return {
            "reports": len(rs),
            "open": len(open_),
            "resolved": len(resolved),
            "duplicate": sum(r.status == "duplicate" for r in rs),
            "overdue": sum(r.expected_at < now for r in open_),
            "median_hours_to_resolve": round(statistics.median(hours), 2) if hours else None,
        }


def former_district(i: int) -> str | None:
    return [*FORMER_DISTRICTS, None, None][i % 5]


def _envelope(source: str, at: datetime, commune: str, agency: str,
              district: str | None = None) -> dict[str, Any]:
    unit = {"province_code": PROVINCE, "commune_code": commune or None}
    if district is not None:
        unit["former_district_code"] = district
    return {
        "event_id": str(uuid.uuid4()),
        "source": source,
        "occurred_at": at.isoformat(),
        "unit": unit,
        "agency": {"code": agency, "name": f"Cơ quan {agency}"},
    }


def build(seed: int = 7, dossiers: int = 120, documents: int = 80, reports: int = 60,
          duplicate_share: float = 0.1, malformed: bool = True,
          unassigned_every: int = 0) -> Scenario:
    """`unassigned_every` n: every n-th report has no commune (drawn all the same, so the other
    values of a seeded scenario stay as they were)."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    sc = Scenario(now=now)
    events: list[tuple[str, dict[str, Any]]] = []

    def when(days_back: float) -> datetime:
        return now - timedelta(days=days_back)

    for i in range(dossiers):
        received = when(rng.uniform(2, 40))
        kind = rng.choice(["done_early", "done_late", "processing", "processing",
                           "refused", "cancelled", "supplement"])
        if kind.startswith("processing") or kind == "supplement":
            # deadlines relative to now: late, due soon or not yet due, never near a boundary
            due = now + rng.choice([-timedelta(days=rng.uniform(0.2, 5)),
                                    timedelta(hours=rng.uniform(3, 20)),
                                    timedelta(days=rng.uniform(2, 10))])
        else:
            due = received + timedelta(days=rng.uniform(1, 10))
        due = max(due, received + MARGIN)
        finished_at = None
        status = {"done_early": 10, "done_late": 10, "processing": 4, "refused": 3,
                  "cancelled": 7, "supplement": 5}[kind]
        if kind == "done_early":  # sometimes exactly at the deadline: still on time
            finished_at = rng.choice([received + (due - received) * rng.uniform(0.1, 0.9), due])
        elif kind == "done_late":  # sometimes by one second
            late_by = rng.choice([timedelta(seconds=1), timedelta(hours=rng.uniform(3, 72))])
            finished_at = min(due + late_by, now - MARGIN)
            status = rng.choice([9, 10])
        fee = rng.random() < 0.6
        d = Dossier(code=f"000.00.12.H25-{i:06d}", commune=rng.choice(COMMUNES),
                    agency=rng.choice(AGENCIES), channel=rng.choice([1, 2, 2, 2, 3]),
                    received_at=received, due_at=due, status=status,
                    finished_at=finished_at if finished_at and finished_at > received else None,
                    digitized=rng.random() < 0.85, fee_required=fee,
                    paid_online=fee and rng.random() < 0.9,
                    satisfaction=rng.choice([None, "satisfied", "very_satisfied", "unsatisfied"]),
                    complaint=rng.random() < 0.05, former_district=former_district(i))
        if d.status in (9, 10) and d.finished_at is None:
            d.finished_at = received + MARGIN
        sc.dossiers.append(d)
        # Snapshots of the dossier as the portal syncs it: received, processing, final.
        steps = [(2, received)]
        if status != 3:
            steps.append((4, received + timedelta(minutes=30)))
        last = min(d.finished_at or received + timedelta(hours=1), now - timedelta(minutes=1))
        steps.append((status, max(last, received + timedelta(minutes=45))))
        for step_status, at in steps:
            final = step_status == status and at == steps[-1][1]
            payload = {
                "dossier_code": d.code, "procedure_code": "1.001234",
                "procedure_name": "Cấp giấy phép xây dựng", "status": step_status,
                "channel": d.channel, "submitted_at": (received - timedelta(minutes=5)).isoformat(),
                "received_at": received.isoformat(), "due_at": d.due_at.isoformat(),
                "finished_at": d.finished_at.isoformat() if final and d.finished_at else None,
                "digitized": d.digitized, "fee_required": d.fee_required,
                "paid_online": d.paid_online,
                "satisfaction": d.satisfaction if final else None,
                "complaint": d.complaint if final else None,
            }
            events.append(("dossiers", {**_envelope("dvcqg", at, d.commune, d.agency,
                                                    d.former_district),
                                        "kind": "dossier", "payload": payload}))

    for i in range(documents):
        created = when(rng.uniform(1, 30))
        direction = rng.choice(["incoming", "incoming", "outgoing"])
        deadline = rng.choice([None, created + timedelta(days=rng.uniform(1, 20))])
        path = rng.choice([[], ["01"], ["01", "03"], ["01", "03", "04", "05"],
                           ["01", "03", "04", "05", "06"], ["01", "02"], ["01", "13", "15"],
                           ["01", "03", "04", "05", "06"]])
        statuses, at = [], created
        for code in path:
            at += timedelta(hours=rng.uniform(0.5, 4))  # created >= 1 day ago: stays past
            statuses.append((code, at))
        doc = Document(document_id=f"000.00.12.H25,{created:%Y/%m/%d},{i}/SKHCN",
                       commune=rng.choice(COMMUNES), agency=rng.choice(AGENCIES),
                       direction=direction, signed=signed_of(rng.random()), deadline=deadline,
                       created_at=created, statuses=statuses, former_district=former_district(i))
        sc.documents.append(doc)
        events.append(("documents", {**_envelope("edxml", created, doc.commune, doc.agency,
                                                 doc.former_district),
                                     "kind": "document", "payload": {
            "document_id": doc.document_id, "direction": direction, "signed": doc.signed,
            "deadline": deadline.isoformat() if deadline else None, "document_type": "1",
            "code_notation": f"{i}/SKHCN-CĐS", "attachment_count": 1, "attachment_bytes": 2048}}))
        for code, at in statuses:
            events.append(("documents", {**_envelope("edxml", at, doc.commune, doc.agency,
                                                     doc.former_district),
                                         "kind": "document",
                                         "payload": {"document_id": doc.document_id,
                                                     "status": code}}))

    for i in range(reports):
        requested = when(rng.uniform(0.5, 20))
        expected = requested + timedelta(days=rng.uniform(1, 10))
        if abs(expected - now) < MARGIN:
            expected += 2 * MARGIN
        status = rng.choice(["open", "investigating", "in_progress", "fixed", "closed",
                             "duplicate"])
        updated = min(requested + timedelta(hours=rng.uniform(1, 200)), now - timedelta(minutes=1))
        r = Report(request_id=f"PAHT-{i:05d}", commune=rng.choice(COMMUNES),
                   agency=rng.choice(AGENCIES), service_code=rng.choice(["LIGHT", "ROAD", "WASTE"]),
                   requested_at=requested, expected_at=expected, status=status, updated_at=updated,
                   former_district=former_district(i))
        if unassigned_every and i % unassigned_every == unassigned_every - 1:
            r.commune = ""
        sc.reports.append(r)
        for step, at in (("open", requested), (status, updated)):
            events.append(("field_reports", {
                **_envelope("open311", at, r.commune, r.agency, r.former_district),
                "kind": "field_report",
                "payload": {"service_request_id": r.request_id, "service_code": r.service_code,
                            "service_name": "Chiếu sáng", "group": "Hạ tầng", "status": step,
                            "lat": 21.3 + rng.uniform(0, 0.1), "long": 105.4 + rng.uniform(0, 0.1),
                            "requested_datetime": requested.isoformat(),
                            "updated_datetime": at.isoformat(),
                            "expected_datetime": expected.isoformat()}}))

    rng.shuffle(events)  # out of order: status before "received", finishes before starts
    for topic, event in events:
        sc.valid_event_ids.add(event["event_id"])
        key = event["payload"].get("dossier_code") or event["payload"].get("document_id") \
            or event["payload"]["service_request_id"]
        sc.messages.append((topic, key.encode(), json.dumps(event).encode()))
    for message in rng.sample(sc.messages, int(len(sc.messages) * duplicate_share)):
        sc.messages.insert(rng.randrange(len(sc.messages)), message)  # same event_id again
    if malformed:
        _add_malformed(sc, rng)
    return sc


def _add_malformed(sc: Scenario, rng: random.Random) -> None:
    base = json.loads(next(v for t, _, v in sc.messages if t == "dossiers"))
    bad: list[tuple[str, str, bytes]] = [
        ("dossiers", "invalid_json", b'{"kind": "dossier", '),
        ("documents", "invalid_json", "không phải JSON".encode()),
        ("dossiers", "invalid_event", json.dumps({**base, "event_id": "not-a-uuid"}).encode()),
        # personal data of the applicant must never enter an event
        ("dossiers", "invalid_event", json.dumps({**base, "event_id": str(uuid.uuid4()),
            "payload": {**base["payload"], "ChuHoSo": "Nguyễn Văn A"}}).encode()),
        ("dossiers", "invalid_event", json.dumps({**base, "event_id": str(uuid.uuid4()),
            "unit": {"province_code": "25", "commune_code": "00070"}}).encode()),  # Hà Nội ward
        ("dossiers", "invalid_event", json.dumps({**base, "event_id": str(uuid.uuid4()),
            "occurred_at": (sc.now + timedelta(days=30)).astimezone(VIETNAM).isoformat(),
        }).encode()),  # in the future (a fixed date would stop being one)
        ("documents", "invalid_event",  # a dossier on the documents topic
         json.dumps({**base, "event_id": str(uuid.uuid4())}).encode()),
        ("field_reports", "invalid_event", json.dumps({
            **base, "event_id": str(uuid.uuid4()), "kind": "field_report", "payload": {
                "service_request_id": "X1", "service_code": "ROAD", "status": "open",
                "lat": 21.3, "email": "a@example.org"}}).encode()),
        # valid for pydantic, refused by PostgreSQL (NUL in text): found by halving the batch
        ("dossiers", "rejected_by_database", json.dumps({**base, "event_id": str(uuid.uuid4()),
            "payload": {**base["payload"], "dossier_code": "NUL\u0000CODE"}}).encode()),
    ]
    for topic, reason, value in bad:
        sc.messages.insert(rng.randrange(len(sc.messages)), (topic, b"bad", value))
        sc.malformed.append((topic, reason))


def events(sc: Scenario) -> list[dict[str, Any]]:
    """Each distinct event of the scenario's messages (a duplicate counts once)."""
    unique = {}
    for _, _, value in sc.messages:
        event = json.loads(value)
        unique[event["event_id"]] = event
    return list(unique.values())


def minute(event: dict[str, Any]) -> datetime:
    """The UTC minute an event happened in (the bucket of the per-minute counts)."""
    at = datetime.fromisoformat(event["occurred_at"]).astimezone(UTC)
    return at.replace(second=0, microsecond=0)


def kind_counts(sc: Scenario, unit: str) -> Counter[tuple[datetime, str, str]]:
    """The distinct valid events per UTC minute or hour, kind and source (the worker's
    kind_counts_minute/_hour), from the messages sent."""
    buckets = {}
    for _, key, value in sc.messages:
        if key != b"bad":  # a malformed message (_add_malformed)
            event = json.loads(value)
            at = minute(event)
            buckets[event["event_id"]] = (at.replace(minute=0) if unit == "hour" else at,
                                          event["kind"], event["source"])
    assert set(buckets) == sc.valid_event_ids
    return Counter(buckets.values())


def events_in(sc: Scenario, start: datetime, end: datetime) -> int:
    """How many events happened in the minutes from `start` to `end`, both included."""
    return sum(start <= minute(e) <= end for e in events(sc))
