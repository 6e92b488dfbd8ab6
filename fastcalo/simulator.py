"""The Simulator: particles in, one 24x24 shower per particle out, batched on CPU or GPU.

Data flow: awkward particles (:mod:`fastcalo.particles`: energy, eta, phi, pdgid per particle) ->
a flat table (:class:`fastcalo.engine.Particles`) -> the batching engine on the device
(:class:`fastcalo.engine.Engine`, the one sampling path) -> images -> back to awkward with the
original event structure (or to ROOT / HDF5, chunk by chunk; dask: :mod:`fastcalo.scheduling`).

Randomness is keyed by the particle's *global index* (its position in the flattened input, or in
the whole file for :meth:`Simulator.run_file`): the random numbers of particle ``i`` come from
block ``i // BLOCK`` of a stream seeded by ``(seed, block)``. So a shower depends only on the seed,
the particle's conditions and its index: on the CPU the output is bit-identical at any batch size,
chunk size or number of dask workers (for the same dtype and number of torch threads: the networks
always run on whole, aligned blocks); on a GPU it agrees to float rounding.

Particles outside the model's trained ranges (energy, |eta|, particle type) follow the
``out_of_range`` policy: ``"error"`` (default) raises, ``"clip"`` moves energy and eta to the
nearest edge of the range, ``"skip"`` gives those particles an all-zero image; both of the latter
log how many particles they touched. Non-finite kinematics and energies <= 0 are always an error.

Example:
    >>> import fastcalo
    >>> sim = fastcalo.Simulator(seed=1)
    >>> images = sim.sample(energy=20.0, eta=0.2, particle="photon", n=3)
    >>> images.shape, images.dtype, bool((images >= 0).all())
    ((3, 24, 24), dtype('float32'), True)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt
import torch

from ._names import near_misses
from .detector import Detector, pdgid_of
from .engine import BLOCK, DTYPES, OUT_OF_RANGE, Engine, Particles, check_seed, choose_device, stream_key
from .datasets import file_sha256
from .gflash import GFlash, GFlashEngine
from .model import DEFAULT_MODEL, ShowerModel, load
from .particles import Reader, flatten, open_tree, standardize
from .scheduling import is_dask, run_dask, simulated_chunks

__all__ = ("BLOCK", "OUT_OF_RANGE", "STEP_SIZE", "Simulator")

log = logging.getLogger("fastcalo.simulator")

#: The ``model`` name of the parametrised peer (:mod:`fastcalo.gflash`).
GFLASH = "gflash"

#: Input events per chunk of :meth:`Simulator.run_file` (and ``fastcalo simulate --step-size``):
#: the fastest measured size whose peak memory stays well under 1 GB
#: (benchmarks/step_size.py; benchmarks/README.md).
STEP_SIZE = 10_000

# One loaded model per process (and device, dtype): dask workers unpickle Simulators many times.
_MODELS: dict[tuple[str, str, str, str], ShowerModel] = {}
_MODELS_LOCK = threading.Lock()


class Simulator:
    """Generate calorimeter showers with a trained model.

    Arguments:
        model: ``"default"`` (the shipped model), ``"gflash"`` (the parametrised peer,
            :mod:`fastcalo.gflash`: it runs on the CPU whatever ``device`` and ``dtype`` say), a
            model directory (``"./gflash"`` for a directory of that name), or a loaded
            :class:`fastcalo.model.ShowerModel`.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        batch_size: particles per generator call on a GPU (default 65 536); a device
            out-of-memory error halves it and retries, losing nothing. On the CPU the networks
            run on blocks of 1024 particles, one per thread (``torch.get_num_threads()`` at once),
            whatever the batch size (the GFlash peer batches by it).
        seed: the random seed, an integer in [0, 2**63) (never taken modulo or truncated); with
            the particle's global index it fixes every shower.
        dtype: the generator's arithmetic, ``"float32"`` (default), ``"float16"`` or
            ``"bfloat16"`` (GPU); the images are float32 in any case.
        out_of_range: ``"error"`` (default), ``"clip"`` or ``"skip"`` for particles outside the
            model's trained energy and eta ranges (see the module docstring).

    Raises:
        ValueError: an unknown device, dtype or policy, a batch size below 1, or a seed that is
            not an integer in [0, 2**63).
        fastcalo.model.ModelFileError: a model directory that is not a valid model.

    Example:
        >>> import awkward as ak, fastcalo
        >>> sim = fastcalo.Simulator(seed=7)
        >>> events = ak.Array([[{"energy": 10.0, "eta": 0.1, "phi": 0.0, "pdgid": 22}], [],
        ...                    [{"energy": 50.0, "eta": -1.0, "phi": 1.0, "pdgid": 11}] * 2])
        >>> showers = sim.run(events)
        >>> str(showers.type), ak.num(showers).tolist()
        ('3 * var * 24 * 24 * float32', [1, 0, 2])
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | ShowerModel = "default",
        *,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        seed: int = 0,
        dtype: str = "float32",
        out_of_range: str = "error",
    ) -> None:
        if dtype not in DTYPES:
            msg = f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}"
            raise ValueError(msg)
        seed = check_seed(seed)  # before loading a model
        peer = isinstance(model, str) and model == GFLASH  # numba on the CPU, in float64, whatever is asked
        self.device = torch.device("cpu") if peer else choose_device(device)
        self.dtype = "float32" if peer else dtype
        #: torch CPU threads to set in dask workers before simulating (None: leave as is).
        self.threads: int | None = None
        # where the model comes from: a directory (resolved path) or the model itself
        self._origin: str | ShowerModel
        self.engine: Engine
        if isinstance(model, ShowerModel):
            self._origin = model
            placed = _placed(model, self.device, dtype)
        elif peer:
            self._origin = GFLASH
            self.engine = GFlashEngine(seed=seed, batch_size=batch_size, out_of_range=out_of_range)
            return
        else:
            self._origin = str((DEFAULT_MODEL if str(model) == "default" else Path(model)).resolve())
            placed = _cached_model(self._origin, self.device, dtype)
        self.engine = Engine(placed, seed=seed, batch_size=batch_size, out_of_range=out_of_range)

    @property
    def model(self) -> ShowerModel | GFlash:
        """The model, on the device, in the simulator's precision (the parametrisation for ``"gflash"``)."""
        return self.engine.peer if isinstance(self.engine, GFlashEngine) else self.engine.model

    @property
    def detector(self) -> Detector:
        """The calorimeter the model simulates."""
        return self.engine.detector

    @property
    def seed(self) -> int:
        return self.engine.seed

    @property
    def batch_size(self) -> int:
        """Particles per generator call (halved after a device out-of-memory error)."""
        return self.engine.batch_size

    @property
    def out_of_range(self) -> str:
        return self.engine.out_of_range

    # -- pickling (dask): ship the model's location (or, for a model in memory, its safetensors
    # bytes), not a torch module, and load it once per worker
    def __getstate__(self) -> dict[str, Any]:
        origin = self._origin if isinstance(self._origin, str) else _model_bytes(self._origin)
        return {
            "model": origin, "device": str(self.device), "dtype": self.dtype, "threads": self.threads,
            "seed": self.seed, "batch_size": self.batch_size, "out_of_range": self.out_of_range,
        }  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.device = torch.device(state["device"])
        self.dtype = state["dtype"]
        self.threads = state["threads"]
        if state["model"] == GFLASH:
            self._origin = GFLASH
            self.engine = GFlashEngine(seed=state["seed"], batch_size=state["batch_size"], out_of_range=state["out_of_range"])
            return
        if isinstance(state["model"], str):
            self._origin = state["model"]
            placed = _cached_model(self._origin, self.device, self.dtype)
        else:  # in the precision the original ran in, the energy model in float32 as there
            self._origin = placed = _placed(_model_from_bytes(state["model"]), self.device, self.dtype)
        self.engine = Engine(placed, seed=state["seed"], batch_size=state["batch_size"], out_of_range=state["out_of_range"])

    def __repr__(self) -> str:
        where = self._origin if isinstance(self._origin, str) else "<in memory>"
        return (
            f"Simulator(model={where!r}, device={str(self.device)!r}, batch_size={self.batch_size}, "
            f"seed={self.seed}, dtype={self.dtype!r}, out_of_range={self.out_of_range!r})"
        )

    # -- public entry points
    def run(self, events: Any, *, particle: str | int | None = None, first_index: int = 0, stream: Hashable | None = None) -> Any:
        """One shower per particle, in the events and the order of the input (awkward arrays and
        dask-awkward arrays have no static types: ``Any`` here).

        Arguments:
            events: an awkward collection in any layout :func:`fastcalo.particles.standardize`
                reads (the standard records, a NanoAOD/coffea collection such as
                ``events.Photon``, ...), jagged (one list per event, kept) or flat; or a
                dask-awkward array of one.
            particle: the particle type where the collection does not say it.
            first_index: the global index of the first particle (for callers that split a
                dataset themselves).
            stream: an int, a string or a tuple of them (e.g. a coffea chunk's
                ``(filename, entrystart)``) naming an independent random stream: calls with
                different streams never share random numbers, whatever their indices.

        Returns:
            ``events * var * 24 * 24 * float32`` in GeV (``n * 24 * 24`` for a flat input). For a
            dask-awkward input, a lazy dask-awkward result equal to the eager one; building it
            computes nothing (:func:`fastcalo.scheduling.run_dask`).

        Raises:
            ValueError: particles the policy refuses, bad kinematics, a negative ``first_index``.

        Example:
            >>> import awkward as ak, fastcalo
            >>> photons = ak.Array([[{"pt": 10.0, "eta": 0.1, "phi": 0.0}], []])
            >>> str(fastcalo.Simulator(seed=2).run(photons, particle="photon").type)
            '2 * var * 24 * 24 * float32'
        """
        if is_dask(events):
            return run_dask(self, events, particle=particle, first_index=first_index, stream=stream)
        table = standardize(events, particle=particle)
        flat, counts = flatten(table)
        showers = self.engine.simulate(Particles.from_records(flat), first_index, stream_key(stream))
        images = ak.from_numpy(showers.images, regulararray=True)
        return images if counts is None else ak.unflatten(images, counts)

    def sample(
        self,
        *,
        energy: npt.ArrayLike,
        eta: npt.ArrayLike = 0.0,
        particle: str | int | npt.ArrayLike = "photon",
        n: int | None = None,
        phi: npt.ArrayLike = 0.0,
        impact_x: npt.ArrayLike | None = None,
        impact_y: npt.ArrayLike | None = None,
        first_index: int = 0,
    ) -> npt.NDArray[np.float32]:
        """Showers (N, 24, 24) float32 numpy, GeV, for conditions given as scalars or arrays.

        Scalars are repeated ``n`` times; arrays (all of one length N) give one shower each.

        Arguments:
            energy: incident energy, GeV.
            eta: pseudorapidity.
            particle: ``"photon"``, ``"electron"``, ``"positron"`` or a PDG id (or an array of them);
                an id must have an integer value (11 or 11.0; 11.2 is an error).
            n: the number of showers where every condition is a scalar: an integer >= 0.
            phi: azimuth, rad (carried, no effect on the shower).
            impact_x, impact_y: impact point inside the central cell, mm; drawn uniformly there
                unless given.
            first_index: the global index of the first shower (its random numbers).

        Returns:
            (N, 24, 24) float32 numpy, GeV.

        Raises:
            ValueError: arrays of different lengths (or not ``n``), arrays of more than one
                dimension, ``n`` not an integer >= 0, an unknown particle or a non-integer PDG id,
                or particles the policy refuses.

        Example:
            >>> import numpy as np, fastcalo
            >>> sim = fastcalo.Simulator(seed=3)
            >>> images = sim.sample(energy=[5.0, 50.0], eta=0.0, particle="electron")
            >>> images.shape, np.round(images.sum(axis=(1, 2)) / [5.0, 50.0], 1).tolist()
            ((2, 24, 24), [1.0, 1.0])
        """
        if n is not None and (isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0):
            msg = f"sample: n must be an integer >= 0 (the number of showers), got {n!r}"
            raise ValueError(msg)
        try:
            pdgid = _pdgids(particle)
        except ValueError as err:
            msg = f"sample: particle: {err}"
            raise ValueError(msg) from None
        try:
            table = Particles.of(energy=energy, eta=eta, phi=phi, pdgid=pdgid, impact_x=impact_x, impact_y=impact_y, n=n)
        except ValueError as err:
            msg = f"sample: {err}"
            raise ValueError(msg) from None
        return self.engine.simulate(table, first_index).images

    def run_file(
        self,
        input: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        tree: str | None = None,
        collection: str | None = None,
        preset: str = "auto",
        branches: dict[str, str] | None = None,
        particle: str | int | None = None,
        step_size: int = STEP_SIZE,
        copy_branches: bool | list[str] = False,
        cells: str | None = None,
        compression: str | None = None,
        overwrite: bool = False,
        progress: bool = True,
        client: Any = None,
    ) -> Path:
        """Simulate every particle of a ROOT file into ``output`` (.root or .h5), chunk by chunk.

        Reads ``step_size`` events at a time (default 10 000: bounded memory, about 0.7 GB peak for
        NanoAOD-style photons, benchmarks/step_size.py) with :func:`fastcalo.particles.iterate`
        (``tree``, ``collection``, ``preset``, ``branches``, ``particle`` as there) and writes the
        showers atomically (a failure leaves no output file), in the input's order:

        - ROOT: a TTree named like the input's (at the top of the file, also for an input tree in
          a directory, ``tree="dir/tree"``), one entry per input event, with ``n<C>`` and the
          jagged branches ``<C>_energy, _eta, _phi, _pdgid, _impact_x, _impact_y`` and
          ``<C>_image`` (576 cells per particle, row-major), or with ``cells="hits"`` the cells
          above the threshold as ``<C>_nhits``, ``<C>_hit_cell`` and ``<C>_hit_energy``
          (default: :data:`fastcalo.datasets.CELLS`), ``<C>`` the collection name ("particles"
          if none), compressed with ``compression`` ("lz4:1", "zstd:3", "zlib:1", "none", ...;
          default :data:`fastcalo.datasets.COMPRESSION`); ``copy_branches`` (True: all, or a
          list of names) copies input branches through, entry by entry.
          :func:`fastcalo.datasets.read` and ``fastcalo-validate`` read it as a shower dataset.
        - HDF5: the CaloChallenge layout of :mod:`fastcalo.datasets` plus ``event``, the input
          entry of every shower.

        ``client``: a ``dask.distributed.Client``; chunks are then simulated on its workers (one
        model per worker) and written here in order, with at most two chunks per worker in
        flight. The output is identical to the serial one. Returns the output path.

        An existing ``output`` is refused unless ``overwrite``, and even then it is replaced only
        if it is a shower file that fastcalo wrote (:func:`fastcalo.datasets.replaceable`).
        """
        from . import datasets

        if step_size <= 0:
            msg = f"step_size must be > 0, got {step_size}"
            raise ValueError(msg)
        name = collection or "particles"
        datasets.check_not_input(output, input)
        if copy_branches and datasets.file_kind(output) != "root":
            msg = f"{output}: copying input branches needs ROOT output (.root), not HDF5"
            raise ValueError(msg)
        source = open_tree(input, tree)
        try:
            tree_path = str(source.object_path).strip("/").split(";")[0]  # "dir/tree" for a tree in a TDirectory
            tree_name = str(source.name)
            n_entries = int(source.num_entries)
            copy = _copy_list(source, copy_branches, str(input), name)
        finally:
            source.file.close()
        reader = Reader(tree=tree_path, collection=collection, preset=preset, branches=branches, particle=particle)
        meta = {
            "generator": "fastcalo.Simulator",
            "model": self._origin if isinstance(self._origin, str) else "<in memory>",
            "seed": self.seed,
            "input": str(input),
            "collection": name,
            "out_of_range": self.out_of_range,
        }
        bar = _progress(n_entries, progress, f"simulate {Path(input).name}")
        with datasets.EventWriter(
            output, tree=tree_name, collection=name, overwrite=overwrite, detector=self.detector, metadata=meta,
            cells=cells, compression=compression,
        ) as out:
            for chunk in simulated_chunks(self, input, reader, step_size=step_size, copy=copy, client=client):
                out.write(chunk.showers, counts=chunk.counts, first_event=chunk.start, extra=chunk.extra)
                bar.update(chunk.stop - chunk.start)
        bar.close()
        log.info("simulated %d particles in %d events into %s", out.n_written, n_entries, output)
        return Path(output)


    def run_like(
        self,
        reference: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        step_size: int = 100_000,
        overwrite: bool = False,
        progress: bool = True,
    ) -> Path:
        """Showers for exactly the particles of a shower file, into a shower file.

        The particles of ``reference`` (energy, eta, phi, pdgid and impact point, e.g. a reference
        Monte Carlo or Geant4 sample) are simulated in its order, ``step_size`` at a time, and
        written atomically to ``output`` (.root or .h5, the flat layouts of
        :mod:`fastcalo.datasets`): the generated sample to compare with ``reference`` in
        ``fastcalo-validate``, like with like.

        Arguments:
            reference: a shower file :func:`fastcalo.datasets.iterate` reads.
            output: the shower file to write.
            step_size: showers per chunk.
            overwrite: replace an existing ``output``, and only a shower file that fastcalo
                wrote (:func:`fastcalo.datasets.replaceable`).
            progress: show a progress bar.

        Returns:
            The output path.

        Raises:
            FileExistsError: ``output`` exists and ``overwrite`` is False, or it is not a shower
                file of fastcalo.
            ValueError: a bad reference file, particles the policy refuses, or ``output`` is
                ``reference`` itself.

        Example:
            >>> import tempfile, pathlib, fastcalo
            >>> from fastcalo import mc
            >>> tmp = pathlib.Path(tempfile.mkdtemp())
            >>> _ = mc.simulate_to_file(mc.sample_conditions(3, points=(10.0,), seed=1), tmp / "mc.h5", seed=1, progress=False)
            >>> out = fastcalo.Simulator(seed=1).run_like(tmp / "mc.h5", tmp / "gen.h5", progress=False)
            >>> generated = fastcalo.datasets.read(out)
            >>> bool((generated.energy == fastcalo.datasets.read(tmp / "mc.h5").energy).all()), generated.images.shape
            (True, (3, 24, 24))
        """
        from . import datasets

        datasets.check_not_input(output, reference)
        meta = {
            "generator": "fastcalo.Simulator",
            "model": self._origin if isinstance(self._origin, str) else "<in memory>",
            "seed": self.seed,
            "like": str(reference),
        }
        bar = _progress(None, progress, f"simulate like {Path(reference).name}", unit=" showers")
        first = 0
        with datasets.ShowerWriter(output, overwrite=overwrite, detector=self.detector, metadata=meta) as out:
            for chunk in datasets.iterate(reference, step_size=step_size, detector=self.detector):
                table = Particles(chunk.energy, chunk.eta, chunk.phi, chunk.pdgid, chunk.impact_x, chunk.impact_y)
                out.write(self.engine.simulate(table, first))
                first += len(chunk)
                bar.update(len(chunk))
        bar.close()
        log.info("simulated %d particles like %s into %s", first, reference, output)
        return Path(output)


