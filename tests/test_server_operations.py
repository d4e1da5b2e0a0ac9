"""Operations against real `cds-service serve` processes on loopback: metrics across workers,
JSON request logs, graceful SIGTERM, policy reload under load, a killed worker, and a soak run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from cds_service.config import data_dir
from tests.conftest import ROOT, SELECT, SIGN
from tests.servers import CLI, Call, Load, Server, metric_total, running_server, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = json.loads((ROOT / "examples" / "order-sign-ire.json").read_text())
SIGN_BODY = json.dumps(EXAMPLE).encode()
SELECT_BODY = json.dumps(
    {
        **EXAMPLE,
        "hook": "order-select",
        "context": {**EXAMPLE["context"], "selections": ["ServiceRequest/sr-ire-pancreas"]},
    }
).encode()
FEEDBACK_BODY = json.dumps(
    {"feedback": [{"card": "c-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z"}]}
).encode()

VALID = [
    Call("POST", SIGN, 200, SIGN_BODY),
    Call("POST", SELECT, 200, SELECT_BODY),
    Call("GET", "/cds-services", 200),
    Call("POST", f"{SIGN}/feedback", 200, FEEDBACK_BODY),
    Call("GET", "/evidence/SURG.00126", 200),
    Call("GET", "/evidence/SURG.00126.json", 200),
    Call("GET", "/healthz", 200),
    Call("GET", "/readyz", 200),
]
INVALID = [
    Call("POST", SIGN, 400, b'{"hook": "order-sign",'),
    Call("POST", SIGN, 400, b"[1, 2, 3]"),
    Call("POST", SIGN, 400, json.dumps({**EXAMPLE, "hook": 7}).encode()),
    Call("POST", SIGN, 400, json.dumps({**EXAMPLE, "context": None}).encode()),
    Call("POST", SIGN, 400, b'{"hook": ' + b"9" * 5000 + b"}"),
    Call("POST", SIGN, 400, b"[" * 100_000 + b"]" * 100_000),
    Call("POST", SELECT, 400, SIGN_BODY),  # order-select needs context.selections
    Call("POST", f"{SIGN}/feedback", 400, b'{"feedback": [{"card": "c", "outcome": "maybe"}]}'),
    Call("POST", "/cds-services/no-such-service", 404, SIGN_BODY),
    Call("GET", SIGN, 405),
    Call("GET", "/evidence/NO-SUCH-POLICY", 404),
]
MIXED = [call for pair in zip(VALID + VALID[:3], INVALID, strict=True) for call in pair]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def socket_count(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:  # closed meanwhile
            continue
    return count


def test_metrics_add_up_across_workers_and_logs_are_one_json_line_per_request(tmp_path):
    with running_server(tmp_path / "serve.log") as server:
        metrics_dir = server.metrics_dir()
        assert metrics_dir.is_dir()

        def logged() -> list[dict]:
            return [r for r in server.log_records() if r["logger"] == "cds_service.request"]

        # The start-up probe's own requests come before.
        earlier_lines = len(logged())
        earlier = metric_total(server.url, "cds_http_requests_total", endpoint="api.discovery")
        with Load(server.url, [Call("GET", "/cds-services", 200)], threads=4, max_requests=60) as load:
            wait_for(lambda: load.count() >= 60, 60, "60 requests")
        assert not load.unexpected()
        response = requests.post(
            f"{server.url}{SIGN}",
            data=SIGN_BODY,
            headers={"Content-Type": "application/json", "X-Request-ID": "ehr-trace-42"},
            timeout=10,
        )
        assert response.status_code == 200 and response.headers["X-Request-ID"] == "ehr-trace-42"

        # Whichever worker answers the scrape, it reports every worker's requests.
        assert metric_total(server.url, "cds_http_requests_total", endpoint="api.discovery") == earlier + 60
        assert metric_total(server.url, "cds_cards_issued_total", policy="SURG.00126") == 1
        assert {p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("*.db")} >= {f"{w}.db" for w in server.workers()}
        assert metric_total(server.url, "cds_policy_loaded", policy="SURG.00126") == 1
        wait_for(lambda: len(logged()) >= earlier_lines + 61, 10, "the request lines")
    assert not metrics_dir.exists(), "the metrics directory outlives the server"

    lines = logged()[earlier_lines:]
    assert len(lines) == 61
    assert len({line["request_id"] for line in lines}) == 61
    (hook_line,) = [line for line in lines if line["endpoint"] == "api.call_service"]
    assert hook_line["request_id"] == "ehr-trace-42"
    assert hook_line["service"] == "medical-policy-order-sign"
    assert hook_line["hookInstance"] == EXAMPLE["hookInstance"]
    assert hook_line["status"] == 200 and hook_line["cards"] == 1 and hook_line["latency_ms"] > 0
    text = server.output()
    for private in ("pat-4821", "PractitionerRole/onc-dr-lee", "FOLFIRINOX", "pancreatic"):
        assert private not in text


def test_sigterm_lets_the_request_in_flight_finish(tmp_path):
    with running_server(tmp_path / "serve.log", workers=1) as server:
        (worker,) = server.workers()
        # An idle sync worker holds one socket, the listener; during a request, the connection too.
        wait_for(lambda: socket_count(worker) == 1, 10, "the worker to be idle")
        head = (
            f"POST {SIGN} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(SIGN_BODY)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(head + SIGN_BODY[:100])
            # The worker has accepted the connection and is reading the rest of the body.
            wait_for(lambda: socket_count(worker) == 2, 10, "the worker to accept the request")
            server.process.send_signal(signal.SIGTERM)
            wait_for(
                lambda: any(r["message"] == "Handling signal: term" for r in server.log_records()),
                10,
                "the master to handle SIGTERM",
            )
            assert server.process.poll() is None, "the server stopped with a request in flight"
            client.sendall(SIGN_BODY[100:])
            reply = b""
            while chunk := client.recv(65536):
                reply += chunk
        assert server.process.wait(timeout=30) == 0
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert len(body["cards"]) == 1


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(data_dir("policies"), directory)
    return directory


def served_versions(server: Server) -> str:
    checks = requests.get(f"{server.url}/readyz", timeout=10).json()["checks"]
    (policies,) = [check for check in checks if check["name"] == "policies"]
    return policies["detail"]


def set_version(policies: Path, version: str) -> None:
    path = policies / "SURG.00126.yaml"
    data = yaml.safe_load(path.read_text())
    data["version"] = version
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_reload_swaps_policies_under_load_and_a_broken_file_changes_nothing(tmp_path, policies):
    with running_server(tmp_path / "serve.log", "--policies", str(policies)) as server:
        first_workers = server.workers()
        with Load(server.url, VALID[:3], threads=2) as load:
            load.wait_for_requests(20)
            set_version(policies, "2099-01-01")
            result = subprocess.run(
                [str(CLI), "reload", "--pid-file", str(server.pid_file)],
                check=False,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            wait_for(lambda: served_versions(server) == "SURG.00126 2099-01-01", 30, "the new policy version")
            new_workers = server.wait_for_workers(2, exclude=frozenset(first_workers))
            load.wait_for_requests(20)

            # A broken file: the reload is refused, the same workers go on with the same policies.
            (policies / "SURG.00127.yaml").write_text("id: SURG.00127\ntitle: [unclosed\n")
            os.kill(server.pid, signal.SIGHUP)
            wait_for(
                lambda: any("reload rejected" in r["message"] for r in server.log_records()),
                30,
                "the reload to be rejected",
            )
            load.wait_for_requests(20)
            assert server.workers() == new_workers
            assert served_versions(server) == "SURG.00126 2099-01-01"
        assert not load.unexpected(), load.unexpected()[:5]
        # Gauges of retired workers are gone (gunicorn's child_exit hook marks them dead).
        assert metric_total(server.url, "cds_policy_loaded", version="2099-01-01") == 1
        assert metric_total(server.url, "cds_policy_loaded", version="2024-04-01") == 0
    (rejected,) = [r for r in server.log_records() if "reload rejected" in r["message"]]
    assert rejected["level"] == "ERROR" and "SURG.00127.yaml" in rejected["message"]


def test_reload_without_a_running_server_says_so(tmp_path):
    result = subprocess.run(
        [str(CLI), "reload", "--pid-file", str(tmp_path / "missing.pid")],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "no running server" in result.stderr


def test_a_killed_worker_is_replaced_and_costs_at_most_the_request_in_flight(tmp_path):
    with running_server(tmp_path / "serve.log") as server:
        before = server.workers()
        with Load(server.url, VALID[:3], threads=2) as load:
            load.wait_for_requests(30)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            replaced = server.wait_for_workers(2, exclude=frozenset({victim}))
            load.wait_for_requests(30)
        failures = load.unexpected()
        assert len(failures) <= 1, failures
        assert replaced - before, "no new worker"
        succeeded = sum(o.status == o.call.expected for o in load.outcomes)
        # The dead worker's samples stay in the totals.
        assert metric_total(server.url, "cds_http_requests_total", status="200") >= succeeded


@pytest.mark.slow
def test_soak_mixed_traffic_at_a_steady_rate(tmp_path):
    """CDS_SOAK_SECONDS (default 120 on CI, 20 elsewhere) at CDS_SOAK_RATE requests per second."""
    seconds = float(os.environ.get("CDS_SOAK_SECONDS") or (120 if os.environ.get("CI") == "true" else 20))
    rate = float(os.environ.get("CDS_SOAK_RATE") or 20)
    total = int(seconds * rate)
    samples: list[dict[int, int]] = []
    outcomes: list[tuple[Call, int | None]] = []
    with running_server(tmp_path / "serve.log") as server:
        workers = server.workers()
        start = time.monotonic()
        deadline = start + seconds + 120  # a hung server fails the test instead of stalling it
        for n in range(total):
            assert time.monotonic() < deadline, f"only {n} of {total} requests done in time"
            call = MIXED[n % len(MIXED)]
            try:
                outcomes.append((call, call.send(server.url).status_code))
            except requests.RequestException:
                outcomes.append((call, None))
            if n % int(rate * 5) == 0:
                samples.append({pid: rss_kib(pid) for pid in workers})
            # A steady rate: the next request is due at start + (n + 1) / rate.
            time.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
        samples.append({pid: rss_kib(pid) for pid in workers})
        assert server.workers() == workers, "a worker died or was replaced during the soak"
    unexpected = [
        (call.method, call.path, call.expected, status) for call, status in outcomes if status != call.expected
    ]
    assert not unexpected, unexpected[:10]
    assert sum(call.expected >= 400 for call, _ in outcomes) >= total // 3
    # Memory is flat: after a warm-up quarter, no worker grows by more than 2 MiB (a flat run grows by ~0.1 MiB).
    warm = samples[len(samples) // 4]
    for pid in workers:
        assert samples[-1][pid] - warm[pid] <= 2048, [s[pid] for s in samples]
