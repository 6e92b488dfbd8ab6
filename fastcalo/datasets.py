"""Shower datasets: one record per particle, in memory, in ROOT and in HDF5.

A record is the incident kinetic energy (GeV), eta, phi, the PDG id, the impact point inside the
central cell (mm) and the 24x24 image of cell energies (GeV).

On disk, chosen by the file extension:

- ROOT (``.root``): a TTree ``showers`` written with uproot, branches ``incident_energy`` [GeV],
  ``eta``, ``phi``, ``pdgid``, ``impact_x``, ``impact_y`` [mm] and ``image``, a fixed-size
  float32[576] [GeV], plus a ``fastcalo_meta`` string (JSON: units, geometry, detector).
- HDF5 (``.h5``, ``.hdf5``): the CaloChallenge layout, ``incident_energies`` (N, 1) and
  ``showers`` (N, 576) in MeV, plus ``eta``, ``phi``, ``pdgid``, ``impact_x``, ``impact_y``
  (N,) and the same metadata as attributes of the file.

Event-structured files (written by :class:`EventWriter`, e.g. by ``fastcalo simulate``) keep the
showers of each input event together: a ROOT TTree named like the input's (``Events``) with one
entry per event, the counter ``n<C>`` and jagged branches ``<C>_energy``, ``<C>_eta``, ``<C>_phi``,
``<C>_pdgid``, ``<C>_impact_x``, ``<C>_impact_y`` and ``<C>_image`` (576 float32 cells per
particle, row-major; its own counter ``n<C>_image`` = 576 n<C>), ``<C>`` the collection; or,
with ``cells="hits"``, instead of the image the cells above the threshold as hits, the way
full-simulation hit collections are stored: ``<C>_nhits`` (hits of each particle, under ``n<C>``)
and ``<C>_hit_cell`` (int16 cell index, row-major) and ``<C>_hit_energy`` (float32, GeV) under
their counter ``n<C>_hit``, the hits of an event's particles one after the other. In HDF5, the
layout above plus ``event``, the input entry of every shower. :func:`iterate` and :func:`read`
read all of them as flat shower datasets.

Writes go to a temporary file beside the target, ``.NAME.HOST.PID.RANDOM.fastcalo-tmp.EXT``, and
are renamed into place at the end, so a failed or interrupted write never leaves a partial file
under the target name. A writer starting on a target removes the temporaries of that target left
by a process of this host that no longer runs (killed, say). Files get the permissions of the
umask (``0o666 & ~umask``). See ``docs/datasets.md`` for the guarantees.

Example:
    >>> import numpy as np, fastcalo.datasets as ds
    >>> data = ds.ShowerData.from_arrays(energy=[10.0], eta=[0.1], phi=[0.0], pdgid=[22],
    ...                                  impact_x=[5.0], impact_y=[5.0], images=np.zeros((1, 24, 24)))
    >>> len(data), data.images.shape
    (1, (1, 24, 24))
"""

from __future__ import annotations

import contextlib
import hashlib
import errno
import json
import logging
import os
import re
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._names import near_misses
from .detector import DEFAULT_DETECTOR, PARTICLES, Detector, as_pdgids

if TYPE_CHECKING:
    # uproot, awkward and h5py ship no type information: to mypy their objects (files, trees,
    # arrays) are Any. Annotations name their classes for the reader; the writers hold their open
    # file and tree as Any. Metadata is decoded JSON, whose values are open too: dict[str, Any].
    import awkward as ak
    import h5py
    import uproot

__all__ = (
    "CELLS",
    "CELL_LAYOUTS",
    "COMPRESSION",
    "CONDITION_COLUMNS",
    "TEMPORARY_MARK",
    "EventWriter",
    "OutputExistsError",
    "ShowerData",
    "ShowerWriter",
    "atomic_path",
    "file_kind",
    "file_sha256",
    "iterate",
    "leftover_temporaries",
    "root_compression",
    "metadata",
    "read",
    "write",
)

#: Per-particle columns beside the image, with their units.
CONDITION_COLUMNS: dict[str, str] = {
    "energy": "GeV",
    "eta": "",
    "phi": "rad",
    "pdgid": "",
    "impact_x": "mm",
    "impact_y": "mm",
}
log = logging.getLogger(__name__)

_ROOT_NAMES = {"energy": "incident_energy"}
_TREE = "showers"
_META = "fastcalo_meta"

#: How an event-structured ROOT file stores the cells: ``"dense"`` (576 per particle) or ``"hits"``
#: (the cells above the threshold, index and energy).
CELL_LAYOUTS = ("dense", "hits")

#: The cell layout of event-structured ROOT output unless told otherwise (benchmarks/file_formats.py).
CELLS = "hits"

#: The compression of ROOT output, ``"ALGORITHM:LEVEL"`` (zlib, lz4, zstd, lzma) or ``"none"``:
#: chosen by ``benchmarks/file_formats.py`` (time and size for every algorithm and both layouts).
COMPRESSION = "zstd:1"


def root_compression(spec: str) -> Any:
    """The uproot compression object for ``"ALGORITHM:LEVEL"`` or ``"ALGORITHM"`` (its default
    level) or ``"none"``; algorithms zlib, lz4, zstd, lzma (uproot's, as ROOT names them).

    Raises:
        ValueError: an unknown algorithm or a level outside 1-9 (lz4: 1-12, zstd: 1-22).

    Example:
        >>> root_compression("lz4:1"), root_compression("none")
        (LZ4(1), None)
    """
    import uproot

    algorithms = {"zlib": (uproot.ZLIB, 9, 1), "lz4": (uproot.LZ4, 12, 1), "zstd": (uproot.ZSTD, 22, 1), "lzma": (uproot.LZMA, 9, 1)}
    name, _, level = str(spec).strip().lower().partition(":")
    if name == "none" and not level:
        return None
    if name not in algorithms:
        msg = f"compression must be 'none' or ALGORITHM[:LEVEL] with ALGORITHM one of {sorted(algorithms)}, got {spec!r}"
        raise ValueError(msg)
    kind, highest, default = algorithms[name]
    try:
        value = int(level) if level else default
    except ValueError:
        value = -1
    if not 1 <= value <= highest:
        msg = f"compression level of {name} must be an integer in 1-{highest}, got {spec!r}"
        raise ValueError(msg)
    return kind(value)


_FORMAT_VERSION = 1
_FORMAT = "fastcalo.showers"
_Scalar = TypeVar("_Scalar", bound=np.generic)