def _copy_list(tree: Any, copy: bool | list[str], where: str, collection: str) -> list[str]:
    """Input branches to copy: all (True) but those named like the output collection's own
    branches (``<C>_*``, ``n<C>``), or exactly the names given (an error if one is the output's)."""
    names = list(tree.keys(recursive=False))
    own = [n for n in names if n == collection or n.startswith((f"{collection}_", f"{collection}.", f"n{collection}"))]
    if copy is True:
        return [n for n in names if n not in own]
    if not copy:
        return []
    clash = [b for b in copy if b in own]
    if clash:
        msg = (
            f"{where}: cannot copy {clash}: the output writes its own {collection!r} branches "
            f"(n{collection}, {collection}_energy, _eta, _phi, _pdgid, _impact_x, _impact_y, _image); "
            "copy other branches, or name the input collection differently"
        )
        raise ValueError(msg)
    missing = [b for b in copy if b not in names]
    if missing:
        near = {m: near_misses(m, names) for m in missing}
        msg = f"{where}: cannot copy branch(es) {missing}: not in tree {tree.name!r} (near misses: {near}; it has {names[:30]})"
        raise KeyError(msg)
    return list(copy)


def _progress(total: int | None, enabled: bool, description: str, unit: str = " events") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=description, disable=not enabled, leave=False)


