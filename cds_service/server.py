"""The service under gunicorn: start, reload policies without dropping requests, stop gracefully.

- The master builds the Flask app (loading and checking every policy and card template) before
  any worker starts, and workers are forked from it, so what was checked is what they serve.
- SIGHUP (``cds-service reload`` sends it) makes the master build a fresh app from the policy
  files first. Only if that succeeds does gunicorn's usual reload follow: new workers start with
  the new app, old ones finish their in-flight requests and exit, and the listening socket stays
  open throughout. A broken file is logged and changes nothing; the old workers keep serving.
- SIGTERM is gunicorn's graceful stop: workers finish the request in hand (up to
  ``graceful_timeout``) before they exit.
- Metrics: each server gets a fresh ``PROMETHEUS_MULTIPROC_DIR`` (removed on exit), workers
  write their samples there, and the ``child_exit`` hook retires a dead worker's live gauges.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger as GunicornLogger

from cds_service import AUDIT_KEY, ENGINE_KEY, create_app
from cds_service.audit import AuditTrail
from cds_service.auth import TrustedClientsError
from cds_service.config import Settings
from cds_service.logs import json_formatter, skip_unused_record_fields
from cds_service.policy import Policy, PolicyError, describe_policies
from cds_service.storage import StorageError

log = logging.getLogger(__name__)

# What a broken file or an unusable database raises while the app is built: refused at start-up
# (exit status 2) and on reload (the running workers stay).
CONFIGURATION_ERRORS = (PolicyError, TrustedClientsError, StorageError)

# prometheus-client's own variable: set before it is imported, it switches to multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def default_pid_file(port: int) -> Path:
    """``$XDG_RUNTIME_DIR/cds-service/serve-PORT.pid``, else under a per-user temporary folder."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "cds-service" if runtime else Path(tempfile.gettempdir()) / f"cds-service-{os.getuid()}"
    return base / f"serve-{port}.pid"


def _policies(app: Flask) -> tuple[Policy, ...]:
    return cast(tuple[Policy, ...], app.extensions[ENGINE_KEY].policies)


def _post_worker_init(worker: Any) -> None:
    from cds_service.metrics import mark_policies_loaded  # noqa: PLC0415 - after the env is set

    mark_policies_loaded(_policies(worker.wsgi))


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess  # noqa: PLC0415 - after the env is set

    multiprocess.mark_process_dead(worker.pid)


class GunicornJsonLogger(GunicornLogger):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's own error log (worker boots, signals, timeouts) in the app's JSON shape."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(json_formatter())


class _ReloadingArbiter(Arbiter):  # type: ignore[misc]  # gunicorn ships no type hints
    def reload(self) -> None:
        try:
            self.app.rebuild()
        except CONFIGURATION_ERRORS as exc:
            self.log.error("reload rejected, the running workers and their policies stay in service: %s", exc)
            return
        self.log.info("reload: policies checked (%s); replacing workers", describe_policies(_policies(self.app.load())))
        super().reload()


class ServiceServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn with its options set in code, serving an app the master has built and checked."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        self._app = create_app(settings)  # raises one of CONFIGURATION_ERRORS before anything is bound
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)
        self.cfg.set("logger_class", GunicornJsonLogger)
        self.cfg.set("post_worker_init", _post_worker_init)
        self.cfg.set("child_exit", _child_exit)
        # gunicorn 27 opens a control socket at one fixed path per user; two instances on one
        # host would fight over it, and this service needs none.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Flask:
        return self._app

    def rebuild(self) -> None:
        """Re-read the policy, card and trusted-clients files into a new app; on error keep the old one."""
        self._app = create_app(self._settings)

    def run(self) -> None:
        try:
            _ReloadingArbiter(self).run()
        except RuntimeError as exc:  # e.g. "Already running on PID ..." from the pid file
            print(f"cds-service: {exc}", file=sys.stderr)
            sys.exit(1)


@contextmanager
def metrics_directory() -> Iterator[Path]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for one server's lifetime, removed afterwards.

    prometheus-client reads the variable when it is imported; ``create_app`` imports it, so the
    app must be built inside this block (the master builds it, and workers are forked from it).
    """
    path = Path(tempfile.mkdtemp(prefix="cds-service-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    owner = os.getpid()
    try:
        yield path
    finally:
        # gunicorn workers are forked inside this block and leave it by SystemExit when they stop
        # (on reload, on a timeout); only the master may remove the directory.
        if os.getpid() == owner:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(path, ignore_errors=True)


def gunicorn_options(*, host: str, port: int, workers: int, log_level: str) -> dict[str, Any]:
    """The production gunicorn settings, in one place: the benchmark's bare-Flask baseline
    (bench/baseline.py) runs under them too, so both servers are measured alike."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "sync",
        # An EHR waits on us; a request still running after this is stuck, not slow.
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": None,  # one line per request comes from cds_service.telemetry
        "errorlog": "-",
        "loglevel": log_level.lower(),
        "limit_request_line": 8190,
        "limit_request_fields": 100,
    }


def serve(settings: Settings, *, host: str, port: int, workers: int, pid_file: Path) -> None:
    """Run until SIGTERM. A broken policy, card, trusted-clients file or database raises first."""
    pid_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    skip_unused_record_fields()
    with metrics_directory() as metrics:
        options = gunicorn_options(host=host, port=port, workers=workers, log_level=settings.log_level)
        server = ServiceServer(settings, {**options, "pidfile": str(pid_file)})
        app = server.load()
        audit: AuditTrail = app.extensions[AUDIT_KEY]
        log.info("loaded policies %s", describe_policies(_policies(app)))
        log.info("database %s", audit.store.location)
        log.info("patient and user ids hashed with the key from %s", audit.hasher.source)
        log.info("discovery at http://%s:%d/cds-services; pid file %s; metrics in %s", host, port, pid_file, metrics)
        server.run()


def _is_service_process(pid: int) -> bool:
    """Guard against a stale pid file whose pid now belongs to another program."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid file
    except OSError:
        return False
    return b"cds-service" in cmdline or b"cds_service" in cmdline


def request_reload(pid_file: Path) -> str:
    """Send SIGHUP to the master named in ``pid_file``; the message says what was done.

    Raises :class:`OSError` (with a message for the user) when no such server is running.
    """
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        raise OSError(f"no running server: cannot read a pid from {pid_file} ({exc})") from exc
    if not _is_service_process(pid):
        raise OSError(f"no running server: process {pid} from {pid_file} is not cds-service")
    os.kill(pid, signal.SIGHUP)
    return (
        f"asked the server (pid {pid}) to re-read its policies; its log says whether they were "
        "accepted (a broken file is rejected and the previous policies stay in service)"
    )
