"""The command lines as a new user meets them: --version, and errors in the command line's own words."""

from __future__ import annotations

from pathlib import Path

import pytest

import fastcalo
from fastcalo.cli import main, validate_main


@pytest.mark.parametrize("entry", [main, validate_main])
def test_version(entry: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        entry(["--version"])  # type: ignore[operator]
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip().endswith(f" {fastcalo.__version__}")


def test_an_existing_output_is_refused_in_the_command_line_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.root"
    assert main(["events", "-o", str(events), "--n-events", "5"]) == 0
    before = events.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["events", "-o", str(events), "--n-events", "7"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"fastcalo: error: {events} already exists (--overwrite replaces it)" in err
    assert "overwrite=True" not in err and "Traceback" not in err
    assert events.read_bytes() == before  # untouched
    assert main(["events", "-o", str(events), "--n-events", "7", "--overwrite"]) == 0
    assert events.read_bytes() != before


def test_overwrite_refuses_a_file_fastcalo_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--overwrite`` replaces a shower file of fastcalo, never another file: the command says
    why in one line, exits 2 and leaves the file as it was."""
    import uproot

    out = tmp_path / "analysis.root"
    with uproot.recreate(out) as f:
        f["Events"] = {"x": [1.0, 2.0]}
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["mc", "--energy", "10", "--n", "2", "-o", str(out), "--overwrite", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f'fastcalo: error: {out} already exists and is not a shower file of fastcalo (its metadata have no "format": "fastcalo.showers")' in err
    assert "Traceback" not in err
    assert out.read_bytes() == before
