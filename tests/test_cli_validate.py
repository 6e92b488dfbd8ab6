"""fastcalo-validate refuses datasets that cannot be compared, with one line naming the file and the defect.

Every case writes real ROOT (uproot) or HDF5 (h5py) files in tmp_path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import uproot

from fastcalo import datasets as ds
from fastcalo.cli import validate_main
from fastcalo.detector import Detector


def showers(energies: list[float], n: int = 60, pdgid: int = 22, side: int = 24, seed: int = 0) -> ds.ShowerData:
    """Synthetic showers: 95 % of E_inc in a 3x3 blob around the centre, with some noise."""
    rng = np.random.default_rng(seed)
    energy = np.repeat(np.asarray(energies, dtype=float), n)
    images = np.zeros((energy.size, side, side), dtype=np.float32)
    c = side // 2
    weights = rng.dirichlet(np.full(9, 5.0), size=energy.size).reshape(-1, 3, 3)
    images[:, c - 1 : c + 2, c - 1 : c + 2] = 0.95 * energy[:, None, None] * weights
    return ds.ShowerData.from_arrays(
        energy=energy, eta=rng.uniform(-0.5, 0.5, energy.size), phi=np.zeros(energy.size), pdgid=np.full(energy.size, pdgid),
        impact_x=rng.uniform(0, 10, energy.size), impact_y=rng.uniform(0, 10, energy.size), images=images,
    )  # fmt: skip


def fails(reference: Path, generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Run fastcalo-validate, expect exit status 2 and no report; return the error line."""
    out = tmp_path / "report"
    args = ["--reference", str(reference), "--generated", str(generated), "-o", str(out), "--no-classifier", "--no-progress"]
    with pytest.raises(SystemExit) as info:
        validate_main([*args, *extra])
    assert info.value.code == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("fastcalo-validate: error: ")
    return err


@pytest.fixture()
def reference(tmp_path: Path) -> Path:
    return ds.write(showers([2.0, 20.0]), tmp_path / "ref.h5")


