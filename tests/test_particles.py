"""fastcalo.particles: ROOT trees and awkward collections -> the standard particle record."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
import vector

from fastcalo import particles as fp

M_E = 0.51099895069e-3  # GeV, PDG electron mass (particle package, 2024 values)

PT = [[30.0, 12.5], [], [4.0], [], [80.0, 2.0, 9.0]]
ETA = [[0.1, -0.7], [], [1.2], [], [0.0, -1.4, 0.5]]
PHI = [[0.3, -2.0], [], [3.0], [], [1.0, -0.5, 0.0]]
COUNTS = [2, 0, 1, 0, 3]


def _jagged(values: list[list[float]], dtype: Any = np.float32) -> ak.Array:
    return ak.values_astype(ak.Array(values), dtype)


def write_tree(path: Path, data: dict[str, Any], *, tree: str = "Events", delphes: bool = False) -> Path:
    """Write one TTree with uproot (NanoAOD naming, or Delphes' C.Field and C_size)."""
    types = {k: (v.type.content if isinstance(v, ak.Array) else np.asarray(v).dtype) for k, v in data.items()}
    options: dict[str, Any] = {}
    if delphes:
        options = {"field_name": lambda outer, inner: f"{outer}.{inner}", "counter_name": lambda c: f"{c}_size"}
    mode = uproot.update if path.exists() else uproot.recreate
    with mode(path) as f:
        t = f.mktree(tree, types, **options)
        if len(next(iter(data.values()))):
            t.extend(data)
    return path


def photons() -> ak.Array:
    zero = _jagged(ak.zeros_like(PT))
    return ak.zip({"pt": _jagged(PT), "eta": _jagged(ETA), "phi": _jagged(PHI), "mass": zero})


def kinetic(p: np.ndarray, mass: float) -> np.ndarray:
    return np.sqrt(p**2 + mass**2) - mass


# --- NanoAOD ---------------------------------------------------------------------------------


def test_nanoaod_photon_round_trip(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "nano.root", {"Photon": photons(), "MET_pt": np.ones(5, np.float32)})
    out = fp.read(path, collection="Photon")
    assert out.fields == list(fp.FIELDS)
    assert str(out.type) == "5 * var * {energy: float64, eta: float64, phi: float64, pdgid: int32}"
    assert ak.num(out).tolist() == COUNTS
    pt = ak.flatten(_jagged(PT)).to_numpy().astype(np.float64)
    eta = ak.flatten(_jagged(ETA)).to_numpy().astype(np.float64)
    np.testing.assert_allclose(ak.flatten(out.energy).to_numpy(), pt * np.cosh(eta), rtol=1e-12)
    np.testing.assert_array_equal(ak.flatten(out.eta).to_numpy(), eta)  # order kept
    np.testing.assert_allclose(ak.flatten(out.phi).to_numpy(), ak.flatten(_jagged(PHI)).to_numpy(), rtol=1e-15)
    assert set(ak.flatten(out.pdgid).tolist()) == {22}


def test_nanoaod_electron_kinetic_energy_and_ids(tmp_path: Path) -> None:
    charge = ak.Array([[-1, 1], [], [1], [], [-1, -1, 1]])
    electrons = ak.zip(
        {"pt": _jagged(PT), "eta": _jagged(ETA), "phi": _jagged(PHI), "mass": _jagged(ak.full_like(PT, M_E)),
         "charge": ak.values_astype(charge, np.int32), "pdgId": ak.values_astype(-11 * charge, np.int32)}
    )
    path = write_tree(tmp_path / "nano.root", {"Electron": electrons})
    out = fp.read(path, collection="Electron")
    assert ak.num(out).tolist() == COUNTS
    assert out.pdgid.tolist() == (-11 * charge).tolist()
    # by hand: |p| = pt cosh(eta), T = sqrt(p^2 + m^2) - m, m the PDG electron mass
    p = 30.0 * math.cosh(float(np.float32(0.1)))
    assert out.energy[0, 0] == pytest.approx(math.sqrt(p * p + M_E * M_E) - M_E, rel=1e-12)
    pt = ak.flatten(_jagged(PT)).to_numpy().astype(np.float64)
    eta = ak.flatten(_jagged(ETA)).to_numpy().astype(np.float64)
    np.testing.assert_allclose(ak.flatten(out.energy).to_numpy(), kinetic(pt * np.cosh(eta), M_E), rtol=1e-12)

    # without Electron_pdgId the charge decides: -1 -> 11, +1 -> -11
    path2 = write_tree(tmp_path / "charge.root", {"Electron": electrons[["pt", "eta", "phi", "charge"]]})
    assert fp.read(path2, collection="Electron").pdgid.tolist() == out.pdgid.tolist()


def test_nanoaod_genpart_selects_final_state_photons_and_electrons(tmp_path: Path) -> None:
    gen = ak.zip(
        {
            "pt": _jagged([[10.0, 20.0, 30.0, 40.0], [5.0, 6.0], [], [7.0, 8.0]]),
            "eta": _jagged([[0.0, 0.1, 0.2, 0.3], [0.4, 0.5], [], [0.6, 0.7]]),
            "phi": _jagged([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0], [], [0.0, 0.0]]),
            "pdgId": ak.values_astype(ak.Array([[22, 211, 11, -11], [22, 1], [], [-11, 22]]), np.int32),
            "status": ak.values_astype(ak.Array([[1, 1, 1, 1], [2, 1], [], [1, 1]]), np.int32),
        }
    )
    path = write_tree(tmp_path / "gen.root", {"GenPart": gen})
    out = fp.read(path, collection="GenPart")
    assert out.pdgid.tolist() == [[22, 11, -11], [], [], [-11, 22]]  # pions, quarks, status 2 dropped
    assert ak.num(out).tolist() == [3, 0, 0, 2]  # counts follow the selection
    assert ak.flatten(out.eta).tolist() == pytest.approx([0.0, 0.2, 0.3, 0.6, 0.7], abs=1e-7)
    assert fp.read(path, collection="GenPart", particle="photon").pdgid.tolist() == [[22], [], [], [22]]
    assert fp.read(path, collection="GenPart", particle="positron").pdgid.tolist() == [[11, -11], [], [], [-11]]


