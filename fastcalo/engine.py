"""The one sampling path: a flat table of particles, a seed and global indices in, showers out.

Everything that makes showers with a trained model goes through :class:`Engine`:
:class:`fastcalo.Simulator` (``sample``, ``run``, ``run_file``, dask), the training monitor and
the validation campaign. It owns the batching, the random streams and the policy for particles
outside the model's ranges.

Randomness is keyed by the particle's *global index* (its position in the flattened input, or in
the whole file): the random numbers of particle ``i`` come from block ``i // BLOCK`` of a stream
seeded by ``(seed, stream, block)``. So a shower depends only on the seed, the particle's
conditions and its index. On the CPU the networks always run on whole blocks (``BLOCK`` rows,
aligned on global indices), one block per thread, as many blocks at once as torch has threads
(:func:`one_torch_thread`): a matrix product rounds a row by its shape and by how threads split
it, so only a matrix of the same shape, with the row at the same place, computed on one thread,
gives the same bits. The output is then bit-identical at any batch size, chunk size, number of
threads or of dask workers (for the same dtype). On a GPU a batch runs as one call (cuBLAS picks
its kernels by shape): showers at other batch sizes agree to float rounding.

On the CPU torch runs the networks' matrix products and :func:`fastcalo._response.generate`, one
numba kernel per shower, the rest: the stochastic output layer, the softmax and the detector
response, with counter-based random numbers keyed by the block (the cells' noise drawn sparsely,
only where a cell can read above the threshold); on a GPU it is :meth:`ShowerModel.generate` on
dense normals drawn with the block's torch generator. Same distribution, different numbers.

Particles outside the model's trained ranges (energy, |eta|, particle type) follow the
``out_of_range`` policy: ``"error"`` (default) raises, ``"clip"`` moves energy and eta to the
nearest edge of the range, ``"skip"`` gives those particles an all-zero image; both of the latter
log how many particles they touched. Non-finite kinematics and energies <= 0 are always an error.

Nothing silent comes out either (:meth:`Engine.simulate`): a non-finite image is an error (the
model marks a shower whose generation met a NaN or inf as all NaN, rather than letting zero
suppression turn it into an empty image), and so is a call in which every simulated particle
(not skipped) of at least :data:`EMPTY_FACTOR` times the detector's zero-suppression threshold
gives an empty image. A healthy model cannot do that: an electron or photon of E >= 100 x
threshold (0.5 GeV here; the model's range starts at 1 GeV) puts most of its energy into a few
central cells. The shipped model, on 100 000 showers over its whole range (1-100 GeV, |eta| <=
1.5, photons, electrons and positrons; 20 000 of them at 1 GeV), gives no empty image at all:
its faintest shower holds 0.82 GeV and its faintest brightest cell 66 MeV, thirteen times the
threshold. So the rule fires only for a broken model (NaN weights or preprocessing, a total
forced to zero), and a single healthy shower, let alone a whole call, never trips it.

Example:
    >>> import numpy as np
    >>> from fastcalo.engine import Engine, Particles
    >>> from fastcalo.model import DEFAULT_MODEL, load
    >>> engine = Engine(load(DEFAULT_MODEL), seed=1)
    >>> table = Particles.of(energy=[10.0, 50.0], eta=0.2, pdgid=22)
    >>> showers = engine.simulate(table)
    >>> showers.images.shape, np.round(showers.images.sum(axis=(1, 2)) / showers.energy, 1).tolist()
    ((2, 24, 24), [1.0, 1.0])
"""

from __future__ import annotations

import hashlib
import logging
import operator
import os
import threading
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from ._response import ResponseKernel, generate

if TYPE_CHECKING:
    import awkward as ak

    from .datasets import ShowerData
    from .detector import Detector
    from .model import ShowerModel

__all__ = ("BLOCK", "DTYPES", "EMPTY_FACTOR", "OUT_OF_RANGE", "SEED_LIMIT", "Engine", "Particles", "check_seed", "choose_device", "one_torch_thread", "stream_key")

log = logging.getLogger("fastcalo.engine")

#: Particles per random-number block: the unit in which random streams are keyed and (on the
#: CPU) the rows of every network call.
BLOCK = 1024

