"""The simulated lives of dossiers (and citizens' evaluations of them), documents and field
reports (simulator-only).

Each arrival's whole life is decided at once, from the simulator's one seeded generator, as
steps `(time, fields it sets)`; the simulator queues them and publishes each when its clock
reaches it. The order of the draws is part of reproducibility: the same seed gives the same
lives only while every function here draws in the same order.
"""

import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from connectors.province import (
    OFFICE_DAY,
    SERVICE_WEIGHTS,
    VIETNAM,
    Commune,
    Province,
    SimulatedAgency,
    from_office,
    iso,
    later,
    office_minutes,
)


@dataclass
class Behaviour:
    """How one agency works in this run (drawn from the seed)."""

    agency: SimulatedAgency
    dossiers: float  # relative dossier volume
    documents: float  # relative outgoing-document volume
    online: float
    late: float
    digitized: float
    signed: float
    documents_late: float
    slowness: float  # field reports: resolution time factor


@dataclass(slots=True)
class Entity:
    """One dossier, document copy or field report: its steps, each (time, fields it sets)."""

    topic: str
    key: str
    agency: SimulatedAgency
    commune: str | None
    steps: list[tuple[float, dict[str, Any]]]
    cumulative: bool  # a snapshot carries every field known so far (not documents' statuses)
    base: dict[str, Any] = field(default_factory=dict)


class World(Protocol):
    """What a life needs from the simulator: its generator, province and agencies' habits,
    the running numbers of codes, and the queue."""

    rng: random.Random
    province: Province
    behaviour: dict[str, Behaviour]

    def number(self, scope: str) -> int: ...

    def schedule(self, entity: Entity, rng: random.Random | None = None) -> None: ...


def dossier(sim: World, submitted: float, b: Behaviour, online: bool) -> None:
    """A dossier filed online or at a counter, from submission to its result (or refusal)."""
    r, agency = sim.rng, b.agency
    items = agency.procedures
    proc = r.choices(items, cum_weights=cumulative([p.weight for p in items]))[0]
    received = later(submitted, r.expovariate(1 / 45)) if online else \
        submitted + r.uniform(120, 900)
    day = datetime.fromtimestamp(submitted, VIETNAM).strftime("%y%m%d")
    code = f"{agency.code}-{day}-{sim.number(f'{agency.code}-{day}'):04d}"
    fee = proc.fee
    steps: list[tuple[float, dict[str, Any]]] = []
    # Known from the start: online files are uploaded (digitized) when submitted,
    # paper ones are scanned at the counter.
    first = {"channel": 2 if online else (3 if r.random() < 0.03 else 1),
             "submitted_at": iso(submitted), "fee_required": fee,
             "paid_online": fee and r.random() < (0.96 if online else 0.45),
             "digitized": r.random() < b.digitized}
    if online:
        steps.append((submitted, {**first, "status": 1}))
        first = {}
    due = later(received, proc.days * OFFICE_DAY)
    steps.append((received, {**first, "status": 2, "received_at": iso(received),
                             "due_at": iso(due)}))
    outcome = r.random()
    if outcome < 0.015:  # refused at reception check
        at = later(received, r.uniform(10, 240))
        steps.append((at, {"status": 3, "refused_at": iso(at)}))
    elif outcome < 0.02:  # withdrawn by the applicant
        steps.append((later(received, r.uniform(30, proc.days * 225)), {"status": 7}))
    else:
        working = later(received, min(r.expovariate(1 / 60), proc.days * OFFICE_DAY - 30))
        steps.append((working, {"status": 4}))
        if r.random() < 0.04:  # asks for a supplement: the legal clock restarts when
            # it comes (within 3 working days); meanwhile NgayHenTra moves to the latest
            # possible date, or the wait would count as late (status 5 is "in process").
            asked = later(working, r.uniform(30, OFFICE_DAY))
            latest = later(asked, (3 + proc.days) * OFFICE_DAY)
            working = later(asked, r.uniform(OFFICE_DAY, 3 * OFFICE_DAY))
            due = later(working, proc.days * OFFICE_DAY)
            steps += [(asked, {"status": 5, "due_at": iso(latest)}),
                      (working, {"status": 4, "due_at": iso(due)})]
        if r.random() < b.late:
            finished = later(due, r.uniform(30, 3 * OFFICE_DAY))
        else:
            start, end = office_minutes(working), office_minutes(due)
            finished = from_office(start + (end - start) * r.uniform(0.15, 0.98))
        returned = finished + r.uniform(60, 3600) if online else \
            later(finished, r.expovariate(1 / 300))
        vote = r.random()
        level = None if vote < 0.2 else "very_satisfied" if vote < 0.65 else \
            "satisfied" if vote < 0.97 else "unsatisfied"
        complaint = r.random() < 0.005
        steps += [(finished, {"status": 9, "finished_at": iso(finished)}),
                  (returned, {"status": 10, "returned_at": iso(returned)})]
        if level is not None or complaint:  # on the one-stop system's feed, not the dossier's
            evaluation(sim, agency, code, returned, level, complaint)
    base = {"dossier_code": code, "procedure_code": proc.code, "procedure_name": proc.name,
            "field_code": proc.field_code}
    sim.schedule(Entity("dossiers", code, agency, agency.commune_code, steps, True, base))


