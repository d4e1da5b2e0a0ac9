"""End to end: `cds-service serve` as a real process (gunicorn) on a loopback port."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import ROOT, assert_valid_response
from tests.servers import CLI, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("e2e") / "serve.log"
    with running_server(log, env={"CDS_PAYER_NAME": "Example Health"}) as server:
        yield server.url


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
