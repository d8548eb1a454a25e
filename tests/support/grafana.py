"""A stand-in Grafana: a real local HTTP server speaking the subset of Grafana's HTTP API that
`ioc dashboards push` uses, with Grafana's status codes and bodies and Bearer/Basic
authentication. It records every request; the tests assert on what arrived."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TOKEN = "glsa_test_token"
BASIC = "Basic " + base64.b64encode(b"admin:s3cret").decode()


@dataclass
class FakeGrafana:
    """What the stand-in holds, and every request it was sent (method, path, body)."""

    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def calls(self, method: str, prefix: str) -> list[Any]:
        return [b for m, p, b in self.requests if m == method and p.startswith(prefix)]


def handler(state: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    """The request handler of a stand-in holding `state`."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_any(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.requests.append((method, self.path, body))
            if self.headers.get("Authorization") not in (f"Bearer {TOKEN}", BASIC):
                return self.reply(401, {"message": "Unauthorized"})
            path = self.path.split("?")[0]
            parts = path.strip("/").split("/")
            match method, parts:
                case "GET", ["api", "folders", uid]:
                    if uid in state.folders:
                        return self.reply(200, state.folders[uid])
                    return self.reply(404, {"message": "folder not found", "status": "not-found"})
                case "POST", ["api", "folders"]:
                    if body["uid"] in state.folders:
                        return self.reply(409, {"message": "folder with the same uid exists"})
                    state.folders[body["uid"]] = {"id": len(state.folders) + 1, **body}
                    return self.reply(200, state.folders[body["uid"]])
                case "GET", ["api", "datasources", "uid", uid]:
                    if uid in state.datasources:
                        return self.reply(200, state.datasources[uid])
                    return self.reply(404, {"message": "Data source not found"})
                case "POST", ["api", "datasources"]:
                    if any(d["name"] == body["name"] for d in state.datasources.values()):
                        return self.reply(409, {"message": "data source with the same name "
                                                           "already exists"})
                    stored = {"id": len(state.datasources) + 1, "readOnly": False, **body}
                    state.datasources[body["uid"]] = stored
                    return self.reply(200, {"datasource": stored, "id": stored["id"],
                                            "message": "Datasource added", "name": body["name"]})
                case "PUT", ["api", "datasources", "uid", uid]:
                    if uid not in state.datasources:
                        return self.reply(404, {"message": "Data source not found"})
                    state.datasources[uid] = {**state.datasources[uid], **body}
                    return self.reply(200, {"message": "Datasource updated", "id": body["id"]})
                case "POST", ["api", "dashboards", "db"]:
                    board = body["dashboard"]
                    if body.get("folderUid") not in state.folders:
                        return self.reply(400, {"message": "folder not found"})
                    old = state.dashboards.get(board["uid"])
                    if old is not None and not body.get("overwrite"):
                        return self.reply(412, {"message": "A dashboard with the same uid "
                                                           "already exists",
                                                "status": "name-exists"})
                    version = 1 if old is None else old["version"] + 1
                    state.dashboards[board["uid"]] = {"version": version, **body}
                    return self.reply(200, {"id": len(state.dashboards), "uid": board["uid"],
                                            "status": "success", "version": version,
                                            "url": f"/d/{board['uid']}/x"})
            return self.reply(404, {"message": "Not found"})

        def do_GET(self) -> None:
            self.handle_any("GET")

        def do_POST(self) -> None:
            self.handle_any("POST")

        def do_PUT(self) -> None:
            self.handle_any("PUT")

    return Handler


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    """A running stand-in: (its URL, what it holds)."""
    state = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()

