"""Local HTTP servers speaking the wire formats of the services alert messages go to, for the
tests (Telegram and Zalo cannot run here; a webhook receiver is anyone's): the Bot API's
`POST /bot<token>/sendMessage` answering `{"ok": ...}` (429 with `parameters.retry_after`),
the Zalo OA API's `POST /v3.0/oa/message/cs` with header `access_token` answering
`{"error": 0 | code, ...}`, and a webhook receiver that checks the HMAC signature with the
standard library on its own, as a real receiver would. Each is a real ThreadingHTTPServer on
127.0.0.1 that records what it got.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOT_TOKEN = "7012345678:AAE-test-token"
ZALO_TOKEN = "zalo-oa-access-token"
SECRET = "webhook-secret-for-tests"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


Answer = tuple[int, dict, dict[str, str]]


@dataclass
class Service:
    """A real HTTP server on 127.0.0.1; `answer` says what each POST gets. `failures` are
    answered first, one per request; `hold` (set by a test) makes it wait before answering."""

    name: str
    requests: list[Request] = field(default_factory=list)
    accepted: list[Request] = field(default_factory=list)
    failures: deque[Answer] = field(default_factory=deque)
    hold: threading.Event | None = None
    received: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Service:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()},
                                  self.rfile.read(length))
                status, payload, headers = service.handle(request)
                if service.hold is not None:
                    service.hold.wait(10)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: Request) -> Answer:
        with self.lock:
            self.requests.append(request)
            self.received.set()
            refused = self.check(request)
            if refused is not None:
                return refused
            if self.failures:
                return self.failures.popleft()
            self.accepted.append(request)
            return self.ok(request)

    def check(self, request: Request) -> Answer | None:
        return None

    def ok(self, request: Request) -> Answer:
        return 200, {}, {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Telegram(Service):
    """The Bot API's sendMessage."""

    def check(self, request: Request) -> Answer | None:
        if request.path != f"/bot{BOT_TOKEN}/sendMessage":
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}, {}
        body = request.json()
        if not body.get("text") or "chat_id" not in body:
            return 400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: message text is empty"}, {}
        return None

    def ok(self, request: Request) -> Answer:
        body = request.json()
        return 200, {"ok": True, "result": {"message_id": len(self.accepted),
                                            "chat": {"id": body["chat_id"]},
                                            "text": body["text"]}}, {}


class Zalo(Service):
    """The OA API v3 consultation message: application errors are HTTP 200 + `error`."""

    def check(self, request: Request) -> Answer | None:
        if request.path != "/v3.0/oa/message/cs":
            return 404, {"error": 404, "message": "not found"}, {}
        if request.headers.get("access_token") != ZALO_TOKEN:
            return 200, {"error": -216, "message": "Access token is invalid"}, {}
        return None

    def ok(self, request: Request) -> Answer:
        return 200, {"error": 0, "message": "Success",
                     "data": {"message_id": f"m{len(self.accepted)}",
                              "user_id": request.json()["recipient"]["user_id"]}}, {}


def signature_valid(request: Request, secret: str = SECRET) -> bool:
    """The receiver's check, written from the documented scheme with the stdlib only."""
    timestamp = request.headers.get("x-ioc-timestamp", "")
    sent = request.headers.get("x-ioc-signature", "")
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + request.body,
                                    hashlib.sha256).hexdigest()
    return (hmac.compare_digest(expected.encode(), sent.encode())
            and abs(time.time() - int(timestamp or 0)) <= 300)


class Receiver(Service):
    """A webhook receiver: 401 for a bad signature."""

    def check(self, request: Request) -> Answer | None:
        if not signature_valid(request):
            return 401, {"error": "bad signature"}, {}
        return None


def received(service: Service) -> Counter[str]:
    """Messages accepted per recipient (chat id, user id, or webhook delivery id)."""
    keys = {"telegram": lambda r: str(r.json()["chat_id"]),
            "zalo": lambda r: r.json()["recipient"]["user_id"],
            "webhook": lambda r: r.headers["x-ioc-delivery"]}[service.name]
    return Counter(keys(r) for r in service.accepted)
