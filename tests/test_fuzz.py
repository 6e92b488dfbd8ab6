"""Property-based fuzzing (hypothesis) of the entry points users feed: whatever goes in, either a
clear error (ValueError or KeyError, a message that says what was expected) or a correct answer,
never a crash, a silent wrong shape or a non-finite shower."""

from __future__ import annotations

import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcalo import Simulator, datasets, particles

CLEAR = (ValueError, KeyError)  # the errors fastcalo raises for bad input (FileNotFoundError is an OSError)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=0.5, max_value=120.0),  # mostly near the trained range: answers, not only errors
)
particle_values = st.sampled_from(["photon", "electron", "positron", "muon", "", 22, 11, -11, 13, 0, 22.0, 22.5, 2**32 + 22])


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(seed=1, device="cpu", out_of_range="error")


def _check_showers(images: np.ndarray, n: int) -> None:
    assert images.shape == (n, 24, 24) and images.dtype == np.float32
    assert np.isfinite(images).all() and (images >= 0).all()


@FUZZ
@given(
    energy=st.one_of(floats, st.lists(floats, min_size=0, max_size=5)),
    eta=st.one_of(floats, st.lists(floats, min_size=1, max_size=5)),
    particle=st.one_of(particle_values, st.lists(particle_values, min_size=1, max_size=5)),
    n=st.one_of(st.none(), st.integers(min_value=-2, max_value=6), st.sampled_from([2.5, 1e9])),
    first_index=st.sampled_from([0, 1023, 1024, 10**12, -1]),
)
def test_sample_answers_or_refuses_clearly(sim: Simulator, energy: object, eta: object, particle: object, n: object, first_index: int) -> None:
    try:
        images = sim.sample(energy=energy, eta=eta, particle=particle, n=n, first_index=first_index)  # type: ignore[arg-type]
    except CLEAR as error:
        assert str(error)  # a message, not an empty error
        return
    lengths = [len(v) for v in (energy, eta, particle) if isinstance(v, list)]
    expected = lengths[0] if lengths else (1 if n is None else n)
    _check_showers(images, int(expected))  # type: ignore[call-overload]
    assert n is None or n == len(images)  # never fewer or more showers than asked for
    for e in np.broadcast_to(np.asarray(energy, dtype=float), (len(images),)):
        assert math.isfinite(e) and 1.0 <= e <= 100.0  # out-of-range energies are refused under "error"


records = st.fixed_dictionaries(
    {"pt": floats, "eta": floats, "phi": st.floats(min_value=-4.0, max_value=4.0)}
)


@FUZZ
@given(events=st.lists(st.lists(records, max_size=3), max_size=6), policy=st.sampled_from(["error", "clip", "skip"]))
def test_run_keeps_the_event_structure_or_refuses_clearly(events: list[list[dict[str, float]]], policy: str) -> None:
    sim = Simulator(seed=2, device="cpu", out_of_range=policy)
    array = ak.Array(events, with_name="Photon") if events else ak.Array([[{"pt": 1.0, "eta": 0.0, "phi": 0.0}]])[:0]
    try:
        showers = sim.run(array, particle="photon")
    except CLEAR as error:
        assert str(error)
        return
    assert ak.num(showers).tolist() == [len(e) for e in events]
    flat = ak.to_numpy(ak.flatten(showers)) if events else np.zeros((0, 24, 24), np.float32)
    _check_showers(flat.reshape(-1, 24, 24), sum(len(e) for e in events))


@FUZZ
@given(
    pt=st.lists(floats, max_size=8),
    pdgid=st.lists(st.sampled_from([22, 11, -11, 13, 211, 0]), max_size=8),
    collection=st.sampled_from(["Photon", "Electron", "GenPart", "Photn", None]),
)
def test_particle_readers_answer_or_refuse_clearly(tmp_path_factory: pytest.TempPathFactory, pt: list[float], pdgid: list[int], collection: str | None) -> None:
    n = min(len(pt), len(pdgid))
    counts = [n // 2, n - n // 2]
    path = tmp_path_factory.mktemp("fuzz") / "events.root"
    values = np.asarray(pt[:n], dtype=np.float64)
    ids = np.asarray(pdgid[:n], dtype=np.int32)
    columns = {
        "pt": ak.unflatten(values, counts),
        "eta": ak.unflatten(np.zeros(n), counts),
        "phi": ak.unflatten(np.zeros(n), counts),
        "mass": ak.unflatten(np.zeros(n), counts),
    }
    with uproot.recreate(path) as f:
        f["Events"] = {
            "Photon": ak.zip(columns),
            "Electron": ak.zip({**columns, "pdgId": ak.unflatten(ids, counts)}),
            "GenPart": ak.zip({**columns, "pdgId": ak.unflatten(ids, counts), "status": ak.unflatten(np.ones(n, np.int32), counts)}),
        }
    try:
        table = particles.read(path, collection=collection)
    except CLEAR as error:
        assert str(error)
        return
    assert len(table) == 2
    flat, _ = particles.flatten(table)
    assert np.isfinite(ak.to_numpy(flat.energy)).all() and (ak.to_numpy(flat.energy) >= 0).all()
    assert set(ak.to_numpy(flat.pdgid).tolist()) <= {22, 11, -11}


@FUZZ
@given(cut=st.floats(min_value=0.0, max_value=1.0), garbage=st.binary(max_size=64), suffix=st.sampled_from([".h5", ".root"]))
def test_shower_files_read_or_refuse_naming_the_file(tmp_path_factory: pytest.TempPathFactory, cut: float, garbage: bytes, suffix: str) -> None:
    """A real shower file cut short, with bytes appended, or replaced by garbage: read, or a clear
    error that names the file."""
    directory = tmp_path_factory.mktemp("files")
    good = directory / f"good{suffix}"
    data = datasets.ShowerData.from_arrays(
        energy=[5.0, 7.0], eta=[0.0, 0.1], phi=[0.0, 0.0], pdgid=[22, 11], impact_x=[5.0, 5.0], impact_y=[5.0, 5.0],
        images=np.full((2, 24, 24), 0.01, np.float32),
    )
    datasets.write(data, good)
    raw = good.read_bytes()
    for name, content in (("cut", raw[: int(cut * len(raw))]), ("garbage", garbage), ("appended", raw + garbage)):
        bad = directory / f"{name}{suffix}"
        bad.write_bytes(content)
        try:
            read = datasets.read(bad)
        except (*CLEAR, OSError) as error:
            assert bad.name in str(error), f"{type(error).__name__}: {error}"
            continue
        assert len(read) == 2  # HDF5 stores MeV: the GeV round trip costs the last bit
        np.testing.assert_allclose(read.images, data.images, rtol=1e-6)


def test_a_clean_file_round_trips(tmp_path: Path) -> None:
    """The control of the fuzz above: an untouched file reads back exactly."""
    data = datasets.ShowerData.from_arrays(
        energy=[5.0], eta=[0.0], phi=[0.0], pdgid=[22], impact_x=[5.0], impact_y=[5.0], images=np.ones((1, 24, 24))
    )
    for suffix in (".h5", ".root"):
        datasets.write(data, tmp_path / f"x{suffix}")
        assert np.array_equal(datasets.read(tmp_path / f"x{suffix}").images, data.images)
