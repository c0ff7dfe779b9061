"""Trace spans: the tree of one call (SDK in-memory exporter), never a secret or a body in them, the caller's
trace continued (W3C `traceparent` in-process, on `pocket serve --http` requests and in MCP `_meta`), and the
spans of a `pocket invoke` process exported over OTLP/HTTP to a real receiver on 127.0.0.1."""

from __future__ import annotations

import gzip
import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runner import telemetry
from runner.audit import audit_log
from runner.function_tools import function_tool
from runner.pocket import Pocket
from runner.server import build_server
from tests.auth_helpers import SPEC, authorize
from tests.fixtures_oauth import ACCESS_TOKEN_TTL
from tests.helpers import HELLO, REPO, environment, free_port, settings, wait_listening

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SECRET = "xoxb-span-secret-5151"
BODY_MARK = "body-mark-in-a-span-6161"


@function_tool(auth_provider="slack", scopes=["chat:write"])
def post(channel: str, SLACK_BOT_TOKEN: str) -> str:
    """Post to Slack."""
    return f"posted to {channel} with {SLACK_BOT_TOKEN}"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The SDK with an in-memory exporter as this process's tracer provider (the API allows one per process)."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter


def tree(finished: Any) -> list[str]:
    """The spans as an indented tree of names, children in start order."""
    by_parent: dict[Any, list[Any]] = {}
    ids = {s.context.span_id for s in finished}
    for span in sorted(finished, key=lambda s: s.start_time):
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(span)

    def walk(parent: Any, depth: int) -> list[str]:
        return [
            line
            for s in by_parent.get(parent, [])
            for line in ["  " * depth + s.name, *walk(s.context.span_id, depth + 1)]
        ]

    return walk(None, 0)


@pytest.mark.docker
def test_a_sandboxed_call_is_one_span_tree_with_semantic_attributes(tmp_path, spans, docker_api):
    with Pocket([HELLO], settings=settings(tmp_path)) as pocket:
        first = pocket.invoke("hello", {"name": "the image is resolved on the first call"})
        (image,) = [s for s in spans.get_finished_spans() if s.name == "pocket.image"]
        spans.clear()
        result = pocket.invoke("hello", {"name": BODY_MARK}, user_id="ada")
    assert first.ok and image.attributes["container.image.name"].startswith("pocket-tool/hello:")
    assert result.ok
    assert tree(spans.get_finished_spans()) == [  # the image is known now: no span for looking it up
        "execute_tool hello",
        "  pocket.body_check",
        "  pocket.container.acquire",
        "  pocket.container.run",
    ]
    by_name = {s.name: s for s in spans.get_finished_spans()}
    call = by_name["execute_tool hello"].attributes
    assert (call["gen_ai.operation.name"], call["gen_ai.tool.name"], call["user.id"]) == (
        "execute_tool",
        "hello",
        "ada",
    )
    assert (call["pocket.outcome"], call["process.exit.code"], call["pocket.backend"]) == ("ok", 0, "docker/runc")
    assert call["container.image.id"] == result.image and call["pocket.network.access"] == "none"
    run = by_name["pocket.container.run"].attributes
    assert run["container.id"] == by_name["pocket.container.acquire"].attributes["container.id"]
    (record,) = audit_log(settings(tmp_path)).read(user="ada")
    assert record.trace_id == format(by_name["execute_tool hello"].context.trace_id, "032x")


def test_spans_never_hold_a_credential_or_a_body_and_a_failure_is_an_error(tmp_path, spans):
    with Pocket([post], settings=settings(tmp_path)) as pocket:
        pocket.authenticator.login_with("slack", {"token": SECRET}, user_id="alice")
        assert pocket.invoke("post", {"channel": BODY_MARK}, user_id="alice").ok
        assert not pocket.invoke("post", {"channel": 5}, user_id="alice").ok
    finished = spans.get_finished_spans()
    assert tree(finished) == [
        "execute_tool post", "  pocket.body_check", "  pocket.credentials",
        "execute_tool post", "  pocket.body_check",
    ]  # fmt: skip
    shown = json.dumps([dict(s.attributes) for s in finished] + [[e.name for e in s.events] for s in finished])
    assert SECRET not in shown and BODY_MARK not in shown
    failed = finished[-1]
    assert failed.status.status_code is trace.StatusCode.ERROR and failed.attributes["error.type"] == "bad_input"
    assert finished[2].attributes["pocket.auth.scopes"] == ("chat:write",)


def test_the_callers_trace_is_continued_also_across_the_worker_thread_of_ainvoke(tmp_path, spans):
    with Pocket([post], settings=settings(tmp_path)) as pocket:
        pocket.authenticator.login_with("slack", {"token": SECRET}, user_id="alice")
        with telemetry.continued({"traceparent": TRACEPARENT}):
            assert anyio.run(lambda: pocket.ainvoke("post", {"channel": "c"}, user_id="alice")).ok
        with telemetry.continued({"traceparent": "00-not-a-trace"}):  # broken: a trace of its own
            assert pocket.invoke("post", {"channel": "c"}, user_id="alice").ok
    first, second = (s for s in spans.get_finished_spans() if s.name == "execute_tool post")
    assert format(first.context.trace_id, "032x") == TRACE_ID and format(first.parent.span_id, "016x") == PARENT_ID
    credentials = next(s for s in spans.get_finished_spans() if s.name == "pocket.credentials")
    assert credentials.parent.span_id == first.context.span_id  # looked up on a worker thread, in the same trace
    assert format(second.context.trace_id, "032x") != TRACE_ID and second.parent is None


