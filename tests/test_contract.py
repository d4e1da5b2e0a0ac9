"""schemathesis against a live `cds-service serve`, from the server's own /openapi.json.

Every operation gets generated requests, valid and invalid by the document, plus schemathesis's
coverage and stateful phases and undocumented methods. Each response must not be a 5xx and must
match the document: a documented status, its content type, headers and body schema;
schema-valid requests must be accepted and schema-invalid ones rejected (all default checks).

The CLI runs in a subprocess: the pytest plugin of schemathesis 4 does not work with pytest 9.2.
Examples per operation follow the hypothesis profile (conftest.py); CI uses a fixed seed, so a
failure there replays exactly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from hypothesis import settings

from tests.servers import running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ST = Path(sys.executable).parent / "st"
CI_SEED = "20261126"


def test_the_live_server_keeps_to_its_document(tmp_path):
    with running_server(tmp_path / "serve.log") as server:
        document = requests.get(f"{server.url}/openapi.json", timeout=10).json()
        # schemathesis leaves out the document's own path (GET /openapi.json).
        operations = sum(len(item) for path, item in document["paths"].items() if path != "/openapi.json")
        command = [
            str(ST),
            "run",
            f"{server.url}/openapi.json",
            "--max-examples",
            str(settings.default.max_examples),
            "--workers",
            "1",
            "--request-timeout",
            "10",
            # outcomeTimestamp is a date-time *and* a pattern (years 1900-2999): valid examples
            # take more tries to find than schemathesis likes by default.
            "--suppress-health-check=filter_too_much",
        ]
        if os.environ.get("CI") == "true":
            command += ["--seed", CI_SEED]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
        report = result.stdout + result.stderr
        assert result.returncode == 0, report[-8000:]
        # Every operation of the document was exercised, none skipped for lack of a strategy.
        assert re.search(rf"Tested:\s+{operations}\b", report), report[-3000:]

        assert server.process.poll() is None
        assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
        errors = [r for r in server.log_records() if r["level"] in {"ERROR", "CRITICAL"}]
        assert not errors, errors[:3]