# --- Delphes ---------------------------------------------------------------------------------


def test_delphes_dotted_branches_written_and_read(tmp_path: Path) -> None:
    ph = ak.zip({"PT": _jagged(PT), "Eta": _jagged(ETA), "Phi": _jagged(PHI), "E": _jagged(PT) * 0})
    ph["E"] = ph.PT * np.cosh(ph.Eta)
    el = ak.zip({"PT": _jagged(PT), "Eta": _jagged(ETA), "Phi": _jagged(PHI),
                 "Charge": ak.values_astype(ak.Array([[1, -1], [], [-1], [], [1, 1, -1]]), np.int32)})
    part = ak.zip({"PT": _jagged([[10.0, 20.0], [30.0]]), "Eta": _jagged([[0.0, 0.1], [0.2]]),
                   "Phi": _jagged([[0.0, 0.1], [0.2]]),
                   "PID": ak.values_astype(ak.Array([[22, 2212], [-11]]), np.int32),
                   "Status": ak.values_astype(ak.Array([[1, 1], [1]]), np.int32)})
    path = write_tree(tmp_path / "delphes.root", {"Photon": ph, "Electron": el}, tree="Delphes", delphes=True)
    write_tree(path, {"Particle": part}, tree="Gen", delphes=True)
    with uproot.open(path) as f:
        # uproot writes Delphes' names: a counter C_size and one branch C.Field per field
        assert f["Delphes"].keys() == ["Photon_size", "Photon.PT", "Photon.Eta", "Photon.Phi", "Photon.E",
                                       "Electron_size", "Electron.PT", "Electron.Eta", "Electron.Phi",
                                       "Electron.Charge"]
    out = fp.read(path, tree="Delphes", collection="Photon")  # auto -> delphes
    assert ak.num(out).tolist() == COUNTS and set(ak.flatten(out.pdgid).tolist()) == {22}
    np.testing.assert_allclose(ak.flatten(out.energy).to_numpy(), ak.flatten(ph.E).to_numpy(), rtol=1e-6)
    electrons = fp.read(path, tree="Delphes", collection="Electron", preset="delphes")
    assert electrons.pdgid.tolist() == [[-11, 11], [], [11], [], [-11, -11, 11]]
    gen = fp.read(path, tree="Gen", collection="Particle")
    assert gen.pdgid.tolist() == [[22], [-11]]  # the proton is dropped


