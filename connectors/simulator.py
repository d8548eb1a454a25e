"""A seeded, reproducible province: dossiers, documents and field reports as Kafka messages.

Arrivals are drawn minute by minute of simulated time (Poisson, shaped by the office rhythm);
each arrival's whole life is decided at once and its steps wait in a priority queue until the
simulated clock reaches them. All randomness comes from one seeded generator consumed in
simulated-time order, so the same seed, rate and start give the same messages however the
clock is advanced. The lives themselves are `connectors/simulated_lives.py`.
"""

import asyncio
import heapq
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaProducer

from connectors.province import VIETNAM, Province, iso, load_province
from connectors.simulated_lives import Behaviour, Entity, cumulative, document, dossier, report
from ioc.core.events import Kind
from ioc.core.settings import Settings

log = structlog.get_logger()
T = TypeVar("T")

Message = tuple[str, bytes, bytes]  # topic name (dossiers...), key, value
TOPICS = {"dossiers": Kind.DOSSIER, "documents": Kind.DOCUMENT, "field_reports": Kind.FIELD_REPORT,
          "evaluations": Kind.EVALUATION}
SOURCES = {"dossiers": "simulator-dvc", "documents": "simulator-edxml",
           "field_reports": "simulator-open311", "evaluations": "simulator-dvc"}
# A weekday's volume at rate 1.0 for a merged province (~4 million people, ~1 million
# dossiers a year): 2-3 events/s at the opening-hour peak, ~1/s through office hours, a
# trickle at night.
DOSSIERS_PER_DAY, DOCUMENTS_PER_DAY, REPORTS_PER_DAY = 4000.0, 1200.0, 200.0
MALFORMED = ("invalid_json", "missing_field", "personal_data")
PERSONAL = {"dossiers": {"ChuHoSo": "Nguyễn Văn An", "SoGiayToChuHoSo": "025090001234"},
            "documents": {"FullName": "Trần Thị Bình"},
            "field_reports": {"email": "dan@example.vn", "phone": "0912345678"},
            "evaluations": {"ChuHoSo": "Nguyễn Văn An"}}

# Relative arrival intensity per local minute: citizens (online filing, field reports) and
# offices (counters, document desks; busiest right at opening).
_CITIZEN_HOURLY = (0.05, 0.03, 0.03, 0.03, 0.05, 0.15, 0.4, 0.9, 1.6, 1.7, 1.6, 1.3,
                   0.8, 0.9, 1.3, 1.3, 1.2, 0.9, 0.6, 0.6, 0.7, 0.6, 0.35, 0.15)
_OFFICE_SPANS = ((450, 480, 3.5), (480, 510, 2.6), (510, 630, 1.8), (630, 690, 1.2),
                 (810, 840, 1.8), (840, 960, 1.2), (960, 1020, 0.7))


