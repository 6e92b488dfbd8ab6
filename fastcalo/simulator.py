"""The Simulator: particles in, one 24x24 shower per particle out, batched on CPU or GPU.

Data flow: awkward particles (:mod:`fastcalo.particles`: energy, eta, phi, pdgid per particle) ->
a flat condition table -> batched generator on the device -> images -> back to awkward with the
original event structure (or to ROOT / HDF5, chunk by chunk).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch

from .detector import Detector, pdgid_of
from .model import DEFAULT_MODEL, ShowerModel, load

__all__ = ("BLOCK", "OUT_OF_RANGE", "Simulator")

log = logging.getLogger("fastcalo.simulator")

#: Particles per random-number block: the unit in which random streams are keyed.
BLOCK = 1024

# The fewest rows per generator call on a GPU: below this, BLAS takes matrix-vector paths whose
# rounding differs from the matrix-matrix kernels (on the CPU every call has BLOCK rows).
_MIN_ROWS = 16

#: The policies for particles outside the model's trained ranges.
OUT_OF_RANGE = ("error", "clip", "skip")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# One loaded model per process (and device, dtype): dask workers unpickle Simulators many times.
_MODELS: dict[tuple[str, str, str, str], ShowerModel] = {}
_MODELS_LOCK = threading.Lock()


def _is_oom(error: BaseException) -> bool:
    """A device (CUDA) or host allocation failure: worth retrying with a smaller batch."""
    if isinstance(error, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if oom and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and (
        "out of memory" in str(error).lower() or "can't allocate memory" in str(error).lower()
    )


def _stream_key(stream: Any) -> list[int]:
    """A stable integer key for a user's stream label (an int, a string, or a tuple of them)."""
    if stream is None:
        return []
    import hashlib

    digest = hashlib.sha256(repr(stream).encode()).digest()
    return [int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:16], "little")]


def _block_seed(seed: int, block: int, stream: list[int] | None = None) -> int:
    """A 63-bit seed for one block of one stream (SeedSequence mixes the entropy well)."""
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, *(stream or []), int(block)]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


@dataclass(frozen=True)
class _Columns:
    """A flat table of particles (numpy, one entry per particle)."""

    energy: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    pdgid: np.ndarray
    impact_x: np.ndarray | None = None
    impact_y: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.energy.shape[0])

    def __getitem__(self, index: slice) -> _Columns:
        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return _Columns(
            self.energy[index], self.eta[index], self.phi[index], self.pdgid[index], take(self.impact_x), take(self.impact_y)
        )


@dataclass(frozen=True)
class _BlockDraws:
    """The random numbers of one block of BLOCK particles (see :meth:`Simulator._draws`)."""

    z: torch.Tensor
    u: torch.Tensor
    noise: torch.Tensor | None
    impact: np.ndarray


def _padded(rows: torch.Tensor, inside: slice, length: int = BLOCK) -> torch.Tensor:
    """``rows`` placed at ``inside`` of a tensor of ``length`` rows (the others: copies of the first)."""
    if rows.shape[0] == length:
        return rows
    out = rows[:1].expand(length, *rows.shape[1:]).clone()
    out[inside] = rows
    return out


@dataclass(frozen=True)
class Showers:
    """Generated showers of a flat table of particles: images (N, n, n) float32 GeV, the impact
    points used (mm), and which particles were simulated (False: skipped by the policy)."""

    images: np.ndarray
    impact_x: np.ndarray
    impact_y: np.ndarray
    simulated: np.ndarray
    energy: np.ndarray  # the energy and eta simulated at (clipped under out_of_range="clip")
    eta: np.ndarray


