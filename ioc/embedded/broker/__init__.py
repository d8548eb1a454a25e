"""The embedded broker: Apache Kafka when Java ≥ 17 can run it, else the noida-db emulator.

`choose()` decides (and says why), `make()` builds the server, installing Kafka's jars the
first time. `ioc up`, `ioc demo`, the tests and the benchmark all go through here.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from ioc.core.settings import BrokerSetting
from ioc.embedded.broker.base import Broker
from ioc.embedded.broker.install import (
    MIN_JAVA,
    InstallError,
    find_java,
    find_maven,
    install,
    installed,
    kafka_version,
)

BrokerKind = Literal["apache-kafka", "emulator"]
KINDS: tuple[str, ...] = get_args(BrokerKind)


@dataclass(frozen=True)
class Choice:
    kind: BrokerKind
    reason: str


def choose(setting: BrokerSetting, cache_dir: Path) -> Choice:
    """Which broker to run for IOC_BROKER / --broker `setting`; raises InstallError when
    Apache Kafka is asked for and cannot run."""
    java = find_java()
    has_java = java is not None and java.version >= MIN_JAVA
    found = f"Java {java.version} at {java.path}" if java else "no Java"
    if setting == "emulator":
        return Choice("emulator", "asked for (--broker / IOC_BROKER)")
    ready = installed(cache_dir)
    maven = find_maven()
    if has_java and (ready or maven):
        how = "its jars installed" if ready else f"Maven at {maven}"
        why = "asked for" if setting == "apache-kafka" else f"{found} and {how}"
        return Choice("apache-kafka", why)
    missing = (f"Apache Kafka needs Java ≥ {MIN_JAVA} ({found} found)" if not has_java
               else "Apache Kafka's jars are not installed and Maven (mvn) is not found")
    if setting == "apache-kafka":
        raise InstallError(f"{missing}: apt-get install openjdk-17-jre-headless maven, "
                           "or run the emulator (--broker emulator)")
    return Choice("emulator", missing)


def make(kind: BrokerKind, port: int, state_dir: Path, cache_dir: Path,
         progress: Callable[[str], None] = print) -> Broker:
    """The broker server (not started), its data in `state_dir/<kind>`, its log beside."""
    data_dir = state_dir / kind
    if kind == "emulator":
        from ioc.embedded.broker.emulator import Emulator

        return Emulator(port=port, data_dir=data_dir)
    from ioc.embedded.broker.apache import ApacheKafka

    java = find_java()
    if java is None or java.version < MIN_JAVA:
        raise InstallError(f"Apache Kafka needs Java ≥ {MIN_JAVA}: apt-get install "
                           "openjdk-17-jre-headless, or run the emulator (--broker emulator)")
    return ApacheKafka(port=port, data_dir=data_dir, jars=install(cache_dir, progress),
                       java=java.path)


__all__ = ["KINDS", "Broker", "BrokerKind", "BrokerSetting", "Choice", "InstallError",
           "choose", "kafka_version", "make"]