def _week_profile(citizen: bool) -> list[float]:
    day = [_CITIZEN_HOURLY[m // 60] if citizen else
           next((w for a, b, w in _OFFICE_SPANS if a <= m < b), 0.0) for m in range(1440)]
    total = sum(day)  # normalised so that a weekday sums to 1
    weekend = 0.35 if citizen else 0.0
    return [w / total for w in day] * 5 + [w * weekend / total for w in day] * 2


CITIZEN, OFFICE = _week_profile(True), _week_profile(False)


def _minute_of_week(ts: float) -> int:
    local = int(ts) + 7 * 3600
    return ((local // 86400 + 3) % 7) * 1440 + (local % 86400) // 60


def poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k, p = k + 1, p * rng.random()
    return k


@dataclass
class Stats:
    messages: Counter[str] = field(default_factory=Counter)  # per topic name
    flaws: Counter[str] = field(default_factory=Counter)  # late, duplicate, invalid_json...
    clock: datetime | None = None  # the simulated time reached
    elapsed: float = 0.0  # real seconds of `run`

    @property
    def total(self) -> int:
        return sum(self.messages.values())

    @property
    def malformed(self) -> int:
        return sum(self.flaws[name] for name in MALFORMED)

    @property
    def valid_events(self) -> int:
        """Distinct valid events sent: what the monitor should store."""
        return self.total - self.flaws["duplicate"] - self.malformed

    @property
    def events_per_second(self) -> float:
        return self.total / self.elapsed if self.elapsed else 0.0

    def line(self) -> str:
        clock = self.clock.astimezone(VIETNAM).strftime("%a %Y-%m-%d %H:%M") if self.clock else "-"
        topics = " ".join(f"{t}={self.messages[t]}" for t in TOPICS)
        flaws = " ".join(f"{k}={v}" for k, v in sorted(self.flaws.items()))
        return f"sim {clock} | {topics} | {flaws} | {self.events_per_second:.1f} ev/s"


class Simulator:
    """A whole province's traffic on a simulated clock.

    The clock starts at `start` (default: now - 1 day) and runs `speed` times faster than
    real time from the first `due()` call, capped at the real now (then at real time), so no
    event is ever in the future. `rate` scales every volume (1.0 = a realistic province).
    The `*_share` options are per valid event: re-sent hours/days late, re-sent with the
    same event_id, or followed by a malformed sibling that the contracts must reject.
    `arrivals_until`: no new dossier, document or report after this simulated time; those
    already begun live on to their end (a closed cohort: run the clock on and every dossier
    is decided, so its on-time rate no longer changes with the clock).
    """

    def __init__(self, province_code: str = "25", seed: int = 0, speed: float = 60.0,
                 rate: float = 1.0, start: datetime | None = None, late_share: float = 0.02,
                 duplicate_share: float = 0.01, malformed_share: float = 0.005,
                 arrivals_until: datetime | None = None) -> None:
        for name, share in (("late_share", late_share), ("duplicate_share", duplicate_share),
                            ("malformed_share", malformed_share)):
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be between 0 and 1, not {share}")
        if speed <= 0 or rate < 0:
            raise ValueError("speed must be > 0 and rate >= 0")
        self.province: Province = load_province(province_code)
        self.speed, self.rate = speed, rate
        self.shares = (late_share, duplicate_share, malformed_share)
        self.rng = random.Random(seed)
        start = start or datetime.now(UTC) - timedelta(days=1)
        self.start = math.floor(start.timestamp())
        self.now = float(self.start)  # the simulated time reached
        self._next_slot = float(self.start)
        self._arrivals_end = math.inf if arrivals_until is None else arrivals_until.timestamp()
        self._anchor: float | None = None  # real time of the first due()
        self._queue: list[tuple[float, int, Entity, int, int, float, str | None]] = []
        self._seq = 0
        self._numbers: Counter[str] = Counter()
        self.stats = Stats(clock=start)
        self._setup()

    # --- public API ---------------------------------------------------------------------
    def clock_at(self, now_real: datetime) -> datetime:
        """The simulated time at the real time `now_real`."""
        anchor = self._anchor if self._anchor is not None else now_real.timestamp()
        simulated = self.start + (now_real.timestamp() - anchor) * self.speed
        return datetime.fromtimestamp(min(simulated, now_real.timestamp()), UTC)

    def due(self, now_real: datetime | None = None) -> list[Message]:
        """Every message due at the real time `now_real` (default: now) not yet returned."""
        now_real = now_real or datetime.now(UTC)
        if self._anchor is None:
            self._anchor = now_real.timestamp()
        return self.advance(self.clock_at(now_real))

    def advance(self, until: datetime) -> list[Message]:
        """Run the simulated clock to `until` (never past the real now); return what happened."""
        end = min(until.timestamp(), time.time())
        while self._next_slot <= end and self._next_slot < self._arrivals_end:
            self._slot(self._next_slot)
            self._next_slot += 60
        out: list[Message] = []
        while self._queue and self._queue[0][0] <= end:
            _, _, entity, step, event_id, ingested, flaw = heapq.heappop(self._queue)
            out.append((entity.topic, entity.key.encode(),
                        self._encode(entity, step, event_id, ingested, flaw)))
            self.stats.messages[entity.topic] += 1
            if flaw:
                self.stats.flaws[flaw] += 1
        self.now = max(self.now, end)
        self.stats.clock = datetime.fromtimestamp(self.now, UTC)
        return out

    @property
    def bad_agencies(self) -> tuple[str, ...]:
        """Codes of the agencies planted to do clearly worse (late, less online)."""
        return self._bad

    # --- the province's agencies ----------------------------------------------------------
    def _setup(self) -> None:
        r = self.rng
        communes = self.province.communes
        by_weight = {c.code: (r.uniform(2.5, 4.0) if c.urban else r.uniform(0.6, 1.4))
                     for c in communes}
        busy = sorted(communes, key=lambda c: -by_weight[c.code])[:max(6, len(communes) // 10)]
        self._bad = tuple(c.agency.code for c in r.sample(busy, r.choice((2, 3))))
        self.behaviour: dict[str, Behaviour] = {}
        for agency in self.province.agencies:
            bad = agency.code in self._bad
            commune = next((c for c in communes if c.agency is agency), None)
            dossiers = by_weight[commune.code] if commune else (
                r.uniform(3, 8) if agency.procedures else 0.0)
            documents = (1.0 if commune.urban else 0.5) if commune else (
                6.0 if agency.procedures else 12.0)
            self.behaviour[agency.code] = Behaviour(
                agency, dossiers, documents,
                online=r.uniform(0.60, 0.70) if bad else r.uniform(0.78, 0.95),
                late=r.uniform(0.10, 0.15) if bad else r.uniform(0.0, 0.002),
                digitized=r.uniform(0.84, 0.995), signed=r.uniform(0.97, 1.0),
                documents_late=r.uniform(0.15, 0.3) if bad else r.uniform(0.01, 0.05),
                slowness=r.uniform(1.4, 1.8) if bad else r.uniform(0.7, 1.1))
        filers = [b for b in self.behaviour.values() if b.dossiers]
        self._online = (filers, cumulative([b.dossiers * b.online for b in filers]))
        self._counter = (filers, cumulative([b.dossiers * (1 - b.online) for b in filers]))
        senders = list(self.behaviour.values())
        self._senders = (senders, cumulative([b.documents for b in senders]))
        self._reporters = (list(communes), cumulative([4.0 if c.urban else 1.0 for c in communes]))
        total = sum(b.dossiers for b in filers)
        self._daily = {
            "online": DOSSIERS_PER_DAY * self._online[1][-1] / total,
            "counter": DOSSIERS_PER_DAY * self._counter[1][-1] / total,
        }

    def _pick(self, population: tuple[list[T], list[float]]) -> T:
        items, cum = population
        return self.rng.choices(items, cum_weights=cum)[0]

    def number(self, scope: str) -> int:
        """The next running number of `scope` (dossier codes per agency and day...)."""
        self._numbers[scope] += 1
        return self._numbers[scope]

    # --- arrivals, one simulated minute at a time -----------------------------------------
    def _slot(self, t0: float) -> None:
        m, r, rate = _minute_of_week(t0), self.rng, self.rate
        for _ in range(poisson(r, rate * self._daily["online"] * CITIZEN[m])):
            dossier(self, t0 + r.random() * 60, self._pick(self._online), online=True)
        for _ in range(poisson(r, rate * self._daily["counter"] * OFFICE[m])):
            dossier(self, t0 + r.random() * 60, self._pick(self._counter), online=False)
        for _ in range(poisson(r, rate * DOCUMENTS_PER_DAY * OFFICE[m])):
            document(self, t0 + r.random() * 60, self._pick(self._senders))
        for _ in range(poisson(r, rate * REPORTS_PER_DAY * CITIZEN[m])):
            report(self, t0 + r.random() * 60, self._pick(self._reporters))

    # --- the queue, the flaws and the wire format -----------------------------------------
    def schedule(self, entity: Entity, rng: random.Random | None = None) -> None:
        """Queue each step of `entity` (with its planted flaws) for when it is due; its draws
        from `rng` when given, else from the simulator's generator."""
        r = rng or self.rng
        late_share, duplicate_share, malformed_share = self.shares
        for step, (at, _) in enumerate(entity.steps):
            event_id = r.getrandbits(128)
            late = r.random() < late_share
            emitted = at + (math.exp(r.uniform(math.log(3600), math.log(3 * 86400)))
                            if late else 0)
            self._push(emitted, entity, step, event_id, emitted, "late" if late else None)
            if r.random() < duplicate_share:
                self._push(emitted + r.uniform(1, 600), entity, step, event_id, emitted,
                           "duplicate")
            if r.random() < malformed_share:
                self._push(emitted, entity, step, r.getrandbits(128), emitted,
                           r.choice(MALFORMED))

    def _push(self, at: float, entity: Entity, step: int, event_id: int, ingested: float,
              flaw: str | None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, entity, step, event_id, ingested, flaw))

    def _encode(self, entity: Entity, step: int, event_id: int, ingested: float,
                flaw: str | None) -> bytes:
        at, fields = entity.steps[step]
        payload = dict(entity.base)
        for _, earlier in entity.steps[:step + 1] if entity.cumulative else [(at, fields)]:
            payload.update(earlier)
        unit = {"province_code": self.province.code}
        if entity.commune:
            unit["commune_code"] = entity.commune
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=event_id, version=4)), "kind": TOPICS[entity.topic],
            "source": SOURCES[entity.topic], "occurred_at": iso(at), "ingested_at": iso(ingested),
            "schema_version": 1, "unit": unit,
            "agency": {"code": entity.agency.code, "name": entity.agency.name},
            "payload": payload}
        if flaw == "missing_field":  # which one: decided by the event id, not the generator
            del event[("occurred_at", "unit", "agency", "payload")[event_id % 4]]
        elif flaw == "personal_data":
            payload.update(PERSONAL[entity.topic])
        value = json.dumps(event, ensure_ascii=False).encode()
        return value[: len(value) // 2] if flaw == "invalid_json" else value


async def run(settings: Settings, simulator: Simulator, seconds: float | None = None,
              on_tick: Callable[[Stats], None] | None = None, tick: float = 0.2,
              status_every: float = 1.0) -> Stats:
    """Publish the simulator's messages in real time until `seconds` pass (None: until
    cancelled); `on_tick` gets the stats every `status_every` seconds and at the end."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_idempotence=True, linger_ms=20)
    await producer.start()
    stats, loop = simulator.stats, asyncio.get_running_loop()
    began = next_status = loop.time()
    log.info("simulator.start", province=simulator.province.code, speed=simulator.speed,
             rate=simulator.rate, clock=simulator.clock_at(datetime.now(UTC)).isoformat(),
             bad_agencies=simulator.bad_agencies)
    try:
        while seconds is None or loop.time() - began < seconds:
            step_began = loop.time()
            sent = [await producer.send(settings.topic(topic), value, key=key)
                    for topic, key, value in simulator.due()]
            if sent:
                await asyncio.gather(*sent)
            stats.elapsed = loop.time() - began
            if on_tick and loop.time() >= next_status:
                on_tick(stats)
                next_status += status_every
            await asyncio.sleep(max(0.0, tick - (loop.time() - step_began)))
        await producer.flush()
    finally:
        await producer.stop()
        stats.elapsed = loop.time() - began
        log.info("simulator.stop", status=stats.line())
    if on_tick:
        on_tick(stats)
    return stats
