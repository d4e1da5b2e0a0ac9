"""Every command has --help on stdout; usage errors go to stderr with exit status 2."""

from __future__ import annotations

import pytest

from cds_service.cli import main

COMMANDS = [
    ["serve"],
    ["check"],
    ["policies"],
    ["policies", "list"],
    ["policies", "show"],
    ["policies", "validate"],
    ["demo"],
    ["selfcheck"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    out, err = capsys.readouterr()
    assert exited.value.code == 0 and not err
    assert out.startswith(f"usage: cds-service {' '.join(command)}")


def test_top_level_help_lists_commands_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in ("serve", "check", "policies", "demo", "selfcheck"):
        assert name in out
    assert "Exit status, for every command: 0" in out


@pytest.mark.parametrize("command", [["check", "--help"], ["demo", "--help"], ["selfcheck", "--help"]])
def test_commands_that_find_things_document_their_exit_status(capsys, command):
    with pytest.raises(SystemExit):
        main(command)
    assert "Exit status: 0" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv", [[], ["nope"], ["check"], ["demo"], ["policies"], ["check", "--hook", "x", "f"]])
def test_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and not out and "usage:" in err