@dataclass(frozen=True)
class ShowerData:
    """Showers in memory. Shapes: conditions (N,) float64 (``pdgid`` int32), ``images`` (N, n, n)
    float32 in GeV; units as in :data:`CONDITION_COLUMNS`. :meth:`from_arrays` converts and checks."""

    energy: NDArray[np.float64]
    eta: NDArray[np.float64]
    phi: NDArray[np.float64]
    pdgid: NDArray[np.int32]
    impact_x: NDArray[np.float64]
    impact_y: NDArray[np.float64]
    images: NDArray[np.float32]

    @classmethod
    def from_arrays(cls, *, source: str = "arrays", **columns: ArrayLike) -> ShowerData:
        """Build and check a dataset from array-likes (keyword per column, ``images`` last).

        Arguments:
            source: names the data in error messages (a file name, say).
            columns: one keyword per column of :data:`CONDITION_COLUMNS`, each (N,), and
                ``images``, (N, n, n) or (N, n*n), in GeV.

        Returns:
            The dataset, with the dtypes of :class:`ShowerData`.

        Raises:
            ValueError naming ``source`` for missing or unexpected columns, images that are not
            square, columns of the wrong length, and what :meth:`check` refuses.

        Example:
            >>> data = ShowerData.from_arrays(energy=[10.0], eta=[0.1], phi=[0.0], pdgid=[22],
            ...                               impact_x=[5.0], impact_y=[5.0], images=np.zeros((1, 576)))
            >>> data.images.shape, data.images.dtype, data.pdgid.dtype
            ((1, 24, 24), dtype('float32'), dtype('int32'))
        """
        expected = [f.name for f in fields(cls)]
        missing = [name for name in expected if name not in columns]
        extra = [name for name in columns if name not in expected]
        if missing or extra:
            msg = f"{source}: expected columns {expected}, missing {missing}, unexpected {extra}"
            raise ValueError(msg)
        images = np.asarray(columns["images"], dtype=np.float32)
        if images.ndim == 2:
            side = int(round(np.sqrt(images.shape[1])))
            if side * side != images.shape[1]:
                msg = f"{source}: images of {images.shape[1]} cells are not square (expected n*n, e.g. 576)"
                raise ValueError(msg)
            images = images.reshape(len(images), side, side)
        if images.ndim != 3 or images.shape[1] != images.shape[2]:
            msg = f"{source}: images must have shape (N, n, n) or (N, n*n), got {images.shape}"
            raise ValueError(msg)
        n = images.shape[0]
        result = cls(
            energy=_column(source, "energy", columns["energy"], np.float64, n),
            eta=_column(source, "eta", columns["eta"], np.float64, n),
            phi=_column(source, "phi", columns["phi"], np.float64, n),
            pdgid=_column(source, "pdgid", _pdgids(source, columns["pdgid"]), np.int32, n),
            impact_x=_column(source, "impact_x", columns["impact_x"], np.float64, n),
            impact_y=_column(source, "impact_y", columns["impact_y"], np.float64, n),
            images=images,
        )
        result.check(source)
        return result

    def check(self, source: str = "dataset") -> None:
        """Raise ValueError, naming ``source``, on non-finite values, non-positive energies or
        unknown particles."""
        for name in (*CONDITION_COLUMNS, "images"):
            values = getattr(self, name)
            if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                bad = int(np.count_nonzero(~np.isfinite(values)))
                msg = f"{source}: {bad} non-finite value(s) in {name!r}"
                raise ValueError(msg)
        if np.any(self.energy <= 0):
            msg = f"{source}: incident energies must be > 0 GeV, found min {self.energy.min()!r}"
            raise ValueError(msg)
        unknown = np.setdiff1d(self.pdgid, list(PARTICLES.values()))
        if unknown.size:
            msg = f"{source}: unknown pdgid(s) {unknown.tolist()}, expected {sorted(PARTICLES.values())}"
            raise ValueError(msg)

    def __len__(self) -> int:
        return int(self.energy.shape[0])

    def __getitem__(self, index: slice | np.ndarray) -> ShowerData:
        """The showers at ``index``: a slice, a boolean mask or integer indices (N,)."""
        return ShowerData(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concatenate(parts: Sequence[ShowerData]) -> ShowerData:
        """One dataset from several (same image size).

        Raises:
            ValueError if ``parts`` is empty.
        """
        if not parts:
            msg = "concatenate needs at least one dataset"
            raise ValueError(msg)
        return ShowerData(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ShowerData)})


def _pdgids(source: str, values: ArrayLike) -> NDArray[np.int32]:
    """PDG ids checked before the int32 cast (:func:`fastcalo.detector.as_pdgids`: 22.7 or 2**32 + 22
    are errors, never truncated or wrapped), the error naming the file."""
    try:
        return as_pdgids(values)
    except (ValueError, OverflowError) as err:
        msg = f"{source}: column 'pdgid': {err}" if source else f"column 'pdgid': {err}"
        raise ValueError(msg) from None


def _column(source: str, name: str, values: ArrayLike, dtype: type[_Scalar], n: int) -> NDArray[_Scalar]:
    column = np.asarray(values, dtype=dtype).reshape(-1)
    if column.shape[0] != n:
        msg = f"{source}: column {name!r} has {column.shape[0]} entries but there are {n} images"
        raise ValueError(msg)
    return column


