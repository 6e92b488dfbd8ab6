"""The Simulator on real files: NanoAOD-style ROOT written with uproot, the shipped default model
(and a small model trained here for the in-memory path), dask-awkward and dask.distributed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot

import fastcalo
from fastcalo import datasets, particles
from fastcalo.cli import main
from fastcalo.simulator import BLOCK, Simulator


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(seed=11, device="cpu")


@pytest.fixture(scope="module")
def nano(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nano") / "events.root"
    particles.write_example(path, n_events=300, seed=4)
    return path


def _records(energies: list[list[float]], pdgid: int = 22) -> ak.Array:
    return ak.Array([[{"energy": e, "eta": 0.2, "phi": 0.1, "pdgid": pdgid} for e in event] for event in energies])


def test_sample_shapes_dtype_and_energy(sim: Simulator) -> None:
    energy = np.array([1.0, 10.0, 100.0])
    images = sim.sample(energy=energy, eta=0.3, particle="photon")
    assert images.shape == (3, 24, 24) and images.dtype == np.float32
    assert (images >= 0).all()
    response = images.sum(axis=(1, 2)) / energy
    assert np.all((response > 0.85) & (response < 1.02)), response
    cut = sim.detector.response.threshold
    assert not ((images > 0) & (images < cut)).any()  # no cell below the zero-suppression threshold
    assert sim.sample(energy=5.0, particle="electron", n=4).shape == (4, 24, 24)


def test_sample_rejects_mismatched_lengths(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="one length"):
        sim.sample(energy=[1.0, 2.0], eta=[0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="unknown particle 'muon'"):
        sim.sample(energy=10.0, particle="muon", n=2)
    # a 2-D array of energies used to end in a numpy broadcast error
    with pytest.raises(ValueError, match=r"scalars or 1-D arrays .* shapes \{'energy': \(2, 1\)\}"):
        sim.sample(energy=np.full((2, 1), 10.0))


@pytest.mark.parametrize("threads", [1, 2])
def test_same_showers_at_any_batch_size_and_offset(threads: int) -> None:
    # two threads split a matrix product's rows between them: the middle row of an odd-sized
    # batch used to round differently
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _same_showers_at_any_batch_size_and_offset()
    finally:
        torch.set_num_threads(before)


def _same_showers_at_any_batch_size_and_offset() -> None:
    energy = np.geomspace(1.0, 100.0, 2 * BLOCK + 37)
    reference = Simulator(seed=5, batch_size=4096, device="cpu").sample(energy=energy, eta=0.1)
    for batch in (1, 333, 1041, BLOCK, 5000):
        if batch == 1:  # one particle at a time would be slow: check a window
            window = Simulator(seed=5, batch_size=1, device="cpu").sample(
                energy=energy[BLOCK - 3 : BLOCK + 3], eta=0.1, first_index=BLOCK - 3
            )
            np.testing.assert_array_equal(window, reference[BLOCK - 3 : BLOCK + 3])
            continue
        np.testing.assert_array_equal(Simulator(seed=5, batch_size=batch, device="cpu").sample(energy=energy, eta=0.1), reference)
    other = Simulator(seed=6, device="cpu").sample(energy=energy, eta=0.1)
    assert not np.array_equal(other, reference)


def test_same_showers_at_any_thread_count() -> None:
    """On the CPU each network call runs on one thread (blocks run side by side), so the thread
    count changes nothing; and torch has its own thread count again after the call."""
    energy = np.geomspace(1.0, 100.0, 3 * BLOCK + 11)
    before = torch.get_num_threads()
    showers = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            showers.append(Simulator(seed=8, device="cpu").sample(energy=energy, eta=0.7, particle="electron"))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(showers[1], showers[0])
    np.testing.assert_array_equal(showers[2], showers[0])


def test_streams_are_independent(sim: Simulator) -> None:
    events = _records([[10.0, 10.0, 10.0]])
    plain, a, a_again, b = (sim.run(events, stream=s) for s in (None, ("f.root", 0), ("f.root", 0), ("f.root", 100)))
    assert ak.to_list(a) == ak.to_list(a_again)
    for one, two in ((plain, a), (a, b)):
        assert not np.array_equal(ak.to_numpy(ak.flatten(one)), ak.to_numpy(ak.flatten(two)))


def test_run_keeps_events_and_order(sim: Simulator) -> None:
    energies = [[2.0, 80.0, 10.0], [], [50.0], [1.5, 99.0]]
    showers = sim.run(_records(energies))
    assert str(showers.type) == "4 * var * 24 * 24 * float32"
    assert ak.num(showers).tolist() == [3, 0, 1, 2]
    totals = ak.to_numpy(ak.flatten(ak.sum(ak.sum(showers, axis=-1), axis=-1)))
    flat = np.concatenate([e for e in energies if e])
    np.testing.assert_allclose(totals / flat, 0.94, atol=0.09)  # the response, particle by particle: order kept
    # the same particles, flat, give the same showers (keyed by the global index)
    flat_showers = sim.run(ak.flatten(_records(energies)))
    np.testing.assert_array_equal(ak.to_numpy(flat_showers), ak.to_numpy(ak.flatten(showers)))


def test_run_on_nanoaod_collection(sim: Simulator, nano: Path) -> None:
    tree = uproot.open(nano)["Events"]
    raw = tree.arrays(["Photon_pt", "Photon_eta", "Photon_phi", "Photon_mass"])
    photons = ak.zip({k.split("_")[1]: raw[k] for k in raw.fields}, with_name="Photon")
    showers = sim.run(photons)
    assert ak.num(showers).tolist() == ak.num(photons).tolist()
    assert ak.any(ak.num(showers) == 0)  # empty events are kept
    energy = ak.to_numpy(ak.flatten(photons.pt * np.cosh(photons.eta)))
    totals = ak.to_numpy(ak.flatten(ak.sum(ak.sum(showers, axis=-1), axis=-1)))
    response = totals / energy
    # the MC's own response reaches 1.067 at 1 GeV (0.3 % of 10 000 held-out photons above 1.03: noise and photo-statistics)
    assert np.all((response > 0.6) & (response < 1.08)) and 0.95 < np.median(response) < 0.99


def test_out_of_range_policies(caplog: pytest.LogCaptureFixture) -> None:
    events = _records([[10.0, 150.0], [0.5]])
    with pytest.raises(ValueError, match=r"2 particle\(s\) with energy outside \[1.0, 100.0\] GeV.*150"):
        Simulator(seed=1, device="cpu").run(events)
    clipped = Simulator(seed=1, device="cpu", out_of_range="clip").run(events)
    totals = ak.to_numpy(ak.flatten(ak.sum(ak.sum(clipped, axis=-1), axis=-1)))
    assert 85 < totals[1] < 102 and 0.8 < totals[2] < 1.02  # simulated at 100 and 1 GeV
    assert "clipped 2 particle(s)" in caplog.text
    skipped = Simulator(seed=1, device="cpu", out_of_range="skip").run(events)
    totals = ak.to_numpy(ak.flatten(ak.sum(ak.sum(skipped, axis=-1), axis=-1)))
    assert totals[0] > 9 and totals[1] == 0 and totals[2] == 0
    assert ak.num(skipped).tolist() == [2, 1]
    unplaced = ak.Array([[{"energy": 10.0, "eta": 2.5, "phi": 0.0, "pdgid": 22}]])
    with pytest.raises(ValueError, match="eta outside"):
        Simulator(device="cpu").run(unplaced)
    with pytest.raises(ValueError, match="out_of_range must be one of"):
        Simulator(out_of_range="ignore")


def test_skip_unknown_particle_and_bad_impact_points() -> None:
    import torch

    from fastcalo.detector import ConditionRanges, Detector
    from fastcalo.model import ModelConfig, ShowerModel

    torch.manual_seed(0)
    photons_only = Detector(conditions=ConditionRanges(particles=("photon",)))
    config = ModelConfig(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,), energy_hidden=(8,), n_quantiles=9)
    sim = Simulator(ShowerModel(config, detector=photons_only), out_of_range="skip", device="cpu")
    images = ak.to_numpy(ak.flatten(sim.run(_records([[10.0], [20.0]], pdgid=22))))
    assert images.shape == (2, 24, 24)
    mixed = ak.concatenate([_records([[10.0]], pdgid=22), _records([[20.0]], pdgid=11)])
    out = ak.to_numpy(ak.flatten(sim.run(mixed)))
    assert out[0].sum() > 0 and out[1].sum() == 0
    with pytest.raises(ValueError, match=r"pdgid not among \[22\]"):
        Simulator(ShowerModel(config, detector=photons_only), device="cpu").run(mixed)
    default = Simulator(device="cpu")
    with pytest.raises(ValueError, match="non-finite impact_x"):
        default.sample(energy=[5.0, 6.0], impact_x=[np.nan, 5.0], impact_y=[5.0, 5.0])
    with pytest.raises(ValueError, match="impact_y must lie in the central cell"):
        default.sample(energy=5.0, impact_x=5.0, impact_y=500.0)
    with pytest.raises(ValueError, match="first particle 1002:"):  # the global index, not the batch's
        default.sample(energy=[5.0, 500.0], first_index=1001)


def test_bad_kinematics_are_errors(sim: Simulator) -> None:
    for bad, what in ((np.nan, "non-finite"), (np.inf, "non-finite"), (-3.0, "energy <= 0")):
        with pytest.raises(ValueError, match=what):
            sim.sample(energy=[10.0, bad])
    with pytest.raises(ValueError, match="energy <= 0"):
        sim.sample(energy=[10.0, 0.0])
    with pytest.raises(ValueError, match="first_index must be >= 0"):
        sim.sample(energy=10.0, first_index=-1)


def test_empty_inputs(sim: Simulator) -> None:
    empty = ak.zip({"energy": np.empty(0), "eta": np.empty(0), "phi": np.empty(0), "pdgid": np.empty(0, np.int32)})
    none = sim.run(ak.unflatten(empty, [0, 0, 0]))
    assert ak.num(none).tolist() == [0, 0, 0]
    assert sim.sample(energy=np.array([])).shape == (0, 24, 24)


def test_run_file_round_trip_root(sim: Simulator, nano: Path, tmp_path: Path) -> None:
    out = sim.run_file(nano, tmp_path / "showers.root", collection="Photon", step_size=64, copy_branches=["event", "MET_pt"], progress=False)
    source = uproot.open(nano)["Events"].arrays(["nPhoton", "Photon_pt", "Photon_eta", "event", "MET_pt"])
    with uproot.open(out) as f:
        tree = f["Events"]
        result = tree.arrays()
        meta = json.loads(str(f["fastcalo_meta"]))
    assert meta["layout"] == "events" and meta["collection"] == "Photon" and meta["seed"] == 11
    assert tree.num_entries == len(source)
    assert result["nPhoton"].tolist() == source["nPhoton"].tolist()
    assert result["event"].tolist() == source["event"].tolist() and ak.all(result["MET_pt"] == source["MET_pt"])
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(result["Photon_energy"])),
        ak.to_numpy(ak.flatten(source["Photon_pt"] * np.cosh(source["Photon_eta"]))),
        rtol=1e-6,  # float32 pt and eta in the file
    )
    assert meta["cells"] == "hits" and "Photon_image" not in result.fields  # the default layout
    # the same showers as the in-memory path, and as another chunking with the dense cells
    eager = ak.to_numpy(ak.flatten(sim.run(particles.read(nano, collection="Photon"))))
    read_back = datasets.read(out)
    np.testing.assert_array_equal(read_back.images, eager)
    assert ak.flatten(result["Photon_nhits"]).tolist() == (eager > 0).sum(axis=(1, 2)).tolist()
    other = sim.run_file(nano, tmp_path / "other.root", collection="Photon", step_size=1000, cells="dense", compression="lz4:1", progress=False)
    dense = uproot.open(other)["Events"].arrays(["nPhoton_image", "Photon_image"])
    assert dense["nPhoton_image"].tolist() == (576 * source["nPhoton"]).tolist()
    np.testing.assert_array_equal(datasets.read(other).images, read_back.images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.root", "showers.root"]  # no temporary files left


def test_run_file_chunks_without_particles(sim: Simulator, nano: Path, tmp_path: Path) -> None:
    counts = uproot.open(nano)["Events"]["nPhoton"].array(library="np")
    assert (counts == 0).any()
    one = sim.run_file(nano, tmp_path / "one.root", collection="Photon", step_size=1, progress=False)
    assert uproot.open(one)["Events"]["nPhoton"].array(library="np").tolist() == counts.tolist()
    np.testing.assert_array_equal(datasets.read(one).images, ak.to_numpy(ak.flatten(sim.run(particles.read(nano, collection="Photon")))))
    chunks = [len(c) for c in datasets.iterate(one, step_size=25)]
    assert max(chunks) <= 25 and sum(chunks) == counts.sum()


def test_copy_branches_never_clobbers_the_output(sim: Simulator, nano: Path, tmp_path: Path) -> None:
    out = sim.run_file(nano, tmp_path / "all.root", collection="Photon", copy_branches=True, progress=False)
    keys = set(uproot.open(out)["Events"].keys())
    assert {"Electron_pt", "Electron_pdgId", "MET_pt", "event", "Photon_energy", "Photon_hit_energy"} <= keys
    assert "Photon_pt" not in keys and "nPhoton_eta" not in keys  # the input's own Photon branches are not copied
    with pytest.raises(ValueError, match="cannot copy \\['Photon_eta'\\]"):
        sim.run_file(nano, tmp_path / "x.root", collection="Photon", copy_branches=["Photon_eta"], progress=False)
    assert not (tmp_path / "x.root").exists()


def test_copied_branches_have_one_layout_at_any_step_size(tmp_path: Path) -> None:
    photons = ak.zip({"pt": [[10.0], [20.0], [30.0], [40.0]], "eta": [[0.0]] * 4, "phi": [[0.0]] * 4})
    muons = ak.zip({"pt": [[], [5.0], [6.0, 7.0], []], "eta": [[], [0.1], [0.2, 0.3], []]})  # nMuon, Muon_pt, Muon_eta
    # same prefix, own counters (nlep_pt, nlep_trk): equal counts in the first events only
    lep_pt, lep_trk = ak.Array([[], [], [1.0], [2.0, 3.0]]), ak.Array([[], [], [5.0, 6.0], [7.0]])
    columns = {"Photon": photons, "Muon": muons, "lep_pt": lep_pt, "lep_trk": lep_trk}
    path = tmp_path / "events.root"
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.type.content for k, v in columns.items()}).extend(columns)
    trees = []
    for step in (2, 10):
        out = Simulator(seed=1, device="cpu").run_file(path, tmp_path / f"step{step}.root", collection="Photon", step_size=step, copy_branches=True, progress=False)
        trees.append(uproot.open(out)["Events"].arrays())
    for tree in trees:
        assert tree["nMuon"].tolist() == [0, 1, 2, 0] and tree["Muon_eta"].tolist() == muons.eta.tolist()
        assert tree["lep_pt"].tolist() == lep_pt.tolist() and tree["lep_trk"].tolist() == lep_trk.tolist()
    assert trees[0].fields == trees[1].fields and "nMuon_pt" not in trees[0].fields
    # a Delphes-style collection (Particle.PT, ..., Particle_size) is the output's own: not copied
    delphes = ak.zip({"PT": [[10.0, 20.0], [5.0]], "Eta": [[0.0, 0.1], [0.2]], "Phi": [[0.0, 0.0], [0.0]], "PID": [[22, 11], [-11]], "E": [[10.0, 20.0], [5.0]]})
    with uproot.recreate(tmp_path / "delphes.root") as f:
        f.mktree("Delphes", {"Particle": delphes.type.content, "Weight": np.float64}, field_name=lambda o, i: f"{o}.{i}", counter_name=lambda c: f"{c}_size").extend(
            {"Particle": delphes, "Weight": np.array([0.5, 2.0])}
        )
    out = Simulator(seed=1, device="cpu").run_file(tmp_path / "delphes.root", tmp_path / "delphes_out.root", collection="Particle", copy_branches=True, progress=False)
    keys = set(uproot.open(out)["Delphes"].keys())
    assert "Weight" in keys and "nParticle" in keys and not any(k.startswith("Particle.") or k.startswith("nParticle.") for k in keys), keys


def test_run_file_hdf5_keeps_events(sim: Simulator, nano: Path, tmp_path: Path) -> None:
    out = sim.run_file(nano, tmp_path / "showers.h5", collection="Electron", step_size=100, progress=False)
    import h5py

    n_electron = uproot.open(nano)["Events"]["nElectron"].array(library="np")
    with h5py.File(out) as f:
        event = f["event"][:]
        assert f["showers"].shape == (n_electron.sum(), 576)
    np.testing.assert_array_equal(event, np.repeat(np.arange(len(n_electron)), n_electron))
    data = datasets.read(out)
    assert set(np.unique(data.pdgid)) <= {11, -11}
    with pytest.raises(ValueError, match="needs ROOT output"):
        sim.run_file(nano, tmp_path / "copy.h5", collection="Photon", copy_branches=True, progress=False)
    assert not (tmp_path / "copy.h5").exists()


def test_run_file_errors_leave_no_file(nano: Path, tmp_path: Path) -> None:
    strict = Simulator(seed=1, device="cpu")
    # electrons of a file whose energies run past the model's range in a later chunk
    path = tmp_path / "flat.root"
    with uproot.recreate(path) as f:
        f.mktree("particles", {"E": np.float64, "eta": np.float64, "phi": np.float64, "pdgid": np.int32}).extend(
            {"E": np.array([5.0, 6.0, 7.0, 500.0]), "eta": np.zeros(4), "phi": np.zeros(4), "pdgid": np.full(4, 11, np.int32)}
        )
    with pytest.raises(ValueError, match="energy outside"):
        strict.run_file(path, tmp_path / "out.root", step_size=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.root"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        strict.run_file(nano, tmp_path / "missing" / "out.root", collection="Photon", progress=False)
    with pytest.raises(FileExistsError, match="already exists"):
        strict.run_file(nano, path, collection="Photon", progress=False)
    with pytest.raises(Exception, match="Photn"):
        strict.run_file(nano, tmp_path / "out.root", collection="Photn", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.root"]


def test_run_file_flat_tree_and_empty_file(tmp_path: Path) -> None:
    sim = Simulator(seed=2, device="cpu")
    path = tmp_path / "flat.root"
    with uproot.recreate(path) as f:
        f.mktree("particles", {"E": np.float64, "eta": np.float64, "phi": np.float64, "pdgid": np.int32}).extend(
            {"E": np.array([5.0, 60.0]), "eta": np.zeros(2), "phi": np.zeros(2), "pdgid": np.array([22, -11], np.int32)}
        )
        f.mktree("empty", {"E": np.float64, "eta": np.float64, "phi": np.float64, "pdgid": np.int32})
    out = sim.run_file(path, tmp_path / "flat_out.root", tree="particles", progress=False)
    data = datasets.read(out)
    assert data.pdgid.tolist() == [22, -11] and data.images.shape == (2, 24, 24)
    empty = sim.run_file(path, tmp_path / "empty_out.root", tree="empty", progress=False)
    tree = uproot.open(empty)["empty"]
    assert tree.num_entries == 0 and {"nparticles", "particles_energy", "particles_nhits", "particles_hit_energy"} <= set(tree.keys())


def test_run_file_reads_a_tree_in_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "ntuple.root"  # as CMSSW's TFileService writes: demo/tree
    kinematics = {"energy": np.array([10.0, 20.0]), "eta": np.array([0.1, -0.2]), "phi": np.zeros(2)}
    with uproot.recreate(path) as f:
        f.mkdir("ana")
        f["ana"].mktree("photons", {k: np.float64 for k in kinematics}).extend(kinematics)
    for tree in ("ana/photons", None):  # named, or the file's only tree
        out = Simulator(seed=2, device="cpu").run_file(path, tmp_path / "out.root", tree=tree, particle="photon", overwrite=True, progress=False)
        data = datasets.read(out)
        assert data.energy.tolist() == [10.0, 20.0] and (data.images.sum(axis=(1, 2)) > 5).all()
        assert uproot.open(out).classnames(cycle=False)["photons"] == "TTree"


def test_skipped_particles_keep_their_own_energy_and_eta_in_the_output(tmp_path: Path) -> None:
    path = tmp_path / "outside.root"
    kinematics = {"energy": np.array([150.0, 10.0, 20.0]), "eta": np.array([0.2, 2.5, 0.3]), "phi": np.zeros(3)}
    with uproot.recreate(path) as f:
        f.mktree("particles", {k: np.float64 for k in kinematics}).extend(kinematics)
    for cells in ("hits", "dense"):
        out = Simulator(seed=2, device="cpu", out_of_range="skip").run_file(
            path, tmp_path / f"skip-{cells}.root", particle="photon", cells=cells, progress=False
        )
        data = datasets.read(out)
        assert data.energy.tolist() == [150.0, 10.0, 20.0] and data.eta.tolist() == [0.2, 2.5, 0.3]
        assert data.images[:2].sum() == 0 and data.images[2].sum() > 15
    clipped = datasets.read(Simulator(seed=2, device="cpu", out_of_range="clip").run_file(path, tmp_path / "clip.h5", particle="photon", progress=False))
    assert clipped.energy.tolist() == [100.0, 10.0, 20.0] and clipped.eta.tolist() == [0.2, 1.5, 0.3]  # simulated at


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_in_memory_model_pickles(dtype: str) -> None:
    import pickle

    from fastcalo.model import ModelConfig, ShowerModel

    torch.manual_seed(0)
    model = ShowerModel(ModelConfig(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,), energy_hidden=(8,), n_quantiles=9))
    sim = Simulator(model, seed=3, device="cpu", dtype=dtype)
    again = pickle.loads(pickle.dumps(sim))
    # the energy model stays in float32 on both sides (half precision rounds its quantile levels)
    for one in (sim, again):
        assert {p.dtype for p in one.model.energy.parameters()} == {torch.float32}
        assert {p.dtype for p in one.model.generator.parameters()} == {getattr(torch, dtype)}
    energies = [1.5, 3.0, 30.0, 90.0]
    np.testing.assert_array_equal(again.sample(energy=energies), sim.sample(energy=energies))


def test_dask_awkward_equals_eager(sim: Simulator, nano: Path) -> None:
    import dask_awkward as dak

    lazy_events = uproot.dask({str(nano): "Events"}, step_size=70)
    assert lazy_events.npartitions > 1
    photons = dak.zip(
        {"pt": lazy_events.Photon_pt, "eta": lazy_events.Photon_eta, "phi": lazy_events.Photon_phi, "mass": lazy_events.Photon_mass},
        with_name="Photon",
    )
    lazy = sim.run(photons)
    assert isinstance(lazy, dak.Array)
    # building the result computes nothing: a partition with an impossible energy fails only on compute
    broken = sim.run(dak.zip({"energy": photons.pt * 0 - 1.0, "eta": photons.eta, "phi": photons.phi}, with_name="Photon"))
    with pytest.raises(ValueError, match="negative values"):
        broken.compute()
    computed = lazy.compute()
    eager = sim.run(particles.read(nano, collection="Photon"))
    assert ak.num(computed).tolist() == ak.num(eager).tolist()
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(computed)), ak.to_numpy(ak.flatten(eager)))


@pytest.mark.filterwarnings("ignore:Branch Photon_mass already exists:RuntimeWarning")  # coffea zeroes it, as on real NanoAOD
def test_coffea_nanoevents(sim: Simulator, nano: Path) -> None:
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    class Schema(NanoAODSchema):
        warn_missing_crossrefs = False  # the example file has no jets for Electron_jetIdx & co.

    events = NanoEventsFactory.from_root({str(nano): "Events"}, schemaclass=Schema, mode="eager").events()
    showers = sim.run(events.Photon)
    eager = sim.run(particles.read(nano, collection="Photon"))
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(showers)), ak.to_numpy(ak.flatten(eager)))


def test_cli_simulate_with_local_cluster(nano: Path, tmp_path: Path) -> None:
    serial, parallel = tmp_path / "serial.root", tmp_path / "parallel.root"
    common = ["--collection", "Photon", "--seed", "9", "--step-size", "50", "--no-progress"]
    assert main(["simulate", str(nano), "-o", str(serial), *common]) == 0
    assert main(["simulate", str(nano), "-o", str(parallel), "--workers", "2", "--threads", "1", *common]) == 0
    np.testing.assert_array_equal(datasets.read(parallel).images, datasets.read(serial).images)
    assert uproot.open(parallel)["Events"]["nPhoton"].array().tolist() == uproot.open(nano)["Events"]["nPhoton"].array().tolist()
    empty = tmp_path / "empty.root"  # a tree without entries: an empty output, as the serial path writes
    assert main(["events", "-o", str(empty), "--n-events", "0"]) == 0
    assert main(["simulate", str(empty), "-o", str(tmp_path / "none.root"), "--workers", "1", "--threads", "1", *common]) == 0
    tree = uproot.open(tmp_path / "none.root")["Events"]
    assert tree.num_entries == 0 and {"nPhoton", "Photon_energy", "Photon_hit_energy"} <= set(tree.keys())


def test_cli_events_simulate_mc_like(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events, showers, reference = tmp_path / "events.root", tmp_path / "showers.root", tmp_path / "reference.h5"
    assert main(["events", "-o", str(events), "--n-events", "20", "--seed", "3"]) == 0
    assert main(["simulate", str(events), "-o", str(showers), "--collection", "Photon", "--no-progress"]) == 0
    assert main(["mc", "--like", str(showers), "-o", str(reference), "--seed", "2", "--no-progress"]) == 0
    generated, mc = datasets.read(showers), datasets.read(reference)
    for column in datasets.CONDITION_COLUMNS:  # HDF5 stores MeV: the GeV round trip costs the last bit
        np.testing.assert_allclose(getattr(mc, column), getattr(generated, column), rtol=1e-15)
    assert datasets.metadata(reference)["command"] == f"fastcalo mc --like {showers} -o {reference} --seed 2 --no-progress"
    before = reference.read_bytes()  # a --like file is never the output, --overwrite or not
    for argv in (["mc", "--like", str(reference), "-o", str(tmp_path / "." / reference.name), "--overwrite"],
                 ["simulate", "--like", str(reference), "-o", str(reference), "--overwrite"]):  # fmt: skip
        with pytest.raises(SystemExit, match="2"):
            main([*argv, "--no-progress"])
        assert f"is the input {reference} itself: writing it would replace the file being read" in capsys.readouterr().err
    assert reference.read_bytes() == before
    with pytest.raises(SystemExit, match="2"):
        main(["simulate", str(events), "-o", str(tmp_path / "x.root"), "--collection", "Photon", "--branch", "pt"])


def test_simulate_like_a_shower_file_is_the_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fastcalo simulate --like` gives the showers that Simulator.sample gives the same particles
    (the validation campaign's path is the users' path), in the reference's order, in chunks."""
    from fastcalo import mc

    reference, generated = tmp_path / "mc.h5", tmp_path / "generated.root"
    conditions = mc.sample_conditions(40, energy=(1.0, 100.0), eta=(-1.4, 1.4), particle="electron", seed=4)
    mc.simulate_to_file(conditions, reference, seed=4, progress=False)
    args = ["simulate", "--like", str(reference), "-o", str(generated), "--seed", "9", "--step-size", "7", "--no-progress"]
    assert main(args) == 0
    mine, theirs = datasets.read(generated), datasets.read(reference)
    for column in datasets.CONDITION_COLUMNS:
        np.testing.assert_allclose(getattr(mine, column), getattr(theirs, column), rtol=1e-15)
    direct = Simulator(seed=9, device="cpu").sample(
        energy=theirs.energy, eta=theirs.eta, phi=theirs.phi, particle=theirs.pdgid, impact_x=theirs.impact_x, impact_y=theirs.impact_y
    )
    np.testing.assert_array_equal(mine.images, direct)
    assert datasets.metadata(generated)["like"] == str(reference)
    for wrong in (["simulate", "--like", str(reference), str(reference), "-o", str(tmp_path / "x.h5")],
                  ["simulate", "--like", str(reference), "--collection", "Photon", "-o", str(tmp_path / "x.h5")],
                  ["simulate", "--like", str(reference), "--preset", "nanoaod", "-o", str(tmp_path / "x.h5")],
                  ["simulate", "-o", str(tmp_path / "x.h5")]):  # fmt: skip
        with pytest.raises(SystemExit, match="2"):
            main(wrong)
        assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_cli_errors_are_one_clear_line(nano: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="2"):
        main(["simulate", str(nano), "-o", str(tmp_path / "x.root"), "--collection", "Photn", "--no-progress"])
    err = capsys.readouterr().err
    assert "Photn_pt" in err and "Photon_pt" in err and "did you mean" in err
    assert not (tmp_path / "x.root").exists()


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_memory_does_not_grow_with_the_batch_size(threads: int) -> None:
    """On the CPU the networks run block by block whatever the batch size: a batch of 60 000 under
    an address-space cap (RLIMIT_AS, in a child process) that the whole batch's intermediates
    (60 000 x 1152 floats for the generator's output layer alone: 276 MB) would not fit in runs
    without an allocation failure, and gives the showers of a small batch."""
    script = textwrap.dedent(
        """
        import logging, resource, sys, numpy as np, torch
        torch.set_num_threads(int(sys.argv[1]))
        from fastcalo.simulator import Simulator
        logging.basicConfig(level=logging.WARNING)
        energy = np.geomspace(1.0, 100.0, 60_000)
        small = Simulator(seed=4, batch_size=2048, device="cpu").sample(energy=energy)
        vm = int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize")][0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 400 * 2**20, resource.RLIM_INFINITY))
        sim = Simulator(seed=4, batch_size=60_000, device="cpu")
        big = sim.sample(energy=energy)
        print("batch", sim.batch_size, "equal", bool(np.array_equal(big, small)))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, "-c", script, str(threads)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "halved" not in result.stderr
    assert result.stdout.split() == ["batch", "60000", "equal", "True"]


def test_public_api() -> None:
    assert fastcalo.Simulator is Simulator
    assert "Simulator" in fastcalo.__all__ and "particles" in fastcalo.__all__


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_keeps_the_totals_of_float32(dtype: str) -> None:
    """The network runs in half precision; the energy model, the totals, the noise and the threshold
    stay float32. (Casting everything made about one shower in 800 NaN or empty: uniforms rounded to
    1 and the energy model's quantile levels near 1 rounded together.)"""
    energy = np.full(8192, 10.0)
    ref = fastcalo.Simulator(device="cpu", seed=0).sample(energy=energy, eta=0.1)
    half = fastcalo.Simulator(device="cpu", seed=0, dtype=dtype).sample(energy=energy, eta=0.1)
    assert half.dtype == np.float32 and np.isfinite(half).all()
    assert np.count_nonzero(half.sum(axis=(1, 2)) == 0) == 0
    # the totals are the energy model's (float32) except where the network's rounding moves a cell
    # across the threshold at the re-suppression after the cell noise: a few threshold-sized cells
    # (measured with the third default: 21 of 8 192 showers in bfloat16, by up to 25 MeV; 15 in float16, 5 MeV)
    totals, ref_totals = half.sum(axis=(1, 2)), ref.sum(axis=(1, 2))
    off = ~np.isclose(totals, ref_totals, rtol=1e-4, atol=0)
    assert off.mean() < 0.01
    threshold = fastcalo.Simulator(device="cpu").detector.response.threshold
    assert np.abs(totals - ref_totals)[off].max() < 10 * threshold  # measured: up to 5 cells (bfloat16)
    assert np.abs(half - ref).max() < 0.5  # the shapes differ by the network's rounding only


def test_cli_choices_are_the_library_constants() -> None:
    """The parser spells out the presets, precisions and policies (to start without torch): they
    must be the library's."""
    import argparse

    from fastcalo.cli import _parser
    from fastcalo.engine import DTYPES, OUT_OF_RANGE

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = {a.dest: tuple(a.choices) for a in sub.choices["simulate"]._actions if a.choices}
    assert choices == {"preset": particles.PRESETS, "dtype": tuple(DTYPES), "out_of_range": OUT_OF_RANGE, "cells": datasets.CELL_LAYOUTS}
    import inspect

    from fastcalo.simulator import STEP_SIZE

    defaults = {a.dest: a.default for a in sub.choices["simulate"]._actions}
    assert defaults["step_size"] == STEP_SIZE == inspect.signature(Simulator.run_file).parameters["step_size"].default


# -- nothing silent: bad models and bad arguments are errors, never zeros or truncation (reliability)


def _tiny(**changes: object):  # type: ignore[no-untyped-def]
    from fastcalo.model import ModelConfig, ShowerModel

    torch.manual_seed(0)
    config = ModelConfig(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,), energy_hidden=(8,), n_quantiles=9, **changes)  # type: ignore[arg-type]
    return ShowerModel(config)


@pytest.mark.parametrize("cell_noise", [False, True])
@pytest.mark.parametrize("network", ["generator", "energy"])
def test_a_model_with_nan_weights_is_an_error_not_empty_showers(network: str, cell_noise: bool) -> None:
    model = _tiny(cell_noise=cell_noise)
    with torch.no_grad():
        for parameter in getattr(model, network).parameters():
            parameter.fill_(float("nan"))
    sim = Simulator(model, device="cpu", seed=1)
    with pytest.raises(ValueError, match=r"non-finite shower\(s\) \(NaN or inf\), the first for particle 7 \(E=10.0 GeV"):
        sim.sample(energy=[10.0, 50.0], first_index=7)


def test_a_model_whose_showers_are_all_empty_is_an_error() -> None:
    """A total forced to zero (r_mean far below 0: finite, so the model loads) gives only empty
    images: an error. Skipped particles do not count; the shipped model never trips the rule."""
    from fastcalo.model import Preprocessing, ShowerModel

    tiny = _tiny()
    broken = ShowerModel(tiny.config, preprocessing=Preprocessing(r_mean=-10.0))
    broken.load_state_dict(tiny.state_dict())
    with pytest.raises(ValueError, match=r"empty showers for all 3 simulated particle\(s\) of E >= 0.5 GeV .*first particle 0 \(E=1.0 GeV\)"):
        Simulator(broken, device="cpu").sample(energy=[1.0, 10.0, 100.0])
    skipped = Simulator(broken, device="cpu", out_of_range="skip").sample(energy=[500.0, 0.5])
    assert not skipped.any()  # all skipped by the policy: nothing simulated, nothing to refuse
    energy = np.full(2048, 1.0)  # the faintest showers in range, one call and one shower at a time
    images = Simulator(seed=3, device="cpu").sample(energy=energy, eta=np.linspace(-1.5, 1.5, 2048), particle="positron")
    assert (images.reshape(2048, -1).max(axis=1) > 10 * 0.005).all()
    for index in (0, 1, 2):
        assert Simulator(seed=3, device="cpu").sample(energy=1.0, eta=1.5, first_index=index).any()


def test_out_of_range_energy_is_printed_with_enough_digits(sim: Simulator) -> None:
    with pytest.raises(ValueError, match=r"energy outside \[1.0, 100.0\] GeV, first particle 1: E=100.0000001 GeV"):
        sim.sample(energy=[50.0, 100.0000001])
    with pytest.raises(ValueError, match=r"eta outside \[-1.5, 1.5\], first particle 0: E=5.0 GeV, eta=1.5000000001"):
        sim.sample(energy=5.0, eta=1.5000000001)


def test_particle_arrays_as_names_ids_or_both(sim: Simulator) -> None:
    """An array of particles maps each distinct value once: names (any case), ids, floats with
    integer values and mixtures give the same showers, bad entries the same errors."""
    energy = np.array([5.0, 20.0, 50.0, 7.0])
    ids = sim.sample(energy=energy, particle=np.array([22, 11, -11, 22]))
    for particle in (["photon", "electron", "positron", "Photon"], np.array([22.0, 11.0, -11.0, 22.0]), ["photon", 11, -11.0, 22]):
        np.testing.assert_array_equal(sim.sample(energy=energy, particle=particle), ids)
    with pytest.raises(ValueError, match="unknown particle 'muon'"):
        sim.sample(energy=energy, particle=["photon", "muon", "photon", 22])
    with pytest.raises(ValueError, match="unknown particle 13"):
        sim.sample(energy=energy, particle=[22, 13, 22, 11])


def test_particle_ids_and_counts_are_integers(sim: Simulator) -> None:
    np.testing.assert_array_equal(sim.sample(energy=10.0, particle=11.0, n=2), sim.sample(energy=10.0, particle=11, n=2))
    for particle in (11.2, 22.7, [22, 22.5]):
        with pytest.raises(ValueError, match=r"sample: particle: a PDG id must be an integer \(e.g. 22 or 22.0\), got (11.2|22.7|22.5)"):
            sim.sample(energy=10.0, particle=particle)
    with pytest.raises(ValueError, match="unknown particle 4294967318"):
        sim.sample(energy=10.0, particle=2**32 + 22)
    for n in (2.5, -1, True, "3"):
        with pytest.raises(ValueError, match=r"sample: n must be an integer >= 0 \(the number of showers\), got"):
            sim.sample(energy=10.0, n=n)  # type: ignore[arg-type]
    assert sim.sample(energy=10.0, n=0).shape == (0, 24, 24)
    assert sim.sample(energy=10.0, n=np.int64(2)).shape == (2, 24, 24)
    from fastcalo.engine import Particles

    with pytest.raises(ValueError, match=r"PDG ids must be integers .* the first 22.7 at index 1"):
        Particles.of(energy=[1.0, 2.0], pdgid=[22, 22.7])
    with pytest.raises(ValueError, match=r"PDG ids must lie in the int32 range .* the first 4294967318"):
        Particles.of(energy=1.0, pdgid=np.int64(2**32 + 22))


@pytest.mark.parametrize("seed", [1.5, 1.0, -1, 2**63, 2**64 + 3, True, "1"])
def test_seeds_are_integers_in_range(seed: object) -> None:
    from fastcalo.engine import Engine

    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\), got"):
        Simulator(seed=seed, device="cpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        Engine(_tiny(), seed=seed)  # type: ignore[arg-type]


def test_seed_limits_and_devices() -> None:
    assert Simulator(seed=2**63 - 1, device="cpu").seed == 2**63 - 1
    assert Simulator(seed=np.uint64(5), device="cpu").seed == 5
    for device in ("gpu", "tpu", "meta", "xla", "cuda:x"):
        with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got"):
            Simulator(device=device)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        (["--device", "gpu"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        (["--threads", "-1"], "--threads must be 0 (torch's choice) or a positive number of threads, got -1"),
        (["--seed", "-1"], "seed must be an integer in [0, 2**63), got -1 (int)"),
        (["--seed", str(2**64)], "seed must be an integer in [0, 2**63), got 18446744073709551616"),
    ],
)
def test_cli_simulate_bad_options_are_one_line(nano: Path, tmp_path: Path, one_line_error: Callable[[list[str]], str], args: list[str], message: str) -> None:
    line = one_line_error(["simulate", str(nano), "-o", str(tmp_path / "x.root"), "--collection", "Photon", "--no-progress", *args])
    assert message in line, line
    assert list(tmp_path.iterdir()) == []


def test_cli_simulate_damaged_root_file_is_one_line(tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    good = particles.write_example(tmp_path / "events.root", n_events=2000, seed=1)
    blob = bytearray(good.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 64] = bytes(b ^ 0xFF for b in blob[middle : middle + 64])
    damaged = tmp_path / "damaged.root"
    damaged.write_bytes(bytes(blob))
    line = one_line_error(["simulate", str(damaged), "-o", str(tmp_path / "x.h5"), "--collection", "Photon", "--device", "cpu", "--no-progress"])
    assert f"{damaged}: not a readable ROOT file (" in line
    assert not (tmp_path / "x.h5").exists()
    truncated = tmp_path / "truncated.root"  # a copy cut short: uproot reads fewer bytes than it asks for
    truncated.write_bytes(good.read_bytes()[:3000])
    line = one_line_error(["simulate", str(truncated), "-o", str(tmp_path / "x.h5"), "--collection", "Photon", "--device", "cpu", "--no-progress"])
    assert f"{truncated}: not a readable ROOT file (" in line and "truncated" in line
    assert not (tmp_path / "x.h5").exists()


def test_cli_simulate_broken_model_is_one_line(nano: Path, tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    import shutil

    from fastcalo.model import DEFAULT_MODEL

    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    meta = json.loads((model / "model.json").read_text())
    meta["preprocessing"]["r_std"] = float("nan")
    (model / "model.json").write_text(json.dumps(meta))
    line = one_line_error(["simulate", str(nano), "-o", str(tmp_path / "x.root"), "--model", str(model), "--collection", "Photon", "--no-progress"])
    assert "preprocessing.r_std must be a finite number > 0, got nan" in line
    assert not (tmp_path / "x.root").exists()
