from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot

from fastcalo import datasets as ds


def _data(n: int = 10, seed: int = 0) -> ds.ShowerData:
    rng = np.random.default_rng(seed)
    return ds.ShowerData.from_arrays(
        energy=rng.uniform(1, 100, n),
        eta=rng.uniform(-1.5, 1.5, n),
        phi=rng.uniform(-3, 3, n),
        pdgid=rng.choice([22, 11, -11], n),
        impact_x=rng.uniform(0, 10, n),
        impact_y=rng.uniform(0, 10, n),
        images=rng.exponential(0.1, (n, 24, 24)).astype(np.float32),
    )


@pytest.mark.parametrize("suffix", [".root", ".h5", ".hdf5"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    data = _data()
    path = ds.write(data, tmp_path / f"showers{suffix}")
    back = ds.read(path)
    for name in ("energy", "eta", "phi", "pdgid", "impact_x", "impact_y"):
        np.testing.assert_allclose(getattr(back, name), getattr(data, name), rtol=1e-12)
    np.testing.assert_allclose(back.images, data.images, rtol=1e-6)
    assert back.images.dtype == np.float32 and back.images.shape == (10, 24, 24)


def test_hdf5_is_calochallenge_layout_in_mev(tmp_path: Path) -> None:
    data = _data(4)
    ds.write(data, tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["incident_energies"].shape == (4, 1)
        assert f["showers"].shape == (4, 576)
        np.testing.assert_allclose(f["incident_energies"][:, 0], data.energy * 1e3)
        np.testing.assert_allclose(f["showers"][:], data.images.reshape(4, 576) * 1e3, rtol=1e-6)
        assert json.loads(f.attrs["units"])["images"] == "MeV"


def test_root_layout(tmp_path: Path) -> None:
    ds.write(_data(3), tmp_path / "s.root")
    with uproot.open(tmp_path / "s.root") as f:
        tree = f["showers"]
        assert set(tree.keys()) >= {"incident_energy", "eta", "phi", "pdgid", "impact_x", "impact_y", "image"}
        assert tree["image"].interpretation.inner_shape == (576,)
        assert json.loads(str(f["fastcalo_meta"]))["units"]["images"] == "GeV"


@pytest.mark.parametrize("suffix", [".root", ".h5"])
def test_chunked_iteration(tmp_path: Path, suffix: str) -> None:
    data = _data(25)
    path = tmp_path / f"s{suffix}"
    with ds.ShowerWriter(path) as out:
        out.write(data[:10])
        out.write(data[10:])
    chunks = list(ds.iterate(path, step_size=7))
    assert [len(c) for c in chunks] == [7, 7, 7, 4]
    np.testing.assert_allclose(ds.ShowerData.concatenate(chunks).energy, data.energy)
    part = ds.read(path, entry_start=5, entry_stop=9)
    np.testing.assert_allclose(part.energy, data.energy[5:9])


@pytest.mark.parametrize("suffix", [".root", ".h5"])
def test_failed_write_leaves_nothing(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"s{suffix}"
    with pytest.raises(RuntimeError, match="boom"), ds.ShowerWriter(path) as out:
        out.write(_data(3))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_needs_overwrite(tmp_path: Path) -> None:
    path = ds.write(_data(2), tmp_path / "s.h5")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists .*overwrite"):
        ds.write(_data(3), path)
    assert path.read_bytes() == before
    ds.write(_data(3), path, overwrite=True)
    assert len(ds.read(path)) == 3


def _foreign_file(path: Path, kind: str) -> Path:
    """A file at ``path`` that fastcalo did not write (or a link to one it did)."""
    if kind == "root":
        with uproot.recreate(path) as f:
            f["Events"] = {"x": np.arange(5.0)}
    elif kind == "hdf5":
        with h5py.File(path, "w") as f:
            f["showers"] = np.ones((2, 576))  # the CaloChallenge layout's name, without fastcalo's metadata
    elif kind == "text":
        path.write_text("my analysis notes")
    else:  # a symbolic link to a fastcalo file
        target = ds.write(_data(2), path.with_name("target" + path.suffix))
        path.symlink_to(target)
    return path


@pytest.mark.parametrize(("kind", "suffix", "why"), [
    ("root", ".root", 'its metadata have no "format": "fastcalo.showers"'),
    ("hdf5", ".h5", 'its metadata have no "format": "fastcalo.showers"'),
    ("text", ".root", "it is not a readable ROOT file"),
    ("text", ".h5", "it is not a readable HDF5 file"),
    ("link", ".root", "it is a symbolic link"),
])  # fmt: skip
def test_overwrite_replaces_only_a_shower_file_fastcalo_wrote(tmp_path: Path, kind: str, suffix: str, why: str) -> None:
    """Never destroy what fastcalo did not write: with overwrite, another program's file, a
    text file or a symbolic link is refused, named, with the reason, and left byte for byte."""
    path = _foreign_file(tmp_path / f"out{suffix}", kind)
    before = path.read_bytes()
    for write in (
        lambda: ds.write(_data(3), path, overwrite=True),
        lambda: ds.EventWriter(path, overwrite=True).__enter__(),
    ):
        with pytest.raises(FileExistsError, match=re.escape(f"{path} already exists and is not a shower file of fastcalo ({why})")):
            write()
        assert path.read_bytes() == before
        assert path.is_symlink() == (kind == "link")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out" + suffix] + (["target" + suffix] if kind == "link" else []))
    # a shower file fastcalo wrote is replaced, through both writers
    mine = ds.write(_data(2), tmp_path / f"mine{suffix}")
    ds.write(_data(3), mine, overwrite=True)
    assert len(ds.read(mine)) == 3
    with ds.EventWriter(mine, overwrite=True) as out:
        out.write(_data(4), counts=np.array([4]), first_event=0)
    assert len(ds.read(mine)) == 4


def test_unwritable_destination(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="directory .*missing.* does not exist"):
        ds.write(_data(2), tmp_path / "missing" / "s.h5")


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown shower file type '.csv', expected .root, .h5 or .hdf5"):
        ds.write(_data(2), tmp_path / "s.csv")


def test_missing_hdf5_key_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["incident_energy"] = np.ones((2, 1))
        f["showers"] = np.ones((2, 576))
    with pytest.raises(KeyError, match="missing key\\(s\\) \\['incident_energies'.*did you mean \\['incident_energy'\\]"):
        ds.read(path)


def test_missing_root_branch_suggests(tmp_path: Path) -> None:
    path = tmp_path / "bad.root"
    with uproot.recreate(path) as f:
        f["showers"] = {"incident_energi": np.ones(2), "image": np.ones((2, 576), dtype=np.float32)}
    with pytest.raises(KeyError, match="missing branch\\(es\\).*did you mean \\['incident_energi'\\]"):
        ds.read(path)
    with uproot.recreate(path) as f:
        f["shower"] = {"x": np.ones(2)}
    with pytest.raises(KeyError, match="no TTree 'showers'; the file has \\['shower'\\]; did you mean"):
        ds.read(path)


def test_wrong_geometry(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    small = ds.ShowerData.from_arrays(
        energy=[1.0], eta=[0.0], phi=[0.0], pdgid=[22], impact_x=[0.0], impact_y=[0.0], images=np.ones((1, 10, 10))
    )
    from fastcalo.detector import Detector

    ds.write(small, path, detector=Detector(n_cells=10))
    with pytest.raises(ValueError, match="showers have 100 cells but the detector has 576 \\(24x24\\)"):
        ds.read(path)
    assert len(ds.read(path, detector=None)) == 1


def test_declared_units_checked(tmp_path: Path) -> None:
    path = tmp_path / "u.h5"
    ds.write(_data(2), path)
    with h5py.File(path, "a") as f:
        f.attrs["units"] = json.dumps({"images": "GeV", "energy": "GeV"})
    with pytest.raises(ValueError, match="HDF5 shower files hold MeV .* declares"):
        ds.read(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"energy": [0.0, 1.0]}, "incident energies must be > 0 GeV"),
        ({"images": np.full((2, 24, 24), np.nan)}, "1152 non-finite value\\(s\\) in 'images'"),
        ({"pdgid": [22, 13]}, "unknown pdgid\\(s\\) \\[13\\]"),
        ({"images": np.ones((2, 575))}, "575 cells are not square"),
        ({"eta": [0.0]}, "column 'eta' has 1 entries but there are 2 images"),
        ({"pdgid": [22.0, 22.7]}, "column 'pdgid': PDG ids must be integers .* the first 22.7"),  # never truncated to 22
        ({"pdgid": [22, 2**32 + 22]}, "column 'pdgid': PDG ids must lie in the int32 range"),  # never wrapped to 22
    ],
)
def test_bad_arrays(change: dict, message: str) -> None:
    columns = {
        "energy": [1.0, 2.0], "eta": [0.0, 0.0], "phi": [0.0, 0.0], "pdgid": [22, 22],
        "impact_x": [0.0, 0.0], "impact_y": [0.0, 0.0], "images": np.ones((2, 24, 24)),
    }  # fmt: skip
    columns.update(change)
    with pytest.raises(ValueError, match=message):
        ds.ShowerData.from_arrays(**columns)


def test_hdf5_files_of_other_tools_are_read_or_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    ds.write(_data(5), path)
    with h5py.File(path, "a") as f:  # a fixed-length string and an array, as C++ HDF5 or np.bytes_ write them
        f.attrs["units"] = np.bytes_(b"MeV")
        f.attrs["energy_points_gev"] = np.array([1.0, 10.0, 100.0])
    np.testing.assert_allclose(ds.read(path).energy, _data(5).energy, rtol=1e-15)  # MeV in the file: the last bit
    assert ds.metadata(path)["energy_points_gev"] == [1.0, 10.0, 100.0]
    with h5py.File(path, "a") as f:  # a column longer than the showers: rows out of step, never cut silently
        del f["eta"]
        f["eta"] = np.linspace(-1.0, 1.0, 7)
    with pytest.raises(ValueError, match=r"other.h5: every column must have one entry per shower, shape \(5,\) .* \{'eta': \(7,\)\}"):
        ds.read(path)
    with h5py.File(path, "a") as f:
        del f["eta"]
        f["eta"] = np.zeros(5)
        del f["pdgid"]
        f["pdgid"] = np.array([22.0, 22.7, 11.0, 11.0, 22.0])  # float ids, one not an integer
    with pytest.raises(ValueError, match=r"other.h5\[0:5\]: column 'pdgid': PDG ids must be integers"):
        ds.read(path)


def test_flat_root_files_of_another_shape_are_refused_clearly(tmp_path: Path) -> None:
    n = 3
    columns = {"incident_energy": np.full(n, 10.0), "eta": np.zeros(n), "phi": np.zeros(n), "pdgid": np.full(n, 22, np.int32),
               "impact_x": np.full(n, 5.0), "impact_y": np.full(n, 5.0)}  # fmt: skip
    with uproot.recreate(tmp_path / "rntuple.root") as f:  # uproot's default for a new tree: an RNTuple
        f["showers"] = {**columns, "image": np.zeros((n, 576), np.float32)}
    with uproot.recreate(tmp_path / "jagged.root") as f:  # vector<float> images
        f.mktree("showers", {**{k: v.dtype for k, v in columns.items()}, "image": "var * float32"}).extend({**columns, "image": ak.Array([[0.0] * 576] * n)})
    for name, found in (("rntuple", "an RNTuple"), ("jagged", "a TTree whose 'image' is of variable length")):
        with pytest.raises(ValueError, match=f"{name}.root: a flat shower file needs a TTree with a fixed-size 'image' branch .*; found {found}"):
            ds.read(tmp_path / f"{name}.root")


@pytest.mark.parametrize("suffix", [".h5", ".root"])
def test_entry_ranges_count_from_zero(tmp_path: Path, suffix: str) -> None:
    path = ds.write(_data(10), tmp_path / f"n{suffix}")
    assert len(ds.read(path, entry_start=3, step_size=2)) == 7
    for bad in ({"entry_start": -3}, {"entry_stop": -2}):  # was: 11 showers of a 10-shower file (slices [-3:-1], [-1:1], ...)
        with pytest.raises(ValueError, match="entry_start and entry_stop count showers from the start of the file"):
            ds.read(path, step_size=2, **bad)


def test_missing_column() -> None:
    with pytest.raises(ValueError, match="missing \\['impact_y'\\]"):
        ds.ShowerData.from_arrays(energy=[1.0], eta=[0], phi=[0], pdgid=[22], impact_x=[0], images=np.ones((1, 24, 24)))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no shower file at"):
        ds.read(tmp_path / "nope.h5")


# --- reliability: permissions, leftovers of killed writers, unreadable files -------------------


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test; restored afterwards."""
    original = os.umask(0o022)
    os.umask(original)
    yield os.umask
    os.umask(original)


def _write_events(path: Path) -> None:
    data = _data(3)
    with ds.EventWriter(path, tree="Events", collection="Photon") as out:
        out.write(data, counts=np.array([2, 1]), first_event=0)


@pytest.mark.parametrize("mask", [0o022, 0o077])
@pytest.mark.parametrize("suffix", [".root", ".h5"])
@pytest.mark.parametrize("layout", ["flat", "events"])
def test_files_follow_the_umask(tmp_path: Path, umask: Callable[[int], None], mask: int, suffix: str, layout: str) -> None:
    umask(mask)
    path = tmp_path / f"showers{suffix}"
    if layout == "flat":
        ds.write(_data(3), path)
    else:
        _write_events(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # 0644, 0600
    assert len(ds.read(path)) == 3


def test_temporary_name_and_stale_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "showers.h5"
    with ds.atomic_path(target) as tmp:
        assert re.fullmatch(r"\.showers\.h5\.[A-Za-z0-9-]+\.(\d+)\.[a-z0-9_]+\.fastcalo-tmp\.h5", tmp.name)
        assert tmp.name.split(".")[4] == str(os.getpid())
        assert ds.leftover_temporaries(target) == [(tmp, tmp.name.split(".")[3], os.getpid())]
        tmp.write_text("x")
    host = tmp.name.split(".")[3]
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])  # a process that no longer runs
    dead_pid.wait()
    dead = tmp_path / f".showers.h5.{host}.{dead_pid.pid}.abcd1234.fastcalo-tmp.h5"
    alive = tmp_path / f".showers.h5.{host}.{os.getpid()}.efgh5678.fastcalo-tmp.h5"
    elsewhere = tmp_path / f".showers.h5.otherhost.{dead_pid.pid}.ijkl9012.fastcalo-tmp.h5"
    other_target = tmp_path / f".other.h5.{host}.{dead_pid.pid}.mnop3456.fastcalo-tmp.h5"
    for leftover in (dead, alive, elsewhere, other_target):
        leftover.write_bytes(b"partial")
    target.unlink()  # "x", which no writer of fastcalo would replace
    ds.write(_data(2), target)
    assert not dead.exists()  # its writer is gone: removed
    assert alive.exists() and elsewhere.exists() and other_target.exists()  # running, unknown, not this target's
    assert len(ds.read(target)) == 2


@pytest.mark.parametrize("suffix", [".h5", ".root"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_file_is_named(tmp_path: Path, suffix: str, damage: str) -> None:
    good = ds.write(_data(300), tmp_path / f"good{suffix}")
    content = good.read_bytes()
    bad = tmp_path / f"{damage}{suffix}"
    bad.write_bytes({"truncated": content[: len(content) // 2], "garbage": np.random.default_rng(1).bytes(5000), "empty": b""}[damage])
    kind = "HDF5" if suffix == ".h5" else "ROOT"
    with pytest.raises(OSError, match=f"^{re.escape(str(bad))}: not a readable {kind} file \\(.+\\)$"):
        ds.read(bad)
    if damage != "truncated" or suffix == ".h5":  # a half ROOT file still has its header and metadata
        with pytest.raises(OSError, match=f"^{re.escape(str(bad))}: not a readable {kind} file"):
            ds.metadata(bad)


def _sparse(n: int, seed: int = 0) -> ds.ShowerData:
    """Showers with a fifth of their cells hit, the first one empty (no hit at all)."""
    data = _data(n, seed)
    rng = np.random.default_rng(seed + 1)
    images = np.where(rng.random(data.images.shape) < 0.2, data.images, 0).astype(np.float32)
    images[0] = 0
    return ds.ShowerData.from_arrays(**{c: getattr(data, c) for c in ds.CONDITION_COLUMNS}, images=images)


@pytest.mark.parametrize("compression", ["none", "zlib:1", "lz4:1", "zstd:1", "lzma:1"])
@pytest.mark.parametrize("cells", ["dense", "hits"])
def test_event_layouts_round_trip(tmp_path: Path, cells: str, compression: str) -> None:
    """Both cell layouts, every compression, events without particles at the start, in the middle
    and at the end, a shower without hits, two chunks: read back exactly."""
    data = _sparse(9)
    path = tmp_path / "events.root"
    with ds.EventWriter(path, tree="Events", collection="Photon", cells=cells, compression=compression) as out:
        out.write(data[:4], counts=np.array([0, 2, 0, 2]), first_event=0)
        out.write(data[4:], counts=np.array([3, 2, 0]), first_event=4)
    back = ds.read(path)
    np.testing.assert_array_equal(back.images, data.images)
    np.testing.assert_array_equal(back.energy, data.energy)
    assert [len(c) for c in ds.iterate(path, step_size=4)] == [4, 4, 1]
    with uproot.open(path) as f:
        assert json.loads(str(f["fastcalo_meta"]))["cells"] == cells
        tree = f["Events"]
        assert tree["nPhoton"].array(library="np").tolist() == [0, 2, 0, 2, 3, 2, 0]
        if cells == "hits":
            hits = (data.images.reshape(9, -1) > 0).sum(axis=1)
            assert np.concatenate(tree["Photon_nhits"].array(library="np")).tolist() == hits.tolist()
            assert tree["nPhoton_hit"].array(library="np").tolist() == [0, hits[0:2].sum(), 0, hits[2:4].sum(), hits[4:7].sum(), hits[7:9].sum(), 0]
            assert tree["Photon_hit_cell"].interpretation.content.from_dtype == np.dtype(">i2")
            assert "Photon_image" not in tree
        else:
            assert "Photon_hit_cell" not in tree and "Photon_image" in tree


def test_hits_are_smaller_than_dense_cells(tmp_path: Path) -> None:
    data = _sparse(200)
    sizes = {}
    for cells in ds.CELL_LAYOUTS:
        path = tmp_path / f"{cells}.root"
        with ds.EventWriter(path, cells=cells, compression="none") as out:
            out.write(data, counts=np.full(100, 2), first_event=0)
        sizes[cells] = path.stat().st_size
    # 576 x 4 bytes against about 115 hits x 6 bytes per shower
    assert sizes["hits"] < 0.45 * sizes["dense"]


def test_root_compression_specs() -> None:
    assert str(ds.root_compression("zstd:3")) == "ZSTD(3)" and str(ds.root_compression("ZLIB")) == "ZLIB(1)"
    assert ds.root_compression("none") is None
    with pytest.raises(ValueError, match="ALGORITHM one of \\['lz4', 'lzma', 'zlib', 'zstd'\\], got 'gzip:1'"):
        ds.root_compression("gzip:1")
    with pytest.raises(ValueError, match="level of zlib must be an integer in 1-9, got 'zlib:0'"):
        ds.root_compression("zlib:0")
    with pytest.raises(ValueError, match="got 'lz4:x'"):
        ds.root_compression("lz4:x")


def test_hdf5_event_output_is_dense_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HDF5 output has the CaloChallenge layout"):
        ds.EventWriter(tmp_path / "x.h5", cells="hits")
    with pytest.raises(ValueError, match="HDF5 output has the CaloChallenge layout"):
        ds.EventWriter(tmp_path / "x.h5", compression="zstd:1")
    with pytest.raises(ValueError, match="cells must be one of \\('dense', 'hits'\\), got 'sparse'"):
        ds.EventWriter(tmp_path / "x.root", cells="sparse")
    assert not list(tmp_path.iterdir())


def test_damaged_hits_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.root"
    data = _sparse(4)
    with ds.EventWriter(path, cells="hits") as out:
        out.write(data, counts=np.array([4]), first_event=0)
    with uproot.open(path) as f:
        meta = str(f["fastcalo_meta"])
        arrays = f["Events"].arrays()
    damaged = tmp_path / "damaged.root"
    with uproot.recreate(damaged) as f:
        f["fastcalo_meta"] = meta
        columns = {k: arrays[f"particles_{k}"] for k in ("energy", "eta", "phi", "pdgid", "impact_x", "impact_y")}
        branches = {
            "particles": ak.zip({**columns, "nhits": arrays["particles_nhits"] + 1}),  # more hits announced than there are
            "particles_hit": ak.zip({"cell": arrays["particles_hit_cell"], "energy": arrays["particles_hit_energy"]}),
        }
        f.mktree("Events", {k: v.type.content for k, v in branches.items()}).extend(branches)
    with uproot.open(damaged) as f:
        assert "particles_nhits" in f["Events"]
    with pytest.raises(ValueError, match=f"^{re.escape(str(damaged))}: damaged hits: \\d+ announced, \\d+ cell indices"):
        ds.read(damaged)
