"""The instance's HTTP port: /metrics (every worker, aggregated), /healthz and /readyz."""

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from .errors import EventfleetError

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


class PortError(EventfleetError):
    """The metrics port cannot be bound (another process has it); raised before anything starts."""

    def __init__(self, port: int, error: OSError, fix: str) -> None:
        super().__init__(f"cannot serve /metrics on port {port}: {error.strerror or error}. {fix}")


def serve(
    port: int,
    healthy: Check,
    ready: Check,
    host: str = "0.0.0.0",
    fix: str = "",
    registry: CollectorRegistry | None = None,
) -> ThreadingHTTPServer:
    """Serve in a daemon thread until ``shutdown()``; metrics come from PROMETHEUS_MULTIPROC_DIR,
    or from ``registry`` (a single process's own metrics, e.g. ``eventfleet tail``). A port that
    cannot be bound raises :class:`PortError` with ``fix``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                metrics = registry
                if metrics is None:
                    metrics = CollectorRegistry()
                    multiprocess.MultiProcessCollector(metrics)  # type: ignore[no-untyped-call]
                self._send(200, generate_latest(metrics), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, detail = (healthy if path == "/healthz" else ready)()
                self._send(200 if ok else 503, (detail + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http: " + format, *args)

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise PortError(port, e, fix) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
