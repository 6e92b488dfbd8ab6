"""Reading the datasets of a comparison and checking that they can be compared.

Each file is checked on its own by :mod:`fastcalo.datasets` (missing columns, cells, units
declared against the layout, non-finite values, empty files); here are the checks across the two
samples: the same detector, the same particles, the same incident energies, and units that make
sense (deposits of the order of the incident energy).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import datasets
from ..datasets import ShowerData, file_sha256
from ..detector import Detector
from . import observables as obs

__all__ = ("check_conditions", "check_detectors", "check_distinct_files", "check_distinct_samples", "check_sample", "read")

#: Median E_dep / E_inc outside this range means the cells and the incident energy are not in the
#: same unit (a factor 1000 between MeV and GeV): a real shower deposits about E_inc.
_RESPONSE_RANGE = (1e-2, 1e2)
#: At most this fraction of the generated showers may lie outside the reference's energy groups.
_OUTSIDE_FRACTION = 0.05


def read(path: str | os.PathLike[str], *, max_showers: int | None, detector: Detector, progress: bool) -> ShowerData:
    """Read a shower file (at most ``max_showers``), with a progress bar over the showers read.

    Raises:
        ValueError for ``max_showers`` <= 0 or a file with no showers, and what
        :func:`fastcalo.datasets.iterate` raises.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    if max_showers is not None and max_showers <= 0:
        msg = f"max_showers must be > 0, got {max_showers}"
        raise ValueError(msg)
    parts = []
    with tqdm(desc=f"reading {path.name}", unit="shower", disable=not progress) as bar:
        for part in datasets.iterate(path, detector=detector, entry_stop=max_showers, step_size=20_000):
            parts.append(part)
            bar.update(len(part))
    if not parts:
        msg = f"{path}: the file holds no showers"
        raise ValueError(msg)
    return ShowerData.concatenate(parts)


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def check_detectors(described: Sequence[tuple[str, Mapping[str, object] | None]]) -> None:
    """Raise ValueError if the detectors described as (name, detector dict or None) differ.

    None (a file that declares no detector, e.g. from another tool) is not compared.

    Example:
        >>> from fastcalo.detector import Detector
        >>> check_detectors([("a.h5", Detector().to_dict()), ("b.h5", None)])
        >>> check_detectors([("a.h5", Detector().to_dict()), ("b.h5", Detector(n_cells=12).to_dict())])
        Traceback (most recent call last):
        ...
        ValueError: a.h5 and b.h5 describe different detectors: n_cells: 24 vs 12
    """
    known = [(name, _flatten(json.loads(json.dumps(d)))) for name, d in described if d]
    for (name_a, a), (name_b, b) in zip(known, known[1:]):
        differences = [key for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
        if differences:
            shown = "; ".join(f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in differences[:6])
            more = f" (and {len(differences) - 6} more)" if len(differences) > 6 else ""
            msg = f"{name_a} and {name_b} describe different detectors: {shown}{more}"
            raise ValueError(msg)


def check_sample(data: ShowerData, label: str, detector: Detector) -> None:
    """Raise ValueError naming ``label`` for an empty sample, images of the wrong size, non-finite
    values, negative cell energies (how many, and the most negative, in GeV), or deposits that are
    not in the unit of the incident energy."""
    if len(data) == 0:
        msg = f"{label}: the dataset is empty"
        raise ValueError(msg)
    if data.images.shape[1:] != (detector.n_cells, detector.n_cells):
        msg = f"{label}: expected {detector.n_cells}x{detector.n_cells} images, got {data.images.shape[1:]}"
        raise ValueError(msg)
    data.check(label)
    negative = data.images < 0
    if negative.any():
        msg = (
            f"{label}: {int(negative.sum())} cell(s) with negative energy, the most negative "
            f"{float(data.images.min()):.4g} GeV; cell energies must be >= 0 (zero-suppressed deposits)"
        )
        raise ValueError(msg)
    response = float(np.median(data.images.sum(axis=(1, 2), dtype=np.float64) / data.energy))
    low, high = _RESPONSE_RANGE
    if response > high or 0 < response < low:
        msg = (
            f"{label}: the median deposit is {response:.3g} times the incident energy; the cells and the "
            "incident energy seem to be in different units (fastcalo uses GeV in memory and in ROOT, MeV in HDF5)"
        )
        raise ValueError(msg)


def check_conditions(reference: ShowerData, generated: ShowerData, labels: tuple[str, str]) -> None:
    """Raise ValueError if the two samples were made for different particles or energies."""
    ref_particles, gen_particles = np.unique(reference.pdgid).tolist(), np.unique(generated.pdgid).tolist()
    if ref_particles != gen_particles:
        msg = f"{labels[0]} holds particles (pdgid) {ref_particles} but {labels[1]} holds {gen_particles}"
        raise ValueError(msg)
    groups = obs.energy_groups(reference.energy)
    missing = [(a, b) for a, b in groups if not np.any(obs.in_group(generated.energy, a, b))]
    if missing:
        shown = ", ".join(f"{a:g} GeV" if a == b else f"{a:.3g}–{b:.3g} GeV" for a, b in missing)
        msg = f"{labels[1]} has no showers at incident energies {shown}, where {labels[0]} has showers"
        raise ValueError(msg)
    inside = np.zeros(len(generated), dtype=bool)
    for a, b in groups:
        inside |= obs.in_group(generated.energy, a, b)
    outside = 1.0 - float(inside.mean())
    if outside > _OUTSIDE_FRACTION:
        e = generated.energy[~inside]
        msg = (
            f"{labels[1]}: {outside:.0%} of the showers have incident energies ({e.min():.3g}–{e.max():.3g} GeV) "
            f"that {labels[0]} does not have ({reference.energy.min():.3g}–{reference.energy.max():.3g} GeV)"
        )
        raise ValueError(msg)


def check_distinct_files(reference: str | os.PathLike[str], generated: str | os.PathLike[str]) -> None:
    """Raise ValueError if the two paths are the same file (however written: relative, absolute,
    through a symbolic or hard link) or two files with the same bytes (sha256, computed only when
    the sizes are equal). A path that does not exist is left to the reader to report.

    Example:
        >>> import tempfile, pathlib, shutil
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.h5").write_bytes(b"showers")
        >>> _ = shutil.copy(d / "a.h5", d / "b.h5")
        >>> check_distinct_files(d / "a.h5", d / "b.h5")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: .../a.h5 and .../b.h5 have the same content (sha256 ...): both inputs are the same showers
    """
    a, b = Path(reference), Path(generated)
    if not (a.is_file() and b.is_file()):
        return
    if os.path.samefile(a, b):
        msg = f"{a} and {b} are the same file: it is given as both the reference and the generated sample"
        raise ValueError(msg)
    if a.stat().st_size == b.stat().st_size and (digest := file_sha256(a)) == file_sha256(b):
        msg = f"{a} and {b} have the same content (sha256 {digest[:16]}…): both inputs are the same showers"
        raise ValueError(msg)


def check_distinct_samples(reference: ShowerData, generated: ShowerData, labels: tuple[str, str]) -> None:
    """Raise ValueError if the two samples hold the same showers: the same particles and incident
    energies and the same cells to float rounding (1e-6 relative, so that a file converted from
    HDF5 in MeV to ROOT in GeV still matches), in the same order. Such a comparison would pass
    every check and prove nothing."""
    same = (
        len(reference) == len(generated)
        and reference.images.shape == generated.images.shape
        and np.array_equal(reference.pdgid, generated.pdgid)
        and np.allclose(reference.energy, generated.energy, rtol=1e-6, atol=0.0)
    )
    if not same:
        return
    step = 10_000  # in blocks: two different samples differ in the first one
    for start in range(0, len(reference), step):
        a, b = reference.images[start : start + step], generated.images[start : start + step]
        if not np.allclose(a, b, rtol=1e-6, atol=1e-12):
            return
    msg = f"{labels[0]} and {labels[1]} hold the same {len(reference)} showers: both inputs are the same showers"
    raise ValueError(msg)
