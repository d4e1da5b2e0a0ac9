"""The benchmark behind ``bench/run``: the service against a bare-Flask baseline, on loopback.

Both servers run under the service's own production gunicorn settings (2 sync workers). First
the service is soaked with 100k requests for the resident memory of its workers. Then, for each
payload, with the load generator in a separate process:

- throughput at saturation (wrk, closed loop, 8 connections) of the baseline, of the service
  with requests it has seen before ("repeat": an EHR re-sends unchanged draft orders on every
  order-select and on order-sign) and of the service with every order new to it ("fresh": wrk
  rewrites the placer order numbers on every request);
- the service-to-baseline throughput ratio: the servers take turns in short slices, and the
  ratio is the median of the ratios of neighbouring slices, so load from other processes on a
  shared machine hits both sides of each ratio alike; beside it, the CPU time per request of
  the workers and of wrk, which other processes hardly move;
- latency p50/p95/p99 at a fixed offered rate (bench/openloop.py, open loop).

Last come the pytest-benchmark micro-benchmarks (bench/test_micro.py); the targets are checked
and the results printed and written as Markdown (``--out``/results.md), ready to paste.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil

from bench.payloads import Payload, all_payloads, write_payloads
from bench.report import render, summarise_micro

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MB = 1024 * 1024
CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class Plan:
    """How long each part runs; ``--quick`` shrinks everything for a smoke run."""

    slices: int
    slice_s: int
    latency_s: float
    rate: float
    soak_requests: int
    soak_limit_s: float
    micro_args: tuple[str, ...]

    @classmethod
    def full(cls, rate: float) -> Plan:
        return cls(5, 2, 8, rate, 100_000, 300, ())

    @classmethod
    def quick(cls, rate: float) -> Plan:
        micro = ("--benchmark-max-time=0.05", "--benchmark-min-rounds=3", "--benchmark-warmup=off")
        return cls(2, 1, 3, rate, 10_000, 60, micro)


@dataclass(slots=True)
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base: str
    path_for: Callable[[Payload], str]
    served: int = 0

    def url(self, payload: Payload) -> str:
        return self.base + self.path_for(payload)

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def cpu_seconds(self) -> float:
        """User + system CPU time the workers have used so far."""
        return sum(sum(worker.cpu_times()[:2]) for worker in self.workers())

    def worker_memory(self) -> list[tuple[float, float]]:
        """(RSS, USS) in MB of each worker: USS is what the worker holds alone, RSS adds the pages
        it shares with the gunicorn master (the loaded app, copy-on-write)."""
        out = []
        for worker in sorted(self.workers(), key=lambda w: w.pid):
            info = worker.memory_full_info()
            out.append((info.rss / MB, info.uss / MB))
        return out


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    failures: int
    # CPU time (user + system) per request of the server's workers and of wrk itself: unlike
    # req/s, barely moved by other processes competing for the cores.
    server_cpu_us: float
    client_cpu_us: float


@dataclass(slots=True)
class PayloadRun:
    """One payload: wrk slices per variant (taken in turns) and the open-loop latency results."""

    slices: dict[str, list[WrkResult]] = field(default_factory=dict)
    latency: dict[str, dict[str, object]] = field(default_factory=dict)

    def rps(self, label: str) -> float:
        return statistics.median(r.rps for r in self.slices[label])

    def cpu_us(self, label: str) -> tuple[float, float]:
        """Median CPU µs per request: the server's workers, and the workers plus wrk."""
        runs = self.slices[label]
        server = statistics.median(r.server_cpu_us for r in runs)
        return server, statistics.median(r.server_cpu_us + r.client_cpu_us for r in runs)

    def ratio(self, label: str) -> tuple[float, float, float]:
        """Median, lowest and highest of the per-slice ratios ``label`` / baseline."""
        ratios = [r.rps / b.rps for r, b in zip(self.slices[label], self.slices["baseline"], strict=True)]
        return statistics.median(ratios), min(ratios), max(ratios)

    def failures(self) -> int:
        return sum(r.failures for runs in self.slices.values() for r in runs)