def test_delphes_underscore_style(tmp_path: Path) -> None:
    ph = ak.zip({"PT": _jagged(PT), "Eta": _jagged(ETA), "Phi": _jagged(PHI)})
    path = write_tree(tmp_path / "d.root", {"Photon": ph}, tree="Delphes")  # Photon_PT, ...
    out = fp.read(path, collection="Photon", preset="delphes")
    assert ak.num(out).tolist() == COUNTS
    assert fp.read(path, collection="Photon").tolist() == out.tolist()  # auto, case-insensitive


# --- flat trees and mappings -----------------------------------------------------------------


def test_flat_energy_eta_phi_pdgid(tmp_path: Path) -> None:
    data = {"E": np.array([10.0, 50.0, 1.0]), "eta": np.array([0.0, 1.0, -1.0]),
            "phi": np.array([0.0, 1.0, 2.0]), "pdgid": np.array([22, 11, -11], np.int32)}
    out = fp.read(write_tree(tmp_path / "flat.root", data, tree="particles"))
    assert str(out.type) == "3 * {energy: float64, eta: float64, phi: float64, pdgid: int32}"
    # E is the total energy: the kinetic energy of an electron is E - m
    np.testing.assert_allclose(out.energy.to_numpy(), [10.0, 50.0 - M_E, 1.0 - M_E], rtol=1e-14)
    assert out.pdgid.tolist() == [22, 11, -11]


def test_flat_px_py_pz(tmp_path: Path) -> None:
    data = {"px": np.array([3.0, 0.0]), "py": np.array([4.0, 2.0]), "pz": np.array([0.0, 1.0])}
    out = fp.read(write_tree(tmp_path / "flat.root", data), particle="positron")
    np.testing.assert_allclose(out.energy.to_numpy(), kinetic(np.array([5.0, math.sqrt(5.0)]), M_E), rtol=1e-14)
    np.testing.assert_allclose(out.eta.to_numpy(), [0.0, math.asinh(0.5)], atol=1e-15)
    np.testing.assert_allclose(out.phi.to_numpy(), [math.atan2(4, 3), math.pi / 2], rtol=1e-15)
    assert out.pdgid.tolist() == [-11, -11]


def test_flat_pt_eta_phi_case_insensitive(tmp_path: Path) -> None:
    data = {"PT": np.array([10.0]), "Eta": np.array([0.5]), "Phi": np.array([0.1]),
            "pdgId": np.array([22], np.int32), "impact_x": np.array([2.5]), "impact_y": np.array([7.5])}
    out = fp.read(write_tree(tmp_path / "flat.root", data), preset="flat")
    assert out.fields == [*fp.FIELDS, *fp.OPTIONAL_FIELDS]
    assert out.energy[0] == pytest.approx(10.0 * math.cosh(0.5), rel=1e-14)
    assert (out.impact_x[0], out.impact_y[0]) == (2.5, 7.5)


def test_flat_without_particle_type_says_how(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "flat.root", {"pt": np.array([10.0]), "eta": np.zeros(1), "phi": np.zeros(1)})
    with pytest.raises(ValueError, match="particle='photon'"):
        fp.read(path)