def _placed(model: ShowerModel, device: torch.device, dtype: str) -> ShowerModel:
    """The model on ``device`` in ``dtype``, but for its energy model: that stays float32, whose
    quantile levels near 0 and 1 (down to 1e-3) and uniform variates half precision cannot resolve."""
    model = model.to(device)
    for network in (model.generator, model.critic):  # not the energy model: a round trip would round its levels
        network.to(DTYPES[dtype])
    return model.eval()


def _cached_model(path: str, device: torch.device, dtype: str) -> ShowerModel:
    digest = file_sha256(Path(path) / "model.safetensors") if (Path(path) / "model.safetensors").is_file() else ""
    key = (path, digest, str(device), dtype)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _placed(load(path), device, dtype)
        return _MODELS[key]


def _model_bytes(model: ShowerModel) -> bytes:
    """A model as bytes (safetensors weights + JSON metadata), for pickling in-memory models."""
    import io
    import tempfile
    import zipfile

    from .model import save

    with tempfile.TemporaryDirectory() as tmp:
        directory = save(model, Path(tmp) / "model", training=model.metadata.get("training"))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for name in ("model.json", "model.safetensors"):
                zf.write(directory / name, name)
        return buffer.getvalue()


def _model_from_bytes(data: bytes) -> ShowerModel:
    import io
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(tmp)
        return load(tmp)