#: The policies for particles outside the model's trained ranges.
OUT_OF_RANGE = ("error", "clip", "skip")

#: The generator's arithmetic, by name.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: A call whose simulated particles of at least EMPTY_FACTOR x the zero-suppression threshold all
#: give empty images is an error (see the module docstring).
EMPTY_FACTOR = 100.0

#: Seeds are integers in [0, SEED_LIMIT).
SEED_LIMIT = 2**63

# The fewest rows per generator call on a GPU: below this, BLAS takes matrix-vector paths whose
# rounding differs from the matrix-matrix kernels (on the CPU every call has BLOCK rows).
_MIN_ROWS = 16

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for a name: ``"auto"`` is CUDA if torch sees one, else the CPU.

    Arguments:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or a ``torch.device``.

    Returns:
        The device.

    Raises:
        ValueError: a name torch does not know, a device other than the CPU or CUDA, or CUDA (or
            a CUDA index) asked for where torch sees none.

    Example:
        >>> choose_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as err:
        msg = f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        raise ValueError(msg) from err
    if chosen.type not in ("cpu", "cuda"):
        msg = f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {str(device)!r} (fastcalo runs on the CPU or a CUDA GPU)"
        raise ValueError(msg)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        msg = f"device {str(device)!r} asked for, but torch sees no CUDA device (torch {torch.__version__})"
        raise ValueError(msg)
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        msg = f"device {str(device)!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)"
        raise ValueError(msg)
    return chosen


def check_seed(seed: object) -> int:
    """A random seed, checked: an integer (Python or numpy; not a bool, not a float) in
    [0, 2**63). Nothing is taken modulo or truncated: 1.5, -1 and 2**64 are errors.

    Raises:
        ValueError: anything else.

    Example:
        >>> check_seed(7), check_seed(2**63 - 1)
        (7, 9223372036854775807)
    """
    try:
        value = operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        value = None
    if value is None or isinstance(seed, (bool, np.bool_)) or not 0 <= value < SEED_LIMIT:
        msg = f"seed must be an integer in [0, 2**63), got {seed!r} ({type(seed).__name__})"
        raise ValueError(msg)
    return value


def stream_key(stream: Hashable | None) -> tuple[int, ...]:
    """A stable integer key for a user's stream label (an int, a string, or a tuple of them).

    Example:
        >>> stream_key(None), len(stream_key(("file.root", 0)))
        ((), 2)
    """
    if stream is None:
        return ()
    digest = hashlib.sha256(repr(stream).encode()).digest()
    return (int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:16], "little"))


def _block_seed(seed: int, block: int, stream: Sequence[int]) -> int:
    """A 63-bit seed for one block of one stream (SeedSequence mixes the entropy well)."""
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, *stream, int(block)]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class _TorchThreads:
    """The torch thread count while engines run blocks (see :func:`one_torch_thread`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.saved = 1


_TORCH_THREADS = _TorchThreads()


@contextmanager
def one_torch_thread() -> Iterator[int]:
    """Run torch on one thread per call inside, and give the number of threads torch had: the
    CPU engine runs that many blocks at once, each on its own thread.

    Whole blocks on separate threads keep both cores busy through the whole pipeline (draws,
    networks, response), where torch's own threads would split each matrix product and leave the
    rest serial; and a network call on one thread rounds the same whatever the thread count, so
    the showers do not depend on it. ``torch.set_num_threads`` is process-wide: calls from
    several threads share one saving, and the count is restored when the last one leaves (torch
    work of other threads meanwhile runs on one thread each).

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with one_torch_thread() as threads:
        ...     inside = torch.get_num_threads()
        >>> (inside, threads == before == torch.get_num_threads())
        (1, True)
    """
    state = _TORCH_THREADS
    with state.lock:
        if state.users == 0:
            state.saved = torch.get_num_threads()
            torch.set_num_threads(1)
        state.users += 1
        threads = state.saved
    try:
        yield threads
    finally:
        with state.lock:
            state.users -= 1
            if state.users == 0:
                torch.set_num_threads(state.saved)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """The engines' thread pool of this process (a forked child makes its own)."""
    key = (os.getpid(), threads)
    with _TORCH_THREADS.lock:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="fastcalo-blocks")
        return _POOLS[key]


