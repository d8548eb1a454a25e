"""Dossier lifecycles and citizens' evaluations as the portal and one-stop systems send them
(records with `yyyyMMddHHmmss` local times), and Decision 766's satisfaction computed from
those records alone, never through the code under test.

Each dossier is three snapshots (received, processing, its final state); an evaluation is a
record of its own (`MucDoHaiLong` 1-3, `KhieuNai` 0/1, `NgayDanhGia`), some dossiers have two
(the newer level wins, a complaint stays), some a complaint alone, and a few evaluations are
carried by the dossier's final sync record instead. Only dossiers received more than
`EVALUATED_BEFORE` ago are evaluated, so a recent period has none.
"""

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

VN = timezone(timedelta(hours=7))
# DonViXuLy -> its commune ('' : a province-level agency)
AGENCIES = {"000.00.12.H25": "", "000.79.01.H25": "07900", "000.79.02.H25": "07894",
            "000.79.03.H25": "07909", "000.79.04.H25": "07918"}
PLACES = {code: {"commune_code": commune} for code, commune in AGENCIES.items() if commune}
EVALUATED_BEFORE = timedelta(days=10)
MARGIN = timedelta(hours=2)  # deadlines stay away from now


def stamp(at: datetime) -> str:
    return at.astimezone(VN).strftime("%Y%m%d%H%M%S")


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=VN)


@dataclass
class Lives:
    now: datetime
    dossiers: list[dict[str, Any]] = field(default_factory=list)  # every snapshot
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # records of their own
    carried: list[dict[str, Any]] = field(default_factory=list)  # final records with one

    def finals(self) -> dict[str, dict[str, Any]]:
        """Each dossier's newest snapshot (what the state table ends with)."""
        newest: dict[str, dict[str, Any]] = {}
        for r in [*self.dossiers, *self.carried]:
            old = newest.get(r["MaHoSo"])
            if old is None or r["tienTrinhDongBo"][-1]["ThoiDiemXuLy"] \
                    >= old["tienTrinhDongBo"][-1]["ThoiDiemXuLy"]:
                newest[r["MaHoSo"]] = r
        return newest

    def marks(self) -> dict[str, tuple[int | None, bool]]:
        """Per dossier: its newest level (by NgayDanhGia) and whether any complaint was filed."""
        level: dict[str, tuple[str, int]] = {}
        complaint: dict[str, bool] = {}
        for e in [*self.evaluations, *self.carried]:
            code = e["MaHoSo"]
            if e.get("MucDoHaiLong") is not None:
                when = e.get("NgayDanhGia") or e["tienTrinhDongBo"][-1]["ThoiDiemXuLy"]
                if code not in level or when > level[code][0]:
                    level[code] = (when, e["MucDoHaiLong"])
            if e.get("KhieuNai") is not None:
                complaint[code] = complaint.get(code, False) or e["KhieuNai"] == 1
        return {code: (level[code][1] if code in level else None, complaint.get(code, False))
                for code in {*level, *complaint}}

    def satisfaction(self, since: datetime | None = None, until: datetime | None = None,
                     group_by: str | None = None) -> dict[str | None, dict[str, Any]]:
        """Per group ('agency', 'commune' or None): to handle, evaluated, unsatisfied or
        complained or late (each dossier once) and the 766 rate, from the records."""
        now, marks = stamp(self.now), self.marks()
        groups: dict[str | None, dict[str, Any]] = {}
        for code, r in self.finals().items():
            received = parse(r["NgayTiepNhan"])
            if (since and received < since) or (until and received >= until):
                continue
            if r["TrangThaiHoSo"] in (3, 7, 8):
                continue
            key = None if group_by is None else r["DonViXuLy"] if group_by == "agency" \
                else AGENCIES[r["DonViXuLy"]]
            g = groups.setdefault(key, {"to_handle": 0, "evaluated": 0, "bad": 0})
            g["to_handle"] += 1
            finished = r["TrangThaiHoSo"] in (9, 10)
            late = r["NgayKetThucXuLy"] > r["NgayHenTra"] if finished else r["NgayHenTra"] < now
            level, complained = marks.get(code, (None, False))
            g["evaluated"] += code in marks
            g["bad"] += late or level == 3 or complained
        for g in groups.values():
            g["rate"] = round(100 * (g["to_handle"] - g["bad"]) / g["to_handle"], 2)
        return groups