def test_explicit_mapping(tmp_path: Path) -> None:
    data = {"ph_pt": _jagged(PT), "ph_eta": _jagged(ETA), "ph_phi": _jagged(PHI)}
    with uproot.recreate(tmp_path / "m.root") as f:  # three jagged branches sharing no counter name
        f.mktree("t", {k: v.type.content for k, v in data.items()}).extend(data)
    mapping = {"pt": "ph_pt", "eta": "ph_eta", "phi": "ph_phi"}
    out = fp.read(tmp_path / "m.root", branches=mapping, particle="photon")
    assert ak.num(out).tolist() == COUNTS
    np.testing.assert_allclose(ak.flatten(out.energy).to_numpy(),
                               ak.flatten(_jagged(PT) * np.cosh(_jagged(ETA))).to_numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown key"):
        fp.read(tmp_path / "m.root", branches={**mapping, "momentum": "ph_pt"}, particle="photon")
    with pytest.raises(fp.BranchError, match="did you mean 'ph_eta'"):
        fp.read(tmp_path / "m.root", branches={**mapping, "eta": "ph_etta"}, particle="photon")


def test_auto_detection(tmp_path: Path) -> None:
    nano = write_tree(tmp_path / "nano.root", {"Photon": photons()})
    delphes_ph = ak.zip({"PT": _jagged(PT), "Eta": _jagged(ETA), "Phi": _jagged(PHI)})
    delphes = write_tree(tmp_path / "delphes.root", {"Photon": delphes_ph}, tree="Delphes", delphes=True)
    expected = fp.read(nano, collection="Photon", preset="nanoaod").tolist()
    assert fp.read(nano, collection="Photon").tolist() == expected
    assert fp.read(delphes, collection="Photon").tolist() == fp.read(nano, collection="Photon").tolist()
    with pytest.raises(fp.BranchError, match=r"looked for Jet_pt \(NanoAOD\) and Jet.PT \(Delphes\)"):
        fp.read(nano, collection="Jet")
    with pytest.raises(fp.BranchError, match=r"collections in this tree: Photon \(pass collection= to read one\)"):
        fp.read(nano)  # no collection: a flat tree is expected
    with pytest.raises(ValueError, match="unknown preset"):
        fp.read(nano, collection="Photon", preset="cms")


def test_rntuple_written_by_uproot_default(tmp_path: Path) -> None:
    # uproot >= 5.7 writes an RNTuple on assignment; its records read like Delphes' C.Field
    with uproot.recreate(tmp_path / "rn.root") as f:
        f["Events"] = {"Photon": photons()}
    out = fp.read(tmp_path / "rn.root", collection="Photon")
    assert ak.num(out).tolist() == COUNTS and set(ak.flatten(out.pdgid).tolist()) == {22}


# --- example file ----------------------------------------------------------------------------


def test_write_example(tmp_path: Path) -> None:
    path = fp.write_example(tmp_path / "example.root", n_events=1000, seed=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.root"]  # atomic: no temp file left
    with uproot.open(path) as f:
        t = f["Events"]
        assert {"run", "luminosityBlock", "event", "nPhoton", "nElectron", "MET_pt", "Photon_mass",
                "Electron_charge", "Electron_pdgId"} <= set(t.keys())
        assert t["event"].typename == "uint64_t"
        raw = t.arrays(["nPhoton", "nElectron", "Electron_charge", "Electron_pdgId"])
    photons_ = fp.read(path, collection="Photon")
    electrons = fp.read(path, collection="Electron")
    assert ak.num(photons_).tolist() == raw.nPhoton.tolist()
    assert ak.num(electrons).tolist() == raw.nElectron.tolist()
    assert 50 < ak.sum(ak.num(photons_) == 0) < 250  # Poisson(2): e^-2 = 13.5 % empty
    assert ak.mean(ak.num(photons_)) == pytest.approx(2.0, abs=0.15)
    assert ak.mean(ak.num(electrons)) == pytest.approx(1.0, abs=0.1)
    assert ak.all(raw.Electron_pdgId == -11 * raw.Electron_charge)
    for out in (photons_, electrons):
        energy = ak.flatten(out.energy).to_numpy()
        assert energy.min() >= 1.0 * (1 - 1e-6) and energy.max() <= 100.0 * (1 + 1e-6)
        assert np.median(energy) == pytest.approx(10.0, rel=0.25)  # log-uniform: median sqrt(1*100)
        assert np.abs(ak.flatten(out.eta).to_numpy()).max() < 1.4
        assert np.abs(ak.flatten(out.phi).to_numpy()).max() <= math.pi
    with pytest.raises(FileExistsError):
        fp.write_example(path)
    again = fp.write_example(path, n_events=1000, seed=3, overwrite=True)
    assert fp.read(again, collection="Photon").tolist() == photons_.tolist()  # same seed, same file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.root"]


# --- awkward collections -----------------------------------------------------------------------


def test_standardize_record_names_and_behaviors() -> None:
    fields = {"pt": PT, "eta": ETA, "phi": PHI}
    coffea_like = ak.zip(fields, with_name="Photon")
    out = fp.standardize(coffea_like)
    assert ak.num(out).tolist() == COUNTS and set(ak.flatten(out.pdgid).tolist()) == {22}
    assert ak.parameters(out.layout.content) == {}  # the "Photon" name is not carried over
    with pytest.raises(ValueError, match="charge or pdgId"):
        fp.standardize(ak.zip(fields, with_name="Electron"))
    with pytest.raises(ValueError, match="record name 'Muon'"):
        fp.standardize(ak.zip(fields, with_name="Muon"))
    # vector's own records (fields renamed rho, tau) and vector behaviors
    p4 = vector.zip({**fields, "mass": ak.zeros_like(PT)})
    assert fp.standardize(p4, particle="photon").tolist() == fp.standardize(coffea_like).tolist()
    named = ak.zip({**fields, "mass": ak.zeros_like(PT)}, with_name="Momentum4D",
                   behavior=vector.backends.awkward.behavior)
    assert fp.standardize(named, particle=22).tolist() == fp.standardize(coffea_like).tolist()
    # already standard: passes through, idempotent
    assert fp.standardize(out).tolist() == out.tolist()
    # a plain dict of arrays, flat
    flat = fp.standardize({"energy": [5.0, 6.0], "eta": [0.0, 0.1], "phi": [0.0, 0.2], "pdgId": [11, 22]})
    assert str(flat.type) == "2 * {energy: float64, eta: float64, phi: float64, pdgid: int32}"


def test_standardize_with_coffea_nanoevents(tmp_path: Path) -> None:
    nanoevents = pytest.importorskip("coffea.nanoevents")
    path = fp.write_example(tmp_path / "nano.root", n_events=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coffea warns about cross-references the example lacks
        events = nanoevents.NanoEventsFactory.from_root(
            {str(path): "Events"}, schemaclass=nanoevents.NanoAODSchema, mode="eager"
        ).events()
    assert fp.standardize(events.Photon).tolist() == fp.read(path, collection="Photon").tolist()
    assert fp.standardize(events.Electron).tolist() == fp.read(path, collection="Electron").tolist()
    with pytest.raises(ValueError, match="pass one collection"):
        fp.standardize(events)


def test_standardize_refuses_dask() -> None:
    dak = pytest.importorskip("dask_awkward")
    lazy = dak.from_awkward(ak.zip({"pt": PT, "eta": ETA, "phi": PHI}), npartitions=2)
    with pytest.raises(TypeError, match="dask-awkward"):
        fp.standardize(lazy, particle="photon")


def test_standardize_particle_must_agree() -> None:
    electrons = ak.zip({"pt": [[5.0, 6.0]], "eta": [[0.0, 0.0]], "phi": [[0.0, 0.0]], "pdgId": [[11, -11]]})
    assert fp.standardize(electrons, particle="electron").pdgid.tolist() == [[11, -11]]  # e+- family
    with pytest.raises(ValueError, match=r"pdgId: 2 PDG ids other than 22 \(particle='photon'\)"):
        fp.standardize(electrons, particle="photon")
    with pytest.raises(ValueError, match="unknown particle 'muon'"):
        fp.standardize(electrons, particle="muon")
    charged = ak.zip({"pt": [[5.0, 6.0]], "eta": [[0.0, 0.0]], "phi": [[0.0, 0.0]], "charge": [[-1, 1]]}, with_name="Electron")
    assert fp.standardize(charged).pdgid.tolist() == [[11, -11]]  # typed by the charge
    assert fp.standardize(charged, particle="positron").pdgid.tolist() == [[11, -11]]
    with pytest.raises(ValueError, match=r"charge: the collection 'Electron' holds electrons and positrons .*not particle='photon'"):
        fp.standardize(charged, particle="photon")


# --- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("pt", math.nan, r"pt: 1 non-finite values \(NaN, inf or None\), the first at event 2, particle 0 \(nan\)$"),
        ("eta", math.inf, r"eta: 1 non-finite values .* event 2, particle 0 \(inf\)"),
        ("pt", -4.0, r"pt: 1 negative values, the first at event 2, particle 0 \(-4.0\)"),
    ],
)
def test_bad_kinematics_are_errors(field: str, value: float, expected: str) -> None:
    data = {"pt": [list(e) for e in PT], "eta": [list(e) for e in ETA], "phi": [list(e) for e in PHI]}
    data[field][2][0] = value
    with pytest.raises(ValueError, match=expected):
        fp.standardize(ak.zip(data), particle="photon")


def test_bad_values_located_in_file_and_flat_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"energy: 2 negative values, the first at entry 1 \(-1.0\)"):
        fp.standardize({"energy": [1.0, -1.0, -2.0], "eta": [0, 0, 0], "phi": [0, 0, 0]}, particle="photon")
    with pytest.raises(ValueError, match=r"eta \(from px, py, pz\): 1 non-finite values .* entry 0 \(inf\)"):
        fp.standardize({"px": [0.0], "py": [0.0], "pz": [5.0]}, particle="photon")  # along the beam
    with pytest.raises(ValueError, match="PDG ids that fastcalo does not simulate"):
        fp.standardize({"pt": [1.0], "eta": [0.0], "phi": [0.0], "pdgid": [13]})
    with pytest.raises(ValueError, match="charges other than"):
        fp.standardize({"pt": [1.0], "eta": [0.0], "phi": [0.0], "charge": [0]}, particle="electron")
    # unsigned branches: compared as numbers, not wrapped or refused by numpy's bounds check
    unsigned = {"pt": np.ones(2), "eta": np.zeros(2), "phi": np.zeros(2)}
    assert fp.standardize({**unsigned, "pdgId": np.array([22, 11], np.uint32)}).pdgid.tolist() == [22, 11]
    assert fp.standardize({**unsigned, "charge": np.array([1, 1], np.uint8)}, particle="electron").pdgid.tolist() == [-11, -11]  # e+
    with pytest.raises(ValueError, match=r"charge: 1 charges other than \+1 or -1 .* \(255\)"):
        fp.standardize({**unsigned, "charge": np.array([255, 1], np.uint8)}, particle="electron")
    with pytest.raises(ValueError, match=r"PDG ids outside the int32 range .* \(4294967274\)"):
        fp.standardize({**unsigned, "pdgId": np.array([22, 2**32 - 22], np.uint32)})
    with pytest.raises(ValueError, match="below the particle's mass"):
        fp.standardize({"E": [1e-4], "eta": [0.0], "phi": [0.0]}, particle="electron")
    ph = photons()
    ph["pt"] = ak.where(ak.local_index(ph.pt) == 2, np.float32(np.nan), ph.pt)  # event 4, particle 2
    path = write_tree(tmp_path / "bad.root", {"Photon": ph})
    with pytest.raises(ValueError, match=r"bad.root:Events: Photon_pt: 1 non-finite .* event 4, particle 2"):
        fp.read(path, collection="Photon")
    with pytest.raises(ValueError, match=r"event 4, particle 2"):  # global entry numbers when chunked
        list(fp.iterate(path, collection="Photon", step_size=3))