def file_kind(path: str | os.PathLike[str]) -> Literal["root", "hdf5"]:
    """The format of a shower file, from its extension (in any case).

    Arguments:
        path: a file name; it need not exist.

    Returns:
        ``"root"`` for ``.root``, ``"hdf5"`` for ``.h5`` and ``.hdf5``.

    Raises:
        ValueError naming the extension, for any other.

    Example:
        >>> file_kind("showers.root"), file_kind("data/photons.H5")
        ('root', 'hdf5')
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".root":
        return "root"
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    msg = f"{path}: unknown shower file type {suffix!r}, expected .root, .h5 or .hdf5"
    raise ValueError(msg)




def _metadata(kind: str, detector: Detector, extra: Mapping[str, object] | None) -> dict[str, object]:
    energy_unit = "MeV" if kind == "hdf5" else "GeV"
    meta: dict[str, object] = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "units": dict(CONDITION_COLUMNS, energy=energy_unit, images=energy_unit),
        "n_cells": detector.n_cells,
        "detector": detector.to_dict(),
    }
    if extra:
        meta.update(extra)
    return meta


#: The mark in the name of every temporary file a fastcalo writer makes:
#: ``.NAME.HOST.PID.RANDOM.fastcalo-tmp.EXT`` beside the target ``NAME`` (``EXT`` its extension).
TEMPORARY_MARK = ".fastcalo-tmp"


def _host() -> str:
    """This machine's name as it appears in temporary file names (letters, digits and '-')."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:40] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def leftover_temporaries(path: str | os.PathLike[str]) -> list[tuple[Path, str, int]]:
    """The temporary files of fastcalo writers beside ``path`` that are meant to become ``path``.

    Arguments:
        path: a target file name; it need not exist.

    Returns:
        ``(temporary, host, pid)`` for each, the host and process id of the writer that made it.

    Example:
        >>> import tempfile, pathlib
        >>> leftover_temporaries(pathlib.Path(tempfile.mkdtemp()) / "showers.h5")
        []
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    pattern = re.compile(
        re.escape(f".{target.name}.") + r"([A-Za-z0-9-]+)\.([0-9]+)\.[A-Za-z0-9_]+" + re.escape(TEMPORARY_MARK + target.suffix)
    )
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = pattern.fullmatch(entry.name)
            if match:
                found.append((directory / entry.name, match[1], int(match[2])))
    return sorted(found)


def _remove_stale(target: Path) -> None:
    """Remove the temporaries of ``target`` whose writer, on this host, no longer runs."""
    host = _host()
    for tmp, tmp_host, pid in leftover_temporaries(target):
        if tmp_host != host or _pid_alive(pid):
            continue  # another machine's (cannot tell if it runs) or a running writer's: not ours to touch
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            log.warning("removed %s, left by an interrupted fastcalo run (process %d, no longer running)", tmp, pid)


def _umask() -> int:
    """The process umask. Reading it sets it for a moment: call it where no other thread creates files."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, hex (read in 1 MiB blocks).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty"
        >>> _ = path.write_bytes(b"")
        >>> file_sha256(path)[:16]
        'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OutputExistsError(FileExistsError):
    """An output path that exists already: fastcalo replaces nothing unless asked to
    (``overwrite=True``; ``--overwrite`` on the command lines, which say so in those words).

    Arguments:
        path: the output.

    Example:
        >>> str(OutputExistsError("out.h5"))
        'out.h5 already exists (overwrite=True replaces it)'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path} already exists (overwrite=True replaces it)")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary is named ``.NAME.HOST.PID.RANDOM.fastcalo-tmp.EXT`` (``NAME`` the target's
    name, ``EXT`` its extension); it is removed if the block fails or is interrupted. Before
    making it, the temporaries of the same target left by processes of this host that no longer
    run are removed (see :func:`leftover_temporaries`). The file gets the permissions
    ``0o666 & ~umask``, as :func:`open` would give it.

    Raises:
        FileExistsError if ``path`` exists and ``overwrite`` is false; FileNotFoundError or
        PermissionError, naming the directory, if it cannot be written.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputExistsError(target)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        msg = f"cannot write {target}: directory {directory} does not exist"
        raise FileNotFoundError(msg)
    if not os.access(directory, os.W_OK):
        msg = f"cannot write {target}: directory {directory} is not writable"
        raise PermissionError(msg)
    mode = 0o666 & ~_umask()
    _remove_stale(target)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{_host()}.{os.getpid()}.", suffix=TEMPORARY_MARK + target.suffix, dir=directory
    )
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        yield tmp
        os.chmod(tmp, mode)  # mkstemp made it 0600
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def check_not_input(output: str | os.PathLike[str], source: str | os.PathLike[str]) -> None:
    """Refuse an ``output`` that is the file ``source`` a command reads (however written: relative,
    absolute, through a link): with ``--overwrite`` it would replace its own input.

    Raises:
        ValueError: they are the same file.

    Example:
        >>> import tempfile, pathlib
        >>> showers = pathlib.Path(tempfile.mkdtemp()) / "showers.h5"
        >>> _ = showers.write_bytes(b"")
        >>> check_not_input(showers.parent / "." / "showers.h5", showers)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: .../showers.h5 is the input .../showers.h5 itself: writing it would replace the file being read; choose another output
    """
    out, src = Path(output), Path(source)
    if out.exists() and src.exists() and os.path.samefile(out, src):
        msg = f"{out} is the input {src} itself: writing it would replace the file being read; choose another output"
        raise ValueError(msg)


def replaceable(path: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Refuse a shower output that exists, unless ``overwrite`` and fastcalo wrote it.

    fastcalo replaces only what it made: with ``overwrite``, an existing ``path`` must be a
    regular file whose metadata (:func:`metadata`) say ``"format": "fastcalo.showers"``; a file of
    anyone else (another ROOT or HDF5 file, a text file, an unreadable one) or a symbolic link is
    left as it is.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        FileExistsError: ``path`` exists and is not a fastcalo shower file, saying why.

    Example:
        >>> import tempfile, pathlib
        >>> notes = pathlib.Path(tempfile.mkdtemp()) / "mine.root"
        >>> _ = notes.write_text("my notes")
        >>> replaceable(notes, overwrite=True)
        Traceback (most recent call last):
        ...
        FileExistsError: .../mine.root already exists and is not a shower file of fastcalo (it is not a readable ROOT file); refusing to replace it: choose another output file
    """
    target = Path(path)
    if not (target.exists() or target.is_symlink()):
        return
    if not overwrite:
        raise OutputExistsError(target)
    if target.is_symlink():
        problem = "it is a symbolic link"
    elif not target.is_file():
        problem = "it is not a regular file"
    else:
        try:
            found = metadata(target).get("format")
        except (OSError, ValueError):
            problem = f"it is not a readable {'HDF5' if file_kind(target) == 'hdf5' else 'ROOT'} file"
        else:
            problem = "" if found == _FORMAT else f'its metadata have no "format": "{_FORMAT}"'
    if problem:
        msg = f"{target} already exists and is not a shower file of fastcalo ({problem}); refusing to replace it: choose another output file"
        raise FileExistsError(msg)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during the block, then act on them as the handlers in place would.

    HDF5 must not be interrupted half-way through a call (an exception raised inside its
    callbacks leaves the file half-written and h5py crashing at exit); nor need uproot. Only the
    main thread can install handlers: elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Callable[[int, Any], Any] | int] = {}

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)

    for held in (signal.SIGINT, signal.SIGTERM):
        installed = signal.getsignal(held)
        if installed is not None:  # None: installed outside Python, cannot be restored
            previous[held] = installed
            signal.signal(held, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):  # in arrival order, once each
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


