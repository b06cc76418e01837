"""`backup-tasks-metrics`: a Prometheus endpoint with each database's backups (metrics/collector.py).

Its own small process rather than a part of the worker: Celery's prefork pool would need prometheus-client's
multiprocess mode, and a scrape must not wait behind a running backup. It binds BACKUP_METRICS_ADDRESS
(127.0.0.1 unless told otherwise) on BACKUP_METRICS_PORT, reads the job outcomes the tasks record in Redis and
the storages' listings (cached BACKUP_METRICS_CACHE_S), and needs no database URL unless a server is discovered.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from prometheus_client import CollectorRegistry, start_http_server

from ..errors import BackupError
from ..settings import Settings, get_settings
from .collector import BackupCollector

logger = logging.getLogger(__name__)


def registry(settings: Settings) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)  # describe() would run a whole collection at registration
    reg.register(BackupCollector(settings))
    return reg


def serve(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or Ctrl-C. `--port N` / `--address A` override the settings."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = get_settings()
        address, port = _address(argv or [], settings)
        server, _thread = start_http_server(port, addr=address, registry=registry(settings))
    except (BackupError, OSError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        print(f"Error: metrics endpoint cannot start: {message}", file=sys.stderr)
        return 2
    logger.info("metrics on http://%s:%d/metrics", address, port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


def _address(argv: list[str], settings: Settings) -> tuple[str, int]:
    address, port = settings.BACKUP_METRICS_ADDRESS, settings.BACKUP_METRICS_PORT
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag in ("--port", "--address") and args:
            value = args.pop(0)
            if flag == "--port":
                port = int(value)
            else:
                address = value
        else:
            raise ValueError(f"unknown argument {flag!r} (use --address A, --port N)")
    return address, port
