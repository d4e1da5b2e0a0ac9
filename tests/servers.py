"""`cds-service` as real processes: the serve command on a free loopback port, and one-shot
commands. Server output goes to a file, so a chatty server never blocks on a full pipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.pgserver import free_port

CLI = Path(sys.executable).parent / "cds-service"


def run_cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )


class Server:
    """A running ``cds-service serve``; ``stop`` sends SIGTERM and returns the exit code."""

    def __init__(self, log: Path, env: Mapping[str, str], *args: str, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [*command, *args], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
        self._wait_ready()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

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
def running_server(log: Path, *args: str, env: Mapping[str, str] | None = None, workers: int = 2) -> Iterator[str]:
    """A :class:`Server` for the length of a ``with`` block, yielding its URL; it must stop cleanly."""
    server = Server(log, env or {}, *args, workers=workers)
    try:
        yield server.url
    finally:
        status = server.stop()
    assert status == 0, server.output()