class _Hdf5Sink:
    """The file under an HDF5 file being written (h5py's ``fileobj`` driver), that never fails.

    HDF5 does not recover from a failed write (a full disk, a file size limit): h5py then prints
    a traceback for every object it closes and can crash at exit. So the first error is kept,
    later writes are dropped, reads past what was written give zeros (as HDF5's own driver does),
    and :meth:`check` raises the error once h5py's call has returned. The file is then discarded.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR)
        self._pos = 0
        self._eof = os.fstat(self._fd).st_size
        self.error: OSError | None = None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = offset + (self._eof if whence == os.SEEK_END else self._pos if whence == os.SEEK_CUR else 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int) -> bytes:
        parts, done = [], 0
        while done < size and self.error is None:
            part = os.pread(self._fd, size - done, self._pos + done)
            if not part:
                break
            parts.append(part)
            done += len(part)
        self._pos += size
        return b"".join(parts) + bytes(size - done)

    def write(self, data: bytes | bytearray) -> int:
        view, done = memoryview(data), 0
        try:
            while done < len(view) and self.error is None:
                done += os.pwrite(self._fd, view[done:], self._pos + done)
        except OSError as error:
            self.error = error
        self._pos += len(view)
        self._eof = max(self._eof, self._pos)
        return len(view)

    def truncate(self, size: int) -> int:
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as error:
                self.error = error
        self._eof = size
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def check(self, target: Path) -> None:
        """Raise the first write error, as :func:`write_error` words it for ``target``."""
        if self.error is not None:
            raise _write_error(target, self.error)


def _write_error(target: Path, error: OSError) -> OSError:
    """An error of writing ``target``'s temporary file, reworded to name ``target``.

    Example:
        >>> import errno, pathlib
        >>> print(_write_error(pathlib.Path("out.h5"), OSError(errno.EFBIG, "File too large")))
        cannot write out.h5: File too large (EFBIG); out.h5 was not written
    """
    reason = error.strerror or str(error)
    code = f" ({errno.errorcode.get(error.errno, error.errno)})" if error.errno else ""
    result = "the existing file is unchanged" if target.exists() else f"{target} was not written"
    reworded = OSError(f"cannot write {target}: {reason}{code}; {result}")
    reworded.errno = error.errno
    return reworded


class ShowerWriter:
    """Write a shower file chunk by chunk, atomically (use as a context manager). With
    ``overwrite``, an existing file is replaced only if fastcalo wrote it (:func:`replaceable`).

    Example:
        >>> import tempfile, pathlib, numpy as np, fastcalo.datasets as ds
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "showers.h5"
        >>> chunk = ds.ShowerData.from_arrays(energy=[5.0, 7.0], eta=[0, 0], phi=[0, 0], pdgid=[22, 11],
        ...                                   impact_x=[1, 2], impact_y=[3, 4], images=np.ones((2, 24, 24)))
        >>> with ds.ShowerWriter(path) as out:
        ...     out.write(chunk)
        ...     out.write(chunk)
        >>> len(ds.read(path))
        4
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        detector: Detector = DEFAULT_DETECTOR,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        self.path = Path(path)
        self._kind = file_kind(self.path)
        self._overwrite = overwrite
        self._meta = _metadata(self._kind, detector, metadata)
        self._n_cells = detector.n_cells
        self._atomic: contextlib.AbstractContextManager[Path] | None = None
        self._file: Any = None  # h5py.File or uproot.WritableDirectory while open
        self._tree: Any = None  # uproot.WritableTree while open (ROOT)
        self._sink: _Hdf5Sink | None = None  # the file under h5py's (HDF5)
        self.n_written = 0

    def __enter__(self) -> ShowerWriter:
        replaceable(self.path, overwrite=self._overwrite)
        self._atomic = atomic_path(self.path, overwrite=self._overwrite)
        tmp = self._atomic.__enter__()
        try:
            with _signals_deferred():
                self._open(tmp)
        except BaseException as error:
            _close_atomic(self, type(error), error, error.__traceback__)
            if isinstance(error, OSError) and self._sink is None:
                raise _write_error(self.path, error) from error
            raise
        return self

    def _open(self, tmp: Path) -> None:
        if self._kind == "root":
            import uproot

            self._file = uproot.recreate(tmp)
            self._file[_META] = json.dumps(self._meta)
            n = self._n_cells * self._n_cells
            branch_types: dict[str, DTypeLike] = {
                _ROOT_NAMES.get(c, c): (np.int32 if c == "pdgid" else np.float64) for c in CONDITION_COLUMNS
            }
            branch_types["image"] = np.dtype((np.float32, (n,)))
            self._tree = self._file.mktree(_TREE, branch_types, title="fastcalo showers (GeV, mm)")
        else:
            import h5py

            self._sink = _Hdf5Sink(tmp)
            self._file = h5py.File(self._sink, "w")
            for key, value in self._meta.items():
                self._file.attrs[key] = json.dumps(value) if isinstance(value, dict) else value
            n = self._n_cells * self._n_cells
            self._file.create_dataset("incident_energies", (0, 1), maxshape=(None, 1), dtype="f8", chunks=(4096, 1))
            self._file.create_dataset(
                "showers", (0, n), maxshape=(None, n), dtype="f4", chunks=(256, n), compression="gzip", compression_opts=1
            )
            for c in CONDITION_COLUMNS:
                if c != "energy":
                    self._file.create_dataset(c, (0,), maxshape=(None,), dtype="i4" if c == "pdgid" else "f8", chunks=(4096,))
            self._sink.check(self.path)

    def write(self, data: ShowerData, *, event: ArrayLike | None = None) -> None:
        """Append a chunk of showers (HDF5 only: ``event``, the input entry of each shower, (N,)).

        Raises:
            RuntimeError outside the ``with`` block; ValueError for images of another size than
            the detector's, for ``event`` first given after the first chunk, and for ``event``
            given to a ROOT file.
        """
        if self._file is None:
            msg = "ShowerWriter.write called outside its 'with' block"
            raise RuntimeError(msg)
        if data.images.shape[1:] != (self._n_cells, self._n_cells):
            msg = f"{self.path}: expected images of {self._n_cells}x{self._n_cells} cells, got {data.images.shape[1:]}"
            raise ValueError(msg)
        if event is not None and self._kind == "root":
            msg = f"{self.path}: a flat ROOT shower file has no 'event' column (use EventWriter)"
            raise ValueError(msg)
        try:
            with _signals_deferred():
                self._write(data, event)
        except OSError as error:
            raise _write_error(self.path, error) from error
        if self._sink is not None:
            self._sink.check(self.path)
        self.n_written += len(data)

    def _write(self, data: ShowerData, event: ArrayLike | None) -> None:
        n = len(data)
        flat = data.images.reshape(n, self._n_cells * self._n_cells).astype(np.float32, copy=False)
        if self._kind == "root":
            arrays = {_ROOT_NAMES.get(c, c): getattr(data, c) for c in CONDITION_COLUMNS}
            arrays["image"] = flat
            self._tree.extend(arrays)
        else:
            f = self._file
            start = self.n_written
            for name in ("incident_energies", "showers", *(c for c in CONDITION_COLUMNS if c != "energy")):
                f[name].resize(start + n, axis=0)
            f["incident_energies"][start:] = data.energy.reshape(-1, 1) * 1e3  # GeV -> MeV
            f["showers"][start:] = flat * np.float32(1e3)
            for c in CONDITION_COLUMNS:
                if c != "energy":
                    f[c][start:] = getattr(data, c)
            if event is not None:
                if "event" not in f:
                    if start:
                        msg = f"{self.path}: 'event' must be given with every chunk or with none"
                        raise ValueError(msg)
                    f.create_dataset("event", (0,), maxshape=(None,), dtype="i8", chunks=(4096,))
                f["event"].resize(start + n, axis=0)
                f["event"][start:] = np.asarray(event, dtype=np.int64)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _close_atomic(self, exc_type, exc, tb)