# --- errors that help ------------------------------------------------------------------------


def test_missing_branch_names_near_misses_and_branches(tmp_path: Path) -> None:
    ph = photons()
    ph = ak.zip({"pt": ph.pt, "etaa": ph.eta, "phi": ph.phi})
    path = write_tree(tmp_path / "nano.root", {"Photon": ph, "MET_pt": np.ones(5, np.float32)})
    with pytest.raises(fp.BranchError) as info:
        fp.read(path, collection="Photon")
    message = str(info.value)
    assert isinstance(info.value, KeyError) and info.value.branch == "Photon_eta"
    assert message.startswith("branch 'Photon_eta' not found in ")
    assert "nano.root:Events" in message and "did you mean 'Photon_etaa'" in message
    assert "branches of 'Photon': Photon_phi;" in message
    assert "the tree has 5 branches: nPhoton, Photon_pt, Photon_etaa, Photon_phi, MET_pt" in message
    assert "\n" not in message


def test_long_branch_lists_are_truncated(tmp_path: Path) -> None:
    data = {f"b{i:02d}": np.zeros(2) for i in range(30)}
    path = write_tree(tmp_path / "wide.root", data)
    with pytest.raises(fp.BranchError, match=r"b19, \.\.\. \(10 more\)$"):
        fp.read(path, branches={"pt": "b00", "eta": "b01", "phi": "bb02"}, particle="photon")


