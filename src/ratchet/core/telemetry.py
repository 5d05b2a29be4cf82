"""Telemetry: OpenTelemetry traces, metrics and logs of every Ratchet component.

A server process calls :func:`setup` once (``ratchet serve runner`` → ``setup("runner", ws)``). That
makes a ``TracerProvider``, a ``MeterProvider`` and (the SDK's logs API being usable) a
``LoggerProvider`` whose resource says ``service.name = ratchet-<component>`` and
``ratchet.workspace = <name>``, and installs them as the process's global providers, so the MCP SDK's
own SERVER spans (which it makes through the global provider) land in the same place as Ratchet's.

Exporters: by default JSON lines in the workspace's object store::

    telemetry/<component>/<process>/spans.jsonl    one ReadableSpan.to_json() a line (batched, flushed at exit)
    telemetry/<component>/<process>/metrics.jsonl  one MetricsData.to_json() a line per export (every 30 s)
    telemetry/<component>/<process>/logs.jsonl     one log record a line (the ``ratchet`` logger, WARNING and up)

``<process>`` is ``host-pid-starttime``: each key has one writer, however many processes and hosts.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, everything goes over OTLP/HTTP instead (the ``otlp`` extra:
``pip install 'ratchet-agents[otlp]'``, i.e. ``opentelemetry-exporter-otlp-proto-http``).

Core code does not hold a provider: it asks :func:`current` for the :class:`Telemetry` in force (the
one :func:`setup` made, or one over the global providers, which are no-ops until someone installs
real ones). Tests call ``setup(..., install_global=False)`` and ``shutdown()`` to stay isolated.

Span and attribute names: spans ``ratchet.runner.call``, ``ratchet.tuner.feedback``,
``ratchet.tuner.apply_pending``, ``ratchet.tuner.promote``; attributes ``ratchet.conversation_id``,
``ratchet.version``, ``ratchet.strategy`` (and ``ratchet.tool``, ``ratchet.events.*``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ratchet import __version__
from ratchet.core.errors import ConfigError

if TYPE_CHECKING:
    from ratchet.core.stores.objects import ObjectStore
    from ratchet.core.workspace import Workspace

CONVERSATION_ID = "ratchet.conversation_id"
VERSION = "ratchet.version"
STRATEGY = "ratchet.strategy"
TOOL = "ratchet.tool"
CHOICE = "ratchet.choice"
PROPENSITY = "ratchet.propensity"
EVENTS_ACCEPTED = "ratchet.events.accepted"
EVENTS_DUPLICATE = "ratchet.events.duplicates"
EVENTS_APPLIED = "ratchet.events.applied"
PROMOTED = "ratchet.promoted"
WORKSPACE = "ratchet.workspace"

RUNNER_CALL = "ratchet.runner.call"
TUNER_FEEDBACK = "ratchet.tuner.feedback"
TUNER_APPLY = "ratchet.tuner.apply_pending"
TUNER_PROMOTE = "ratchet.tuner.promote"

OTLP_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"
METRICS_INTERVAL_MS = 30_000
SCOPE = "ratchet"


def telemetry_key(component: str, kind: str) -> str:
    """Object-store key of this process's JSON lines: ``telemetry/<component>/<process>/<kind>.jsonl``,
    where ``<process>`` is host, pid and start time: one writer per key, on any number of hosts."""
    return f"telemetry/{component}/{process_name()}/{kind}.jsonl"


_process: tuple[int, str] | None = None


def process_name() -> str:
    """This process as a telemetry writer: host, pid and start time (pids are reused; forks get their own)."""
    global _process
    if _process is None or _process[0] != os.getpid():
        _process = (os.getpid(), f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}")
    return _process[1]


def trace_id_hex(span: trace.Span) -> str | None:
    """The span's trace id as 32 hex digits (as stored with turns and feedback), or None if invalid."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


# --- exporters: JSON lines in the object store ---------------------------------------------------------


class _Lines:
    """Appends lines to one object-store key; one write per batch, serialized across threads."""

    def __init__(self, objects: ObjectStore, key: str):
        self.objects, self.key = objects, key
        self._lock = threading.Lock()
        self.closed = False

    def write(self, lines: list[str]) -> None:
        if lines and not self.closed:
            with self._lock:
                self.objects.append_line(self.key, "\n".join(lines))




