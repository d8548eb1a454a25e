"""The Apache Kafka broker's jars: resolved once by Maven from `pom.xml` into a cache folder.

The first install prints a progress line and takes a few seconds (Maven downloads into
`~/.m2`, then copies the jars); later starts find the folder complete and never run Maven,
so they work offline. The folder is tied to the pom's content: a new version reinstalls.
"""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

POM = Path(__file__).with_name("pom.xml")
MIN_JAVA = 17
MARKER = ".installed"  # written last: holds the pom's digest


class InstallError(RuntimeError):
    """Java or Maven is missing, or Maven failed; the message says what to do."""


def kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).find("m:properties/m:kafka.version", ns)
    assert node is not None and node.text, f"{POM} names no kafka.version"
    return node.text


def jars_dir(cache_dir: Path) -> Path:
    return cache_dir / f"kafka-{kafka_version()}"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def installed(cache_dir: Path) -> bool:
    marker = jars_dir(cache_dir) / MARKER
    return marker.exists() and marker.read_text().strip() == _pom_digest()


@dataclass(frozen=True)
class Java:
    path: str
    version: int  # the major version: 17, 21...


@cache
def find_java() -> Java | None:
    """`$JAVA_HOME/bin/java`, else `java` on PATH, with its major version."""
    home = os.environ.get("JAVA_HOME")
    path = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not path or not Path(path).exists():
        return None
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match[1])
    return Java(path, int(match[2] or 0) if major == 1 else major)  # "1.8.0" is Java 8


def find_maven() -> str | None:
    return shutil.which("mvn")


def install(cache_dir: Path, progress: Callable[[str], None] = print) -> Path:
    """The jar folder, resolved by Maven the first time (one progress line), as is later."""
    target = jars_dir(cache_dir)
    if installed(cache_dir):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent install finishes first
        if installed(cache_dir):
            return target
        mvn = find_maven()
        if mvn is None:
            raise InstallError("Maven (mvn) is needed once to install Apache Kafka's jars: "
                               "apt-get install maven, or run the emulator (--broker emulator)")
        progress(f"installing Apache Kafka {kafka_version()} (first time only): Maven resolves "
                 f"its jars into {target}…")
        started = time.monotonic()
        staging = cache_dir / f".{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            pom = staging / "pom.xml"  # Maven may write beside its pom: not into the package
            shutil.copyfile(POM, pom)
            command = [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom),
                       "dependency:copy-dependencies", "-DincludeScope=runtime",
                       f"-DoutputDirectory={staging / 'jars'}"]
            # Offline first: what ~/.m2 holds already needs no network.
            if subprocess.run([*command, "-o"], capture_output=True).returncode != 0:
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    raise InstallError(f"Maven could not resolve Apache Kafka's jars:\n"
                                       f"{(result.stdout + result.stderr)[-3000:]}")
            jars = staging / "jars"
            (jars / MARKER).write_text(_pom_digest())
            shutil.rmtree(target, ignore_errors=True)
            jars.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        count = len(list(target.glob("*.jar")))
        progress(f"installed {count} jars in {time.monotonic() - started:.0f} s")
        return target