def test_missing_tree_and_file(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "two.root", {"x": np.zeros(2)}, tree="Events")
    write_tree(path, {"y": np.zeros(2)}, tree="Runs")
    with pytest.raises(fp.TreeError, match=r"no tree 'Event' in .*two.root; did you mean 'Events'\?; "
                                           r"the file has trees: Events, Runs"):
        fp.read(path, tree="Event")
    with pytest.raises(ValueError, match="several TTrees, Events, Runs: pass tree="):
        fp.open_tree(path)
    with pytest.raises(FileNotFoundError, match=r"no such file: .*tow.root; did you mean .*two.root"):
        fp.read(tmp_path / "tow.root")
    tree = fp.open_tree(path, "Runs")
    assert tree.num_entries == 2
    tree.file.close()


# --- empty input -----------------------------------------------------------------------------


def test_empty_events_and_zero_particles(tmp_path: Path) -> None:
    none = ak.zip({"pt": _jagged([[], [], []]), "eta": _jagged([[], [], []]), "phi": _jagged([[], [], []])})
    path = write_tree(tmp_path / "empty.root", {"Photon": none})
    out = fp.read(path, collection="Photon")
    assert ak.num(out).tolist() == [0, 0, 0]
    assert str(out.type) == "3 * var * {energy: float64, eta: float64, phi: float64, pdgid: int32}"
    assert ak.num(fp.standardize(none, particle="photon")).tolist() == [0, 0, 0]
    assert len(fp.standardize({"pt": [], "eta": [], "phi": []}, particle="photon")) == 0