def evaluation(sim: World, agency: SimulatedAgency, code: str, returned: float,
               level: str | None, complaint: bool) -> None:
    """The applicant's evaluation of a returned dossier (a level, a complaint, or both), within
    a day. Its draws come from a generator of its own, seeded by the dossier's code: the
    simulator's stream, and so every other life of a seed, stays as it was without them."""
    own = random.Random(code)
    at = returned + own.uniform(300, 86400)
    fields: dict[str, Any] = {"level": level, "complaint": complaint}
    sim.schedule(Entity("evaluations", code, agency, agency.commune_code, [(at, fields)], True,
                        {"dossier_code": code}), own)

def document(sim: World, sent: float, b: Behaviour) -> None:
    """A document sent by `b`'s agency: its outgoing copy, and each receiver's with statuses."""
    r, sender = sim.rng, b.agency
    province = sim.province
    if sender.commune_code is None and r.random() < 0.25:  # to many communes at once
        to = [c.agency for c in r.sample(province.communes, r.randint(3, 12))]
    elif sender.commune_code is None and r.random() < 0.6:
        to = [r.choice(province.communes).agency]
    else:
        to = [r.choice([a for a in (province.committee, *province.departments)
                        if a is not sender])]
    number = sim.number(f"{sender.code}-{datetime.fromtimestamp(sent, VIETNAM).year}")
    notation = f"{number}/{sender.abbr}-{r.choice(('VP', 'VP', 'TH', 'KT', 'HC'))}"
    document_id = f"{sender.code},{datetime.fromtimestamp(sent, VIETNAM):%Y/%m/%d},{notation}"
    deadline = later(sent, r.randint(3, 15) * OFFICE_DAY) if r.random() < 0.6 else None
    meta = {"signed": r.random() < b.signed, "deadline": deadline and iso(deadline),
            "document_type": r.choice(("1", "1", "1", "2")), "code_notation": notation,
            "from_organ_id": sender.code, "to_organ_id": to[0].code if len(to) == 1 else None,
            "attachment_count": r.randint(1, 4),
            "attachment_bytes": int(r.lognormvariate(math.log(300_000), 1))}
    sim.schedule(Entity("documents", document_id, sender, sender.commune_code,
                          [(sent, {"direction": "outgoing", **meta})], False,
                          {"document_id": document_id}))
    # edXML gives the receivers' copies the sender's DocumentId, but the monitor keys a
    # document by its id alone: each copy is "<DocumentId>@<receiver>", or the outgoing
    # and incoming sides would fold into one row.
    for receiver in to:
        arrived = sent + r.uniform(5, 180)
        steps = [(arrived, {"direction": "incoming", **meta, "to_organ_id": receiver.code}),
                 (arrived + r.uniform(1, 30), {"status": "01"})]
        late = r.random() < sim.behaviour[receiver.code].documents_late
        _document_statuses(r, steps, deadline, late)
        copy_id = f"{document_id}@{receiver.code}"
        sim.schedule(Entity("documents", copy_id, receiver, receiver.commune_code, steps,
                              False, {"document_id": copy_id}))