@dataclass(slots=True)
class Results:
    plan: Plan
    machine: dict[str, str]
    payloads: dict[str, PayloadRun] = field(default_factory=dict)
    memory: list[tuple[str, int, list[tuple[float, float]]]] = field(default_factory=list)
    micro: dict[str, dict[str, float]] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def serve(
    name: str,
    command: list[str],
    log: Path,
    path_for: Callable[[Payload], str],
    probe: Payload,
    *,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start a gunicorn server and wait until both workers answer; stop it on exit."""
    port = free_port()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        server = Server(name, process, f"http://127.0.0.1:{port}", path_for)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"{name} exited during start-up; see {log}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not start within 60 s; see {log}")
                try:
                    if len(server.workers()) >= 2 and post(server.url(probe), probe.encoded())[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            yield server
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_wrk(server: Server, payload: Payload, bodies: Path, seconds: int, *, fresh: bool = False) -> WrkResult:
    env = {**os.environ, "BENCH_BODY": str(bodies / f"{payload.name}.json")}
    if fresh:
        env["BENCH_FRESH"] = "1"
        env["BENCH_SEED"] = str(secrets.randbelow(10**12))  # no two runs send the same orders
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(BENCH / "post.lua"), server.url(payload)]
    server_cpu, client = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    server_cpu, after = server.cpu_seconds() - server_cpu, resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = after.ru_utime + after.ru_stime - client.ru_utime - client.ru_stime
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if total is None or rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[total.group(3)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failures = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        failures += sum(int(g) for g in socket_errors.groups())
    requests = int(total.group(1))
    per_request = 1e6 / max(requests, 1)
    result = WrkResult(
        requests,
        float(total.group(2)) * scale,
        float(rate.group(1)),
        failures,
        server_cpu * per_request,
        client_cpu * per_request,
    )
    server.served += result.requests
    return result


def run_openloop(server: Server, payload: Payload, bodies: Path, plan: Plan, *, fresh: bool) -> dict[str, object]:
    command = [sys.executable, "-m", "bench.openloop", "--url", server.url(payload)]
    command += ["--body", str(bodies / f"{payload.name}.json"), "--rate", str(plan.rate)]
    command += ["--duration", str(plan.latency_s)] + (["--fresh"] if fresh else [])
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    result = dict(json.loads(output))
    server.served += int(result["ok"])
    return result


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "-v"], check=False, capture_output=True, text=True).stdout.splitlines()
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("flask", "werkzeug", "gunicorn", "pydantic", "fhir.resources")
    )
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical CPUs (nproc)",
        "Memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Packages": versions,
        "Load generator": (wrk[0].split("Copyright")[0].strip() if wrk else "wrk") + "; bench/openloop.py",
        "Load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def measure(servers: Sequence[Server], payloads: Sequence[Payload], bodies: Path, plan: Plan, out: Results) -> None:
    """Saturation throughput in alternating slices, then open-loop latency, for each payload."""
    variants: list[tuple[str, Server, bool]] = [(s.name, s, False) for s in servers]
    variants.append(("service-fresh", servers[-1], True))
    for payload in payloads:
        run = PayloadRun({label: [] for label, _, _ in variants})
        for _, server, fresh in variants:  # warm-up, not recorded
            run_wrk(server, payload, bodies, 1, fresh=fresh)
        for slice_no in range(plan.slices):
            for label, server, fresh in variants if slice_no % 2 == 0 else variants[::-1]:
                run.slices[label].append(run_wrk(server, payload, bodies, plan.slice_s, fresh=fresh))
        for label, server, fresh in variants:
            run.latency[label] = run_openloop(server, payload, bodies, plan, fresh=fresh)
        out.payloads[payload.name] = run
        ratio = run.ratio("service")[0]
        print(
            f"  {payload.name}: baseline {run.rps('baseline'):.0f}/s, service {run.rps('service'):.0f}/s, "
            f"ratio {ratio:.0%}",
            flush=True,
        )


def soak(service: Server, payloads: Sequence[Payload], bodies: Path, plan: Plan, out: Results) -> None:
    """Worker memory after start-up and after ``plan.soak_requests`` requests of a payload mix."""
    out.memory.append(("after start-up", 0, service.worker_memory()))
    mix = [p for p in payloads if p.name in {"sign-1-ire", "sign-10", "sign-10-ire", "select-10-ire", "sign-100-ire"}]
    served = 0
    checkpoint = plan.soak_requests // 5
    deadline = time.monotonic() + plan.soak_limit_s
    turn = 0
    while served < plan.soak_requests and time.monotonic() < deadline:
        payload = mix[turn % len(mix)]
        turn += 1
        result = run_wrk(service, payload, bodies, 2)
        if result.failures:
            raise SystemExit(f"soak: {result.failures} failed requests on {payload.name}")
        served += result.requests
        if checkpoint and served >= checkpoint:
            out.memory.append(("after warm-up", served, service.worker_memory()))
            checkpoint = 0
    out.memory.append((f"after {served:,} requests", served, service.worker_memory()))


def run_micro(results_dir: Path, plan: Plan) -> dict[str, dict[str, float]]:
    report = results_dir / "micro.json"
    command = [sys.executable, "-m", "pytest", str(BENCH / "test_micro.py"), "-q", "-p", "no:cacheprovider"]
    # CPU time rather than wall time: on a shared machine it is far less moved by other processes.
    command += [f"--benchmark-json={report}", "--benchmark-timer=time.process_time", *plan.micro_args]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return summarise_micro(report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about 2 minutes)")
    parser.add_argument("--out", type=Path, default=BENCH / "out", help="directory for payloads, logs and results")
    parser.add_argument("--rate", type=float, default=200, help="offered rate for the latency runs (req/s)")
    parser.add_argument("--only", nargs="*", help="payload names to run (default: all)")
    parser.add_argument("--no-micro", action="store_true", help="skip the pytest-benchmark micro-benchmarks")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    plan = Plan.quick(args.rate) if args.quick else Plan.full(args.rate)
    out_dir: Path = args.out
    bodies = out_dir / "payloads"
    write_payloads(bodies)
    payloads = [p for p in all_payloads() if not args.only or p.name in args.only]
    results = Results(plan, machine())
    started = time.monotonic()

    service_cmd = [str(Path(sys.executable).parent / "cds-service"), "serve", "--workers", "2"]
    # A database and id-hash key of the run's own, started afresh: the audit trail is part of the cost.
    data_dir = out_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    service_env = {"CDS_DATA_DIR": str(data_dir)}
    probe = payloads[0]
    with serve("service", service_cmd, out_dir / "service.log", lambda p: p.path, probe, env=service_env) as service:
        print("soak: worker memory over the run", flush=True)
        soak(service, all_payloads(), bodies, plan, results)
        responses = {}
        for payload in payloads:
            status, body = post(service.url(payload), payload.encoded())
            cards = json.loads(body).get("cards") if status == 200 else None
            if cards is None or len(cards) != int(payload.ire):
                raise SystemExit(f"{payload.name}: unexpected service answer {status}: {body[:300]!r}")
            responses[payload.name] = body.decode()
        recorded = out_dir / "responses.json"
        recorded.write_text(json.dumps(responses), encoding="utf-8")
        baseline_cmd = [sys.executable, "-m", "bench.baseline", "--workers", "2", "--responses", str(recorded)]
        with serve("baseline", baseline_cmd, out_dir / "baseline.log", lambda p: f"/fixed/{p.name}", probe) as baseline:
            print("throughput and latency", flush=True)
            measure([baseline, service], payloads, bodies, plan, results)
        results.memory.append(("at the end of the run", service.served, service.worker_memory()))

    if not args.no_micro:
        print("micro-benchmarks", flush=True)
        results.micro = run_micro(out_dir, plan)
    results.machine["Load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results.machine["Run time"] = f"{time.monotonic() - started:.0f} s" + (" (--quick)" if args.quick else "")

    markdown = render(results)
    (out_dir / "results.md").write_text(markdown, encoding="utf-8")
    print()
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
