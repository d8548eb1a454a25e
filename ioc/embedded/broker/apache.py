"""Apache Kafka from its Maven jars: one JVM in KRaft combined mode (broker + controller).

Formatted once (`kafka.tools.StorageTool format`), then started with a properties file
written at each start, as docker-compose's `apache/kafka` image configures it, plus what a
single local node wants (no initial rebalance delay). SIGTERM is a clean shutdown.
"""

import base64
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ioc.embedded.broker.base import Broker
from ioc.embedded.servers import EmbeddedError, free_port

# Sized for 2-core / 24 GB machines that also run PostgreSQL, the worker and the tests.
HEAP = ("-Xms256m", "-Xmx768m")
# kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS.
JVM_FLAGS = ("-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
             "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
             "-XX:MaxInlineLevel=15", "-Djava.awt.headless=true")

LOG4J = """\
# Written by ioc at each start (ioc/embedded/broker/apache.py).
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
# The configuration dumps (hundreds of lines a start): the properties file says it all.
log4j.logger.kafka.server.KafkaConfig=WARN
log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""



def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: a base64url UUID not starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass(kw_only=True)
class ApacheKafka(Broker):
    """`jars`: the folder `ioc broker install` fills; `java`: a Java ≥ 17 executable."""

    kind: ClassVar[str] = "apache-kafka"
    name: str = "apache-kafka"
    jars: Path
    java: str = "java"
    start_timeout: float = 90
    # Production creates topics explicitly (`ioc topics ensure`), as docker-compose.yml does.
    auto_create_topics: bool = False
    controller_port: int = 0  # 0: a free port at each start (nothing stores it)
    # More server properties, or other values (tests: e.g. a shorter broker.session.timeout.ms,
    # which a restart after a crash waits out before the broker can register again).
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def properties(self) -> Path:
        return self.data_dir.parent / f"{self.name}.properties"

    @property
    def log4j(self) -> Path:
        return self.data_dir.parent / f"{self.name}-log4j.properties"

    def server_properties(self, controller_port: int) -> str:
        values = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir.resolve()),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            **self.overrides,
        }
        lines = ["# Written by ioc at each start (ioc/embedded/broker/apache.py)."]
        return "\n".join([*lines, *(f"{k}={v}" for k, v in values.items())]) + "\n"

    def _java(self, main: str, *args: str, heap: tuple[str, ...] = HEAP) -> list[str]:
        return [self.java, *heap, *JVM_FLAGS, f"-Dlog4j.configuration={self.log4j.as_uri()}",
                f"-Dkafka.logs.dir={self.data_dir.parent.resolve()}",
                "-cp", str(self.jars.resolve() / "*"), main, *args]

    def prepare(self) -> None:
        if not any(self.jars.glob("kafka_2.13-*.jar")):
            raise EmbeddedError(f"no Apache Kafka jars in {self.jars}: run `ioc broker install`")
        self.log4j.write_text(LOG4J)
        self.properties.write_text(self.server_properties(self.controller_port or free_port()))
        if (self.data_dir / "meta.properties").exists():
            return
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "--ignore-formatted",
                       "-t", new_cluster_id(), "-c", str(self.properties),
                       heap=("-Xmx256m",)),
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        with self.log.open("a") as log:
            log.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise EmbeddedError(f"formatting {self.data_dir} for Apache Kafka failed; see "
                                f"{self.log}:\n{(result.stdout + result.stderr)[-2000:]}")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.properties))
