from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fastcalo import datasets as ds
from fastcalo.cli import main


def test_mc_range_to_root(tmp_path: Path) -> None:
    out = tmp_path / "ref.root"
    code = main(["mc", "--particle", "electron", "--energy", "1:20", "--log-uniform", "--eta", "-1.5:1.5",
                 "--n", "12", "--seed", "3", "-o", str(out), "--no-progress", "--chunk-size", "5"])  # fmt: skip
    assert code == 0
    data = ds.read(out)
    assert len(data) == 12
    assert np.all((data.energy >= 1) & (data.energy <= 20))
    assert np.all(np.abs(data.eta) <= 1.5) and np.any(data.eta < 0)
    assert np.all(data.pdgid == 11)
    assert np.all(data.images.sum(axis=(1, 2)) > 0.5 * data.energy)


def test_mc_points_to_hdf5_same_as_library(tmp_path: Path) -> None:
    from fastcalo import mc

    out = tmp_path / "points.h5"
    assert main(["mc", "--energy", "2,5", "--n", "3", "--seed", "4", "-o", str(out), "--no-progress"]) == 0
    data = ds.read(out)
    assert data.energy.tolist() == [2, 2, 2, 5, 5, 5]
    cond = mc.sample_conditions(3, points=[2, 5], eta=(0, 0), seed=4)
    expected = mc.simulate(cond["energy"], cond["eta"], 22, impact_x=cond["impact_x"], impact_y=cond["impact_y"], seed=4)
    np.testing.assert_allclose(data.images, expected.showers.images, rtol=1e-6)  # GeV -> MeV -> GeV in float32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--energy", "0"], "must be finite and > 0 GeV, found \\[0.0\\]"),
        (["--energy", "-5:10"], "must be finite and > 0 GeV"),
        (["--energy", "nan"], "must be finite and > 0 GeV, found \\[nan\\]"),
        (["--energy", "abc"], "--energy: expected LOW:HIGH, a value or a comma-separated list"),
        (["--particle", "muon"], "unknown particle 'muon'"),
        (["--n", "0"], "n must be a positive integer, got 0"),
        (["--n", "-4"], "n must be a positive integer, got -4"),
    ],
)
def test_mc_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    out = tmp_path / "x.h5"
    argv = ["mc", "--n", "2", "-o", str(out), "--no-progress", *args]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_mc_existing_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.h5"
    out.write_text("keep me")
    with pytest.raises(SystemExit):
        main(["mc", "--n", "1", "-o", str(out), "--no-progress"])
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    with pytest.raises(SystemExit):  # not a file fastcalo wrote: --overwrite does not replace it either
        main(["mc", "--n", "1", "-o", str(out), "--no-progress", "--overwrite"])
    assert "is not a shower file of fastcalo (it is not a readable HDF5 file)" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    out.unlink()
    assert main(["mc", "--n", "1", "-o", str(out), "--no-progress"]) == 0
    assert main(["mc", "--n", "2", "-o", str(out), "--no-progress", "--overwrite"]) == 0  # its own file: replaced
    assert len(ds.read(out)) == 2


def test_mc_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["mc", "--n", "1", "-o", str(tmp_path / "no" / "x.root"), "--no-progress"])
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "-1"], r"--threads must be 0 \(all cores\) or a positive number of threads, at most \d+ here, got -1"),
        (["--threads", "100000"], r"--threads must be 0 \(all cores\) .* got 100000"),
        (["--chunk-size", "0"], r"--chunk-size must be >= 1 \(showers per chunk in memory\), got 0"),
        (["--chunk-size", "-3"], r"--chunk-size must be >= 1 .* got -3"),
    ],
)
def test_mc_bad_options_are_one_line(tmp_path: Path, one_line_error: Callable[[list[str]], str], args: list[str], message: str) -> None:
    import re

    line = one_line_error(["mc", "--n", "2", "-o", str(tmp_path / "x.h5"), "--no-progress", *args])
    assert re.search(message, line), line
    assert list(tmp_path.iterdir()) == []


def test_mc_like_an_empty_shower_file_is_one_line(tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    empty = tmp_path / "empty.h5"
    with ds.ShowerWriter(empty):
        pass
    line = one_line_error(["mc", "--like", str(empty), "-o", str(tmp_path / "x.h5"), "--no-progress"])
    assert line == f"fastcalo: error: --like {empty}: the file holds no showers"
    # what --like decides cannot be asked for as well: refused, never ignored
    line = one_line_error(["mc", "--like", str(empty), "--particle", "electron", "--energy", "50", "--log-uniform", "-o", str(tmp_path / "x.h5")])
    assert line == "fastcalo: error: --particle, --energy, --log-uniform: not with --like (the showers follow the particles of the --like file)"
    assert not (tmp_path / "x.h5").exists()
    assert not (tmp_path / "x.h5").exists()


def test_mc_library_chunk_size() -> None:
    from fastcalo import mc

    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match=r"chunk_size must be an integer >= 1"):
            mc.simulate_to_file(mc.sample_conditions(2, energy=5.0), "never.h5", chunk_size=bad, progress=False)  # type: ignore[arg-type]