def _pdgids(particle: str | int | npt.ArrayLike) -> npt.NDArray[np.int32]:
    """PDG ids of a name, an id or an array of them (:func:`fastcalo.detector.pdgid_of` on each
    distinct value, not on every element: a million showers have three particle types)."""
    try:
        values = np.asarray(particle)
    except ValueError:  # ragged: element by element below, which names the bad one
        values = np.asarray(particle, dtype=object)
    if values.dtype.kind in "biuf" or (values.dtype.kind in "US" and isinstance(particle, np.ndarray)):
        # numbers, and numpy arrays of strings: numpy finds the distinct values without a Python
        # call per element (a list mixing names and numbers is not one: numpy would make 11 "11")
        unique, inverse = np.unique(values.reshape(-1), return_inverse=True)
        found: npt.NDArray[np.int32] = np.vectorize(pdgid_of, otypes=[np.int32])(unique)[inverse].reshape(values.shape)
        return found
    values = np.asarray(particle, dtype=object)
    to_id = np.vectorize(pdgid_of, otypes=[np.int32])
    flat = values.reshape(-1)
    try:
        distinct: set[object] = set(flat.tolist())  # by hash: names and numbers may mix (they cannot be sorted)
    except TypeError:  # an unhashable element: each element on its own, pdgid_of names the bad one
        element_ids: npt.NDArray[np.int32] = to_id(values)
        return element_ids
    ids = np.empty(flat.shape, dtype=np.int32)
    for value in distinct:
        ids[flat == value] = pdgid_of(value)  # type: ignore[arg-type]
    return ids.reshape(values.shape)