def test_empty_tree(tmp_path: Path) -> None:
    with uproot.recreate(tmp_path / "e.root") as f:
        f.mktree("Events", {"Photon": photons().type.content})
    out = fp.read(tmp_path / "e.root", collection="Photon")
    assert len(out) == 0 and out.fields == list(fp.FIELDS)
    assert list(fp.iterate(tmp_path / "e.root", collection="Photon")) == []
    fp.write_example(tmp_path / "none.root", n_events=0)
    assert len(fp.read(tmp_path / "none.root", collection="Electron")) == 0


# --- chunks ----------------------------------------------------------------------------------


def test_iterate_concatenates_to_read(tmp_path: Path) -> None:
    path = fp.write_example(tmp_path / "nano.root", n_events=250)
    whole = fp.read(path, collection="Electron")
    chunks = list(fp.iterate(path, collection="Electron", step_size=64))
    assert [(a, b) for a, b, _ in chunks] == [(0, 64), (64, 128), (128, 192), (192, 250)]
    assert ak.concatenate([c for _, _, c in chunks]).tolist() == whole.tolist()
    part = fp.read(path, collection="Electron", entry_start=100, entry_stop=130)
    ranged = list(fp.iterate(path, collection="Electron", step_size=20, entry_start=100, entry_stop=130))
    assert [(a, b) for a, b, _ in ranged] == [(100, 120), (120, 130)]
    assert ak.concatenate([c for _, _, c in ranged]).tolist() == part.tolist() == whole[100:130].tolist()
    with pytest.raises(ValueError, match="step_size"):
        next(fp.iterate(path, collection="Electron", step_size=0))


