"""`/metrics` and `/healthz` of a running connector (`ioc connectors run --metrics-port`).

A plain HTTP server in a thread: Prometheus scrapes `/metrics` (the connector's own
registry); `/healthz` answers 200 while the connector is `ok` and 503 when it is degraded,
silent or stopped, with `{"connector", "kind", "status", "reason"}` as JSON either way.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.status import Health

if TYPE_CHECKING:
    from connectors.base import Connector


class Endpoint:
    def __init__(self, connector: "Connector", host: str = "127.0.0.1", port: int = 0) -> None:
        self.connector = connector

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self.answer(200, generate_latest(connector.metrics), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    health, reason = connector.health.state()
                    body = json.dumps({"connector": connector.name, "kind": str(connector.kind),
                                       "status": str(health), "reason": reason})
                    self.answer(200 if health is Health.OK else 503, body.encode(),
                                "application/json")
                else:
                    self.answer(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # scrapes are not worth a log line each

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name=f"endpoint-{connector.name}")

    def start(self) -> "Endpoint":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