def _document_statuses(rng: random.Random, steps: list[tuple[float, dict[str, Any]]],
                       deadline: float | None, late: bool) -> None:
    r, at = rng, steps[-1][0]
    fate = r.random()
    if fate < 0.02:  # rejected (wrong receiver, unreadable...)
        steps.append((later(at, r.uniform(15, 240)), {"status": "02"}))
        return
    if fate < 0.03:  # the sender recalls it
        at = later(at, r.uniform(30, 900))
        steps.append((at, {"status": "13"}))
        at = later(at, r.uniform(10, 240))
        if r.random() < 0.8:
            steps.append((at, {"status": "15"}))
            return
        steps.append((at, {"status": "16"}))
    for status, mean in (("03", 60), ("04", 120), ("05", 240)):
        at = later(at, r.expovariate(1 / mean))
        steps.append((at, {"status": status}))
    if deadline is None:
        done = later(at, r.uniform(60, 5 * OFFICE_DAY))
    elif late or deadline <= at:
        done = later(max(deadline, at), r.uniform(60, 5 * OFFICE_DAY))
    else:
        start, end = office_minutes(at), office_minutes(deadline)
        done = from_office(start + (end - start) * r.uniform(0.1, 0.95))
    steps.append((done, {"status": "06"}))

def report(sim: World, requested: float, commune: Commune) -> None:
    """A citizen's field report, from open to closed (or set aside as a duplicate)."""
    r = sim.rng
    services = sim.province.services
    weights = cumulative([SERVICE_WEIGHTS[s.code] for s in services])
    service = r.choices(services, cum_weights=weights)[0]
    day = datetime.fromtimestamp(requested, VIETNAM).strftime("%y%m%d")
    request_id = f"PAHT-{sim.province.code}-{day}-{sim.number(f'PAHT-{day}'):05d}"
    expected = requested + service.hours * 3600
    base: dict[str, Any] = {
        "service_request_id": request_id, "service_code": service.code,
        "service_name": service.name, "group": service.group,
        "requested_datetime": iso(requested), "expected_datetime": iso(expected)}
    if sim.province.bounds:  # scattered around the commune centre, tighter in wards
        lat_min, lat_max, long_min, long_max = sim.province.bounds
        spread = 0.008 if commune.urban else 0.02
        base["lat"] = round(min(max(r.gauss(commune.lat, spread), lat_min), lat_max), 6)
        base["long"] = round(min(max(r.gauss(commune.long, spread), long_min), long_max), 6)
    steps: list[tuple[float, dict[str, Any]]] = [(requested, {"status": "open"})]
    if r.random() < 0.06:
        steps.append((requested + r.uniform(0.5, 8) * 3600, {"status": "duplicate"}))
    else:
        slowness = sim.behaviour[commune.agency.code].slowness
        hours = service.hours * r.lognormvariate(math.log(0.6), 0.5) * slowness
        fixed = requested + hours * 3600
        steps += [(requested + hours * 3600 * r.uniform(0.05, 0.2),
                   {"status": "investigating"}),
                  (requested + hours * 3600 * r.uniform(0.3, 0.6), {"status": "in_progress"}),
                  (fixed, {"status": "fixed"}),
                  (fixed + r.uniform(2, 48) * 3600, {"status": "closed"})]
    for at, fields in steps:
        fields["updated_datetime"] = iso(at)
    sim.schedule(Entity("field_reports", request_id, commune.agency, commune.code, steps,
                          True, base))


def cumulative(weights: list[float]) -> list[float]:
    """Running totals: the `cum_weights` of `random.choices`."""
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out