class EventWriter:
    """Write showers grouped by input event, chunk by chunk, atomically (a context manager).

    ``.root``: a TTree ``tree`` with one entry per event (the layout in the module docstring),
    optionally with other per-event branches copied through (``extra`` in :meth:`write`: an
    awkward record array of the chunk's events; jagged fields ``X_y`` sharing their counts are
    grouped under one counter ``nX``, as in NanoAOD), the cells ``cells="dense"`` or ``"hits"``
    (default :data:`CELLS`), compressed with ``compression`` (:func:`root_compression`; default
    :data:`COMPRESSION`).
    ``.h5``: the flat HDF5 layout plus ``event`` (dense cells, gzip level 1).

    Example:
        >>> import tempfile, pathlib, numpy as np, fastcalo.datasets as ds
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.root"
        >>> chunk = ds.ShowerData.from_arrays(energy=[5.0, 7.0, 9.0], eta=[0, 0, 0], phi=[0, 0, 0], pdgid=[22] * 3,
        ...                                   impact_x=[1] * 3, impact_y=[3] * 3, images=np.ones((3, 24, 24)))
        >>> with ds.EventWriter(path, tree="Events", collection="Photon") as out:
        ...     out.write(chunk, counts=np.array([2, 0, 1]), first_event=0)
        >>> data = ds.read(path)
        >>> len(data), data.energy.tolist()
        (3, [5.0, 7.0, 9.0])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        tree: str = "Events",
        collection: str = "particles",
        overwrite: bool = False,
        detector: Detector = DEFAULT_DETECTOR,
        metadata: Mapping[str, object] | None = None,
        cells: str | None = None,
        compression: str | None = None,
    ) -> None:
        self.path = Path(path)
        self._kind = file_kind(self.path)
        self.tree_name = tree
        self.collection = collection
        if cells is not None and cells not in CELL_LAYOUTS:
            msg = f"cells must be one of {CELL_LAYOUTS}, got {cells!r}"
            raise ValueError(msg)
        if self._kind == "hdf5" and (cells not in (None, "dense") or compression is not None):
            msg = f"{self.path}: HDF5 output has the CaloChallenge layout (dense cells, gzip): cells and compression apply to ROOT output (.root)"
            raise ValueError(msg)
        self.cells = cells or (CELLS if self._kind == "root" else "dense")
        self._compression = root_compression(COMPRESSION if compression is None else compression) if self._kind == "root" else None
        meta: dict[str, object] = {**(metadata or {}), "layout": "events", "tree": tree, "collection": collection}
        if self._kind == "root":
            meta["cells"] = self.cells
        self._flat = ShowerWriter(path, overwrite=overwrite, detector=detector, metadata=meta) if self._kind == "hdf5" else None
        self._overwrite = overwrite
        self._meta = _metadata(self._kind, detector, meta)
        self._n_cells = detector.n_total_cells
        self._atomic: contextlib.AbstractContextManager[Path] | None = None
        self._file: Any = None  # uproot.WritableDirectory while open (ROOT)
        self._tree: Any = None  # uproot.WritableTree once the first chunk is written
        self._sink: _Hdf5Sink | None = None  # never: HDF5 output goes through self._flat
        self.n_events = 0
        self.n_written = 0

    def __enter__(self) -> EventWriter:
        if self._flat is not None:
            self._flat.__enter__()
            return self
        import uproot

        replaceable(self.path, overwrite=self._overwrite)
        self._atomic = atomic_path(self.path, overwrite=self._overwrite)
        tmp = self._atomic.__enter__()
        try:
            with _signals_deferred():
                self._file = uproot.recreate(tmp, compression=self._compression)
                self._file[_META] = json.dumps(self._meta)
        except BaseException as error:
            _close_atomic(self, type(error), error, error.__traceback__)
            if isinstance(error, OSError):
                raise _write_error(self.path, error) from error
            raise
        return self

    def write(self, data: ShowerData, *, counts: ArrayLike, first_event: int, extra: ak.Array | None = None) -> None:
        """Append the showers of ``len(counts)`` consecutive events starting at input entry
        ``first_event``.

        Arguments:
            data: the showers of these events, in event order.
            counts: (n_events,) showers per event, summing to ``len(data)``.
            first_event: the input entry of the first of these events.
            extra: per-event branches to copy through, an awkward record array of the n_events
                (ROOT output only).

        Raises:
            ValueError for counts that are negative or do not sum to ``len(data)``, and for
            ``extra`` with HDF5 output; RuntimeError outside the ``with`` block.
        """
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or int(counts.sum()) != len(data) or (counts < 0).any():
            msg = f"{self.path}: counts (sum {int(counts.sum())}) must be >= 0 and sum to the {len(data)} showers given"
            raise ValueError(msg)
        if self._flat is not None:
            if extra is not None:
                msg = f"{self.path}: copying input branches needs ROOT output (.root), not HDF5"
                raise ValueError(msg)
            self._flat.write(data, event=np.repeat(np.arange(first_event, first_event + len(counts)), counts))
        else:
            try:
                with _signals_deferred():
                    self._write_root(data, counts, extra)
            except OSError as error:
                raise _write_error(self.path, error) from error
        self.n_events += len(counts)
        self.n_written += len(data)

    def _write_root(self, data: ShowerData, counts: NDArray[np.int64], extra: ak.Array | None) -> None:
        import awkward as ak

        if self._file is None:
            msg = "EventWriter.write called outside its 'with' block"
            raise RuntimeError(msg)
        name = self.collection
        columns = {_ROOT_NAMES.get(c, c).replace("incident_", ""): getattr(data, c) for c in CONDITION_COLUMNS}
        flat = data.images.astype(np.float32, copy=False).reshape(len(data), self._n_cells)
        if self.cells == "hits":
            hit = flat != 0
            particle, cell = np.nonzero(hit)  # row-major: particle by particle, cells in order
            columns["nhits"] = np.count_nonzero(hit, axis=1).astype(np.int16)
            running = np.concatenate([[0], np.cumsum(columns["nhits"], dtype=np.int64)])
            ends = np.cumsum(counts)
            per_event = running[ends] - running[ends - counts]
            hits = ak.zip({"cell": cell.astype(np.int16), "energy": flat[particle, cell]})
        arrays: dict[str, ak.Array | np.ndarray] = {name: ak.unflatten(ak.zip(columns), counts)}
        if self.cells == "hits":
            arrays[f"{name}_hit"] = ak.unflatten(hits, per_event)
        else:
            arrays[f"{name}_image"] = ak.unflatten(flat.reshape(-1), counts * self._n_cells)
        if extra is not None:
            reserved = {name, f"n{name}", f"{name}_image", f"n{name}_image", f"{name}_hit", f"n{name}_hit"}
            arrays.update(_group_branches(extra, reserved=reserved))
        if self._tree is None:
            types = {key: (value.type.content if isinstance(value, ak.Array) else value.dtype) for key, value in arrays.items()}
            self._tree = self._file.mktree(self.tree_name, types, title="fastcalo showers by event (GeV, mm)")
        self._tree.extend(arrays)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.n_events == 0 and exc_type is None:  # no events at all: the full layout, with no entries
            try:
                side = int(round(np.sqrt(self._n_cells)))
                empty = ShowerData.from_arrays(
                    **{c: np.empty(0) for c in CONDITION_COLUMNS}, images=np.empty((0, side, side)), source=str(self.path)
                )
                self.write(empty, counts=np.empty(0, dtype=np.int64), first_event=0)
            except BaseException as error:
                self._exit_now(type(error), error, error.__traceback__)
                raise
        self._exit_now(exc_type, exc, tb)

    def _exit_now(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._flat is not None:
            self._flat.__exit__(exc_type, exc, tb)
        else:
            _close_atomic(self, exc_type, exc, tb)


def _close_atomic(
    writer: ShowerWriter | EventWriter,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """Close a writer's file, then rename its temporary file into place only if all went well.

    An error while closing after another error is dropped: the first one says what went wrong.
    """
    atomic, file, sink = writer._atomic, writer._file, writer._sink
    writer._atomic, writer._file, writer._sink = None, None, None
    if atomic is None:
        msg = f"{writer.path}: writer closed without being opened"
        raise RuntimeError(msg)
    try:
        try:
            if file is not None:
                with _signals_deferred():
                    file.close()
        finally:
            if sink is not None:
                sink.close()
        if sink is not None and exc is None:
            sink.check(writer.path)
    except BaseException as error:
        if exc is not None:  # the file is discarded anyway
            atomic.__exit__(exc_type, exc, tb)
            return
        atomic.__exit__(type(error), error, error.__traceback__)
        if isinstance(error, OSError) and sink is None:
            raise _write_error(writer.path, error) from error
        raise
    atomic.__exit__(exc_type, exc, tb)


def _group_branches(extra: ak.Array, *, reserved: set[str]) -> dict[str, ak.Array | np.ndarray]:
    """Per-event input branches to copy: the jagged ``X_y`` fields of a collection whose counter
    ``nX`` is copied too (NanoAOD's ``nElectron``, ``Electron_pt``, ...) grouped under ``X`` (one
    counter, as in the input); other jagged fields each under their own counter. The grouping
    depends on the names only, never on a chunk's values, so every chunk of a file has the layout
    of the first.

    Raises:
        ValueError: a grouped field whose counts differ from its counter's in this chunk.
    """
    import awkward as ak

    out: dict[str, ak.Array | np.ndarray] = {}
    groups: dict[str, dict[str, ak.Array]] = {}
    for field in ak.fields(extra):
        if field in reserved:
            continue
        values = extra[field]
        if values.ndim == 1:
            out[field] = ak.to_numpy(values)
            continue
        prefix, _, rest = field.partition("_")
        if rest and prefix not in reserved:
            groups.setdefault(prefix, {})[rest] = values
        else:
            out[field] = values
    for prefix, members in groups.items():
        counter = out.get(f"n{prefix}")
        if counter is None or not all(v.ndim == 2 for v in members.values()):
            out.update({f"{prefix}_{rest}": v for rest, v in members.items()})
            continue
        for rest, v in members.items():
            if not np.array_equal(ak.to_numpy(ak.num(v, axis=1)), counter):
                msg = f"input branch {prefix}_{rest} has other counts than its collection's counter n{prefix}: cannot copy it under n{prefix}"
                raise ValueError(msg)
        out[prefix] = ak.zip(members)
    return {k: v for k, v in out.items() if not (k.startswith("n") and k[1:] in out)}  # uproot writes the counters


def write(
    data: ShowerData,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    detector: Detector = DEFAULT_DETECTOR,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write a whole dataset to ``path`` (.root, .h5 or .hdf5), atomically; return the path.

    Arguments:
        data: the showers.
        path: the file; its extension chooses the format (see the module docstring).
        overwrite: replace an existing file, and only a shower file that fastcalo wrote (see
            :func:`replaceable`).
        detector: stored in the metadata; its number of cells must match the images.
        metadata: more JSON-ready entries for the file's metadata (see :func:`metadata`).

    Raises:
        FileExistsError if ``path`` exists and ``overwrite`` is false, or it is not a shower file
        of fastcalo; ValueError for an unknown extension or images of another size than the
        detector's.

    Example:
        >>> import tempfile, pathlib
        >>> data = ShowerData.from_arrays(energy=[2.0], eta=[0.0], phi=[0.0], pdgid=[11],
        ...                               impact_x=[5.0], impact_y=[5.0], images=np.zeros((1, 24, 24)))
        >>> path = write(data, pathlib.Path(tempfile.mkdtemp()) / "one.root")
        >>> read(path).pdgid.tolist()
        [11]
    """
    with ShowerWriter(path, overwrite=overwrite, detector=detector, metadata=metadata) as out:
        out.write(data)
    return Path(path)