def test_mcp_meta_traceparent_is_continued(tmp_path, spans):
    @function_tool
    def add(a: int, b: int = 1) -> int:
        """Add."""
        return a + b

    with Pocket([add], settings=settings(tmp_path)) as pocket:

        async def scenario() -> Any:
            async with Client(build_server(pocket)) as client:
                return await client.call_tool("add", {"a": 1}, meta={"traceparent": TRACEPARENT})

        assert not anyio.run(scenario).is_error
    call = next(s for s in spans.get_finished_spans() if s.name == "execute_tool add")
    assert format(call.context.trace_id, "032x") == TRACE_ID


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: decodes each export request with the OTLP protobuf types."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
                with receiver.arrived:
                    for resource_spans in request.resource_spans:
                        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        for scope in resource_spans.scope_spans:
                            receiver.spans += [(resource, span) for span in scope.spans]
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, name: str, timeout: float = 60) -> tuple[dict[str, Any], Any]:
        with self.arrived:
            self.arrived.wait_for(lambda: any(s.name == name for _, s in self.spans), timeout)
        return next((r, s) for r, s in self.spans if s.name == name)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def _otel_environment(tmp_path: Any, receiver: Receiver) -> dict[str, str]:
    """A child's environment exporting to `receiver`; a `pocket invoke` runs its call itself (no local process)."""
    inherited = {k: v for k, v in environment().items() if not k.startswith("OTEL_")}
    return {**inherited, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "audit-test",
            "POCKET_DATA_DIR": str(tmp_path / "data"), "POCKET_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip


@pytest.mark.docker
def test_pocket_invoke_exports_its_span_tree_over_otlp_http(tmp_path, receiver, docker_api):
    command = [sys.executable, "-m", "runner.cli", "invoke", str(HELLO), "hello", "--body", '{"name": "Ada"}']
    ran = subprocess.run(command, env=_otel_environment(tmp_path, receiver), cwd=REPO, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    resource, call = receiver.wait_for("execute_tool hello")
    assert resource["service.name"] == "audit-test"
    children = {s.name for _, s in receiver.spans if s.parent_span_id == call.span_id}
    assert {"pocket.body_check", "pocket.image", "pocket.container.acquire", "pocket.container.run"} <= children
    attributes = {a.key: a.value for a in call.attributes}
    assert attributes["pocket.outcome"].string_value == "ok" and attributes["process.exit.code"].int_value == 0


CALLER = """
import sys, anyio, httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

async def main():
    async with httpx2.AsyncClient(headers={"traceparent": sys.argv[2]}) as http:
        async with Client(streamable_http_client(f"http://127.0.0.1:{sys.argv[1]}/mcp", http_client=http)) as client:
            result = await client.call_tool("add", {"a": 41})
            print(result.content[0].text)

anyio.run(main)
"""


def test_pocket_serve_http_continues_the_traceparent_header_and_exports_over_otlp(tmp_path, receiver):
    script = tmp_path / "server.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from runner.pocket import Pocket\nfrom runner.server import serve\n"
        "def add(a: int, b: int = 1) -> int:\n    '''Add.'''\n    return a + b\n"
        "serve(Pocket([add]), transport='http', port=int(sys.argv[1]), user_id='default')\n"
    )
    port = free_port()
    server = subprocess.Popen([sys.executable, str(script), str(port)], env=_otel_environment(tmp_path, receiver),
                              cwd=REPO, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert wait_listening(port, server, timeout=30), "the server did not start"

        # The caller is a process of its own without an OpenTelemetry SDK, so its MCP client puts no trace in
        # `_meta` (in this process it would: the SDK is set up here): the header alone carries the trace.
        caller = subprocess.run([sys.executable, "-c", CALLER, str(port), TRACEPARENT], cwd=REPO, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert caller.stdout.strip() == "42", caller.stderr
        _, call = receiver.wait_for("execute_tool add")
    finally:
        server.terminate()
        server.wait(10)
    assert call.trace_id.hex() == TRACE_ID


def test_the_http_middleware_runs_each_request_in_the_trace_its_traceparent_header_names(spans):
    """For an HTTP app in front of a Pocket: `TraceContextMiddleware` continues the caller's trace per request."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with telemetry.span("handler"):
            trace_id = telemetry.trace_id() or ""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": trace_id.encode()})

    async def scenario() -> list[str]:
        transport = httpx2.ASGITransport(app=telemetry.TraceContextMiddleware(app))
        async with httpx2.AsyncClient(transport=transport, base_url="http://pocket.test") as http:
            continued = await http.get("/", headers={"traceparent": TRACEPARENT})
            fresh = await http.get("/")
        return [continued.text, fresh.text]

    continued, fresh = anyio.run(scenario)
    assert continued == TRACE_ID and fresh not in ("", TRACE_ID)


def test_a_refresh_is_a_span_of_its_own_naming_the_provider_never_a_token(authenticator, person, oidc_server, spans):
    token = authorize(authenticator, person)
    time.sleep(ACCESS_TOKEN_TTL - 0.9)  # within the 1 s refresh margin (the server's clock decides expiry)
    with telemetry.span("caller"):
        fresh = authenticator.environment(SPEC, "default")["TESTIDP_TOKEN"]
    assert fresh != token
    (refresh,) = [s for s in spans.get_finished_spans() if s.name == "pocket.credentials.refresh"]
    assert dict(refresh.attributes) == {"pocket.auth.provider": "testidp", "user.id": "default"}
    assert refresh.parent is not None and refresh.status.is_ok
    stored = authenticator.store.get("default", "testidp")
    shown = json.dumps([dict(s.attributes) for s in spans.get_finished_spans()])
    assert all(secret not in shown for secret in (token, fresh, stored.value("refresh_token")))
