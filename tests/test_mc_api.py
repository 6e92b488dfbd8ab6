from __future__ import annotations

import numba
import numpy as np
import pytest

from fastcalo import mc


def test_same_seed_same_showers_whatever_the_split() -> None:
    energies = np.array([2.0, 20.0, 5.0, 1.0, 50.0, 3.0])
    eta = np.array([0.0, 0.5, -1.0, 1.4, 0.2, -0.3])
    whole = mc.simulate(energies, eta, "photon", seed=42)
    first = mc.simulate(energies[:2], eta[:2], "photon", seed=42)
    rest = mc.simulate(energies[2:], eta[2:], "photon", seed=42, first_index=2)
    np.testing.assert_array_equal(whole.showers.images, np.concatenate([first.showers.images, rest.showers.images]))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = mc.simulate(energies, eta, "photon", seed=42)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(whole.showers.images, single.showers.images)
    other = mc.simulate(energies, eta, "photon", seed=43)
    assert not np.array_equal(whole.showers.images, other.showers.images)


def test_sample_conditions_ranges_and_points() -> None:
    c = mc.sample_conditions(5000, energy=(1, 100), eta=(-1.5, 1.5), seed=3)
    assert c["energy"].min() >= 1 and c["energy"].max() <= 100
    # log-uniform: the median is the geometric mean, 10 GeV
    assert np.median(c["energy"]) == pytest.approx(10.0, rel=0.1)
    assert np.all(np.abs(c["eta"]) <= 1.5)
    assert np.all((c["impact_x"] >= 0) & (c["impact_x"] < 10))
    u = mc.sample_conditions(5000, energy=(1, 100), log_uniform=False, seed=3)
    assert np.median(u["energy"]) == pytest.approx(50.5, rel=0.1)
    p = mc.sample_conditions(4, points=[1, 50], eta=0.3, particle="positron", seed=1)
    assert p["energy"].tolist() == [1, 1, 1, 1, 50, 50, 50, 50]
    assert np.all(p["eta"] == 0.3) and np.all(p["pdgid"] == -11)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"energy": [0.0]}, "must be finite and > 0 GeV, found \\[0.0\\]"),
        ({"energy": [-5.0]}, "must be finite and > 0 GeV, found \\[-5.0\\]"),
        ({"energy": [float("nan")]}, "must be finite and > 0 GeV, found \\[nan\\]"),
        ({"energy": [10.0], "particle": "muon"}, "unknown particle 'muon'"),
        ({"energy": [10.0], "particle": [13]}, "unknown particle 13"),
        ({"energy": [10.0, 10.0], "particle": [22, 22.7]}, r"PDG ids must be integers .* the first 22.7 at index 1"),
        ({"energy": [10.0], "particle": 11.2}, r"PDG ids must be integers .* the first 11.2"),
        ({"energy": [10.0], "particle": [2**32 + 22]}, r"PDG ids must lie in the int32 range .* the first 4294967318"),
        ({"energy": [10.0, 10.0], "eta": [0.0, 1.0, 2.0]}, "eta has 3 entries, expected 2"),
        ({"energy": []}, "at least one energy"),
    ],
)
def test_simulate_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mc.simulate(**kwargs)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_sample_conditions_bad_n(n: object) -> None:
    with pytest.raises(ValueError, match="n must be a positive integer"):
        mc.sample_conditions(n)  # type: ignore[arg-type]


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="MCConfig.gamma_cut must be finite and > 0"):
        mc.MCConfig(gamma_cut=0.0)


def test_simulate_to_file_independent_of_chunking(tmp_path) -> None:
    from fastcalo import datasets

    cond = mc.sample_conditions(7, energy=(1, 5), seed=2)
    mc.simulate_to_file(cond, tmp_path / "a.h5", seed=2, chunk_size=7, progress=False)
    mc.simulate_to_file(cond, tmp_path / "b.h5", seed=2, chunk_size=3, progress=False)
    a, b = datasets.read(tmp_path / "a.h5"), datasets.read(tmp_path / "b.h5")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.energy, cond["energy"])
