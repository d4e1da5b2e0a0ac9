"""`cds-service` as real processes: the serve command on a free loopback port, one-shot
commands, and a bounded client load. Server output goes to a file, so a chatty server never
blocks on a full pipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.pgserver import free_port

CLI = Path(sys.executable).parent / "cds-service"


def run_cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Server:
    """A running ``cds-service serve``; ``stop`` sends SIGTERM and returns the exit code."""

    def __init__(self, log: Path, env: Mapping[str, str], *args: str, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.pid_file = log.with_suffix(".pid")
        command = [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        command += ["--pid-file", str(self.pid_file)]
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [*command, *args], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
        self._wait_ready()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_records(self) -> list[dict[str, Any]]:
        """Every line of output, each parsed as the JSON object it must be."""
        return [json.loads(line) for line in self.output().splitlines() if line.strip()]

    def workers(self) -> set[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return {int(pid) for pid in children}

    def wait_for_workers(self, count: int, timeout: float = 30, exclude: frozenset[int] = frozenset()) -> set[int]:
        """Wait until ``count`` workers, none of them in ``exclude``, are running."""

        def booted() -> bool:
            current = self.workers()
            return len(current) == count and not current & exclude

        wait_for(booted, timeout, f"{count} workers")
        return self.workers()

    def metrics_dir(self) -> Path:
        (line,) = [r for r in self.log_records() if "metrics in" in r["message"]]
        return Path(line["message"].rsplit("metrics in ", 1)[1])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cds-service exited early ({self.process.returncode}):\n{self.output()}")
            try:
                requests.get(f"{self.url}/cds-services", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"cds-service did not start within 30 s:\n{self.output()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise
        return self.process.returncode


@contextmanager
def running_server(log: Path, *args: str, env: Mapping[str, str] | None = None, workers: int = 2) -> Iterator[Server]:
    """A :class:`Server` for the length of a ``with`` block, its workers booted; it must stop cleanly."""
    server = Server(log, env or {}, *args, workers=workers)
    try:
        server.wait_for_workers(workers)
        yield server
    finally:
        status = server.stop()
    assert status == 0, server.output()


@dataclass(frozen=True)
class Call:
    """One request of a load: what to send and the status it must get."""

    method: str
    path: str
    expected: int
    body: bytes | None = None

    def send(self, url: str, timeout: float = 15) -> requests.Response:
        headers = {"Content-Type": "application/json"} if self.body is not None else {}
        return requests.request(self.method, f"{url}{self.path}", data=self.body, headers=headers, timeout=timeout)


@dataclass
class Outcome:
    call: Call
    status: int | None  # None: no response (connection reset, timeout)
    error: str | None = None
    at: float = field(default_factory=time.monotonic)


class Load:
    """Client threads cycling through ``calls`` until stopped, at most ``max_requests`` in all."""

    def __init__(self, url: str, calls: list[Call], *, threads: int = 2, max_requests: int = 5000) -> None:
        self.url = url
        self.calls = calls
        self.max_requests = max_requests
        self.outcomes: list[Outcome] = []
        self._issued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _run(self, offset: int) -> None:
        index = offset
        while not self._stop.is_set():
            with self._lock:
                if self._issued >= self.max_requests:
                    return
                self._issued += 1
            call = self.calls[index % len(self.calls)]
            index += 1
            try:
                outcome = Outcome(call, call.send(self.url).status_code)
            except requests.RequestException as exc:
                outcome = Outcome(call, None, type(exc).__name__)
            with self._lock:
                self.outcomes.append(outcome)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def wait_for_requests(self, more: int, timeout: float = 60) -> None:
        """Let at least ``more`` further requests complete."""
        target = self.count() + more
        wait_for(lambda: self.count() >= target, timeout, f"{more} more requests")

    def unexpected(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.status != o.call.expected]


def metric_total(url: str, name: str, **labels: str) -> float:
    """Sum of one metric's samples whose labels include ``labels``, from a live ``/metrics``."""
    total = 0.0
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
