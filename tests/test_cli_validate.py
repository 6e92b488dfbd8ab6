"""fastcalo-validate refuses datasets that cannot be compared, with one line naming the file and the defect.

Every case writes real ROOT (uproot) or HDF5 (h5py) files in tmp_path.
"""

from __future__ import annotations

import json
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


def test_same_file_twice(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert f"{reference} is given as both the reference and the generated sample" in fails(reference, reference, tmp_path, capsys)
