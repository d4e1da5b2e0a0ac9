"""`cds-service policies list | show | validate`, and line numbers in policy errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from cds_service import create_app
from cds_service.cli import main
from cds_service.config import data_dir
from cds_service.policy import PolicyError

BUNDLED = data_dir("policies") / "SURG.00126.yaml"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables to the terminal width


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    shutil.copy(BUNDLED, folder)
    return folder


def line_of(path: Path, text: str, after: int = 0) -> int:
    """1-based number of the first line at or after ``after`` that contains ``text``."""
    lines = path.read_text().splitlines()
    return next(n for n, line in enumerate(lines, start=1) if n > after and text in line)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_list(capsys):
    code, out, _ = run(capsys, "policies", "list")
    assert code == 0 and "SURG.00126" in out and "Irreversible Electroporation" in out
    code, out, _ = run(capsys, "policies", "list", "--json")
    (row,) = json.loads(out)
    assert row["id"] == "SURG.00126" and row["codes"] == 16 and row["studies"] == 15


def test_show_codes_and_synonyms(capsys):
    code, out, _ = run(capsys, "policies", "show", "SURG.00126")
    text = " ".join(out.split())
    assert code == 0
    for expected in ("0600T", "0601T", "93799", "0F5G4ZF", "NanoKnife", "pulsed field ablation", "H-FIRE", "ablation"):
        assert expected in text
    assert "Counts only when the order states" in text  # 93799's condition
    code, out, _ = run(capsys, "policies", "show", "SURG.00126", "--json")
    assert json.loads(out)["text"]["acronyms"] == ["IRE", "PFA", "H-FIRE"]


def test_show_unknown_policy(capsys):
    code, _, err = run(capsys, "policies", "show", "SURG.99999")
    assert code == 2 and "no policy 'SURG.99999'" in err and "SURG.00126" in err


def test_validate_bundled_and_default(capsys, policies):
    code, out, _ = run(capsys, "policies", "validate")
    assert code == 0 and "all valid" in out
    code, out, _ = run(capsys, "policies", "validate", str(policies / "SURG.00126.yaml"))
    assert code == 0 and "1 policy file checked: all valid" in out


def test_validate_names_file_line_and_field_for_every_problem(capsys, policies):
    path = policies / "SURG.00126.yaml"
    edit(path, "title: Irreversible Electroporation\n", "title: Irreversible Electroporation\ncolour: blue\n")
    edit(path, 'code: "0601T"', 'code: "0601T"\n    sytem: cpt')
    edit(path, "    subjects: ", "    subjects: -")  # the first study
    edit(path, "  acronym_context:\n", "  acronym_context_words:\n")
    code, out, _ = run(capsys, "policies", "validate", str(policies))
    assert code == 1
    lines = out.splitlines()
    expected = [
        f"{path}:{line_of(path, 'colour: blue')}: colour: Extra inputs are not permitted",
        f"{path}:{line_of(path, 'sytem: cpt')}: codes.1.sytem: Extra inputs are not permitted",
        f"{path}:{line_of(path, 'subjects: -')}: evidence.studies.0.subjects: Input should be greater than 0",
        f"{path}:{line_of(path, 'acronym_context_words')}: text.acronym_context_words: Extra inputs are not permitted",
    ]
    for line in expected:
        assert line in lines, out
    assert lines[-1] == f"1 policy file checked: {len(lines) - 1} problem(s) in 1 file(s)"


def test_missing_field_points_at_its_mapping(capsys, policies):
    path = policies / "SURG.00126.yaml"
    start = line_of(path, "- author: ")  # the first study
    text = path.read_text().splitlines(keepends=True)
    finding = line_of(path, "finding:", after=start)
    del text[finding - 1]
    path.write_text("".join(text))
    code, out, _ = run(capsys, "policies", "validate", str(path))
    assert code == 1
    assert f"{path}:{start}: evidence.studies.0.finding: Field required" in out.splitlines()


def test_validate_checks_several_files_and_card_templates(capsys, policies, tmp_path):
    second = policies / "SURG.00999.yaml"
    shutil.copy(BUNDLED, second)
    edit(second, "id: SURG.00126", "id: SURG.00999")
    edit(second, "title: Irreversible Electroporation", "title: " + "Very long title " * 8)
    (policies / "BROKEN.yaml").write_text("id: [unclosed\n")
    code, out, _ = run(capsys, "policies", "validate", str(policies))
    assert code == 1
    assert re.search(r"BROKEN\.yaml:2: not valid YAML: expected ',' or '\]'", out), out
    assert "(for policy SURG.00999): summary: renders to" in out
    assert "3 policy files checked: 2 problem(s) in 2 file(s)" in out


def test_validate_file_name_and_missing_path(capsys, policies, tmp_path):
    path = policies / "SURG.00126.yaml"
    edit(path, "id: SURG.00126", "id: SURG.00127")
    code, out, _ = run(capsys, "policies", "validate", str(path))
    assert code == 1 and f"{path}:1: id: 'SURG.00127' must match the file name ('SURG.00126.yaml')" in out
    code, _, err = run(capsys, "policies", "validate", str(tmp_path / "nope"))
    assert code == 2 and "no such file or directory" in err


def test_startup_error_carries_the_line(policies):
    path = policies / "SURG.00126.yaml"
    edit(path, "position: investigational", "position: covered")
    with pytest.raises(PolicyError) as raised:
        create_app({"policies_dir": policies})
    assert f"{path}:{line_of(path, 'position: covered')}: position: Input should be 'investigational'" in str(
        raised.value
    )
