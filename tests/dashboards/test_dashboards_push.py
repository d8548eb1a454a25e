"""`ioc dashboards push` against a stand-in Grafana.

No Grafana server can be installed here (INFRA.md), so this test runs a real local HTTP server
(tests/support/grafana.py) that speaks the subset of Grafana's HTTP API the push uses
(GET/POST /api/folders, GET/POST/PUT /api/datasources[/uid/...], POST /api/dashboards/db), with
Grafana's status codes and bodies, and Bearer/Basic authentication. It records every request;
the assertions read what arrived.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ioc.cli.dashboards import app
from tests.support import ROOT
from tests.support.grafana import TOKEN, FakeGrafana


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("URL", "TOKEN", "USER", "PASSWORD", "READER_PASSWORD", "DATABASE_HOST"):
        monkeypatch.delenv(f"IOC_GRAFANA_{name}", raising=False)
    monkeypatch.setenv("IOC_GRAFANA_READER_PASSWORD", "reader-pw")
    return monkeypatch


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["push", *args])


def test_push_uploads_folder_datasource_and_every_dashboard_idempotently(
        grafana: tuple[str, FakeGrafana], env: pytest.MonkeyPatch) -> None:
    url, state = grafana
    env.setenv("IOC_GRAFANA_TOKEN", TOKEN)  # from the environment, as a site would
    env.setenv("IOC_GRAFANA_DATABASE_HOST", "db.example.internal:5432")
    first = run("--url", url)
    assert first.exit_code == 0, first.output

    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/ioc.yaml")
                              .read_text(encoding="utf-8"))["providers"][0]
    assert state.calls("POST", "/api/folders") == [
        {"title": provider["folder"], "uid": provider["folderUid"]}]

    (source,) = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/ioc.yaml")
                               .read_text(encoding="utf-8"))["datasources"]
    (created,) = state.calls("POST", "/api/datasources")
    assert created["uid"] == "ioc-timescaledb" == source["uid"]
    assert created["type"] == source["type"] and created["user"] == "grafana_reader"
    assert created["jsonData"] == source["jsonData"]
    assert created["url"] == "db.example.internal:5432"
    assert created["secureJsonData"] == {"password": "reader-pw"}

    files = sorted((ROOT / "dashboards/json").glob("*.json"))
    uploads = state.calls("POST", "/api/dashboards/db")
    assert len(files) >= 4 and len(uploads) == len(files)
    for path, body in zip(files, uploads, strict=True):
        assert body["dashboard"] == json.loads(path.read_text(encoding="utf-8")), path.name
        assert body["overwrite"] is True and body["folderUid"] == provider["folderUid"]

    # Again: no second folder or datasource, the datasource updated in place, new versions.
    state.requests.clear()
    second = run("--url", url)
    assert second.exit_code == 0, second.output
    assert state.calls("POST", "/api/folders") == [] and len(state.folders) == 1
    assert state.calls("POST", "/api/datasources") == []
    (updated,) = state.calls("PUT", "/api/datasources/uid/ioc-timescaledb")
    assert updated["id"] == 1 and updated["secureJsonData"] == {"password": "reader-pw"}
    assert len(state.calls("POST", "/api/dashboards/db")) == len(files)
    assert {b["version"] for b in state.dashboards.values()} == {2}
    assert "created folder" not in second.output and "pushed overview.json" in second.output


def test_push_with_user_and_password(grafana: tuple[str, FakeGrafana],
                                     env: pytest.MonkeyPatch) -> None:
    url, state = grafana
    env.setenv("IOC_GRAFANA_TOKEN", "stale-token")  # options given here win
    result = run("--url", url, "--user", "admin", "--password", "s3cret")
    assert result.exit_code == 0, result.output
    assert len(state.dashboards) == len(list((ROOT / "dashboards/json").glob("*.json")))


def one_line_error(result: Any) -> str:
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_push_errors_are_one_line_and_exit_1(grafana: tuple[str, FakeGrafana],
                                             env: pytest.MonkeyPatch) -> None:
    url, state = grafana
    error = one_line_error(run("--url", url, "--token", "wrong"))
    assert "401" in error and "IOC_GRAFANA_TOKEN" in error
    assert state.dashboards == {} and state.folders == {}

    error = one_line_error(run("--url", f"{url}/not-grafana", "--token", TOKEN))
    assert "404" in error and "base URL" in error

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    error = one_line_error(run("--url", f"http://127.0.0.1:{closed}", "--token", TOKEN))
    assert "cannot reach Grafana" in error and "refused" in error

    error = one_line_error(run("--url", url))
    assert "no Grafana credentials" in error

    env.delenv("IOC_GRAFANA_READER_PASSWORD")  # a new datasource needs the reader's password
    error = one_line_error(run("--url", url, "--token", TOKEN))
    assert "IOC_GRAFANA_READER_PASSWORD" in error
    assert state.datasources == {} and state.dashboards == {}
