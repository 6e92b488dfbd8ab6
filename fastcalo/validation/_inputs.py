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
from ..datasets import ShowerData
from ..detector import Detector
from . import observables as obs

__all__ = ("check_conditions", "check_detectors", "check_sample", "read")

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
    values, or deposits that are not in the unit of the incident energy."""
    if len(data) == 0:
        msg = f"{label}: the dataset is empty"
        raise ValueError(msg)
    if data.images.shape[1:] != (detector.n_cells, detector.n_cells):
        msg = f"{label}: expected {detector.n_cells}x{detector.n_cells} images, got {data.images.shape[1:]}"
        raise ValueError(msg)
    data.check(label)
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