def _suggest(name: str, available: list[str]) -> str:
    near = near_misses(name, available)
    return f"; did you mean {near}?" if near else ""


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn the errors of h5py or uproot reading ``path`` into one naming the file.

    Wraps only the library's calls: fastcalo's own KeyError and ValueError already name it.
    """
    try:
        yield
    except Exception as error:
        kind = "HDF5" if file_kind(path) == "hdf5" else "ROOT"
        reason = re.sub(r"\s+(in file|for file path) \S+$", "", " ".join(str(error).split()))  # uproot names it too
        msg = f"{path}: not a readable {kind} file ({reason})"
        raise OSError(msg) from error


def _open_hdf5(path: Path) -> tuple[h5py.File, int, float]:
    import h5py

    with _reading(path):
        f = h5py.File(path, "r")
    keys = sorted(f.keys())
    required = ["incident_energies", "showers", *(c for c in CONDITION_COLUMNS if c != "energy")]
    missing = [k for k in required if k not in keys]
    if missing:
        f.close()
        hints = "".join(_suggest(m, keys) for m in missing)
        msg = f"{path}: missing key(s) {missing}; the file has {keys}{hints}"
        raise KeyError(msg)
    n = f["showers"].shape[0]
    if f["incident_energies"].shape != (n, 1):
        msg = f"{path}: 'incident_energies' must have shape (N, 1) = ({n}, 1), got {f['incident_energies'].shape}"
        f.close()
        raise ValueError(msg)
    lengths = {c: f[c].shape for c in CONDITION_COLUMNS if c != "energy" and f[c].shape != (n,)}
    if lengths:  # read chunk by chunk, a longer column would be cut silently, its rows out of step
        msg = f"{path}: every column must have one entry per shower, shape ({n},) as 'showers' has {n} rows; got {lengths}"
        f.close()
        raise ValueError(msg)
    scale = 1e-3  # CaloChallenge files are in MeV
    units = f.attrs.get("units")
    if isinstance(units, (bytes, np.bytes_)):  # a fixed-length string attribute (C++ HDF5, np.bytes_)
        units = units.decode()
    if units is not None:
        declared = json.loads(units) if str(units).startswith("{") else {"images": str(units)}
        if declared.get("images", "MeV") != "MeV" or declared.get("energy", "MeV") != "MeV":
            msg = f"{path}: HDF5 shower files hold MeV (CaloChallenge layout), but the file declares {declared}"
            f.close()
            raise ValueError(msg)
    return f, n, scale


def _root_meta(f: uproot.ReadOnlyDirectory, path: Path) -> dict[str, Any]:
    if _META not in f:
        return {}
    meta = dict(json.loads(str(f[_META])))
    units = meta.get("units", {})
    declared = {key: units.get(key, "GeV") for key in ("images", "energy")}
    if set(declared.values()) != {"GeV"}:
        msg = f"{path}: ROOT shower files hold GeV, but the file declares {declared}"
        f.close()
        raise ValueError(msg)
    return meta


def _iterate_events(
    path: Path, step_size: int, detector: Detector | None, entry_start: int, entry_stop: int | None
) -> Iterator[ShowerData]:
    """The showers of an event-structured ROOT file, flattened (entries count showers)."""
    import awkward as ak
    import uproot

    with _reading(path):
        file = uproot.open(path)
    with file as f:
        meta = _root_meta(f, path)
        name, c = meta["tree"], meta["collection"]
        with _reading(path):
            tree = f[name]
        columns = {col: f"{c}_{_ROOT_NAMES.get(col, col).replace('incident_', '')}" for col in CONDITION_COLUMNS}
        hits = meta.get("cells", "dense") == "hits"
        cell_branches = [f"{c}_nhits", f"{c}_hit_cell", f"{c}_hit_energy"] if hits else [f"{c}_image"]
        missing = [b for b in [*columns.values(), *cell_branches] if b not in tree]
        if missing and tree.num_entries:
            msg = f"{path}: tree {name!r} is missing branch(es) {missing}; it has {list(tree.keys())}"
            raise KeyError(msg)
        if detector is not None:
            _check_cells(path, int(meta.get("detector", {}).get("n_cells", detector.n_cells)) ** 2, detector)
        seen = 0
        n_cells = int(meta.get("detector", {}).get("n_cells", DEFAULT_DETECTOR.n_cells)) ** 2
        chunks = tree.iterate([*columns.values(), *cell_branches], step_size=step_size, library="ak") if not missing else iter(())
        while True:
            with _reading(path):
                arrays = next(chunks, None)
            if arrays is None:
                break
            n = int(ak.sum(ak.num(arrays[columns["energy"]], axis=1)))
            lo, hi = max(entry_start - seen, 0), n if entry_stop is None else min(entry_stop - seen, n)
            seen += n
            if hi <= lo:
                if entry_stop is not None and seen >= entry_stop:
                    break
                continue
            flat = {col: ak.to_numpy(ak.flatten(arrays[b]))[lo:hi] for col, b in columns.items()}
            if hits:
                images = _hits_to_images(path, n, n_cells, *(ak.to_numpy(ak.flatten(arrays[b])) for b in cell_branches))[lo:hi]
            else:
                images = ak.to_numpy(ak.flatten(arrays[f"{c}_image"])).reshape(n, -1)[lo:hi]
            for k in range(0, hi - lo, step_size):  # at most step_size showers per chunk
                part = slice(k, k + step_size)
                yield ShowerData.from_arrays(source=f"{path}", **{col: v[part] for col, v in flat.items()}, images=images[part])


def _hits_to_images(path: Path, n: int, n_cells: int, nhits: NDArray[Any], cell: NDArray[Any], energy: NDArray[Any]) -> NDArray[np.float32]:
    """Dense (n, n_cells) cells from hits: ``nhits`` per particle, then every hit's cell index and energy."""
    if int(nhits.sum()) != len(cell) or len(cell) != len(energy) or (len(cell) and not (0 <= cell.min() and cell.max() < n_cells)):
        msg = f"{path}: damaged hits: {int(nhits.sum())} announced, {len(cell)} cell indices (in [0, {n_cells})?) and {len(energy)} energies"
        raise ValueError(msg)
    images = np.zeros((n, n_cells), dtype=np.float32)
    images[np.repeat(np.arange(n), nhits.astype(np.int64)), cell.astype(np.int64)] = energy
    return images