@dataclass(frozen=True)
class Particles:
    """A flat table of particles, one entry per particle: what the engine simulates.

    Arguments:
        energy: (N,) incident energy, GeV.
        eta: (N,) pseudorapidity.
        phi: (N,) azimuth, rad (carried through to the output).
        pdgid: (N,) PDG id.
        impact_x, impact_y: (N,) impact point in mm inside the central cell, or None to draw it
            uniformly there.
    """

    energy: FloatArray
    eta: FloatArray
    phi: FloatArray
    pdgid: IntArray
    impact_x: FloatArray | None = None
    impact_y: FloatArray | None = None

    @classmethod
    def of(
        cls,
        *,
        energy: npt.ArrayLike,
        eta: npt.ArrayLike = 0.0,
        phi: npt.ArrayLike = 0.0,
        pdgid: npt.ArrayLike = 22,
        impact_x: npt.ArrayLike | None = None,
        impact_y: npt.ArrayLike | None = None,
        n: int | None = None,
    ) -> Particles:
        """A table from scalars and arrays: arrays (all of one length N) give one particle each,
        scalars are repeated N times (``n`` times if there is no array; once if ``n`` is None).

        Raises:
            ValueError: arrays of different lengths, arrays whose length is not ``n``, arrays
                of more than one dimension, or PDG ids that are not integers in the int32 range
                (:func:`fastcalo.detector.as_pdgids`: 22.0 is 22, 22.7 is an error).

        Example:
            >>> table = Particles.of(energy=[1.0, 2.0], eta=0.5)
            >>> len(table), table.eta.tolist(), table.pdgid.tolist()
            (2, [0.5, 0.5], [22, 22])
        """
        from .detector import as_pdgids

        values = {"energy": energy, "eta": eta, "phi": phi, "pdgid": pdgid, "impact_x": impact_x, "impact_y": impact_y}
        nested = {k: np.shape(v) for k, v in values.items() if v is not None and np.ndim(v) > 1}
        if nested:
            msg = f"conditions must be scalars or 1-D arrays (one value per particle), got shapes {nested}"
            raise ValueError(msg)
        lengths = {k: int(np.size(v)) for k, v in values.items() if v is not None and np.ndim(v) > 0}
        sizes = set(lengths.values()) | ({int(n)} if n is not None else set())
        if len(sizes) > 1:
            msg = f"arrays (and n) must have one length, got {lengths}" + (f" and n={n}" if n is not None else "")
            raise ValueError(msg)
        size = sizes.pop() if sizes else 1

        def floats(value: npt.ArrayLike) -> FloatArray:
            return np.broadcast_to(np.asarray(value, dtype=np.float64), (size,)).copy()

        return cls(
            energy=floats(energy),
            eta=floats(eta),
            phi=floats(phi),
            pdgid=np.broadcast_to(as_pdgids(pdgid), (size,)).copy(),
            impact_x=None if impact_x is None else floats(impact_x),
            impact_y=None if impact_y is None else floats(impact_y),
        )

    @classmethod
    def from_records(cls, flat: ak.Array) -> Particles:
        """The table of a flat awkward array of standard records (:func:`fastcalo.particles.standardize`).

        Example:
            >>> import awkward as ak
            >>> Particles.from_records(ak.Array([{"energy": 5.0, "eta": 0.0, "phi": 1.0, "pdgid": 11}])).pdgid.tolist()
            [11]
        """
        import awkward as ak

        from .detector import as_pdgids

        fields = set(ak.fields(flat))

        def floats(name: str) -> FloatArray:
            return np.asarray(ak.to_numpy(flat[name]), dtype=np.float64)

        return cls(
            energy=floats("energy"),
            eta=floats("eta"),
            phi=floats("phi"),
            pdgid=as_pdgids(ak.to_numpy(flat["pdgid"])),
            impact_x=floats("impact_x") if "impact_x" in fields else None,
            impact_y=floats("impact_y") if "impact_y" in fields else None,
        )

    def __len__(self) -> int:
        return int(self.energy.shape[0])

    def __getitem__(self, index: slice) -> Particles:
        return Particles(
            self.energy[index],
            self.eta[index],
            self.phi[index],
            self.pdgid[index],
            None if self.impact_x is None else self.impact_x[index],
            None if self.impact_y is None else self.impact_y[index],
        )


