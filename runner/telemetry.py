"""Trace spans for every call, through the OpenTelemetry API only.

The API is a no-op until a tracer provider is set, so spans cost next to nothing for those who do not trace.
An application that sets up its own SDK gets our spans in its traces; otherwise `configure()` sets one up from
the standard OTEL_* variables when the `otel` extra (SDK and OTLP/HTTP exporter) is installed and an exporter
is asked for (OTEL_TRACES_EXPORTER, or an OTLP endpoint). Trace context is continued from the caller: W3C
`traceparent` on HTTP requests (`TraceContextMiddleware`) and MCP's `params._meta.traceparent` (the `mcp`
SDK's own server span, which our spans nest in).

Spans carry what a call is (tool, user, outcome, image, container, hosts reached and refused), never a body,
a result or a credential value.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from runner import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Span

TRACER_NAME = "pocket-runner"
Attribute = str | bool | int | float | tuple[str, ...]

_configured = False
_UNKNOWN = object()
_configure_lock = threading.Lock()
# The API's modules, imported by the first call (`_load`), not with this one: `from runner import Pocket` stays fast
_trace: Any = None  # opentelemetry.trace
_context: Any = None  # opentelemetry.context
# What `span` gives without a tracer provider: one context manager for every block, giving the API's invalid span
_no_span: contextlib.nullcontext[Any] = contextlib.nullcontext(None)


@functools.cache
def tracer() -> Any:
    """Our tracer, got once: before an SDK is set up it is the API's proxy, which then delegates to the SDK's."""
    from opentelemetry import trace

    return trace.get_tracer(TRACER_NAME, __version__)


def span(
    name: str, attributes: Mapping[str, Attribute | None] | None = None
) -> contextlib.AbstractContextManager[Span]:
    """A span around the block, child of the current one; an exception ends it with an error status. Without
    a tracer provider the API's span would be a no-op that still costs ~40 us: none is made."""
    if not _tracing():
        return _no_span
    clean = {key: value for key, value in (attributes or {}).items() if value is not None}
    return tracer().start_as_current_span(name, attributes=clean)  # type: ignore[no-any-return]


def _tracing() -> bool:
    """Whether a tracer provider is set (four times a call: one function, no import statement). `get_tracer_provider()`
    looks OTEL_PYTHON_TRACER_PROVIDER up in the environment on every call until one is (7 us): the API's module
    global is read instead, once the first call has loaded a provider that variable names."""
    trace = _trace if _trace is not None else _load()
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is _UNKNOWN:  # an API without it: the public way
        return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return provider is not None


def _load() -> Any:
    """Import the API's modules (once: a race imports the same modules twice), and read the tracer provider's
    variable; returns opentelemetry.trace."""
    global _trace, _context, _no_span
    from opentelemetry import context, trace

    trace.get_tracer_provider()
    _no_span = contextlib.nullcontext(trace.INVALID_SPAN)
    _context, _trace = context, trace
    return trace


def annotate(current: Span, attributes: Mapping[str, Attribute | None]) -> None:
    """Set the attributes that are not None on `current` (cheap when it is not recording)."""
    if current.is_recording():
        current.set_attributes({key: value for key, value in attributes.items() if value is not None})


def failed(current: Span, error_type: str) -> None:
    """Mark `current` as failed with `error_type` (a call's outcome), without an exception."""
    if current.is_recording():
        from opentelemetry.trace import StatusCode

        current.set_attribute("error.type", error_type)
        current.set_status(StatusCode.ERROR)


def trace_id() -> str | None:
    """The current trace's id (32 hex digits), or None outside a valid trace."""
    trace = _trace if _trace is not None else _load()
    if not _context.get_current():  # nothing in the context, so no span: the common case without tracing
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


@contextlib.contextmanager
def continued(carrier: Mapping[str, Any] | None) -> Iterator[None]:
    """Continue the caller's trace named in `carrier` (W3C `traceparent`/`tracestate` keys) for the block; a
    carrier without a valid one leaves the current context as it is."""
    from opentelemetry import context, trace
    from opentelemetry.propagate import extract

    headers = {str(k).lower(): str(v) for k, v in (carrier or {}).items() if isinstance(v, str)}
    extracted = extract(headers) if "traceparent" in headers else None
    if extracted is None or not trace.get_current_span(extracted).get_span_context().is_valid:
        yield
        return
    token = context.attach(extracted)
    try:
        yield
    finally:
        context.detach(token)


class TraceContextMiddleware:
    """ASGI middleware: each HTTP request runs in the trace its `traceparent` header names, if any."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())}
        with continued(headers):
            await self.app(scope, receive, send)


@contextlib.contextmanager
def mcp_call(request_context: Any) -> Iterator[None]:
    """Around an MCP tool call handler: its calls are audited as MCP's, in the trace its HTTP request's
    `traceparent` header names when its `_meta` named none (the `mcp` SDK continues `_meta.traceparent`
    itself, in the server span our spans then nest in)."""
    from runner.audit import Surface, called_from

    meta = getattr(request_context, "meta", None)
    carried = meta.model_dump(by_alias=True) if hasattr(meta, "model_dump") else meta
    from_meta = isinstance(carried, Mapping) and bool(carried.get("traceparent"))
    headers = getattr(getattr(request_context, "request", None), "headers", None)
    with called_from(Surface.MCP), continued(None if from_meta else dict(headers or {})):
        yield


def configure() -> None:
    """Set up the SDK from the OTEL_* variables, once, when an exporter is asked for, the `otel` extra is
    installed and the application did not set a tracer provider of its own."""
    global _configured
    if _configured:
        return
    with _configure_lock:
        if _configured:
            return
        _configured = True
        names = _exporters_asked()
        from opentelemetry import trace

        if not names or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return  # nothing asked, or the application's own provider
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        except ImportError:
            _warn("OTEL_* variables ask for trace export, but the `otel` extra is not installed: "
                  "pip install 'pocket-runner[otel]'")  # fmt: skip
            return
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if "otlp" in names and protocol not in (None, "http/protobuf"):
            _warn(f"OTEL_EXPORTER_OTLP_PROTOCOL is {protocol!r}: pocket-runner exports OTLP over http/protobuf only")
        named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
        provider = TracerProvider(resource=Resource.create({} if named else {"service.name": TRACER_NAME}))
        # OTLP: endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*; console: on stderr, apart from results
        known = {"otlp": OTLPSpanExporter, "console": lambda: ConsoleSpanExporter(out=sys.stderr)}
        for name in names:
            if name in known:
                provider.add_span_processor(BatchSpanProcessor(known[name]()))
            else:
                _warn(f"OTEL_TRACES_EXPORTER names {name!r}: pocket-runner exports to otlp (HTTP) or console")
        trace.set_tracer_provider(provider)


def _exporters_asked() -> list[str]:
    """The span exporters the OTEL_* variables ask for: none when the SDK is disabled; otlp when only an
    endpoint is given."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not names and endpoint:
        names = ["otlp"]
    return [name for name in names if name != "none"]


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, stacklevel=3)