class JsonLinesSpanExporter(SpanExporter):
    """Spans as JSON lines (``ReadableSpan.to_json(indent=None)``) under ``telemetry/<component>/spans.jsonl``."""

    def __init__(self, objects: ObjectStore, component: str):
        self._out = _Lines(objects, telemetry_key(component, "spans"))
        self._resources: dict[int, tuple[Any, dict[str, Any]]] = {}

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        try:
            self._out.write([self._line(s) for s in spans])
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _line(self, span: Any) -> str:
        """``span.to_json(indent=None)``, field for field (a test holds the two equal), except that the
        resource, the same for every span, is encoded once: re-encoding it was most of the export's cost
        on a busy runner."""
        from opentelemetry.sdk import util
        from opentelemetry.sdk.trace import ReadableSpan as S

        resource = span.resource
        cached = self._resources.get(id(resource))
        if cached is None or cached[0] is not resource:
            cached = self._resources[id(resource)] = (resource, json.loads(resource.to_json()))
        status = {"status_code": str(span.status.status_code.name)}
        if span.status.description:
            status["description"] = span.status.description
        return json.dumps({
            "name": span.name,
            "context": S._format_context(span.context) if span.context else None,
            "kind": str(span.kind),
            "parent_id": f"0x{trace.format_span_id(span.parent.span_id)}" if span.parent is not None else None,
            "start_time": util.ns_to_iso_str(span.start_time) if span.start_time else None,
            "end_time": util.ns_to_iso_str(span.end_time) if span.end_time else None,
            "status": status,
            "attributes": S._format_attributes(span.attributes),
            "events": S._format_events(span.events),
            "links": S._format_links(span.links),
            "resource": cached[1],
        })

    def shutdown(self) -> None:
        self._out.closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _metric_exporter_class():
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class JsonLinesMetricExporter(MetricExporter):
        """Each export (``MetricsData.to_json(indent=None)``) as one line of ``metrics.jsonl``."""

        def __init__(self, objects: ObjectStore, component: str):
            super().__init__()
            self._out = _Lines(objects, telemetry_key(component, "metrics"))

        def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
            try:
                if metrics_data.resource_metrics:
                    self._out.write([metrics_data.to_json(indent=None)])
            except OSError:
                return MetricExportResult.FAILURE
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
            self._out.closed = True

    return JsonLinesMetricExporter


def _log_exporter_class():
    """A JSON-lines log exporter, or None if this SDK's (still experimental) logs API differs."""
    try:
        from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
    except ImportError:
        return None

    class JsonLinesLogExporter(LogRecordExporter):
        def __init__(self, objects: ObjectStore, component: str):
            self._out = _Lines(objects, telemetry_key(component, "logs"))

        def export(self, batch):
            try:
                self._out.write([r.to_json(indent=None) for r in batch])
            except OSError:
                return LogRecordExportResult.FAILURE
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            self._out.closed = True

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return JsonLinesLogExporter


def _otlp_exporters() -> tuple[Any, Any, Any]:
    """OTLP/HTTP span, metric and log exporters (configured by the standard OTEL_* variables)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            f"{OTLP_ENV} is set ({os.environ.get(OTLP_ENV)!r}) but the OTLP exporter package {OTLP_PACKAGE} is "
            f"not installed", field=OTLP_ENV,
            fix=f"pip install 'ratchet-agents[otlp]' (or pip install {OTLP_PACKAGE}), or unset {OTLP_ENV} to write "
            f"JSON lines to the object store") from None
    try:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        logs = OTLPLogExporter()
    except ImportError:  # pragma: no cover -- older exporter packages
        logs = None
    return OTLPSpanExporter(), OTLPMetricExporter(), logs


# --- the telemetry of a process ------------------------------------------------------------------------


class Telemetry:
    """The providers, tracer, meter and instruments of one component (or of the global providers)."""

    def __init__(self, component: str | None = None, *, tracer_provider=None, meter_provider=None,
                 logger_provider=None, exporter: str = "none", installed: bool = False,
                 log_handler: logging.Handler | None = None):
        self.component = component
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.logger_provider = logger_provider
        self.exporter = exporter  # "jsonl", "otlp", "memory" or "none" (the global providers)
        self.installed = installed
        self._log_handler = log_handler
        tp = tracer_provider or trace.get_tracer_provider()
        mp = meter_provider or metrics.get_meter_provider()
        self.tracer = tp.get_tracer(SCOPE, __version__)
        self.meter = mp.get_meter(SCOPE, __version__)
        m = self.meter
        self.runner_calls = m.create_counter("ratchet.runner.calls", unit="{call}", description="runner tool calls")
        self.runner_errors = m.create_counter("ratchet.runner.errors", unit="{call}",
                                              description="runner tool calls that raised")
        self.runner_latency = m.create_histogram("ratchet.runner.latency", unit="ms",
                                                 description="runner tool latency (the tool itself)")
        self.feedback_events = m.create_counter("ratchet.tuner.feedback.events", unit="{event}",
                                                description="feedback events accepted (duplicates excluded)")
        self.events_applied = m.create_counter("ratchet.tuner.events.applied", unit="{event}",
                                               description="feedback events folded into staging")
        self.promotions = m.create_counter("ratchet.tuner.promotions", unit="{promotion}",
                                           description="promotion attempts, by outcome (ratchet.promoted)")

    @contextlib.contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[trace.Span]:
        """A span made current for the block; ``None`` attributes are left out, others must be
        str/bool/int/float (or sequences of them)."""
        attrs = {k: v for k, v in attributes.items() if v is not None}
        with self.tracer.start_as_current_span(name, attributes=attrs) as s:
            yield s

    def flush(self, timeout_millis: int = 10_000) -> None:
        for p in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if p is not None:
                p.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and stop the exporters; :func:`current` falls back to the global providers."""
        global _current
        if self._log_handler is not None:
            logging.getLogger("ratchet").removeHandler(self._log_handler)
            self._log_handler = None
        for p in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if p is not None:
                p.shutdown()
        with _lock:
            if _current is self:
                _current = None