class Simulator:
    """Generate calorimeter showers with a trained model.

    Arguments:
        model: ``"default"`` (the shipped model), a model directory, or a loaded
            :class:`fastcalo.model.ShowerModel`.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        batch_size: particles per generator call (default 4096 on CPU, 65 536 on a GPU); a
            device out-of-memory error halves it and retries, losing nothing.
        seed: the random seed; with the particle's global index it fixes every shower.
        dtype: the generator's arithmetic, ``"float32"`` (default), ``"float16"`` or
            ``"bfloat16"`` (GPU); the images are float32 in any case.
        out_of_range: ``"error"`` (default), ``"clip"`` or ``"skip"`` for particles outside the
            model's trained energy and eta ranges (see the module docstring).

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
        if out_of_range not in OUT_OF_RANGE:
            msg = f"out_of_range must be one of {OUT_OF_RANGE}, got {out_of_range!r}"
            raise ValueError(msg)
        if dtype not in _DTYPES:
            msg = f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}"
            raise ValueError(msg)
        if batch_size is not None and batch_size <= 0:
            msg = f"batch_size must be > 0, got {batch_size}"
            raise ValueError(msg)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            msg = f"device {device!r} asked for, but torch sees no CUDA device (torch {torch.__version__})"
            raise ValueError(msg)
        self.dtype = dtype
        self.seed = int(seed)
        self.out_of_range = out_of_range
        self.batch_size = batch_size or (65_536 if self.device.type == "cuda" else 4096)  # CPU: fits in cache (benchmarks/)
        #: torch CPU threads to set in dask workers before simulating (None: leave as is).
        self.threads: int | None = None
        self._source: tuple[str, Any]
        if isinstance(model, ShowerModel):
            self._source = ("memory", _model_bytes(model))
            self.model = _placed(model, self.device, dtype)
        else:
            path = DEFAULT_MODEL if str(model) == "default" else Path(model)
            self._source = ("path", str(Path(path).resolve()))
            self.model = _cached_model(self._source[1], self.device, dtype)
        self.detector: Detector = self.model.detector

    # -- pickling (dask): ship the model's location, not its weights, and load it once per worker
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["model"]
        state["device"] = str(self.device)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.device = torch.device(state["device"])
        kind, value = self._source
        if kind == "path":
            self.model = _cached_model(value, self.device, self.dtype)
        else:
            self.model = _model_from_bytes(value).to(self.device, _DTYPES[self.dtype]).eval()

    def __repr__(self) -> str:
        kind, value = self._source
        where = value if kind == "path" else "<in memory>"
        return (
            f"Simulator(model={where!r}, device={str(self.device)!r}, batch_size={self.batch_size}, "
            f"seed={self.seed}, dtype={self.dtype!r}, out_of_range={self.out_of_range!r})"
        )

    # -- public entry points
    def run(self, events: Any, *, particle: str | int | None = None, first_index: int = 0, stream: Any = None) -> Any:
        """One shower per particle: ``events * var * 24 * 24 * float32`` in GeV (awkward).

        ``events`` is an awkward collection in any layout :func:`fastcalo.particles.standardize`
        reads (the standard records, a NanoAOD/coffea collection such as ``events.Photon``, ...),
        jagged (one list per event, kept) or flat (then ``n * 24 * 24``); ``particle`` names the
        particle type where the collection does not say it. A dask-awkward array gives a lazy
        dask-awkward result equal to the eager one; building it computes nothing: each output
        partition depends on tasks, in the same graph, that count the particles of the partitions
        before it and so fix the global index of its first particle.
        ``first_index`` is the global index of the first particle (for callers that split a
        dataset themselves). ``stream`` (an int, a string or a tuple of them, e.g. a coffea chunk's
        ``(filename, entrystart)``) names an independent random stream: calls with different
        streams never share random numbers, whatever their indices.
        """
        if _is_dask(events):
            return self._run_dask(events, particle=particle, first_index=first_index, stream=stream)
        from . import particles

        table = particles.standardize(events, particle=particle)
        flat, counts = _flatten(table)
        showers = self._simulate(_columns(flat), first_index, stream=_stream_key(stream))
        images = ak.from_numpy(showers.images, regulararray=True)
        return images if counts is None else ak.unflatten(images, counts)

    def sample(
        self,
        *,
        energy: Any,
        eta: Any = 0.0,
        particle: Any = "photon",
        n: int | None = None,
        phi: Any = 0.0,
        impact_x: Any = None,
        impact_y: Any = None,
        first_index: int = 0,
    ) -> np.ndarray:
        """Showers (N, 24, 24) float32 numpy, GeV, for conditions given as scalars or arrays.

        Scalars are repeated ``n`` times; arrays (all of one length N) give one shower each.
        The impact point is drawn uniformly inside the central cell unless given (mm).

        Example:
            >>> import numpy as np, fastcalo
            >>> sim = fastcalo.Simulator(seed=3)
            >>> images = sim.sample(energy=[5.0, 50.0], eta=0.0, particle="electron")
            >>> images.shape, np.round(images.sum(axis=(1, 2)) / [5.0, 50.0], 1).tolist()
            ((2, 24, 24), [1.0, 1.0])
        """
        arrays = {"energy": energy, "eta": eta, "phi": phi}
        lengths = {k: np.size(v) for k, v in arrays.items() if np.ndim(v) > 0}
        pids = np.vectorize(pdgid_of, otypes=[np.int32])(np.asarray(particle, dtype=object))
        if np.ndim(pids) > 0:
            lengths["particle"] = np.size(pids)
        for name, value in (("impact_x", impact_x), ("impact_y", impact_y)):
            if value is not None and np.ndim(value) > 0:
                lengths[name] = np.size(value)
        sizes = set(lengths.values())
        if n is not None:
            sizes.add(int(n))
        if len(sizes) > 1:
            msg = f"sample: arrays (and n) must have one length, got {lengths}" + (f" and n={n}" if n is not None else "")
            raise ValueError(msg)
        size = sizes.pop() if sizes else 1

        def column(value: Any, dtype: Any) -> np.ndarray:
            return np.broadcast_to(np.asarray(value, dtype=dtype), (size,)).copy()

        columns = _Columns(
            energy=column(energy, np.float64),
            eta=column(eta, np.float64),
            phi=column(phi, np.float64),
            pdgid=column(pids, np.int32),
            impact_x=None if impact_x is None else column(impact_x, np.float64),
            impact_y=None if impact_y is None else column(impact_y, np.float64),
        )
        return self._simulate(columns, first_index).images

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
        step_size: int = 100_000,
        copy_branches: bool | list[str] = False,
        overwrite: bool = False,
        progress: bool = True,
        client: Any = None,
    ) -> Path:
        """Simulate every particle of a ROOT file into ``output`` (.root or .h5), chunk by chunk.

        Reads ``step_size`` events at a time (bounded memory) with :func:`fastcalo.particles.read`
        (``tree``, ``collection``, ``preset``, ``branches``, ``particle`` as there) and writes the
        showers atomically (a failure leaves no output file), in the input's order:

        - ROOT: a TTree named like the input's, one entry per input event, with ``n<C>`` and the
          jagged branches ``<C>_energy, _eta, _phi, _pdgid, _impact_x, _impact_y`` and
          ``<C>_image`` (576 cells per particle, row-major), ``<C>`` the collection name
          ("particles" if none); ``copy_branches`` (True: all, or a list of names) copies input
          branches through, entry by entry. :func:`fastcalo.datasets.read` and
          ``fastcalo-validate`` read it as a shower dataset.
        - HDF5: the CaloChallenge layout of :mod:`fastcalo.datasets` plus ``event``, the input
          entry of every shower.

        ``client``: a ``dask.distributed.Client``; chunks are then simulated on its workers (one
        model per worker) and written here in order, with at most two chunks per worker in
        flight. The output is identical to the serial one. Returns the output path.
        """
        from . import datasets, particles

        if step_size <= 0:
            msg = f"step_size must be > 0, got {step_size}"
            raise ValueError(msg)
        name = collection or "particles"
        if copy_branches and datasets._kind(Path(output)) != "root":
            msg = f"{output}: copying input branches needs ROOT output (.root), not HDF5"
            raise ValueError(msg)
        source = particles.open_tree(input, tree)
        try:
            tree_name = str(source.name)
            n_entries = int(source.num_entries)
            copy = _copy_list(source, copy_branches, str(input), name)
        finally:
            source.file.close()
        reader = {"tree": tree_name, "collection": collection, "preset": preset, "branches": branches, "particle": particle}
        ranges = [(start, min(start + step_size, n_entries)) for start in range(0, n_entries, step_size)]
        meta = {
            "generator": "fastcalo.Simulator",
            "model": self._source[1] if self._source[0] == "path" else "<in memory>",
            "seed": self.seed,
            "input": str(input),
            "collection": name,
            "out_of_range": self.out_of_range,
        }
        bar = _progress(n_entries, progress, f"simulate {Path(input).name}")
        with datasets.EventWriter(
            output, tree=tree_name, collection=name, overwrite=overwrite, detector=self.detector, metadata=meta
        ) as out:
            if client is None:
                chunks: Any = self._serial_chunks(str(input), reader, ranges, copy)
            else:
                chunks = self._distributed_chunks(client, str(input), reader, ranges, copy)
            for start, stop, data, counts, extra in chunks:
                out.write(data, counts=counts, first_event=start, extra=extra)
                bar.update(stop - start)
        bar.close()
        log.info("simulated %d particles in %d events into %s", out.n_written, n_entries, output)
        return Path(output)

    def _serial_chunks(self, input: str, reader: dict[str, Any], ranges: list[tuple[int, int]], copy: list[str]) -> Any:
        first = 0
        for start, stop in ranges:
            chunk = _simulate_chunk(self, input, reader, start, stop, first, copy)
            first += len(chunk[2])
            yield chunk

    def _distributed_chunks(
        self, client: Any, input: str, reader: dict[str, Any], ranges: list[tuple[int, int]], copy: list[str]
    ) -> Any:
        # the global index of each chunk's first particle: count the (selected) particles first
        counts = client.gather(
            [client.submit(_count_chunk, input, reader, start, stop, pure=False) for start, stop in ranges]
        )
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else []
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        sim = client.scatter(self, broadcast=True)
        pending: list[Any] = []
        todo = list(zip(ranges, firsts, strict=True))
        while todo or pending:
            while todo and len(pending) < 2 * workers:
                (start, stop), first = todo.pop(0)
                pending.append(client.submit(_simulate_chunk, sim, input, reader, start, stop, int(first), copy, pure=False))
            yield pending.pop(0).result()

    # -- the engine
    def _simulate(self, columns: _Columns, first_index: int, stream: list[int] | None = None) -> Showers:
        """Generate the flat table in batches; halve the batch on a device out-of-memory error."""
        if first_index < 0:
            msg = f"first_index must be >= 0 (the global index of the first particle), got {first_index}"
            raise ValueError(msg)
        n = len(columns)
        side = self.detector.n_cells
        images = np.zeros((n, side, side), dtype=np.float32)
        impact_x = np.empty(n)
        impact_y = np.empty(n)
        energy, eta, pdgid, keep = self._apply_policy(columns, first_index)
        used = _Columns(energy, eta, columns.phi, pdgid, columns.impact_x, columns.impact_y)
        start = 0
        while start < n:
            stop = min(start + self.batch_size, n)
            aligned = (first_index + stop) // BLOCK * BLOCK - first_index  # end batches on a block boundary
            if stop < n and aligned > start:
                stop = aligned
            try:
                out, ix, iy = self._batch(used[start:stop], first_index + start, stream)
            except Exception as error:
                if not _is_oom(error) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning("out of memory on %s: batch size halved to %d, retrying", self.device, self.batch_size)
                continue
            images[start:stop] = out
            impact_x[start:stop], impact_y[start:stop] = ix, iy
            start = stop
        images[~keep] = 0.0
        return Showers(images, impact_x, impact_y, keep, energy, eta)

    def _apply_policy(self, columns: _Columns, first_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Energies, etas and pdgids to generate with, and which particles to simulate, under the
        policy; messages name particles by their global index."""
        ranges = self.detector.conditions
        energy, eta = columns.energy.astype(np.float64), columns.eta.astype(np.float64)
        checks = [("energy", energy), ("eta", eta), ("phi", columns.phi)]
        checks += [(name, v) for name, v in (("impact_x", columns.impact_x), ("impact_y", columns.impact_y)) if v is not None]
        for name, values in checks:
            bad = ~np.isfinite(values)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                msg = f"{int(bad.sum())} particle(s) with non-finite {name} (first: particle {first_index + first}, {name}={values[first]})"
                raise ValueError(msg)
        if (energy <= 0).any():
            first = int(np.flatnonzero(energy <= 0)[0])
            msg = f"{int((energy <= 0).sum())} particle(s) with energy <= 0 GeV (first: particle {first_index + first}, {energy[first]} GeV)"
            raise ValueError(msg)
        low, high = self.detector.central_cell
        for name, values in (("impact_x", columns.impact_x), ("impact_y", columns.impact_y)):
            if values is not None and ((values < low) | (values > high)).any():
                first = int(np.flatnonzero((values < low) | (values > high))[0])
                msg = (
                    f"{name} must lie in the central cell [{low}, {high}] mm, found {values[first]} "
                    f"(particle {first_index + first})"
                )
                raise ValueError(msg)
        known = np.isin(columns.pdgid, self.model.conditions.pdgids)
        outside = {
            f"energy outside {list(ranges.energy)} GeV": (energy < ranges.energy[0]) | (energy > ranges.energy[1]),
            f"eta outside {list(ranges.eta)}": (eta < ranges.eta[0]) | (eta > ranges.eta[1]),
            f"pdgid not among {self.model.conditions.pdgids} ({', '.join(ranges.particles)})": ~known,
        }
        keep = np.ones(len(columns), dtype=bool)
        for what, mask in outside.items():
            if not mask.any():
                continue
            first = int(np.flatnonzero(mask)[0])
            example = (
                f"particle {first_index + first}: E={energy[first]:.6g} GeV, eta={eta[first]:.4g}, "
                f"pdgid={int(columns.pdgid[first])}"
            )
            if self.out_of_range == "error" or (self.out_of_range == "clip" and what.startswith("pdgid")):
                hint = "" if what.startswith("pdgid") else " (out_of_range='clip' or 'skip' to simulate or drop them)"
                msg = f"{int(mask.sum())} particle(s) with {what}, first {example}{hint}"
                raise ValueError(msg)
            action = "clipped" if self.out_of_range == "clip" else "skipped (zero image)"
            log.warning("%s %d particle(s) with %s (first %s)", action, int(mask.sum()), what, example)
            if self.out_of_range == "skip":
                keep &= ~mask
        energy = np.clip(energy, *ranges.energy)
        eta = np.clip(eta, *ranges.eta)
        pdgid = np.where(known, columns.pdgid, self.model.conditions.pdgids[0]).astype(np.int32)  # skipped anyway
        return energy, eta, pdgid, keep

    def _draws(self, blocks: range, stream: list[int] | None = None) -> list[_BlockDraws]:
        """The random inputs of whole blocks of particles (BLOCK rows each): latent z, the energy
        model's uniforms u, cell noise (if the model adds it) on the device, impact-point
        uniforms (numpy)."""
        latent = self.model.config.latent_dim
        cells = self.detector.n_total_cells if self.model.config.cell_noise else 0
        inference = torch.is_inference_mode_enabled()  # thread-local: the pool's threads take it from here

        def draw(block: int) -> _BlockDraws:
            key = _block_seed(self.seed, block, stream)
            gen = torch.Generator(device=self.device).manual_seed(key)
            with torch.inference_mode(inference):
                z = torch.randn((BLOCK, latent), generator=gen, device=self.device)
                u = torch.rand((BLOCK,), generator=gen, device=self.device)
                noise = torch.randn((BLOCK, cells), generator=gen, device=self.device) if cells else None
            impact = np.random.Generator(np.random.Philox(key)).random((BLOCK, 2))
            return _BlockDraws(z, u, noise, impact)

        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        if workers > 1 and len(blocks) > 1 and cells:
            # a seeded torch generator draws on one core: blocks (independent streams) in parallel
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(workers, len(blocks))) as pool:
                return list(pool.map(draw, blocks))
        return [draw(block) for block in blocks]

    @torch.inference_mode()
    def _batch(self, columns: _Columns, first: int, stream: list[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Showers of particles ``first .. first + len(columns) - 1``.

        On the CPU the networks always run on whole blocks (BLOCK rows, aligned on global
        indices; rows outside the batch are padding): BLAS splits the rows of a matrix product
        among threads and rounds a row by where the split puts it, so a shower is bit-identical
        at any batch size and offset only if every row is computed in a matrix of the same shape,
        at the same place. On a GPU the batch runs as one call (cuBLAS picks its kernels by
        shape: showers at other batch sizes agree to float rounding).
        """
        n = len(columns)
        blocks = range(first // BLOCK, (first + n - 1) // BLOCK + 1)
        draws = self._draws(blocks, stream)
        # each block's rows inside the batch (target) and inside the block (inside)
        spans = [
            (slice(lo - first, hi - first), slice(lo - b * BLOCK, hi - b * BLOCK))
            for b in blocks
            for lo, hi in [(max(first, b * BLOCK), min(first + n, (b + 1) * BLOCK))]
        ]
        impact = np.concatenate([d.impact[inside] for d, (_, inside) in zip(draws, spans, strict=True)])
        low, high = self.detector.central_cell
        ix = columns.impact_x if columns.impact_x is not None else low + (high - low) * impact[:, 0]
        iy = columns.impact_y if columns.impact_y is not None else low + (high - low) * impact[:, 1]
        c = self.model.conditions.encode(energy=columns.energy, eta=columns.eta, pdgid=columns.pdgid, impact_x=ix, impact_y=iy)
        c = c.to(self.device)
        e_inc = torch.as_tensor(columns.energy, dtype=torch.float32).to(self.device)
        if self.device.type == "cpu":
            units = [
                ([_padded(c[target], inside), _padded(e_inc[target], inside), d.z, d.u, d.noise], target, inside)
                for d, (target, inside) in zip(draws, spans, strict=True)
            ]
        else:
            def joined(name: str) -> torch.Tensor:
                return torch.cat([getattr(d, name)[inside] for d, (_, inside) in zip(draws, spans, strict=True)])

            rows = slice(0, n)
            inputs = [c, e_inc, joined("z"), joined("u"), joined("noise") if draws[0].noise is not None else None]
            if n < _MIN_ROWS:  # matrix-vector kernels round differently from matrix-matrix ones: pad
                rows, inputs = slice(0, n), [None if x is None else _padded(x, rows, _MIN_ROWS) for x in inputs]
            units = [(inputs, rows, rows)]
        dtype = _DTYPES[self.dtype]
        side = self.detector.n_cells
        images = np.empty((n, side, side), dtype=np.float32)
        for (cu, eu, z, u, noise), target, inside in units:
            # u stays float32, as the energy model does
            out = self.model.generate(cu.to(dtype), eu.to(dtype), z.to(dtype), u, None if noise is None else noise.to(dtype))
            images[target] = out[inside].float().reshape(-1, side, side).cpu().numpy()
        return images, np.asarray(ix, dtype=np.float64), np.asarray(iy, dtype=np.float64)

    def _run_dask(self, events: Any, *, particle: str | int | None, first_index: int, stream: Any) -> Any:
        import dask
        import dask_awkward as dak

        from . import particles

        # every particle's randomness is keyed by its global index: partition i starts after the
        # particles of partitions 0..i-1, counted by tasks of the same graph (nothing runs now)
        parts = events.to_delayed()
        counts = [dask.delayed(_count_particles)(part, particle) for part in parts]
        offsets = [dask.delayed(sum)(counts[:i], first_index) for i in range(len(parts))]
        results = [
            dask.delayed(_run_partition)(self, part, particle, offset, stream) for part, offset in zip(parts, offsets, strict=True)
        ]
        empty = self.run(ak.Array(events._meta.layout.form.length_zero_array()), particle=particle, stream=stream)
        meta = ak.Array(empty.layout.to_typetracer(forget_length=True))
        return dak.from_delayed(results, meta=meta, divisions=events.divisions if events.known_divisions else None)


def _count_chunk(input: str, reader: dict[str, Any], start: int, stop: int) -> int:
    from . import particles

    table = particles.read(input, entry_start=start, entry_stop=stop, **reader)
    return len(_flatten(table)[0])


def _simulate_chunk(
    sim: Simulator, input: str, reader: dict[str, Any], start: int, stop: int, first: int, copy: list[str]
) -> tuple[int, int, Any, np.ndarray, Any]:
    """Simulate input entries [start, stop) whose first particle has global index ``first``."""
    from . import datasets, particles

    if sim.threads:
        torch.set_num_threads(sim.threads)
    table = particles.read(input, entry_start=start, entry_stop=stop, **reader)
    flat, counts = _flatten(table)
    cols = _columns(flat)
    showers = sim._simulate(cols, first)
    if counts is None:  # a flat tree: one particle per entry
        counts = np.ones(len(cols), dtype=np.int64)
    extra = None
    if copy:
        tree = particles.open_tree(input, reader["tree"])
        try:
            extra = tree.arrays(copy, entry_start=start, entry_stop=stop, library="ak")
        finally:
            tree.file.close()
    data = datasets.ShowerData.from_arrays(
        source=f"{input}[{start}:{stop}]",
        energy=showers.energy,
        eta=showers.eta,
        phi=cols.phi,
        pdgid=cols.pdgid,
        impact_x=showers.impact_x,
        impact_y=showers.impact_y,
        images=showers.images,
    )
    return start, stop, data, np.asarray(counts, dtype=np.int64), extra


def _count_particles(part: ak.Array, particle: str | int | None) -> int:
    from . import particles

    return len(_flatten(particles.standardize(part, particle=particle))[0])


def _run_partition(sim: Simulator, part: ak.Array, particle: str | int | None, first_index: int, stream: Any) -> ak.Array:
    if sim.threads:
        torch.set_num_threads(sim.threads)
    return sim.run(part, particle=particle, first_index=first_index, stream=stream)


def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask_awkward")


def _flatten(table: ak.Array) -> tuple[ak.Array, np.ndarray | None]:
    """The particles as one flat record array, and the per-event counts (None if already flat)."""
    if table.ndim == 1:
        return table, None
    if table.ndim != 2:
        msg = f"expected particles as events * var * record or n * record, got {table.type}"
        raise ValueError(msg)
    return ak.flatten(table, axis=1), ak.to_numpy(ak.num(table, axis=1))


def _columns(flat: ak.Array) -> _Columns:
    fields = set(ak.fields(flat))

    def get(name: str, dtype: Any) -> np.ndarray:
        return np.asarray(ak.to_numpy(flat[name]), dtype=dtype)

    return _Columns(
        energy=get("energy", np.float64),
        eta=get("eta", np.float64),
        phi=get("phi", np.float64),
        pdgid=get("pdgid", np.int32),
        impact_x=get("impact_x", np.float64) if "impact_x" in fields else None,
        impact_y=get("impact_y", np.float64) if "impact_y" in fields else None,
    )


def _copy_list(tree: Any, copy: bool | list[str], where: str, collection: str) -> list[str]:
    """Input branches to copy: all (True) but those named like the output collection's own
    branches (``<C>_*``, ``n<C>``), or exactly the names given (an error if one is the output's)."""
    names = list(tree.keys(recursive=False))
    own = [n for n in names if n == collection or n.startswith(f"{collection}_") or n.startswith(f"n{collection}")]
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
        import difflib

        near = {m: difflib.get_close_matches(m, names, n=3) for m in missing}
        msg = f"{where}: cannot copy branch(es) {missing}: not in tree {tree.name!r} (near misses: {near}; it has {names[:30]})"
        raise KeyError(msg)
    return list(copy)


def _progress(total: int, enabled: bool, description: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=" events", desc=description, disable=not enabled, leave=False)


def _placed(model: ShowerModel, device: torch.device, dtype: str) -> ShowerModel:
    """The model on ``device`` in ``dtype``, but for its energy model: that stays float32, whose
    quantile levels near 0 and 1 (down to 1e-3) and uniform variates half precision cannot resolve."""
    model = model.to(device)
    for network in (model.generator, model.critic):  # not the energy model: a round trip would round its levels
        network.to(_DTYPES[dtype])
    return model.eval()


def _cached_model(path: str, device: torch.device, dtype: str) -> ShowerModel:
    from .model import _sha256

    digest = _sha256(Path(path) / "model.safetensors") if (Path(path) / "model.safetensors").is_file() else ""
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
        directory = save(model, Path(tmp) / "model", training=getattr(model, "metadata", {}).get("training"))
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