def test_a_good_pair_passes(reference: Path, tmp_path: Path) -> None:
    generated = ds.write(showers([2.0, 20.0], seed=1), tmp_path / "gen.root")
    assert validate_main(["--reference", str(reference), "--generated", str(generated), "-o", str(tmp_path / "r"),
                          "--no-classifier", "--no-progress"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["files"] == [str(reference), str(generated)]


def test_different_number_of_cells(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated = ds.write(showers([2.0, 20.0], side=10), tmp_path / "gen.root", detector=Detector(n_cells=10))
    err = fails(reference, generated, tmp_path, capsys)
    assert f"{reference} and {generated} describe different detectors: n_cells: 24 vs 10" in err
    # a file without metadata is checked by its shape
    data = showers([2.0, 20.0], side=10)
    generated = tmp_path / "other_tool.h5"
    with h5py.File(generated, "w") as f:
        f["incident_energies"] = data.energy.reshape(-1, 1) * 1e3
        f["showers"] = data.images.reshape(len(data), -1) * 1e3
        for name in ("eta", "phi", "pdgid", "impact_x", "impact_y"):
            f[name] = getattr(data, name)
    err = fails(reference, generated, tmp_path, capsys)
    assert f"{generated}: showers have 100 cells but the detector has 576 (24x24)" in err


def test_different_detector_description(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated = ds.write(showers([2.0, 20.0]), tmp_path / "gen.root", detector=Detector(cell_size=12.0))
    err = fails(reference, generated, tmp_path, capsys)
    assert f"{reference} and {generated} describe different detectors: cell_size: 10.0 vs 12.0" in err


def test_root_file_declaring_mev(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ds.write(showers([2.0, 20.0]), tmp_path / "good.root")
    with uproot.open(path) as f:
        meta = json.loads(str(f["fastcalo_meta"]))
        arrays = f["showers"].arrays(library="np")
    meta["units"]["energy"] = "MeV"
    generated = tmp_path / "mev.root"
    with uproot.recreate(generated) as f:
        f["fastcalo_meta"] = json.dumps(meta)
        f["showers"] = arrays
    err = fails(reference, generated, tmp_path, capsys)
    assert f"{generated}: ROOT shower files hold GeV, but the file declares {{'images': 'GeV', 'energy': 'MeV'}}" in err


def test_undeclared_units_mismatch(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a CaloChallenge-style file from another tool, without metadata: showers in MeV but the
    # incident energies written in GeV
    data = showers([2.0, 20.0])
    generated = tmp_path / "other_tool.h5"
    with h5py.File(generated, "w") as f:
        f["incident_energies"] = data.energy.reshape(-1, 1)  # GeV, should be MeV
        f["showers"] = data.images.reshape(len(data), -1) * 1e3
        for name in ("eta", "phi", "pdgid", "impact_x", "impact_y"):
            f[name] = getattr(data, name)
    err = fails(reference, generated, tmp_path, capsys)
    assert f"{generated}: the median deposit is 950 times the incident energy" in err
    assert "different units" in err


def test_empty_file(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated = tmp_path / "empty.root"
    with ds.ShowerWriter(generated):
        pass
    assert f"{generated}: the file holds no showers" in fails(reference, generated, tmp_path, capsys)
    good = ds.write(showers([2.0, 20.0], seed=1), tmp_path / "good.root")
    assert "max_showers must be > 0, got 0" in fails(reference, good, tmp_path, capsys, "--max-showers", "0")


@pytest.mark.parametrize(("name", "bad"), [("gen.h5", np.nan), ("gen.root", np.inf)])
def test_non_finite_cells(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, bad: float) -> None:
    data = showers([2.0, 20.0])
    data.images[7, 3, 4] = bad
    generated = tmp_path / name
    with ds.ShowerWriter(generated) as out:
        out.write(data)  # the writer does not check values; the reader does
    assert f"{generated}[0:120]: 1 non-finite value(s) in 'images'" in fails(reference, generated, tmp_path, capsys)


def test_missing_condition_columns(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ds.write(showers([2.0, 20.0]), tmp_path / "full.h5")
    generated = tmp_path / "no_eta.h5"
    with h5py.File(path, "r") as src, h5py.File(generated, "w") as dst:
        for key in src:
            if key != "eta":
                src.copy(key, dst)
    err = fails(reference, generated, tmp_path, capsys)
    assert f"{generated}: missing key(s) ['eta']" in err
    arrays = {k: v for k, v in uproot.open(ds.write(showers([2.0, 20.0]), tmp_path / "full.root"))["showers"].arrays(library="np").items()}
    del arrays["pdgid"]
    generated = tmp_path / "no_pdgid.root"
    with uproot.recreate(generated) as f:
        f["showers"] = arrays
    assert f"{generated}: tree 'showers' is missing branch(es) ['pdgid']" in fails(reference, generated, tmp_path, capsys)


def test_different_particles(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated = ds.write(showers([2.0, 20.0], pdgid=11), tmp_path / "electrons.root")
    assert f"{reference} holds particles (pdgid) [22] but {generated} holds [11]" in fails(reference, generated, tmp_path, capsys)


def test_different_energies(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated = ds.write(showers([2.0]), tmp_path / "only2.root")
    err = fails(reference, generated, tmp_path, capsys)
    assert f"{generated} has no showers at incident energies 20 GeV, where {reference} has showers" in err
    generated = ds.write(showers([2.0, 20.0, 50.0]), tmp_path / "extra50.root")
    err = fails(reference, generated, tmp_path, capsys)
    assert f"{generated}: 33% of the showers have incident energies (50–50 GeV) that {reference} does not have" in err


def test_same_showers_twice(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # the same file however it is written: as typed, relative, through a symbolic or a hard link
    same = f"{reference} and {reference} are the same file: it is given as both the reference and the generated sample"
    assert same in fails(reference, reference, tmp_path, capsys)
    monkeypatch.chdir(tmp_path)
    assert "are the same file" in fails(reference, Path("ref.h5"), tmp_path, capsys)
    (tmp_path / "link.h5").symlink_to(reference)
    assert "are the same file" in fails(reference, tmp_path / "link.h5", tmp_path, capsys)
    (tmp_path / "hard.h5").hardlink_to(reference)
    assert "are the same file" in fails(reference, tmp_path / "hard.h5", tmp_path, capsys)
    # a copy: the same bytes
    copy = tmp_path / "copy.h5"
    copy.write_bytes(reference.read_bytes())
    err = fails(reference, copy, tmp_path, capsys)
    assert f"{reference} and {copy} have the same content (sha256 " in err and "both inputs are the same showers" in err
    # the same showers converted to ROOT (GeV instead of MeV): other bytes, the same showers
    converted = ds.write(ds.read(reference), tmp_path / "converted.root")
    err = fails(reference, converted, tmp_path, capsys)
    assert f"{reference} and {converted} hold the same 120 showers: both inputs are the same showers" in err
    # and the same showers with one cell changed are a (nearly perfect) sample: accepted
    data = ds.read(reference)
    data.images[0, 12, 12] *= 1.01
    changed = ds.write(data, tmp_path / "changed.root")
    assert validate_main(["--reference", str(reference), "--generated", str(changed), "-o", "r", "--no-classifier", "--no-progress"]) == 0


def test_negative_cells(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = showers([2.0, 20.0], seed=1)
    data.images[5, 0, 0] = -0.5  # -500 MeV in the HDF5 file
    data.images[9, 1, 0] = -0.001
    generated = ds.write(data, tmp_path / "gen.h5")
    err = fails(reference, generated, tmp_path, capsys)
    assert f"{generated}: 2 cell(s) with negative energy, the most negative -0.5 GeV; cell energies must be >= 0" in err


def test_reference_mc_and_simulator_have_no_negative_cells(tmp_path: Path) -> None:
    # check_sample refuses negative cells: what fastcalo itself produces must pass (both zero-suppress)
    from fastcalo import Simulator, mc

    cond = mc.sample_conditions(100, points=[1.0, 10.0], eta=(-0.5, 0.5), seed=3)  # 100 per point
    path = tmp_path / "mc.h5"
    mc.simulate_to_file(cond, path, seed=3, progress=False)
    assert ds.read(path).images.min() >= 0.0
    images = Simulator(device="cpu", seed=3).sample(energy=cond["energy"], eta=cond["eta"], particle=cond["pdgid"])
    assert images.shape == (200, 24, 24) and images.min() >= 0.0 and images.max() > 0.0


# --- the report directory: never destroy what fastcalo-validate did not write ---------------------


def tree(path: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``path``."""
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def generated_beside(reference: Path) -> Path:
    generated = reference.parent / "gen.root"
    return generated if generated.exists() else ds.write(showers([2.0, 20.0], seed=1), generated)


def validate(reference: Path, output: Path | str, *extra: str) -> int:
    generated = generated_beside(reference)
    args = ["--reference", str(reference), "--generated", str(generated), "-o", str(output), "--no-classifier", "--no-progress"]
    return validate_main([*args, *extra])


def refused(reference: Path, output: Path | str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Run fastcalo-validate, expect exit status 2 and no temporary directory left; return the error."""
    generated_beside(reference)
    parent = Path(output).resolve().parent
    before = sorted(p.name for p in parent.iterdir())
    with pytest.raises(SystemExit) as info:
        validate(reference, output, *extra)
    assert info.value.code == 2
    assert sorted(p.name for p in parent.iterdir()) == before
    err = capsys.readouterr().err
    assert err.startswith("fastcalo-validate: error: ")
    return err


def test_a_users_directory_is_never_replaced(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    (mine / "sub" / "data.csv").write_text("1,2,3")
    before = tree(mine)
    for extra in ((), ("--overwrite",)):
        err = refused(reference, mine, capsys, *extra)
        assert f"{mine} already exists and is not a fastcalo report (it has no metrics.json); refusing to replace it" in err
        assert tree(mine) == before
    # a report into which the user put a file of their own is no longer only a report
    validate(reference, tmp_path / "report")
    (tmp_path / "report" / "notes.txt").write_text("my notes on the report")
    before = tree(tmp_path / "report")
    err = refused(reference, tmp_path / "report", capsys, "--overwrite")
    assert "is not a fastcalo report (it holds what a report does not write: notes.txt)" in err
    assert tree(tmp_path / "report") == before
    # nor is a file
    (tmp_path / "file").write_text("x")
    assert "is not a fastcalo report (it is not a directory)" in refused(reference, tmp_path / "file", capsys, "--overwrite")


def test_the_current_directory_is_never_replaced(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("my notes")
    generated_beside(reference)
    monkeypatch.chdir(work)
    before = tree(tmp_path)
    for output in (".", "..", str(work)):
        for extra in ((), ("--overwrite",)):
            err = refused(reference, output, capsys, *extra)
            assert f"{output}: refusing to replace the current directory or one that contains it" in err
    assert tree(tmp_path) == before
    assert validate(reference, "report") == 0  # a new directory in it is fine
    assert (work / "report" / "index.html").is_file() and (work / "notes.txt").read_text() == "my notes"


def test_an_input_is_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    reference = ds.write(showers([2.0, 20.0]), inputs / "ref.h5")
    generated_beside(reference)
    before = tree(tmp_path)
    err = refused(reference, inputs, capsys, "--overwrite")
    assert f"{inputs} holds an input of this report ({reference}); refusing to replace it" in err
    err = refused(reference, reference, capsys, "--overwrite")
    assert f"{reference} is an input of this report ({reference}); refusing to replace it" in err
    # the thresholds file counts as an input too
    (inputs / "t.toml").write_text("n_sigma = 1\n")
    after = tree(tmp_path)
    assert "is an input of this report" in refused(reference, inputs / "t.toml", capsys, "--overwrite", "--thresholds", str(inputs / "t.toml"))
    assert tree(tmp_path) == after and {k: v for k, v in after.items() if k in before} == before


def test_a_previous_report_is_replaced_only_with_overwrite(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert validate(reference, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["format"] == "fastcalo-validation-report" and "index.html" in metrics["report_files"]
    assert sorted(p.name for p in out.iterdir()) == sorted(metrics["report_files"])
    before = tree(out)
    err = refused(reference, out, capsys)
    assert f"{out} already exists (a fastcalo report); pass --overwrite (overwrite=True) to replace it" in err
    assert tree(out) == before
    assert validate(reference, out, "--overwrite", "--max-showers", "100") == 0
    assert json.loads((out / "metrics.json").read_text())["n_showers"] == [100, 100]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.root", "ref.h5", "report"]  # nothing left beside it
    # a report written before metrics.json had its "format" key is recognised by its keys and files
    for key in ("format", "report_files"):
        del metrics[key]
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "displacement.png").unlink()  # came with "report_files": a report without the key never wrote it
    assert validate(reference, out, "--overwrite") == 0
    assert json.loads((out / "metrics.json").read_text())["n_showers"] == [120, 120]


def test_the_report_follows_the_umask(reference: Path, tmp_path: Path) -> None:
    # mkdtemp makes a private directory whatever the umask: the report must not stay private
    out = tmp_path / "report"
    for umask, directory, file, extra in ((0o022, 0o755, 0o644, ()), (0o077, 0o700, 0o600, ("--overwrite",))):
        previous = os.umask(umask)
        try:
            assert validate(reference, out, *extra) == 0
        finally:
            os.umask(previous)
        assert oct(out.stat().st_mode & 0o777) == oct(directory)
        assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {oct(file)}