def _root_layout(path: Path) -> str:
    import uproot

    with _reading(path):
        file = uproot.open(path)
    with file as f:
        return str(_root_meta(f, path).get("layout", "showers"))


def _open_root(path: Path) -> tuple[uproot.ReadOnlyDirectory, uproot.TTree, int]:
    import uproot

    with _reading(path):
        f = uproot.open(path)
    if _TREE not in f:
        keys = [k.split(";")[0] for k in f.keys()]
        msg = f"{path}: no TTree {_TREE!r}; the file has {keys}{_suggest(_TREE, keys)}"
        f.close()
        raise KeyError(msg)
    with _reading(path):
        tree = f[_TREE]
    branches = list(tree.keys())
    required = [_ROOT_NAMES.get(c, c) for c in CONDITION_COLUMNS] + ["image"]
    missing = [b for b in required if b not in branches]
    if missing:
        hints = "".join(_suggest(m, branches) for m in missing)
        msg = f"{path}: tree {_TREE!r} is missing branch(es) {missing}; it has {branches}{hints}"
        f.close()
        raise KeyError(msg)
    _root_meta(f, path)
    return f, tree, int(tree.num_entries)


def _check_cells(path: Path, n_values: int, detector: Detector | None) -> None:
    if detector is not None and n_values != detector.n_total_cells:
        msg = (
            f"{path}: showers have {n_values} cells but the detector has {detector.n_total_cells} "
            f"({detector.n_cells}x{detector.n_cells})"
        )
        raise ValueError(msg)


