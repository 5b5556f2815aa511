"""A local OpenAI-compatible chat-completions server for tests: scripted replies, recorded requests, no network."""
from __future__ import annotations

import json
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Union

STUB_MODEL = "stub-model"


@dataclass
class StubRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class StubResponse:
    """Full control over one answer: any status, JSON (or raw text) body and headers."""
    status: int = 200
    body: dict | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


# What a reply callable may return: the assistant's text, several choices' texts, or a whole response.
Reply = Union[str, list[str], StubResponse]
ReplyFunction = Callable[[StubRequest], Reply]


def completion_body(contents: list[str], model: str = STUB_MODEL, finish_reason: str = "stop") -> dict:
    """A chat.completion object as the OpenAI API returns it."""
    return {
        "id": f"chatcmpl-stub-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
                    for i, text in enumerate(contents)],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def error_response(status: int, message: str = "stub error", *, code: str | None = None,
                   retry_after_ms: int | None = None) -> StubResponse:
    """An error in OpenAI's shape; retry_after_ms makes the openai client wait that long instead of backing off."""
    headers = {} if retry_after_ms is None else {"retry-after-ms": str(retry_after_ms)}
    return StubResponse(status, {"error": {"message": message, "type": "stub_error", "param": None, "code": code}},
                        headers)


def echo_last_user_message(request: StubRequest) -> str:
    user_messages = [m for m in request.body.get("messages", []) if m.get("role") == "user"]
    return f"echo: {user_messages[-1]['content']}" if user_messages else "echo:"


def scripted(*replies: Reply) -> ReplyFunction:
    """Answers with the given replies in order, then keeps repeating the last one."""
    remaining = list(replies)
    lock = threading.Lock()

    def reply(_request: StubRequest) -> Reply:
        with lock:
            return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return reply


class OpenAIStub:
    """`with OpenAIStub(reply) as stub:` serves POST /v1/chat/completions and GET /v1/models at stub.url.

    Every request is recorded in `stub.requests`; `stub.max_in_flight` is the most requests handled at once.
    """

    def __init__(self, reply: ReplyFunction = echo_last_user_message, *, latency_s: float = 0.0,
                 models: tuple[str, ...] = (STUB_MODEL,)):
        self.reply = reply
        self.latency_s = latency_s
        self.models = models
        self.requests: list[StubRequest] = []
        self.reply_errors: list[str] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to give a client, like OPENAI_BASE_URL."""
        if self._server is None:
            raise RuntimeError("The stub server is not running: use it as `with OpenAIStub() as stub:`.")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def chat_requests(self) -> list[dict]:
        """The JSON bodies of the chat-completion requests received, in arrival order."""
        with self._lock:
            return [r.body for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    def __enter__(self) -> OpenAIStub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        # Handler threads must not keep the test process alive or make stop() wait on idle connections.
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def _answer(self, request: StubRequest) -> StubResponse:
        path = request.path.split("?")[0].rstrip("/")
        if request.method == "GET" and path.endswith("/models"):
            return StubResponse(body={"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in self.models]})
        if request.method != "POST" or not path.endswith("/chat/completions"):
            return error_response(404, f"No route for {request.method} {request.path}.")
        try:
            reply = self.reply(request)
        except Exception:
            self.reply_errors.append(traceback.format_exc())
            # x-should-retry: false stops the client from retrying a broken test script.
            response = error_response(500, "The stub's reply function raised; see stub.reply_errors.")
            response.headers["x-should-retry"] = "false"
            return response
        if isinstance(reply, StubResponse):
            return reply
        contents = [reply] if isinstance(reply, str) else list(reply)
        return StubResponse(body=completion_body(contents, model=request.body.get("model", STUB_MODEL)))


def _make_handler(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"unparsed": raw.decode("utf-8", "replace")}
            request = StubRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with stub._lock:
                stub.requests.append(request)
                stub._in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub._in_flight)
            try:
                if stub.latency_s:
                    time.sleep(stub.latency_s)
                self._send(stub._answer(request))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout under test): nothing left to answer
            finally:
                with stub._lock:
                    stub._in_flight -= 1

        def _send(self, response: StubResponse) -> None:
            if isinstance(response.body, str):
                payload, content_type = response.body.encode(), "text/plain; charset=utf-8"
            else:
                payload, content_type = json.dumps(response.body or {}).encode(), "application/json"
            self.send_response(response.status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, *args) -> None:
            pass

    return Handler
