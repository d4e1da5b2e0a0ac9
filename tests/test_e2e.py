"""End to end: `cds-service serve` as a real process (gunicorn) on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, assert_valid_response

pytestmark = pytest.mark.e2e
CLI = Path(sys.executable).parent / "cds-service"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CDS_PAYER_NAME": "Example Health"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"cds-service exited early:\n{process.stdout.read()}")
        try:
            requests.get(f"{url}/cds-services", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("cds-service did not start within 30 s")
    yield url
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, output


def test_console_script_is_installed():
    assert CLI.exists(), "pip install . should install the cds-service console script"
    result = subprocess.run([str(CLI), "serve", "--help"], capture_output=True, text=True, check=True)
    assert "--base-url" in result.stdout


def test_readme_example_end_to_end(server):
    discovery = requests.get(f"{server}/cds-services", timeout=5).json()
    sign = next(s for s in discovery["services"] if s["hook"] == "order-sign")
    example = json.loads((ROOT / "examples" / "order-sign-ire.json").read_text())
    response = requests.post(f"{server}/cds-services/{sign['id']}", json=example, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert_valid_response(body)
    (card,) = body["cards"]
    assert card["source"]["label"].startswith("Example Health medical policy SURG.00126")
    evidence = card["links"][0]["url"]
    assert evidence == f"{server}/evidence/SURG.00126"
    page = requests.get(evidence, timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "Irreversible Electroporation" in page.text


def test_errors_over_the_wire(server):
    bad = requests.post(
        f"{server}/cds-services/medical-policy-order-sign",
        data="{not json",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    assert requests.get(f"{server}/cds-services/medical-policy-order-sign", timeout=5).status_code == 405
    assert requests.post(f"{server}/cds-services/nope", json={}, timeout=5).status_code == 404
    big = requests.post(
        f"{server}/cds-services/medical-policy-order-sign",
        data=b"{" + b" " * (6 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert big.status_code == 413
    assert requests.get(f"{server}/cds-services", timeout=5).status_code == 200
