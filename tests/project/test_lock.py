"""The image's lock files (deploy/*.lock, made by deploy/lock.sh with uv) against pyproject.toml.

Fails when the locks drift from the declared dependencies: a dependency added, removed or
re-ranged in pyproject.toml without `deploy/lock.sh`, a pin outside its range, an entry without
hashes, or a locked package whose own requirements the lock does not hold.
"""

import re
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME_LOCK = ROOT / "deploy" / "requirements.lock"
BUILD_LOCK = ROOT / "deploy" / "build-requirements.lock"
PROJECT = "ioc-monitor (pyproject.toml)"
# Where the image runs: Debian's CPython 3.11 on Linux (amd64 or arm64).
IMAGE = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
         "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
         "platform_python_implementation": "CPython", "platform_machine": "x86_64"}
ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)"
                   r"(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")


@dataclass
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate(IMAGE)


def read_lock(path: Path) -> dict[str, Pin]:
    """Package -> its pin for the image's platform, hashes and the `# via` annotations uv
    writes. (A universal lock may pin a package twice, for Pythons of disjoint markers.)"""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if match := ENTRY.match(line):
            name = canonicalize_name(match["name"])
            marker = Marker(match["marker"]) if match["marker"] else None
            current = Pin(name, Version(match["version"]), marker)
            if name in pins:
                assert not (pins[name].applies() and current.applies()), \
                    f"{path.name}: {name} pinned twice for the image's platform"
                if pins[name].applies():
                    current.via = pins[name].via  # annotations of either count
                    continue
                current.via = pins[name].via
            pins[name] = current
        elif stripped.startswith("--hash=") and current:
            current.hashes.append(stripped.removeprefix("--hash=").rstrip(" \\"))
        elif stripped.startswith("# via") and current:
            rest = stripped.removeprefix("# via").strip()
            if rest:
                current.via.add(rest)
        elif stripped.startswith("#   ") and current:
            current.via.add(stripped.removeprefix("#").strip())
        elif stripped and not stripped.startswith("#"):
            raise AssertionError(f"{path.name}: unexpected line {line!r}")
    return pins


RUNTIME = read_lock(RUNTIME_LOCK)
DECLARED = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]


def via_name(via: str) -> str:
    return via if via == PROJECT else canonicalize_name(via)


def test_every_entry_is_pinned_with_hashes() -> None:
    for path, pins in ((RUNTIME_LOCK, RUNTIME), (BUILD_LOCK, read_lock(BUILD_LOCK))):
        assert pins, path.name
        for pin in pins.values():
            assert pin.hashes, f"{path.name}: {pin.name} has no hash"
            assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), pin.name


def test_the_lock_holds_exactly_the_declared_dependencies_in_their_ranges() -> None:
    declared = {canonicalize_name(req.name): req for req in DECLARED}
    direct = {name for name, pin in RUNTIME.items() if PROJECT in pin.via}
    assert direct == set(declared), (
        f"run deploy/lock.sh: declared but not locked {sorted(set(declared) - direct)}, "
        f"locked but no longer declared {sorted(direct - set(declared))}")
    for name, req in declared.items():
        pin = RUNTIME[name]
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"run deploy/lock.sh: {name}=={pin.version} is outside {req.specifier}")
        assert (str(pin.marker) if pin.marker else None) == (
            str(req.marker) if req.marker else None), f"{name}: marker differs"


def test_every_pin_is_required_by_something_locked() -> None:
    """No leftover: each entry is reached from pyproject.toml through the lock's own links."""
    reached = {PROJECT}
    changed = True
    while changed:
        changed = False
        for name, pin in RUNTIME.items():
            if name not in reached and {via_name(v) for v in pin.via} & reached:
                reached.add(name)
                changed = True
    assert set(RUNTIME) <= reached, sorted(set(RUNTIME) - reached)


def test_each_locked_package_finds_its_own_requirements_in_the_lock() -> None:
    """From the installed packages' metadata (same version as locked): what each needs on
    the image's platform is locked, in range. Extras asked for by pyproject.toml count."""
    extras = {canonicalize_name(req.name): req.extras for req in DECLARED}
    checked = 0
    for name, pin in RUNTIME.items():
        if not pin.applies():
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != pin.version:
            continue  # this environment has another version: its metadata may differ
        checked += 1
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = ["", *sorted(extras.get(name, ()))]
            if req.marker and not any(req.marker.evaluate({**IMAGE, "extra": e})
                                      for e in wanted):
                continue
            needed = canonicalize_name(req.name)
            assert needed in RUNTIME, f"{name} needs {req}, not in the lock: run deploy/lock.sh"
            assert req.specifier.contains(RUNTIME[needed].version, prereleases=True), (
                f"{name} needs {req}; the lock has {RUNTIME[needed].version}")
    assert checked >= len(RUNTIME) // 2  # most of the lock was checked here


def test_the_build_lock_satisfies_the_build_system() -> None:
    pins = read_lock(BUILD_LOCK)
    for text in PYPROJECT["build-system"]["requires"]:
        req = Requirement(text)
        pin = pins.get(canonicalize_name(req.name))
        assert pin and req.specifier.contains(pin.version), f"run deploy/lock.sh: {req}"


@pytest.mark.parametrize("path", [RUNTIME_LOCK, BUILD_LOCK])
def test_locks_name_their_generator_and_no_package_index(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "#    deploy/lock.sh" in text.splitlines()[1]
    assert "--index-url" not in text and "://" not in text