def iterate(
    path: str | os.PathLike[str],
    *,
    step_size: int = 100_000,
    detector: Detector | None = DEFAULT_DETECTOR,
    entry_start: int = 0,
    entry_stop: int | None = None,
) -> Iterator[ShowerData]:
    """Read a shower file in chunks of at most ``step_size`` showers (bounded memory).

    Arguments:
        path: a .root, .h5 or .hdf5 shower file, flat or by event (see the module docstring).
        step_size: the most showers in one chunk.
        detector: checks the number of cells (None skips the check).
        entry_start, entry_stop: the range of showers to read, counted from 0 (None: to the end).

    Returns:
        An iterator over :class:`ShowerData` chunks, in GeV whatever the file's unit.

    Raises:
        FileNotFoundError; ValueError for a bad ``step_size``, an unknown extension, another number
        of cells than the detector's, units or values that are wrong; KeyError naming missing
        columns with near misses.

    Example:
        >>> import tempfile, pathlib
        >>> data = ShowerData.from_arrays(energy=[1.0, 2.0, 3.0], eta=[0.0] * 3, phi=[0.0] * 3, pdgid=[22] * 3,
        ...                               impact_x=[5.0] * 3, impact_y=[5.0] * 3, images=np.ones((3, 24, 24)))
        >>> path = write(data, pathlib.Path(tempfile.mkdtemp()) / "three.h5")
        >>> [chunk.energy.tolist() for chunk in iterate(path, step_size=2)]
        [[1.0, 2.0], [3.0]]
    """
    path = Path(path)
    if not path.is_file():
        msg = f"no shower file at {path}"
        raise FileNotFoundError(msg)
    if step_size <= 0:
        msg = f"step_size must be > 0, got {step_size}"
        raise ValueError(msg)
    if entry_start < 0 or (entry_stop is not None and entry_stop < 0):
        msg = f"entry_start and entry_stop count showers from the start of the file (>= 0), got {entry_start} and {entry_stop}"
        raise ValueError(msg)
    kind = file_kind(path)
    source = str(path)
    if kind == "hdf5":
        f, n, scale = _open_hdf5(path)
        with f:
            _check_cells(path, f["showers"].shape[1], detector)
            stop = n if entry_stop is None else min(entry_stop, n)
            for start in range(entry_start, stop, step_size):
                end = min(start + step_size, stop)
                with _reading(path):
                    columns = {c: f[c][start:end] for c in CONDITION_COLUMNS if c != "energy"}
                    energy = f["incident_energies"][start:end, 0] * scale
                    images = f["showers"][start:end] * np.float32(scale)
                yield ShowerData.from_arrays(source=f"{source}[{start}:{end}]", energy=energy, images=images, **columns)
    elif _root_layout(path) == "events":
        yield from _iterate_events(path, step_size, detector, entry_start, entry_stop)
    else:
        f, tree, n = _open_root(path)
        with f:
            width = getattr(getattr(tree["image"], "interpretation", None), "inner_shape", None)
            if width is None:  # an RNTuple (uproot's default for a new tree), or a jagged vector<float>
                found = "an RNTuple" if "RNTuple" in type(tree).__name__ else "a TTree whose 'image' is of variable length"
                msg = (
                    f"{path}: a flat shower file needs a TTree with a fixed-size 'image' branch (float32[{DEFAULT_DETECTOR.n_cells ** 2}], "
                    f"as fastcalo writes); found {found}"
                )
                raise ValueError(msg)
            _check_cells(path, int(np.prod(width)) if width else 0, detector)
            stop = n if entry_stop is None else min(entry_stop, n)
            for start in range(entry_start, stop, step_size):
                end = min(start + step_size, stop)
                with _reading(path):
                    arrays = tree.arrays(library="np", entry_start=start, entry_stop=end)
                yield ShowerData.from_arrays(
                    source=f"{source}[{start}:{end}]",
                    **{c: arrays[_ROOT_NAMES.get(c, c)] for c in CONDITION_COLUMNS},
                    images=arrays["image"],
                )


def metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata a shower file carries (format, units, detector, generator, ...); {} if none.

    Raises:
        FileNotFoundError; ValueError for an unknown extension.

    Example:
        >>> import numpy as np, fastcalo.datasets as ds
        >>> data = ds.ShowerData.from_arrays(energy=[1.0], eta=[0.0], phi=[0.0], pdgid=[22],
        ...                                  impact_x=[5.0], impact_y=[5.0], images=np.zeros((1, 24, 24)))
        >>> import tempfile, pathlib; d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = ds.write(data, d / "one.h5", metadata={"seed": 7})
        >>> ds.metadata(d / "one.h5")["seed"], ds.metadata(d / "one.h5")["units"]["images"]
        (7, 'MeV')
    """
    path = Path(path)
    if not path.is_file():
        msg = f"no shower file at {path}"
        raise FileNotFoundError(msg)
    if file_kind(path) == "hdf5":
        import h5py

        with _reading(path):
            file = h5py.File(path, "r")
        with file as f:
            out: dict[str, Any] = {}
            for key, value in f.attrs.items():
                text = value.decode() if isinstance(value, bytes) else value
                if isinstance(text, str) and text[:1] in "{[":
                    text = json.loads(text)
                elif hasattr(text, "tolist"):  # a numpy scalar, or an array attribute: plain JSON values
                    text = text.tolist()
                out[key] = text
            return out
    import uproot

    with _reading(path):
        file = uproot.open(path)
    with file as f, _reading(path):
        return dict(json.loads(str(f[_META]))) if _META in f else {}


def read(
    path: str | os.PathLike[str],
    *,
    detector: Detector | None = DEFAULT_DETECTOR,
    step_size: int = 100_000,
    entry_start: int = 0,
    entry_stop: int | None = None,
) -> ShowerData:
    """Read a whole shower file into memory (see :func:`iterate` for the options).

    Raises:
        ValueError for a file that holds no showers, and what :func:`iterate` raises.
    """
    parts = list(
        iterate(path, detector=detector, step_size=step_size, entry_start=entry_start, entry_stop=entry_stop)
    )
    if not parts:
        msg = f"{path}: the file holds no showers"
        raise ValueError(msg)
    return ShowerData.concatenate(parts)
