"""Broken policy or card files stop start-up with a message naming the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cds_service import create_app
from cds_service.cli import main
from cds_service.config import data_dir
from cds_service.policy import PolicyError, load_policies


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    policies, cards = tmp_path / "policies", tmp_path / "cards"
    shutil.copytree(data_dir("policies"), policies)
    shutil.copytree(data_dir("cards"), cards)
    return policies, cards


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def start(dirs: tuple[Path, Path]) -> None:
    create_app({"policies_dir": dirs[0], "cards_dir": dirs[1]})


def test_bundled_policies_load():
    (policy,) = load_policies(data_dir("policies"))
    assert policy.id == "SURG.00126"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.pop("title"), "title: Field required"),
        (lambda d: d["codes"][0].update(system="snomed"), "codes.0.system"),
        (lambda d: d["codes"][2].pop("condition"), "requires_text needs a `condition`"),
        (lambda d: d["codes"].append(dict(d["codes"][0])), "listed twice"),
        (lambda d: d.update(publish_date="someday"), "publish_date"),
        (lambda d: d.update(position="covered"), "position"),
        (lambda d: d.update(colour="blue"), "colour: Extra inputs are not permitted"),
        (lambda d: d["text"].update(acronym_context=[]), "acronym_context"),
        (lambda d: d["evidence"]["studies"][0].update(subjects=-3), "evidence.studies.0.subjects"),
        (lambda d: d.update(id="SURG.99999"), "must match the file name"),
        (lambda d: d.update(card="no-such-card"), "no card template"),
    ],
)
def test_broken_policy_names_file_and_field(dirs, change, words):
    path = dirs[0] / "SURG.00126.yaml"
    edit_yaml(path, change)
    with pytest.raises(PolicyError) as raised:
        start(dirs)
    assert str(path) in str(raised.value) or "SURG.00126" in str(raised.value)
    assert words in str(raised.value)


def test_invalid_yaml(dirs):
    (dirs[0] / "SURG.00126.yaml").write_text("id: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        start(dirs)


def test_empty_policy_directory(dirs):
    (dirs[0] / "SURG.00126.yaml").unlink()
    with pytest.raises(PolicyError, match="no policy files"):
        start(dirs)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.update(summary="{{ policy.title }} " + "x" * 140), "summary: renders to"),
        (lambda d: d.update(detail="{{ policy.no_such_field }}"), "template error"),
        (lambda d: d.update(detail="{% for %}"), "template error"),
        (lambda d: d["override_reasons"][0].pop("display"), "override_reasons.0.display"),
        (lambda d: d.update(indicator="urgent"), "indicator"),
        (lambda d: d.update(links=[]), "links"),
        (lambda d: d.pop("coverage_information"), "coverage_information: Field required"),
        (lambda d: d["coverage_information"].update(reason="{{ order.nope }}"), "template error"),
        # The plan-guidance branch of the detail is rendered at start-up too.
        (lambda d: d.update(detail="{% for n in guidance %}{{ n.nope }}{% endfor %}"), "template error"),
    ],
)
def test_broken_card_template_names_file_and_field(dirs, change, words):
    edit_yaml(dirs[1] / "investigational.yaml", change)
    with pytest.raises(PolicyError) as raised:
        start(dirs)
    assert "investigational.yaml" in str(raised.value)
    assert words in str(raised.value)


def test_cli_reports_a_broken_policy_and_exits_2(dirs, capsys):
    edit_yaml(dirs[0] / "SURG.00126.yaml", lambda d: d.pop("title"))
    assert main(["serve", "--policies", str(dirs[0]), "--cards", str(dirs[1])]) == 2
    err = capsys.readouterr().err
    assert "SURG.00126.yaml" in err and "title" in err


def test_cli_rejects_a_bad_base_url(capsys):
    assert main(["serve", "--base-url", "cds.example.org"]) == 2
    assert "base_url" in capsys.readouterr().err