def lives(seed: int, count: int, now: datetime) -> Lives:
    rng = random.Random(seed)
    result = Lives(now=now.replace(microsecond=0))
    now = result.now
    for i in range(count):
        agency = rng.choice(list(AGENCIES))
        kind = rng.choice(["on_time", "on_time", "on_time", "late", "overdue", "pending",
                           "refused"])
        # decided ones long enough ago to be finished (at most 12 days after receipt) by now
        received = now - timedelta(days=rng.uniform(1 if kind in ("overdue", "pending")
                                                    else 13, 40))
        if kind in ("overdue", "pending"):
            due = now + (-1 if kind == "overdue" else 1) * timedelta(days=rng.uniform(0.5, 5))
            due = max(due, received + MARGIN)
            status, finished = rng.choice([4, 5]), None
        else:
            due = received + timedelta(days=rng.uniform(2, 10))
            status = {"on_time": 10, "late": rng.choice([9, 10]), "refused": 3}[kind]
            finished = None if kind == "refused" else \
                received + (due - received) * rng.uniform(0.2, 0.95) if kind == "on_time" \
                else due + timedelta(hours=rng.uniform(1, 48))
        code = f"000.00.12.H25-EV-{i:05d}"
        base = {"MaHoSo": code, "MaTTHC": "1.001234", "DonViXuLy": agency, "KenhThucHien": 2,
                "NgayNopHoSo": stamp(received - timedelta(minutes=5)),
                "NgayTiepNhan": stamp(received), "NgayHenTra": stamp(due),
                "HoSoCoThanhPhanSoHoa": 1, "ChuHoSo": "Nguyễn Văn A"}
        last = finished or min(received + timedelta(hours=3), now - timedelta(minutes=2))
        steps = [(2, received), (4, received + timedelta(minutes=30)), (status, last)]
        if status == 3:
            steps = [(2, received), (3, received + timedelta(minutes=40))]
        for n, (step, _) in enumerate(steps):
            final = n == len(steps) - 1
            record = {**base, "TrangThaiHoSo": step,
                      "NgayKetThucXuLy": stamp(finished) if final and finished
                      and step in (9, 10) else None,
                      "tienTrinhDongBo": [{"ThoiDiemXuLy": stamp(s)} for _, s in steps[:n + 1]]}
            if final and status in (9, 10) and received < now - EVALUATED_BEFORE \
                    and rng.random() < 0.1:  # the final sync record carries the evaluation
                result.carried.append({**record, "MucDoHaiLong": rng.choice([1, 2, 3]),
                                       "KhieuNai": int(rng.random() < 0.2)})
            else:
                result.dossiers.append(record)
        if (status not in (9, 10) and rng.random() < 0.9) or received > now - EVALUATED_BEFORE:
            continue  # only returned dossiers of the older days are evaluated (and rarely others)
        if any(c["MaHoSo"] == code for c in result.carried[-1:]):
            continue
        if rng.random() < 0.2:
            continue  # returned, never evaluated
        given = (finished or last) + timedelta(hours=rng.uniform(1, 48))
        given = min(given, now - timedelta(minutes=1))
        first: dict[str, Any] = {"MaHoSo": code, "DonViXuLy": agency, "NgayDanhGia": stamp(given),
                                 "ChuHoSo": "Nguyễn Văn A"}
        draw = rng.random()
        if draw < 0.1:  # a complaint alone
            result.evaluations.append({**first, "KhieuNai": 1})
            continue
        level = rng.choices([1, 2, 3], weights=[5, 4, 1])[0]
        result.evaluations.append({**first, "MucDoHaiLong": level,
                                   **({"KhieuNai": int(rng.random() < 0.05)}
                                      if rng.random() < 0.5 else {})})
        if draw > 0.85:  # the citizen changed their mind later (or, sent first, earlier)
            later = min(given + timedelta(hours=rng.uniform(1, 24)), now - timedelta(seconds=30))
            result.evaluations.append({**first, "NgayDanhGia": stamp(later),
                                       "MucDoHaiLong": rng.choice([1, 2, 3])})
    return result