# --- nothing silent: PDG ids are checked before the int32 cast; damaged files are one clear error


@pytest.mark.parametrize(
    ("pdgid", "match"),
    [
        ([[22.0, 22.7]], r"pdgId: 1 non-integer PDG ids \(22 or 22.0, never 22.7\), the first at event 0, particle 1 \(22.7\)"),
        ([[11.2]], r"pdgId: 1 non-integer PDG ids .* \(11.2\)"),
        ([[22, 2**32 + 22]], r"pdgId: 1 PDG ids outside the int32 range \[-2147483648, 2147483647\], the first at event 0, particle 1 \(4294967318\)"),
    ],
)
def test_pdgids_are_integers_in_int32_range_before_the_cast(tmp_path: Path, pdgid: list[list[float]], match: str) -> None:
    dtype = np.int64 if isinstance(pdgid[0][-1], int) else np.float64
    n = len(pdgid[0])
    photon = ak.zip({"pt": _jagged([[10.0] * n]), "eta": _jagged([[0.1] * n]), "phi": _jagged([[0.0] * n]), "pdgId": _jagged(pdgid, dtype)})
    path = write_tree(tmp_path / "nano.root", {"Photon": photon})
    with pytest.raises(ValueError, match=match):
        fp.read(path, collection="Photon")
    with pytest.raises(ValueError, match=match):
        list(fp.iterate(path, collection="Photon", step_size=1))
    # in memory too (the same check), and integer-valued floats are fine
    with pytest.raises(ValueError, match=match.replace("the first at event 0, particle 1", "the first at event 0, particle .")):
        fp.standardize(photon)
    fine = ak.zip({"pt": _jagged([[10.0]]), "eta": _jagged([[0.1]]), "phi": _jagged([[0.0]]), "pdgId": _jagged([[11.0]], np.float64)})
    assert fp.standardize(fine).pdgid.tolist() == [[11]]


def test_a_damaged_root_file_is_one_clear_error(tmp_path: Path) -> None:
    good = fp.write_example(tmp_path / "events.root", n_events=2000, seed=1)
    blob = bytearray(good.read_bytes())
    middle = len(blob) // 2
    for start in (middle, 0):
        damaged = bytearray(blob)
        for i in range(start, start + 64):
            damaged[i] ^= 0xFF
        path = tmp_path / f"damaged{start}.root"
        path.write_bytes(bytes(damaged))
        with pytest.raises(fp.UnreadableFileError, match=rf"{path.name}: not a readable ROOT file \(.*\); is it damaged or truncated\?"):
            fp.read(path, collection="Photon")
        with pytest.raises(ValueError, match="not a readable ROOT file"):
            list(fp.iterate(path, collection="Photon", step_size=500))