@dataclass(frozen=True)
class _BlockDraws:
    """The random numbers of one block of BLOCK particles (see :meth:`Engine._draws`)."""

    z: torch.Tensor
    u: torch.Tensor
    noise: torch.Tensor | None
    impact: FloatArray
    key: int


def _padded(rows: torch.Tensor, inside: slice, length: int = BLOCK) -> torch.Tensor:
    """``rows`` placed at ``inside`` of a tensor of ``length`` rows (the others: copies of the first)."""
    if rows.shape[0] == length:
        return rows
    out = rows[:1].expand(length, *rows.shape[1:]).clone()
    out[inside] = rows
    return out


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device (CUDA) or host allocation failure: worth a smaller batch."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class Engine:
    """Batched generation with a model, keyed by seed and global particle index.

    Arguments:
        model: the shower model, already on its device and in its precision (the generator's
            parameters say which); it is used as it is (eval mode is the caller's business).
        seed: the random seed; with the particle's global index it fixes every shower.
        batch_size: particles per generator call on a GPU (default 65 536); a device
            out-of-memory error halves it and retries, losing nothing. On the CPU the networks run
            on blocks of ``BLOCK`` particles, one per thread, whatever the batch size (kept, 4096
            by default, for the engines that batch on the CPU).
        out_of_range: ``"error"``, ``"clip"`` or ``"skip"`` (see the module docstring).

    Raises:
        ValueError: an unknown policy, a batch size below 1, or a seed that is not an integer in
            [0, 2**63) (:func:`check_seed`).
    """

    def __init__(self, model: ShowerModel, *, seed: int = 0, batch_size: int | None = None, out_of_range: str = "error") -> None:
        self._set_options(seed, batch_size, out_of_range)
        self.model = model
        #: the calorimeter and the PDG ids simulated: all the policy and the output checks read
        #: (:class:`fastcalo.gflash.GFlashEngine` sets them for the parametrised peer)
        self.detector: Detector = model.detector
        self.pdgids: list[int] = list(model.conditions.pdgids)
        first = next(model.generator.parameters())
        self.device = first.device
        self.dtype = first.dtype
        self.batch_size = batch_size or (65_536 if self.device.type == "cuda" else 4096)
        self._kernel = ResponseKernel.of(model)

    def _set_options(self, seed: int, batch_size: int | None, out_of_range: str) -> None:
        """Check and keep the options every engine has (the seed, the policy; the batch size is
        set by the caller, which knows its device's default)."""
        if out_of_range not in OUT_OF_RANGE:
            msg = f"out_of_range must be one of {OUT_OF_RANGE}, got {out_of_range!r}"
            raise ValueError(msg)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0):
            msg = f"batch_size must be an integer > 0, got {batch_size!r}"
            raise ValueError(msg)
        self.seed = check_seed(seed)
        self.out_of_range = out_of_range

    def simulate(self, particles: Particles, first_index: int = 0, stream: Sequence[int] = ()) -> ShowerData:
        """Showers of a flat table whose first particle has global index ``first_index``.

        Arguments:
            particles: the table.
            first_index: the global index of its first particle (>= 0).
            stream: an independent random stream's key (:func:`stream_key`); () for the plain one.

        Returns:
            A :class:`fastcalo.datasets.ShowerData`: the energy and eta simulated at (clipped under
            ``out_of_range="clip"``; a particle skipped under ``"skip"`` keeps its own), phi and
            pdgid as given, the impact points used (mm) and the images (N, 24, 24) float32 in GeV
            (all zero for particles skipped by the policy).

        Raises:
            ValueError: non-finite kinematics, energies <= 0, impact points outside the central
                cell, a negative ``first_index``, or particles outside the ranges under
                ``out_of_range="error"``; a non-finite image, or only empty images where showers
                must deposit energy (see the module docstring): a broken model. Messages name
                particles by their global index.
        """
        from .datasets import ShowerData

        if first_index < 0:
            msg = f"first_index must be >= 0 (the global index of the first particle), got {first_index}"
            raise ValueError(msg)
        n = len(particles)
        side = self.detector.n_cells
        blockwise = self._blockwise()
        images = (np.empty if blockwise else np.zeros)((n, side, side), dtype=np.float32)  # blocks write every row
        impact_x, impact_y = np.empty(n), np.empty(n)
        used, keep = self._apply_policy(particles, first_index)
        sums = np.empty(n, dtype=np.float32)  # each image's total: what the output checks read
        run = self._run_blocks if blockwise else self._run_batches
        run(used, first_index, stream, images, impact_x, impact_y, sums)
        self._check_output(sums, used, keep, first_index)
        energy, eta = used.energy, used.eta
        if not keep.all():
            images[~keep] = 0.0
            # a skipped particle was not simulated at all: it keeps its own energy and eta
            energy, eta = np.where(keep, energy, particles.energy), np.where(keep, eta, particles.eta)
        return ShowerData(
            energy=energy, eta=eta, phi=particles.phi, pdgid=particles.pdgid,
            impact_x=impact_x, impact_y=impact_y, images=images,
        )  # fmt: skip

    def _check_output(self, sums: npt.NDArray[np.float32], used: Particles, keep: npt.NDArray[np.bool_], first_index: int) -> None:
        """Refuse what a broken model makes: non-finite images, or empty images for every simulated
        particle that must deposit energy (see the module docstring); ``sums`` are the images'
        totals (cells are >= 0: a total is 0 only for an empty image), skipped particles aside."""
        finite = np.isfinite(sums) | ~keep  # NaN and inf survive a sum (as does a float32 overflow: broken too)
        if not finite.all():
            first = int(np.flatnonzero(~finite)[0])
            msg = (
                f"the model gave {int((~finite).sum())} non-finite shower(s) (NaN or inf), the first for particle "
                f"{first_index + first} (E={float(used.energy[first])!r} GeV, eta={float(used.eta[first])!r}, pdgid={int(used.pdgid[first])}): "
                "a broken model (non-finite weights or preprocessing?)"
            )
            raise ValueError(msg)
        minimum = EMPTY_FACTOR * self.detector.response.threshold
        must = np.flatnonzero(keep & (used.energy >= minimum))
        if len(must) and not sums[must[0]] > 0 and not (sums[must] > 0).any():  # the first is almost always enough
            first = int(must[0])
            msg = (
                f"the model gave empty showers for all {len(must)} simulated particle(s) of E >= {minimum:g} GeV "
                f"({EMPTY_FACTOR:g} x the {self.detector.response.threshold:g} GeV threshold; a healthy model "
                f"deposits far above it), the first particle {first_index + first} (E={float(used.energy[first])!r} GeV): a broken model"
            )
            raise ValueError(msg)

    def _apply_policy(self, particles: Particles, first_index: int) -> tuple[Particles, npt.NDArray[np.bool_]]:
        """The particles to generate with (clipped energy and eta, known pdgids) and which of them
        to keep, under the policy; messages name particles by their global index."""
        detector = self.detector
        ranges = detector.conditions
        energy, eta = particles.energy.astype(np.float64), particles.eta.astype(np.float64)
        checks = [("energy", energy), ("eta", eta), ("phi", particles.phi)]
        checks += [(name, v) for name, v in (("impact_x", particles.impact_x), ("impact_y", particles.impact_y)) if v is not None]
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
        low, high = detector.central_cell
        for name, impact in (("impact_x", particles.impact_x), ("impact_y", particles.impact_y)):
            if impact is not None and ((impact < low) | (impact > high)).any():
                first = int(np.flatnonzero((impact < low) | (impact > high))[0])
                msg = f"{name} must lie in the central cell [{low}, {high}] mm, found {impact[first]} (particle {first_index + first})"
                raise ValueError(msg)
        pdgids = self.pdgids
        known = np.isin(particles.pdgid, pdgids)
        outside = {
            f"energy outside {list(ranges.energy)} GeV": (energy < ranges.energy[0]) | (energy > ranges.energy[1]),
            f"eta outside {list(ranges.eta)}": (eta < ranges.eta[0]) | (eta > ranges.eta[1]),
            f"pdgid not among {pdgids} ({', '.join(ranges.particles)})": ~known,
        }
        keep = np.ones(len(particles), dtype=bool)
        for what, mask in outside.items():
            if not mask.any():
                continue
            first = int(np.flatnonzero(mask)[0])
            # repr: enough digits to show why a value is outside (100.0000001 is not 100)
            example = f"particle {first_index + first}: E={float(energy[first])!r} GeV, eta={float(eta[first])!r}, pdgid={int(particles.pdgid[first])}"
            if self.out_of_range == "error" or (self.out_of_range == "clip" and what.startswith("pdgid")):
                hint = "" if what.startswith("pdgid") else " (out_of_range='clip' or 'skip' to simulate or drop them)"
                msg = f"{int(mask.sum())} particle(s) with {what}, first {example}{hint}"
                raise ValueError(msg)
            action = "clipped" if self.out_of_range == "clip" else "skipped (zero image)"
            log.warning("%s %d particle(s) with %s (first %s)", action, int(mask.sum()), what, example)
            if self.out_of_range == "skip":
                keep &= ~mask
        used = Particles(
            energy=np.clip(energy, *ranges.energy),
            eta=np.clip(eta, *ranges.eta),
            phi=particles.phi,
            pdgid=np.where(known, particles.pdgid, pdgids[0]).astype(np.int32),  # skipped anyway
            impact_x=particles.impact_x,
            impact_y=particles.impact_y,
        )
        return used, keep

    def _blockwise(self) -> bool:
        """Whether the call runs block by block on a thread pool (the networks on the CPU) rather
        than in batches of ``batch_size`` (a GPU; the parametrised peer, which threads itself)."""
        return self.device.type == "cpu"

    def _run_blocks(
        self, used: Particles, first_index: int, stream: Sequence[int],
        images: npt.NDArray[np.float32], impact_x: FloatArray, impact_y: FloatArray, sums: npt.NDArray[np.float32],
    ) -> None:  # fmt: skip
        """Fill ``images``, the impact points and the images' totals block by block (each piece of
        the call inside one global block), as many blocks at once as torch has threads, each on
        one thread."""
        n = len(used)
        cuts = sorted({0, n, *range(-first_index % BLOCK, n, BLOCK)})
        pieces = list(zip(cuts[:-1], cuts[1:], strict=True))

        def one(piece: tuple[int, int]) -> None:
            lo, hi = piece
            impact_x[lo:hi], impact_y[lo:hi] = self._batch(used[lo:hi], first_index + lo, stream, images[lo:hi])
            sums[lo:hi] = images[lo:hi].reshape(hi - lo, -1).sum(axis=1)  # while the block is in cache

        with one_torch_thread() as threads:
            if threads == 1 or len(pieces) == 1:
                for piece in pieces:
                    one(piece)
            else:
                for _ in _pool(threads).map(one, pieces):
                    pass

    def _run_batches(
        self, used: Particles, first_index: int, stream: Sequence[int],
        images: npt.NDArray[np.float32], impact_x: FloatArray, impact_y: FloatArray, sums: npt.NDArray[np.float32],
    ) -> None:  # fmt: skip
        """Fill ``images``, the impact points and the images' totals in batches of ``batch_size``
        (ending on block boundaries), halving the batch on a device out-of-memory error."""
        n = len(used)
        side = images.shape[1]
        start = 0
        while start < n:
            stop = min(start + self.batch_size, n)
            aligned = (first_index + stop) // BLOCK * BLOCK - first_index  # end batches on a block boundary
            if stop < n and aligned > start:
                stop = aligned
            try:
                impact_x[start:stop], impact_y[start:stop] = self._batch(used[start:stop], first_index + start, stream, images[start:stop])
            except Exception as error:
                if not is_out_of_memory(error) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning("out of memory on %s: batch size halved to %d, retrying", self.device, self.batch_size)
                continue
            sums[start:stop] = images[start:stop].reshape(stop - start, side * side).sum(axis=1)
            start = stop

    def _draws(self, blocks: range, stream: Sequence[int]) -> list[_BlockDraws]:
        """The random inputs of whole blocks of particles (BLOCK rows each): the generator's
        standard normals z, the energy model's uniforms u, on a GPU the cell noise (if the model
        adds it), impact-point uniforms (numpy). On the CPU the kernel draws the cell noise and the
        stochastic output layer's normals from the block's key: z holds the latent ones only."""
        cpu, config = self.device.type == "cpu", self.model.config
        latent = config.latent_dim if cpu and config.generator_noise == "cells" else self.model.generator.n_inputs
        cells = self.model.detector.n_total_cells if config.cell_noise and not cpu else 0
        draws = []
        for block in blocks:
            key = _block_seed(self.seed, block, stream)
            gen = torch.Generator(device=self.device).manual_seed(key)
            z = torch.randn((BLOCK, latent), generator=gen, device=self.device)
            u = torch.rand((BLOCK,), generator=gen, device=self.device)
            noise = torch.randn((BLOCK, cells), generator=gen, device=self.device) if cells else None
            impact = np.random.Generator(np.random.Philox(key)).random((BLOCK, 2))
            draws.append(_BlockDraws(z, u, noise, impact, key))
        return draws

    @torch.inference_mode()
    def _batch(self, particles: Particles, first: int, stream: Sequence[int], images: npt.NDArray[np.float32]) -> tuple[FloatArray, FloatArray]:
        """The images of particles ``first .. first + n - 1``, written into ``images`` (n, side, side)
        float32, C-contiguous (rows of the call's output: no copy per block), and their impact points."""
        n = len(particles)
        blocks = range(first // BLOCK, (first + n - 1) // BLOCK + 1)
        draws = self._draws(blocks, stream)
        # each block's rows inside the batch (target) and inside the block (inside)
        spans = [
            (slice(lo - first, hi - first), slice(lo - b * BLOCK, hi - b * BLOCK))
            for b in blocks
            for lo, hi in [(max(first, b * BLOCK), min(first + n, (b + 1) * BLOCK))]
        ]
        impact = np.concatenate([d.impact[inside] for d, (_, inside) in zip(draws, spans, strict=True)])
        low, high = self.model.detector.central_cell
        ix = particles.impact_x if particles.impact_x is not None else low + (high - low) * impact[:, 0]
        iy = particles.impact_y if particles.impact_y is not None else low + (high - low) * impact[:, 1]
        c = self.model.conditions.encode(energy=particles.energy, eta=particles.eta, pdgid=particles.pdgid, impact_x=ix, impact_y=iy)
        c = c.to(self.device)
        e_inc = torch.as_tensor(particles.energy, dtype=torch.float32).to(self.device)
        side = self.model.detector.n_cells
        dtype = self.dtype  # u stays float32, as the energy model does
        if self.device.type == "cpu":
            # each block as one network call, then the kernel writes its rows of images
            flat = images.reshape(n, side * side)
            for d, (target, inside) in zip(draws, spans, strict=True):
                c_unit, e_unit = _padded(c[target], inside), _padded(e_inc[target], inside)
                outputs, total = self.model.outputs(c_unit.to(dtype), e_unit.to(dtype), d.z.to(dtype), d.u)
                rows = range(inside.start, inside.stop)
                generate(outputs.numpy(), total.numpy(), flat[target], rows, d.key, self._kernel)
        else:  # one call for the whole batch
            every = slice(0, n)
            z = torch.cat([d.z[inside] for d, (_, inside) in zip(draws, spans, strict=True)])
            u = torch.cat([d.u[inside] for d, (_, inside) in zip(draws, spans, strict=True)])
            pieces = [d.noise[inside] for d, (_, inside) in zip(draws, spans, strict=True) if d.noise is not None]
            noise = torch.cat(pieces) if pieces else None
            if n < _MIN_ROWS:  # matrix-vector kernels round differently from matrix-matrix ones: pad
                c, e_inc, z, u = (_padded(x, every, _MIN_ROWS) for x in (c, e_inc, z, u))
                noise = None if noise is None else _padded(noise, every, _MIN_ROWS)
            out = self.model.generate(c.to(dtype), e_inc.to(dtype), z.to(dtype), u, None if noise is None else noise.to(dtype))
            images[:] = out[every].float().reshape(-1, side, side).cpu().numpy()
        return np.asarray(ix, dtype=np.float64), np.asarray(iy, dtype=np.float64)
