"""`cds-service check`: offline evaluation of orders, Bundles and hook requests, with its exit codes."""

from __future__ import annotations

import io
import json

import pytest

from cds_service.cli import main
from cds_service.examples import RECORDED_BASE_URL, comparable, load_examples
from tests.conftest import ROOT, service_request

EXAMPLES = {e.name: e for e in load_examples()}
IRE = service_request("sr-ire", code="0601T", display="Ablation, irreversible electroporation, open")
CT = service_request("sr-ct", code="74177", display="CT abdomen and pelvis with contrast")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, name: str, document: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_json_is_the_exact_response(capsys, name):
    code, out, err = run(capsys, "check", "--json", str(ROOT / "examples" / f"{name}.json"))
    recorded = EXAMPLES[name].response
    assert code == (1 if recorded["cards"] else 0), err
    assert comparable(json.loads(out), RECORDED_BASE_URL) == comparable(recorded, RECORDED_BASE_URL)


def test_terminal_rendering_shows_the_card(capsys):
    code, out, _ = run(capsys, "check", str(ROOT / "examples" / "order-sign-several-ire.json"))
    assert code == 1
    text = " ".join(out.split())
    assert "WARNING" in text and "investigational and not medically necessary" in text
    assert "Pulmonary vein isolation by pulsed field ablation" in text and "NanoKnife" in text
    assert "delete ServiceRequest/sr-pfa-pvi" in text and "delete ServiceRequest/sr-nanoknife-prostate" in text
    assert f"{RECORDED_BASE_URL}/evidence/SURG.00126" in text
    assert "Patient is enrolled in a clinical trial" in text
    assert "PFA-100" not in text  # the platelet test beside them is not IRE


def test_a_bare_service_request_and_a_bundle(tmp_path, capsys):
    assert run(capsys, "check", write(tmp_path, "ire.json", IRE))[0] == 1
    assert run(capsys, "check", write(tmp_path, "ct.json", CT))[0] == 0
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": CT}, {"resource": IRE}]}
    code, out, _ = run(capsys, "check", "--json", write(tmp_path, "bundle.json", bundle))
    assert code == 1
    (card,) = json.loads(out)["cards"]
    assert [s["actions"][0]["resourceId"] for s in card["suggestions"]] == ["ServiceRequest/sr-ire"]


def test_order_select_selects_every_order_even_without_ids(tmp_path, capsys):
    no_id = {key: value for key, value in IRE.items() if key != "id"}
    code, out, _ = run(capsys, "check", "--json", "--hook", "order-select", write(tmp_path, "x.json", no_id))
    assert code == 1
    assert json.loads(out)["cards"][0]["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/order-1"


def test_hook_option_overrides_the_request(capsys):
    # order-select-not-ire selects only the radiofrequency ablation; order-sign looks at the IRE beside it.
    path = str(ROOT / "examples" / "order-select-not-ire.json")
    assert run(capsys, "check", path)[0] == 0
    assert run(capsys, "check", "--hook", "order-sign", path)[0] == 1


def test_stdin_folder_and_options(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(IRE)))
    code, out, _ = run(capsys, "check", "--json", "--base-url", "https://cds.example.org", "--payer-name", "Acme", "-")
    card = json.loads(out)["cards"][0]
    assert code == 1 and card["links"][0]["url"] == "https://cds.example.org/evidence/SURG.00126"
    assert card["source"]["label"].startswith("Acme medical policy")
    folder = tmp_path / "catalogue"
    folder.mkdir()
    write(folder, "a.json", CT)
    write(folder, "b.json", IRE)
    code, out, _ = run(capsys, "check", str(folder))
    assert code == 1 and "a.json: 0 cards" in out and "b.json: 1 card" in out


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ({"resourceType": "Patient", "id": "p"}, "not resourceType 'Patient'"),
        ({"hook": "order-sign", "hookInstance": "x", "context": {}}, "context.userId is required"),
        (
            {
                "hook": "order-select",
                "hookInstance": "x",
                "context": {"userId": "u", "patientId": "p", "draftOrders": {"resourceType": "Bundle", "entry": []}},
            },
            "context.selections is required",
        ),
    ],
    ids=["malformed", "array", "patient", "bad-envelope", "no-selections"],
)
def test_unusable_input_exits_2_on_stderr(tmp_path, capsys, document, words):
    bad = write(tmp_path, "bad.json", document)
    good = write(tmp_path, "good.json", IRE)
    code, out, err = run(capsys, "check", bad, good)
    assert code == 2
    assert "bad.json" in err and words in err
    assert "good.json: 1 card" in out  # the other inputs are still evaluated


def test_missing_file_and_empty_folder(tmp_path, capsys):
    code, _, err = run(capsys, "check", str(tmp_path / "nope.json"))
    assert code == 2 and "nope.json: cannot read" in err
    code, _, err = run(capsys, "check", str(tmp_path))
    assert code == 2 and "no *.json files" in err


def test_a_broken_policy_directory_is_a_usage_error(tmp_path, capsys):
    code, _, err = run(capsys, "check", "--policies", str(tmp_path), str(ROOT / "examples" / "order-sign-ire.json"))
    assert code == 2 and "no policy files" in err


def test_configuration_is_the_servers(capsys, monkeypatch):
    """CDS_* settings shape the offline answer as they shape the server's: here CRD coverage information."""
    monkeypatch.setenv("CDS_CRD_COVERAGE_INFO", "true")
    code, out, _ = run(capsys, "check", "--json", str(ROOT / "examples" / "order-sign-crd-ire.json"))
    (action,) = json.loads(out)["systemActions"]
    assert code == 1 and action["type"] == "update" and action["resource"]["id"] == "sr-1357"
