"""A real OpenAI-compatible HTTP server on 127.0.0.1 whose replies a test scripts, for fault injection.

    def handler(body: dict) -> Reply | dict | str: ...
    with ScriptedServer(handler) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="x")

The handler gets the parsed JSON body of each POST /v1/chat/completions and returns a `Reply`
(or a plain string: one choice with that content, or a dict: sent verbatim as the JSON body).
A `Reply` can delay, fail with any status and headers, drop the connection, or send a raw body.
The server records every body (`requests`), each arrival time (`arrivals`), every Authorization
header (`auth_headers`) and the most requests it had in flight at once (`max_in_flight`). GET /v1/models lists
`models` (none by default) and is counted in `model_lists`, apart from the chat requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted response. `content` as a list gives one choice per item (a server honouring `n`)."""

    content: str | list[str] = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    raw: str | None = None
    usage: tuple[int, int] = (10, 10)
    finish_reason: str = "stop"


Handler = Callable[[dict[str, Any]], "Reply | dict | str"]


def completion_body(reply: Reply, model: str) -> dict[str, Any]:
    """The chat-completion JSON an OpenAI server would send for `reply`."""
    contents = reply.content if isinstance(reply.content, list) else [reply.content]
    prompt_tokens, completion_tokens = reply.usage
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reply.finish_reason, "logprobs": None}
            for i, text in enumerate(contents)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": sum(reply.usage)},
    }


def error_body(status: int) -> dict[str, Any]:
    return {"error": {"message": f"scripted error {status}", "type": "scripted", "code": status}}


class ScriptedServer:
    """A threaded HTTP server speaking the chat-completions protocol, driven by a handler."""

    def __init__(self, handler: Handler, *, latency: float = 0.0, models: tuple[str, ...] = ()):
        self.handler = handler
        self.latency = latency
        self.models = models
        self.model_lists = 0
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.auth_headers: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # --- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> ScriptedServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._request_handler_class())
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- bookkeeping --------------------------------------------------------------------------------

    def _arrive(self, body: dict[str, Any], auth: str) -> None:
        with self._lock:
            self.requests.append(body)
            self.arrivals.append(time.monotonic())
            self.auth_headers.append(auth)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early (True) when the server is stopping."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()

    def reply_for(self, body: dict[str, Any]) -> Reply | dict:
        result = self.handler(body)
        return Reply(content=result) if isinstance(result, str) else result

    def _request_handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: without this, delayed ACKs add ~40 ms

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                if not self.path.rstrip("/").endswith("/models"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server._lock:
                    server.model_lists += 1
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "scripted"} for m in server.models]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(raw or b"{}")
                server._arrive(body, self.headers.get("Authorization", ""))
                try:
                    self._respond(body)
                finally:
                    server._leave()

            def _respond(self, body: dict[str, Any]) -> None:
                try:
                    reply = server.reply_for(body)
                except Exception as exc:  # a handler bug shows up as a 500 the test can see
                    self._send(500, {"error": {"message": f"handler raised {exc!r}"}})
                    return
                if isinstance(reply, dict):
                    if not server.wait(server.latency):
                        self._send(200, reply)
                    return
                if server.wait(server.latency + reply.delay):
                    return
                if reply.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                if reply.raw is not None:
                    self._send(reply.status, reply.raw, reply.headers)
                elif reply.status == 200:
                    self._send(200, completion_body(reply, str(body.get("model", ""))), reply.headers)
                else:
                    self._send(reply.status, error_body(reply.status), reply.headers)

            def _send(self, status: int, payload: dict | str, headers: dict[str, str] | None = None) -> None:
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    self.close_connection = True

        return _Handler
