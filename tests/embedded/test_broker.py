"""The broker choice and Apache Kafka's install, through the `ioc broker` commands."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from ioc.embedded.broker import kafka_version
from tests.support import ROOT


def ioc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ioc", "broker", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOC_", "JAVA_HOME"))}
    env.update(values)
    return env


def test_the_pinned_version_is_the_compose_images() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_install_runs_maven_once_then_needs_it_no_more(tmp_path: Path) -> None:
    env = clean_env(IOC_CACHE_DIR=str(tmp_path / "cache"))
    first = ioc(env, "install")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"installing Apache Kafka {kafka_version()} (first time only)" in first.stderr
    jars = tmp_path / "cache" / f"kafka-{kafka_version()}"
    names = {p.name for p in jars.glob("*.jar")}
    assert {f"kafka_2.13-{kafka_version()}.jar", "slf4j-reload4j-1.7.36.jar"} <= names

    # Later runs use the folder as it is: no Maven on the PATH, no progress line.
    no_tools = tmp_path / "empty-bin"
    no_tools.mkdir()
    again = ioc({**env, "PATH": str(no_tools)}, "install")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "installing" not in again.stderr
    assert str(jars) in again.stdout.replace("\n", "")


def test_without_java_the_emulator_runs_and_says_why(tmp_path: Path) -> None:
    env = clean_env(IOC_CACHE_DIR=str(tmp_path / "cache"), PATH=str(tmp_path))
    auto = ioc(env, "which")
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.startswith("emulator: Apache Kafka needs Java ≥ 17 (no Java found)")

    forced = ioc(env, "which", "--broker", "apache-kafka")
    assert forced.returncode == 1
    assert "Apache Kafka needs Java ≥ 17" in forced.stderr and "--broker emulator" in forced.stderr
    assert "Traceback" not in forced.stderr


def test_with_java_and_maven_apache_kafka_runs(tmp_path: Path) -> None:
    result = ioc(clean_env(IOC_CACHE_DIR=str(tmp_path / "cache")), "which")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("apache-kafka: Java "), result.stdout
    assert "Maven at" in result.stdout  # nothing installed in this cache yet