_current: Telemetry | None = None
_global: Telemetry | None = None
_lock = threading.Lock()


def current() -> Telemetry:
    """The telemetry in force: :func:`setup`'s, else one over the global (by default no-op) providers."""
    global _global
    tel = _current
    if tel is not None:
        return tel
    if _global is None:
        with _lock:
            if _global is None:
                _global = Telemetry()
    return _global


def span(name: str, **attributes: Any):
    """``with span("ratchet.x", **{CONVERSATION_ID: cid}) as s:`` on the current telemetry."""
    return current().span(name, **attributes)


def setup(component: str, workspace: Workspace, *, install_global: bool = True,
          span_exporter=None, metric_reader=None, batch: bool | None = None) -> Telemetry:
    """Telemetry of a component (``runner``, ``tuner``, ``tuner-worker``, ``architect``, ``versions``).

    :param install_global: make the providers the process's global ones (servers: so the MCP SDK's
        spans join); tests pass False and use the providers this returns.
    :param span_exporter: export spans here instead (tests: an ``InMemorySpanExporter``).
    :param metric_reader: read metrics with this instead (tests: an ``InMemoryMetricReader``).
    :param batch: BatchSpanProcessor (default for servers) or SimpleSpanProcessor (default otherwise).
    """
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    global _current
    resource = Resource.create({"service.name": f"ratchet-{component}", "service.version": __version__,
                                WORKSPACE: workspace.name})
    batch = install_global if batch is None else batch
    log_exporter = None
    if span_exporter is not None:
        exporter = "memory"
    elif os.environ.get(OTLP_ENV):
        exporter = "otlp"
        span_exporter, metric_exporter, log_exporter = _otlp_exporters()
    else:
        exporter = "jsonl"
        objects = workspace.objects
        span_exporter = JsonLinesSpanExporter(objects, component)
        metric_exporter = _metric_exporter_class()(objects, component)
        log_class = _log_exporter_class()
        log_exporter = log_class(objects, component) if log_class is not None else None
    if metric_reader is None and exporter != "memory":
        metric_reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=METRICS_INTERVAL_MS)

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter) if batch else SimpleSpanProcessor(span_exporter))
    meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader] if metric_reader else [],
                                   exemplar_filter=AlwaysOffExemplarFilter())  # exemplars cost ~5 us a measurement
    logger_provider, handler = _logs(resource, log_exporter, install_global) if log_exporter is not None else (None, None)

    if install_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    tel = Telemetry(component, tracer_provider=tracer_provider, meter_provider=meter_provider,
                    logger_provider=logger_provider, exporter=exporter, installed=install_global,
                    log_handler=handler)
    with _lock:
        _current = tel
    return tel


@contextlib.contextmanager
def serving(component: str, workspace: Workspace) -> Iterator[Telemetry]:
    """``setup`` for a server process's lifetime: the global providers, flushed and shut down on exit.

    SIGTERM becomes ``SystemExit(143)`` while it runs (uvicorn re-raises the signal it caught after a
    graceful stop; the default action would kill the process before the exporters flush).
    """
    import signal

    tel = setup(component, workspace)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield tel
    finally:
        try:
            tel.shutdown()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _logs(resource, exporter, install_global: bool):
    """A LoggerProvider exporting the ``ratchet`` logger's records (servers only: a handler on a
    logger is process-wide)."""
    if not install_global:
        return None, None
    try:
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    except ImportError:  # pragma: no cover -- the logs API is still experimental in the SDK
        return None, None
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    set_logger_provider(provider)
    handler = LoggingHandler(level=logging.WARNING, logger_provider=provider)
    logging.getLogger("ratchet").addHandler(handler)
    return provider, handler
