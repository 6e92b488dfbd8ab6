"""Particle kinematics in: from a ROOT TTree or an awkward collection to fastcalo's standard record.

The simulator consumes one layout, the *standard record*, one per particle:

- ``energy``: the particle's kinetic energy [GeV], float64 (for a photon ``|p|``, for an
  electron or positron ``sqrt(p^2 + m^2) - m`` with ``m`` the PDG electron mass);
- ``eta``, ``phi``: pseudorapidity and azimuth [rad], float64;
- ``pdgid``: int32, one of :data:`fastcalo.detector.PARTICLES` (22, 11, -11);
- ``impact_x``, ``impact_y`` [mm], float64, only if the input has them.

The nesting is that of the input: ``events * var * {fields}`` for a collection per event, and
``n * {fields}`` for a flat tree or a flat array. Empty events stay empty and the order of the
particles is kept, so one shower out per particle in lines up with its input.

Inputs, read with uproot into awkward (see ``docs/particles.md``):

- ``nanoaod``: a collection ``C`` with branches ``C_pt``, ``C_eta``, ``C_phi`` and ``C_pdgId``
  or ``C_charge`` (names as in the NanoAOD documentation,
  https://cms-nanoaod-integration.web.cern.ch/autoDoc/ ).
- ``delphes``: branches ``C.PT``, ``C.Eta``, ``C.Phi`` and ``C.PID`` or ``C.Charge`` (names as in
  https://cp3.irmp.ucl.ac.be/projects/delphes/wiki/WorkBook/RootTreeDescription ), or ``C_PT``...
- ``flat``: one particle per entry, branches ``E``/``energy``, ``px, py, pz`` or ``pt, eta, phi``.
- an explicit mapping ``branches={"pt": "ph_pt", ...}``.

Generator-level collections (``GenPart``, ``Particle``) are *selected*: only final-state
(``status == 1``) photons, electrons and positrons are kept. The energy is always computed from
the momentum and the PDG mass of the particle type, with ``vector``; an input ``mass`` is not used.

Example:
    >>> import awkward as ak
    >>> photons = ak.Array([[{"pt": 10.0, "eta": 0.0, "phi": 0.5}], []])
    >>> std = standardize(photons, particle="photon")
    >>> std.fields, ak.num(std).tolist(), std.energy.tolist(), std.pdgid.tolist()
    (['energy', 'eta', 'phi', 'pdgid'], [1, 0], [[10.0], []], [[22], []])
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot
import vector
from particle import Particle

from ._names import near_misses
from .detector import DEFAULT_DETECTOR, PARTICLES, PDGID_RANGE, pdgid_of

__all__ = (
    "FIELDS",
    "GENERATOR_COLLECTIONS",
    "MAPPING_KEYS",
    "OPTIONAL_FIELDS",
    "PRESETS",
    "BranchError",
    "Reader",
    "TreeError",
    "UnreadableFileError",
    "flatten",
    "iterate",
    "open_tree",
    "read",
    "standardize",
    "write_example",
)

#: The fields of the standard record, in order.
FIELDS = ("energy", "eta", "phi", "pdgid")
#: Fields carried through when the input has them (impact point in the central cell, mm).
OPTIONAL_FIELDS = ("impact_x", "impact_y")
#: Accepted values of ``preset=``.
PRESETS = ("auto", "nanoaod", "delphes", "flat")
#: Collections from which final-state photons and electrons are selected (NanoAOD, Delphes).
GENERATOR_COLLECTIONS = ("GenPart", "Particle")
#: Keys of an explicit ``branches=`` mapping.
MAPPING_KEYS = (
    "energy", "E", "pt", "eta", "phi", "mass", "px", "py", "pz", "pdgid", "charge", "impact_x", "impact_y",
)

# PDG masses in GeV (the particle package gives MeV)
_MASS = {pid: float(Particle.from_pdgid(pid).mass or 0.0) * 1e-3 for pid in PARTICLES.values()}

# names a key may have in the input, tried exactly and then ignoring case
_ALIASES: dict[str, tuple[str, ...]] = {
    "energy": ("energy",),
    "E": ("E",),
    "pt": ("pt",),
    "eta": ("eta",),
    "phi": ("phi",),
    "mass": ("mass",),
    "px": ("px",),
    "py": ("py",),
    "pz": ("pz",),
    "pdgid": ("pdgid", "pdgId", "PID"),
    "charge": ("charge",),
    "status": ("status",),
    "impact_x": ("impact_x",),
    "impact_y": ("impact_y",),
}
# field names of vector's own records (vector.zip renames pt -> rho, mass -> tau)
_VECTOR_FIELDS = {"rho": "pt", "x": "px", "y": "py", "z": "pz", "t": "E", "tau": "mass"}
# kinematic inputs, in order of preference: the first complete set is used
_KINEMATICS: tuple[tuple[str, ...], ...] = (
    ("energy", "eta", "phi"),
    ("pt", "eta", "phi"),
    ("px", "py", "pz"),
    ("E", "eta", "phi"),
)
_NOT_NEGATIVE = ("energy", "E", "pt")
_PHOTON_NAMES = ("photon", "photons", "gamma")
_ELECTRON_NAMES = ("electron", "electrons")
_MAX_LISTED = 20

_EXAMPLE_MEAN_PHOTONS = 2.0
_EXAMPLE_MEAN_ELECTRONS = 1.0
_EXAMPLE_ETA = 1.4  # inside the detector's |eta| < 1.5
_EXAMPLE_MET_MEAN = 20.0  # GeV, exponential


class BranchError(KeyError):
    """A branch the reader needs is not in the tree; the message lists near misses and what exists.

    Attributes ``branch``, ``file``, ``tree`` and ``available`` (the tree's branch names) say what
    was looked for and where. ``str(error)`` is one readable line.
    """

    def __init__(self, branch: str, *, file: str, tree: str, available: Sequence[str], hint: str = "") -> None:
        super().__init__(branch)
        self.branch = branch
        self.file = file
        self.tree = tree
        self.available = list(available)
        parts = [f"branch {branch!r} not found in {file}:{tree}"]
        if hint:
            parts.append(hint)
        near = near_misses(branch, self.available)
        if near:
            parts.append(f"did you mean {_or_list(near)}?")
        prefix = _prefix(branch)
        if prefix:
            siblings = [b for b in self.available if _prefix(b).lower() == prefix.lower() and b not in near]
            if siblings:
                parts.append(f"branches of {prefix!r}: {_listing(siblings)}")
        parts.append(f"the tree has {len(self.available)} branches: {_listing(self.available)}")
        self.message = "; ".join(parts)

    def __str__(self) -> str:
        return self.message


class TreeError(KeyError):
    """The file has no tree of the name asked for (or no TTree at all); the message lists its trees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UnreadableFileError(ValueError):
    """A file uproot cannot read (damaged, truncated, not ROOT): the message names the file and
    what uproot raised (a RecursionError, a decompression or deserialization error...)."""


@contextmanager
def _readable(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn whatever uproot raises while reading a damaged file into an UnreadableFileError naming
    the file (memory and operating-system errors pass through as they are; an OSError without an
    errno is uproot's own, a truncated file's short read). Wraps only uproot's own calls, never
    fastcalo's checks of the values read."""
    try:
        yield
    except MemoryError:
        raise
    except Exception as err:  # RecursionError, zlib.error, uproot's DeserializationError, struct.error...
        if isinstance(err, OSError) and err.errno is not None:  # the system's: permissions, I/O, no such file
            raise
        text = str(err).splitlines()[0][:200] if str(err) else ""
        kind = type(err).__name__ if type(err).__module__ == "builtins" else f"{type(err).__module__}.{type(err).__name__}"
        msg = f"{os.fspath(path)}: not a readable ROOT file ({kind}{': ' + text if text else ''}); is it damaged or truncated?"
        raise UnreadableFileError(msg) from err


# ---------------------------------------------------------------------------------------------
# awkward collections -> standard record


def standardize(collection: Any, *, particle: str | int | None = None) -> ak.Array:
    """Turn an awkward collection of particles into the standard record, same structure and order.

    Kinematics are taken from the first complete set of fields among ``energy, eta, phi``
    (already the kinetic energy), ``pt, eta, phi`` (NanoAOD), ``px, py, pz``, and ``E, eta, phi``
    (``E`` is the total energy); field names match ignoring case (Delphes ``PT, Eta, Phi``).
    The kinetic energy is computed with ``vector`` from the momentum and the PDG mass of each
    particle's type. The type comes from a ``pdgId``/``pdgid``/``PID`` field; else, for
    electrons, from ``charge`` (-1 -> 11, +1 -> -11); else from ``particle``; else from the
    record name (coffea's ``"Photon"`` -> 22).

    Arguments:
        collection: ``events * var * {fields}`` or ``n * {fields}``, an awkward array (coffea and
            vector behaviors are fine; only fields are read) or a dict of equally shaped arrays.
        particle: the particle type ("photon", "electron", "positron" or a PDG id) where the
            collection does not say. Where it does, it must agree: "electron" and "positron" both
            stand for e+- and the data's charge or pdgId give the sign.

    Returns:
        The standard record (``energy`` GeV, ``eta``, ``phi``, ``pdgid``; plus ``impact_x``,
        ``impact_y`` mm if present) with the nesting of ``collection``.

    Raises:
        TypeError for a dask-awkward array; ValueError naming the field, the count and the first
        bad index for NaN or inf, negative energies or pt, and particles fastcalo does not simulate.

    Example:
        >>> import awkward as ak
        >>> electrons = ak.zip({"pt": [[20.0, 5.0]], "eta": [[0.0, 0.0]], "phi": [[0.0, 1.0]],
        ...                     "charge": [[-1, 1]]}, with_name="Electron")
        >>> std = standardize(electrons)
        >>> std.pdgid.tolist(), [round(e, 6) for e in std.energy[0].tolist()]
        ([[11, -11]], [19.999489, 4.999489])
    """
    if type(collection).__module__.split(".")[0] == "dask_awkward":
        msg = (
            "standardize takes an in-memory awkward array, not a dask-awkward one: "
            "map it over the partitions (dask_awkward.map_partitions) or use Simulator.run, which does"
        )
        raise TypeError(msg)
    if isinstance(collection, Mapping):
        collection = ak.zip(dict(collection))
    array = ak.Array(ak.to_layout(collection))
    fields = list(array.fields)
    if not fields:
        msg = (
            f"expected a record array with particle fields (e.g. pt, eta, phi), got type {array.type}"
        )
        raise ValueError(msg)
    name = _record_name(array.layout)
    columns: dict[str, ak.Array] = {}
    labels: dict[str, str] = {}
    for key in (k for k in _ALIASES if k != "status"):
        field = _match(fields, [""], key)
        if field is None and name is not None and name.startswith(("Momentum", "Vector")):
            field = next((f for f, k in _VECTOR_FIELDS.items() if k == key and f in fields), None)
        if field is not None:
            columns[key] = ak.without_parameters(array[field])
            labels[key] = field
    try:
        return _build(columns, labels, particle=particle, name=name)
    except _NoKinematics:
        found = ", ".join(fields)
        hint = ""
        nested = [f for f in fields if array[f].layout.purelist_depth > 1 and ak.fields(array[f])]
        if nested:
            hint = f" (this looks like events: pass one collection, e.g. events.{nested[0]})"
        msg = (
            f"cannot find particle kinematics among the fields [{found}]: expected one of "
            "(energy, eta, phi), (pt, eta, phi), (px, py, pz) or (E, eta, phi)" + hint
        )
        raise ValueError(msg) from None
    except _NoParticleType as err:
        msg = (
            f"cannot tell the particle type of this collection (fields [{', '.join(fields)}]"
            f"{f', record name {name!r}' if name else ''}): {err}"
        )
        raise ValueError(msg) from None


class _NoKinematics(Exception):
    pass


class _NoParticleType(Exception):
    pass


def _build(
    columns: dict[str, ak.Array],
    labels: dict[str, str],
    *,
    particle: str | int | None,
    name: str | None,
    where: str = "",
    offset: int = 0,
) -> ak.Array:
    """The standard record from columns keyed by standard names (labels name them in errors)."""
    kinematics = next((s for s in _KINEMATICS if all(k in columns for k in s)), None)
    if kinematics is None:
        raise _NoKinematics
    checker = _Checker(labels, where, offset)
    for key in kinematics:
        columns[key] = checker.finite(key, ak.values_astype(columns[key], np.float64))
        if key in _NOT_NEGATIVE:
            checker.not_negative(key, columns[key])
    pdgid = _particle_ids(columns, kinematics[0], particle, name, checker)
    mass = ak.where(abs(pdgid) == PARTICLES["electron"], _MASS[PARTICLES["electron"]], 0.0)
    if kinematics[0] == "energy":
        energy, eta, phi = columns["energy"], columns["eta"], columns["phi"]
    elif kinematics[0] == "E":
        energy, eta, phi = columns["E"] - mass, columns["eta"], columns["phi"]
    else:
        momentum = {k: columns[k] for k in kinematics}
        p4 = vector.zip({**momentum, "mass": mass})
        energy, eta, phi = p4.E - mass, p4.eta, p4.phi
    out = {"energy": energy, "eta": eta, "phi": phi}
    source = ", ".join(labels[k] for k in kinematics)
    for key in ("energy", "eta", "phi"):
        if key not in kinematics:  # computed: name it by its inputs
            checker.labels[key] = f"{key} (from {source})"
            out[key] = checker.finite(key, out[key])
    if kinematics[0] == "E":
        checker.not_negative("energy", out["energy"], what="total energies below the particle's mass")
    record = {k: _plain(v, np.float64) for k, v in out.items()}
    record["pdgid"] = _plain(pdgid, np.int32)
    for key in OPTIONAL_FIELDS:
        if key in columns:
            record[key] = _plain(checker.finite(key, ak.values_astype(columns[key], np.float64)), np.float64)
    return ak.zip(record)


def _particle_ids(
    columns: dict[str, ak.Array],
    reference: str,
    particle: str | int | None,
    name: str | None,
    checker: _Checker,
) -> ak.Array:
    """int32 PDG ids shaped like ``columns[reference]``, validated."""
    wanted = None if particle is None else pdgid_of(particle)
    lowered = (name or "").lower()
    electrons = (wanted is not None and abs(wanted) == PARTICLES["electron"]) or lowered in _ELECTRON_NAMES
    if "pdgid" in columns:
        raw = checker.finite("pdgid", columns["pdgid"], integer=True)
        # checked before the int32 cast, which would truncate 22.7 to 22 and wrap 2**32 + 22 to 22
        as_float = ak.values_astype(raw, np.float64)
        fraction = ~np.isfinite(as_float) | (as_float != np.floor(as_float))
        checker.fail_where("pdgid", fraction, "non-integer PDG ids (22 or 22.0, never 22.7)", example=raw)
        low, high = PDGID_RANGE
        # compared as float64 (exact for every int32): an unsigned branch cannot be compared with a negative bound
        checker.fail_where("pdgid", (as_float < low) | (as_float > high), f"PDG ids outside the int32 range [{low}, {high}]", example=raw)
        pdgid = ak.values_astype(raw, np.int32)
        unknown = ~_isin(pdgid, PARTICLES.values())
        what = f"PDG ids that fastcalo does not simulate (it simulates {_species()})"
        checker.fail_where("pdgid", unknown, what, example=pdgid)
        if wanted is not None:
            family = _family(wanted)
            what = f"PDG ids other than {_or_list(family)} (particle={particle!r})"
            checker.fail_where("pdgid", ~_isin(pdgid, family), what, example=pdgid)
        return pdgid
    if "charge" in columns and electrons:
        if wanted is not None and wanted not in _family(PARTICLES["electron"]):
            msg = f"charge: the collection {name!r} holds electrons and positrons (told apart by their charge), not particle={particle!r}"
            raise ValueError(msg)
        charge = columns["charge"]
        signed = ak.values_astype(charge, np.float64)  # an unsigned branch (uint8) compares with -1 too
        bad = (signed != 1) & (signed != -1)
        checker.fail_where("charge", bad, "charges other than +1 or -1 for electrons", example=charge)
        return ak.values_astype(ak.where(signed < 0, PARTICLES["electron"], PARTICLES["positron"]), np.int32)
    if wanted is not None:
        return ak.full_like(columns[reference], wanted, dtype=np.int32)
    if lowered in _PHOTON_NAMES:
        return ak.full_like(columns[reference], PARTICLES["photon"], dtype=np.int32)
    if electrons:
        msg = "electrons need a charge or pdgId to tell electrons (11) from positrons (-11)"
        raise _NoParticleType(msg)
    msg = "expected a pdgId/pdgid/PID field, or particle='photon', 'electron' or 'positron'"
    raise _NoParticleType(msg)


class _Checker:
    """Raise ValueError naming the field, the count and the first bad index."""

    def __init__(self, labels: dict[str, str], where: str, offset: int) -> None:
        self.labels = dict(labels)
        self.where = where
        self.offset = offset

    def finite(self, key: str, values: ak.Array, *, integer: bool = False) -> ak.Array:
        if integer:
            bad = ak.is_none(values, axis=-1)
            self.fail_where(key, bad, "missing (None) values")
        else:
            bad = ak.fill_none(~np.isfinite(values), True)
            self.fail_where(key, bad, "non-finite values (NaN, inf or None)", example=values)
        return values

    def not_negative(self, key: str, values: ak.Array, *, what: str = "negative values") -> None:
        self.fail_where(key, values < 0, what, example=values)

    def fail_where(self, key: str, bad: ak.Array, what: str, *, example: ak.Array | None = None) -> None:
        bad = ak.fill_none(bad, True)
        count = int(ak.sum(bad, axis=None))
        if count == 0:
            return
        index = _first(bad)
        if len(index) == 1:
            place = f"entry {index[0] + self.offset}"
        elif len(index) == 2:
            place = f"event {index[0] + self.offset}, particle {index[1]}"
        else:
            place = f"index {(index[0] + self.offset, *index[1:])}"
        value = ""
        if example is not None:
            item: Any = example
            for i in index:
                item = item[i]
            value = f" ({item})"
        label = self.labels.get(key, key)
        prefix = f"{self.where}: " if self.where else ""
        msg = f"{prefix}{label!s}: {count} {what}, the first at {place}{value}"
        raise ValueError(msg)


def _first(mask: ak.Array) -> tuple[int, ...]:
    """The index path of the first true value of a (possibly jagged) boolean array."""
    path: list[int] = []
    current = mask
    while current.ndim > 1:
        rows = current
        while rows.ndim > 1:
            rows = ak.any(rows, axis=-1)
        i = int(np.argmax(ak.to_numpy(rows)))
        path.append(i)
        current = current[i]
    path.append(int(np.argmax(ak.to_numpy(current))))
    return tuple(path)


def _plain(values: ak.Array, dtype: type) -> ak.Array:
    """A behavior- and parameter-free copy of ``values`` cast to ``dtype``."""
    return ak.Array(ak.to_layout(ak.without_parameters(ak.values_astype(values, dtype))))


def _isin(values: ak.Array, allowed: Any) -> ak.Array:
    out = values != values  # all False, same structure
    for a in allowed:
        out = out | (values == a)
    return out


def _family(pdgid: int) -> tuple[int, ...]:
    electron = PARTICLES["electron"]
    return (electron, -electron) if abs(pdgid) == electron else (pdgid,)


def _species() -> str:
    return ", ".join(f"{name} {pid}" for name, pid in PARTICLES.items())


def _record_name(layout: Any) -> str | None:
    """The ``__record__`` parameter of the innermost record of a layout, if any."""
    while layout is not None:
        if layout.is_record:
            name = layout.parameter("__record__")
            return str(name) if name is not None else None
        layout = getattr(layout, "content", None)
    return None


# ---------------------------------------------------------------------------------------------
# ROOT files


def open_tree(path: str | os.PathLike[str], tree: str | None = None) -> Any:
    """Open a TTree (or RNTuple) with uproot.

    Arguments:
        path: a ROOT file.
        tree: the tree's name (``"Events"``, ``"dir/tree"``); None picks the file's only TTree.

    Returns:
        The uproot tree; its file stays open until ``tree.file.close()`` (or garbage collection).

    Raises:
        FileNotFoundError if there is no such file (with near misses in its directory);
        TreeError (a KeyError) if ``tree`` is not in it, listing the trees and near misses;
        ValueError if ``tree`` is None and the file has several TTrees or none.

    Example:
        >>> import tempfile, pathlib
        >>> path = write_example(pathlib.Path(tempfile.mkdtemp()) / "nano.root", n_events=5)
        >>> t = open_tree(path)
        >>> t.name, t.num_entries
        ('Events', 5)
        >>> t.file.close()
    """
    file = _open_file(path)
    try:
        return _get_tree(file, str(path), tree)
    except BaseException:
        file.close()
        raise


def _open_file(path: str | os.PathLike[str]) -> Any:
    text = os.fspath(path)
    if "://" not in text and not Path(text).exists():
        target = Path(text)
        directory = target.parent if str(target.parent) else Path(".")
        msg = f"no such file: {text}"
        if directory.is_dir():
            near = near_misses(target.name, [p.name for p in directory.iterdir()])
            if near:
                msg += f"; did you mean {_or_list([str(directory / n) for n in near])}?"
        else:
            msg += f" (directory {directory} does not exist)"
        raise FileNotFoundError(msg)
    with _readable(text):
        return uproot.open(text)


def _get_tree(file: Any, path: str, tree: str | None) -> Any:
    with _readable(path):
        classes = file.classnames(cycle=False)
    trees = [k for k, c in classes.items() if c in ("TTree", "ROOT::RNTuple")]
    if tree is None:
        ttrees = [k for k, c in classes.items() if c == "TTree"] or trees
        if len(ttrees) == 1:
            with _readable(path):
                return file[ttrees[0]]
        if not ttrees:
            msg = f"{path} has no TTree (it holds {_listing(list(classes)) or 'nothing'})"
        else:
            msg = f"{path} has several TTrees, {_listing(ttrees)}: pass tree= to choose one"
        raise ValueError(msg)
    name = tree.strip("/").split(";")[0]
    if name in trees:
        with _readable(path):
            return file[name]
    parts = [f"no tree {tree!r} in {path}"]
    near = near_misses(name, trees)
    if near:
        parts.append(f"did you mean {_or_list(near)}?")
    parts.append(f"the file has trees: {_listing(trees)}" if trees else "the file has no trees")
    raise TreeError("; ".join(parts))


@dataclass(frozen=True)
class _Plan:
    """Which branch feeds which standard key, and whether to select generator-level particles."""

    branches: dict[str, str]
    name: str | None
    select: bool


@dataclass(frozen=True)
class Reader:
    """How to read particles from a ROOT tree: the options of :func:`read` and :func:`iterate`
    as one object, to hand to whatever reads a file chunk by chunk.

    Arguments:
        tree, collection, preset, branches, particle: as in :func:`read`.

    Example:
        >>> import tempfile, pathlib
        >>> path = write_example(pathlib.Path(tempfile.mkdtemp()) / "nano.root", n_events=10)
        >>> photons = Reader(collection="Photon")
        >>> len(photons.read(path, entry_stop=3)), [stop for _, stop, _ in photons.iterate(path, step_size=4)]
        (3, [4, 8, 10])
    """

    tree: str | None = None
    collection: str | None = None
    preset: str = "auto"
    branches: Mapping[str, str] | None = None
    particle: str | int | None = None

    def read(self, path: str | os.PathLike[str], *, entry_start: int | None = None, entry_stop: int | None = None) -> ak.Array:
        """:func:`read` with these options."""
        return read(
            path, tree=self.tree, collection=self.collection, preset=self.preset, branches=self.branches,
            particle=self.particle, entry_start=entry_start, entry_stop=entry_stop,
        )  # fmt: skip

    def iterate(
        self,
        path: str | os.PathLike[str],
        *,
        step_size: int = 100_000,
        entry_start: int | None = None,
        entry_stop: int | None = None,
    ) -> Iterator[tuple[int, int, ak.Array]]:
        """:func:`iterate` with these options."""
        return iterate(
            path, tree=self.tree, collection=self.collection, preset=self.preset, branches=self.branches,
            particle=self.particle, step_size=step_size, entry_start=entry_start, entry_stop=entry_stop,
        )  # fmt: skip


def flatten(table: ak.Array) -> tuple[ak.Array, np.ndarray | None]:
    """Standard records as one flat array of particles, and the particles per event.

    Arguments:
        table: ``events * var * record`` or ``n * record``.

    Returns:
        The flat records and the per-event counts (None if ``table`` is already flat).

    Raises:
        ValueError: any other nesting.

    Example:
        >>> import awkward as ak
        >>> flat, counts = flatten(ak.Array([[{"energy": 1.0}], [], [{"energy": 2.0}, {"energy": 3.0}]]))
        >>> flat.energy.tolist(), counts.tolist()
        ([1.0, 2.0, 3.0], [1, 0, 2])
    """
    if table.ndim == 1:
        return table, None
    if table.ndim != 2:
        msg = f"expected particles as events * var * record or n * record, got {table.type}"
        raise ValueError(msg)
    return ak.flatten(table, axis=1), ak.to_numpy(ak.num(table, axis=1))


def read(
    path: str | os.PathLike[str],
    *,
    tree: str | None = None,
    collection: str | None = None,
    preset: str = "auto",
    branches: Mapping[str, str] | None = None,
    particle: str | int | None = None,
    entry_start: int | None = None,
    entry_stop: int | None = None,
) -> ak.Array:
    """Read particles from a ROOT tree as standard records (see :func:`standardize`).

    Arguments:
        path: the ROOT file.
        tree: the tree name; None picks the file's only TTree.
        collection: the collection (``"Photon"``, ``"Electron"``, ``"GenPart"``, Delphes
            ``"Particle"``...); None for a flat tree of one particle per entry.
        preset: "nanoaod", "delphes", "flat" or "auto" (from the branch names).
        branches: an explicit mapping from keys of :data:`MAPPING_KEYS` to branch names; it
            overrides the preset.
        particle: the particle type where the tree does not say; for generator collections it
            selects that type ("electron"/"positron": e+-).
        entry_start, entry_stop: the range of entries (events) to read.

    Returns:
        ``events * var * {energy, eta, phi, pdgid}`` for a collection, ``n * {...}`` for a flat
        tree; energies in GeV.

    Raises:
        BranchError (a KeyError) naming a missing branch with near misses; TreeError; ValueError
        for bad values (see :func:`standardize`), located by entry.

    Example:
        >>> import tempfile, pathlib, awkward as ak
        >>> path = write_example(pathlib.Path(tempfile.mkdtemp()) / "nano.root", n_events=4)
        >>> photons = read(path, collection="Photon")
        >>> len(photons), photons.fields
        (4, ['energy', 'eta', 'phi', 'pdgid'])
    """
    with _open_file(path) as file:
        t = _get_tree(file, os.fspath(path), tree)
        plan = _plan(t, os.fspath(path), collection, preset, branches, particle)
        with _readable(path):
            arrays = t.arrays(
                filter_name=_wanted(plan), entry_start=entry_start, entry_stop=entry_stop, library="ak"
            )
        start = _start(entry_start, t.num_entries)
        return _standard(arrays, plan, particle, f"{os.fspath(path)}:{t.name}", start)


def iterate(
    path: str | os.PathLike[str],
    *,
    tree: str | None = None,
    collection: str | None = None,
    preset: str = "auto",
    branches: Mapping[str, str] | None = None,
    particle: str | int | None = None,
    step_size: int = 100_000,
    entry_start: int | None = None,
    entry_stop: int | None = None,
) -> Iterator[tuple[int, int, ak.Array]]:
    """Read particles chunk by chunk with bounded memory; arguments as in :func:`read`.

    Only the branches needed are read. An empty tree yields no chunk.

    Arguments:
        step_size: entries (events) per chunk.

    Yields:
        ``(entry_start, entry_stop, particles)``: the chunk's range of entries in the tree and its
        standard records.

    Example:
        >>> import tempfile, pathlib
        >>> path = write_example(pathlib.Path(tempfile.mkdtemp()) / "nano.root", n_events=10)
        >>> [(start, stop, len(chunk)) for start, stop, chunk in iterate(path, collection="Photon", step_size=4)]
        [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    """
    if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
        msg = f"step_size must be a positive number of entries, got {step_size!r}"
        raise ValueError(msg)
    with _open_file(path) as file:
        t = _get_tree(file, os.fspath(path), tree)
        plan = _plan(t, os.fspath(path), collection, preset, branches, particle)
        where = f"{os.fspath(path)}:{t.name}"
        chunks = t.iterate(
            filter_name=_wanted(plan),
            step_size=int(step_size),
            entry_start=entry_start,
            entry_stop=entry_stop,
            library="ak",
            report=True,
        )
        while True:
            with _readable(path):  # uproot reads (and may fail on a damaged file) here
                try:
                    arrays, report = next(chunks)
                except StopIteration:
                    break
            start, stop = int(report.tree_entry_start), int(report.tree_entry_stop)
            yield start, stop, _standard(arrays, plan, particle, where, start)


def _start(entry_start: int | None, n: int) -> int:
    if entry_start is None:
        return 0
    return max(0, entry_start + n if entry_start < 0 else entry_start)


def _wanted(plan: _Plan) -> Any:
    names = set(plan.branches.values())
    return lambda name: name in names


def _column(arrays: ak.Array, name: str) -> ak.Array:
    """A branch from uproot's output: a field, or a dotted path into an RNTuple's records."""
    if name in arrays.fields:
        return arrays[name]
    head, _, rest = name.partition(".")
    if rest and head in arrays.fields:
        return _column(arrays[head], rest)
    msg = f"uproot returned no {name!r} (fields {arrays.fields})"
    raise KeyError(msg)


def _standard(arrays: ak.Array, plan: _Plan, particle: str | int | None, where: str, offset: int) -> ak.Array:
    columns = {key: ak.without_parameters(_column(arrays, b)) for key, b in plan.branches.items()}
    if plan.select:
        pdgid = columns["pdgid"]
        keep = _isin(pdgid, PARTICLES.values() if particle is None else _family(pdgid_of(particle)))
        if "status" in columns:
            keep = keep & (columns["status"] == 1)
        columns = {k: v[keep] for k, v in columns.items()}
    columns.pop("status", None)
    labels = dict(plan.branches)
    try:
        return _build(columns, labels, particle=particle, name=plan.name, where=where, offset=offset)
    except _NoParticleType as err:  # found at planning for trees; kept for safety
        msg = f"{where}: cannot tell the particle type: {err}"
        raise ValueError(msg) from None


def _plan(
    tree: Any,
    path: str,
    collection: str | None,
    preset: str,
    mapping: Mapping[str, str] | None,
    particle: str | int | None,
) -> _Plan:
    names = _branch_names(tree)
    where = f"{path}:{tree.name}"
    if particle is not None:
        pdgid_of(particle)  # fail early on an unknown particle
    if mapping is not None:
        return _plan_mapping(tree, path, names, collection, mapping, particle)
    if preset not in PRESETS:
        msg = f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}"
        raise ValueError(msg)
    if preset == "auto":
        if collection is None:
            preset = "flat"
        elif _match(names, [f"{collection}_"], "pt") is not None:
            preset = "nanoaod"
        elif _match(names, [f"{collection}."], "pt") is not None:
            preset = "delphes"
        else:
            hint = (
                f"looked for {collection}_pt (NanoAOD) and {collection}.PT (Delphes)"
                f"{_collections_hint(names)}"
            )
            raise BranchError(f"{collection}_pt", file=path, tree=tree.name, available=names, hint=hint)
    if preset == "flat":
        if collection is not None:
            msg = f"preset 'flat' reads one particle per entry and takes no collection (got {collection!r})"
            raise ValueError(msg)
        prefixes = [""]
    elif collection is None:
        msg = f"preset {preset!r} needs collection= (e.g. 'Photon'){_collections_hint(names)}"
        raise ValueError(msg)
    else:
        prefixes = [f"{collection}_"] if preset == "nanoaod" else [f"{collection}.", f"{collection}_"]

    found = {key: _match(names, prefixes, key) for key in _ALIASES}
    complete = [s for s in _KINEMATICS if all(found[k] for k in s)]
    if not complete:
        best = max(_KINEMATICS[1:3], key=lambda s: sum(found[k] is not None for k in s))
        if not any(found[k] for k in best) and preset == "flat":
            hint = "a flat tree needs branches (energy or E, eta, phi), (pt, eta, phi) or (px, py, pz)"
            collections = _collections_hint(names)
            if collections:
                hint += f"{collections} (pass collection= to read one)"
            raise BranchError(best[0], file=path, tree=tree.name, available=names, hint=hint)
        missing = next(k for k in best if found[k] is None)
        raise BranchError(_spelled(prefixes[0], missing, preset), file=path, tree=tree.name, available=names)
    plan: dict[str, str] = {k: str(found[k]) for k in complete[0]}
    select = collection is not None and collection.lower() in (c.lower() for c in GENERATOR_COLLECTIONS)
    wanted = None if particle is None else pdgid_of(particle)
    electrons = (collection or "").lower() in _ELECTRON_NAMES or (
        wanted is not None and abs(wanted) == PARTICLES["electron"]
    )
    if found["pdgid"]:
        plan["pdgid"] = str(found["pdgid"])
    elif select:
        raise BranchError(_spelled(prefixes[0], "pdgid", preset), file=path, tree=tree.name, available=names,
                          hint="generator-level particles are selected by their PDG id")
    elif found["charge"] and electrons:
        plan["charge"] = str(found["charge"])
    elif wanted is None and (collection or "").lower() not in _PHOTON_NAMES:
        what = "pdgId or charge" if electrons else "pdgId"
        msg = (
            f"{where}: cannot tell the particle type of {collection or 'the entries'!r}: no {what} branch; "
            "pass particle='photon', 'electron' or 'positron'"
        )
        raise ValueError(msg)
    if select and found["status"]:
        plan["status"] = str(found["status"])
    for key in OPTIONAL_FIELDS:
        if found[key]:
            plan[key] = str(found[key])
    return _Plan(branches=plan, name=collection, select=select)


def _plan_mapping(
    tree: Any,
    path: str,
    names: list[str],
    collection: str | None,
    mapping: Mapping[str, str],
    particle: str | int | None,
) -> _Plan:
    unknown = [k for k in mapping if k not in MAPPING_KEYS]
    if unknown:
        msg = f"unknown key(s) {unknown} in branches=: expected keys among {', '.join(MAPPING_KEYS)}"
        raise ValueError(msg)
    complete = [s for s in _KINEMATICS if all(k in mapping for k in s)]
    if not complete:
        msg = (
            f"branches= maps {sorted(mapping)}: it needs (energy or E, eta, phi), (pt, eta, phi) "
            "or (px, py, pz)"
        )
        raise ValueError(msg)
    keys = [*complete[0], *(k for k in ("pdgid", "charge", *OPTIONAL_FIELDS) if k in mapping)]
    if "pdgid" in keys and "charge" in keys:
        keys.remove("charge")
    plan = {k: mapping[k] for k in keys}
    for branch in plan.values():
        if branch not in names:
            raise BranchError(branch, file=path, tree=tree.name, available=names)
    return _Plan(branches=plan, name=collection, select=False)


def _branch_names(tree: Any) -> list[str]:
    """Branch names as uproot's filter_name sees them: short names, and full paths."""
    names = list(tree.keys())
    try:
        short = tree.keys(full_paths=False)
    except TypeError:
        short = []
    if not isinstance(tree, uproot.behaviors.TBranch.HasBranches):
        short = []  # an RNTuple's short names drop the record's name
    return list(dict.fromkeys([*short, *names]))


def _match(names: Sequence[str], prefixes: Sequence[str], key: str) -> str | None:
    """The name among ``names`` of ``key`` (e.g. "Photon_" + "pt"), exactly, else ignoring case."""
    candidates = [p + alias for p in prefixes for alias in _ALIASES[key]]
    for c in candidates:
        if c in names:
            return c
    lowered = {n.lower(): n for n in reversed(names)}
    for c in candidates:
        if c.lower() in lowered:
            return lowered[c.lower()]
    return None


def _spelled(prefix: str, key: str, preset: str) -> str:
    """How a preset would spell a branch, for messages."""
    delphes = {"pt": "PT", "eta": "Eta", "phi": "Phi", "pdgid": "PID", "px": "Px", "py": "Py", "pz": "Pz"}
    nano = {"pdgid": "pdgId"}
    table = delphes if preset == "delphes" else nano
    return prefix + table.get(key, key)


def _collections_hint(names: Sequence[str]) -> str:
    found = sorted({n[: -len("_pt")] for n in names if n.endswith("_pt")}
                   | {n[: -len(".PT")] for n in names if n.endswith(".PT")})
    return f"; collections in this tree: {', '.join(found)}" if found else ""


def _prefix(name: str) -> str:
    for sep in ("_", "."):
        if sep in name:
            return name.split(sep, 1)[0]
    return ""


def _or_list(items: Sequence[Any]) -> str:
    quoted = [repr(i) for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


# ---------------------------------------------------------------------------------------------
# example input


def write_example(
    path: str | os.PathLike[str], *, n_events: int = 1000, seed: int = 1, overwrite: bool = False
) -> Path:
    """Write a small NanoAOD-style ROOT file of photons and electrons, for demos and tests.

    The TTree ``Events`` has per event a Poisson number of photons (mean 2, so about 13.5 % of
    the events have none) and of electrons (mean 1, charge -1 or +1 with equal odds):
    ``nPhoton``, ``Photon_pt/eta/phi/mass`` (mass 0) and ``nElectron``,
    ``Electron_pt/eta/phi/mass/charge/pdgId`` (mass 0.000511 GeV, pdgId = -11 * charge), all
    float32 but the int32 charge and pdgId, plus ``run``, ``luminosityBlock`` (uint32),
    ``event`` (uint64) and ``MET_pt`` (float32, exponential with mean 20 GeV).

    Ranges: kinetic energy log-uniform in 1-100 GeV (the detector's range; pt = |p| / cosh(eta)),
    eta uniform in (-1.4, 1.4), phi uniform in (-pi, pi). Random numbers come from
    ``numpy.random.default_rng(seed)``. The file is written atomically.

    Arguments:
        path: the file to write.
        n_events: the number of events.
        seed: the random seed.
        overwrite: replace an existing file (else FileExistsError).

    Returns:
        ``path`` as a Path.

    Example:
        >>> import tempfile, pathlib
        >>> path = write_example(pathlib.Path(tempfile.mkdtemp()) / "nano.root", n_events=100)
        >>> electrons = read(path, collection="Electron")
        >>> len(electrons), sorted(set(ak.flatten(electrons.pdgid).tolist()))
        (100, [-11, 11])
    """
    from .datasets import atomic_path

    if isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer)) or n_events < 0:
        msg = f"n_events must be a non-negative integer, got {n_events!r}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    n_photons = rng.poisson(_EXAMPLE_MEAN_PHOTONS, n_events)
    n_electrons = rng.poisson(_EXAMPLE_MEAN_ELECTRONS, n_events)
    photons = _example_particles(rng, int(n_photons.sum()), 0.0)
    electrons = _example_particles(rng, int(n_electrons.sum()), _MASS[PARTICLES["electron"]])
    charge = rng.choice(np.array([-1, 1], dtype=np.int32), size=int(n_electrons.sum()))
    electrons["charge"] = charge
    electrons["pdgId"] = (-PARTICLES["electron"] * charge).astype(np.int32)
    data = {
        "run": np.ones(n_events, dtype=np.uint32),
        "luminosityBlock": (np.arange(n_events) // 100 + 1).astype(np.uint32),
        "event": np.arange(1, n_events + 1, dtype=np.uint64),
        "Photon": ak.unflatten(ak.zip(photons), n_photons),
        "Electron": ak.unflatten(ak.zip(electrons), n_electrons),
        "MET_pt": rng.exponential(_EXAMPLE_MET_MEAN, n_events).astype(np.float32),
    }
    types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()}
    with atomic_path(path, overwrite=overwrite) as tmp, uproot.recreate(tmp) as file:
        tree = file.mktree("Events", types, title="fastcalo example (NanoAOD-style; GeV)")
        if n_events:
            tree.extend(data)
    return Path(path)


def _example_particles(rng: np.random.Generator, n: int, mass: float) -> dict[str, np.ndarray]:
    low, high = DEFAULT_DETECTOR.conditions.energy
    kinetic = np.exp(rng.uniform(np.log(low), np.log(high), n))
    eta = rng.uniform(-_EXAMPLE_ETA, _EXAMPLE_ETA, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    p = np.sqrt(kinetic * (kinetic + 2 * mass))
    return {
        "pt": (p / np.cosh(eta)).astype(np.float32),
        "eta": eta.astype(np.float32),
        "phi": phi.astype(np.float32),
        "mass": np.full(n, mass, dtype=np.float32),
    }
