"""Where the generated showers fail: a gradient-boosted classifier at fixed conditions, on views of
the image, and the cell-by-cell fluctuations.

The report's classifier (:mod:`fastcalo.validation.classifier`) says *whether* two samples can be
told apart; this module says *where*. Three steps, all on the same showers:

1. **Fixed conditions.** For each particle and each energy point (a fixed-energy sample) or bin
   (a continuous one: log bins about a factor 1.5 wide), a gradient-boosted classifier
   (scikit-learn's ``HistGradientBoostingClassifier``) learns to tell reference from generated
   showers on the cells divided by the incident energy, with the conditions that vary within
   the group appended as inputs (log10 E_inc for a bin; eta and the impact point where they
   vary). The showers are split 70/30, stratified; the AUC is measured on the 30 %. At the same
   group: the mean response ratio and the core-resolution ratio, generated / reference
   (:func:`fastcalo.validation.observables.response_table`).
2. **Views.** At the group with the most showers, the same classifier on parts of the image
   (:data:`VIEWS`): the total, the number of cells, centroids and widths, the high-level
   features, the brightest cells without their positions, the core, the central 7x7 cells, the
   cells outside them, the hit pattern, the image divided by its total. A view that the classifier
   cannot use (AUC near 0.5) is right; the view with the highest AUC is where the showers differ most.
3. **Fluctuations.** At that group, the per-cell standard deviation of the cells / E_inc,
   generated over reference, and the correlation of each cell with its neighbours along x and y
   in each sample: a generator can get every mean right and every fluctuation wrong.

The classifier is sharp: on reference Monte Carlo at one condition it tells the Monte Carlo from
a copy whose cell fluctuations are 10 % smaller at the same totals (every image x replaced by
0.9 x + 0.1 E_dep <x / E_dep>) with an AUC near 0.9, while two independent Monte Carlo samples
give 0.5 (tests/test_diagnosis.py).

Computing only; :mod:`fastcalo.validation.plots` draws the maps.

Example:
    >>> import numpy as np
    >>> from fastcalo import mc
    >>> from fastcalo.validation.diagnosis import diagnose
    >>> c = mc.sample_conditions(300, energy=2.0, eta=0.4, seed=1)
    >>> sim = lambda seed: mc.simulate(c["energy"], c["eta"], impact_x=c["impact_x"], impact_y=c["impact_y"], seed=seed).showers
    >>> result = diagnose(sim(1), sim(2), min_showers=100, iterations=20, views=("total energy", "cells above threshold"))
    >>> [(p.energy, p.n_reference) for p in result.points], sorted(result.views)
    ([('2', 300)], ['cells above threshold', 'total energy'])
    >>> result.fluctuations.std_ratio.shape
    (24, 24)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ..datasets import ShowerData
from ..detector import DEFAULT_DETECTOR, PARTICLES, Detector
from . import observables as obs

__all__ = (
    "TOLD_APART",
    "VIEWS",
    "ConditionPoint",
    "Diagnosis",
    "Fluctuations",
    "boosted_auc",
    "condition_groups",
    "diagnose",
    "fluctuations",
    "view_inputs",
)

Matrix = NDArray[np.float64]

#: An AUC above this counts as "told apart" in :meth:`Diagnosis.reading` (the report's AUC threshold).
TOLD_APART = 0.6
#: |standard-deviation ratio - 1| below this counts as "agree" in :meth:`Diagnosis.reading`.
_AGREE = 0.03


def _cells(data: ShowerData) -> Matrix:
    """The images as (N, n, n) float64, divided by the incident energy."""
    return data.images.astype(np.float64) / data.energy[:, None, None]


def _window(detector: Detector, half: int) -> NDArray[np.bool_]:
    """(n, n) mask of the (2 half + 1)^2 cells around the central (impact) cell, index n // 2."""
    idx = np.abs(np.arange(detector.n_cells) - detector.n_cells // 2) <= half
    return np.asarray(idx[:, None] & idx[None, :])


def _flat(x: Matrix) -> Matrix:
    return x.reshape(len(x), -1)


def _total(data: ShowerData, detector: Detector) -> Matrix:
    total: Matrix = _flat(_cells(data)).sum(axis=1, keepdims=True)
    return total


def _n_cells(data: ShowerData, detector: Detector) -> Matrix:
    counts: Matrix = np.count_nonzero(_flat(data.images.astype(np.float64)) > 0, axis=1).astype(np.float64)
    return counts[:, None]


def _shape(data: ShowerData, detector: Detector) -> Matrix:
    f = obs.features(data, detector)
    return np.column_stack([f[name] for name in ("centroid_x", "centroid_y", "width_x", "width_y")])


def _features(data: ShowerData, detector: Detector) -> Matrix:
    f = obs.features(data, detector)
    return np.column_stack([f[name] for name in obs.FEATURES])


def _brightest(data: ShowerData, detector: Detector) -> Matrix:
    flat = _flat(_cells(data))
    k = min(40, flat.shape[1])
    return -np.sort(-flat, axis=1)[:, :k]


def _core(data: ShowerData, detector: Detector) -> Matrix:
    return _cells(data)[:, _window(detector, 1)]


def _central(data: ShowerData, detector: Detector) -> Matrix:
    return _cells(data)[:, _window(detector, 3)]


def _central_over_total(data: ShowerData, detector: Detector) -> Matrix:
    return _central(data, detector) / _total(data, detector)


def _outside(data: ShowerData, detector: Detector) -> Matrix:
    return _cells(data)[:, ~_window(detector, 3)]


def _hits(data: ShowerData, detector: Detector) -> Matrix:
    return (_flat(data.images.astype(np.float64)) > 0).astype(np.float64)


def _over_total(data: ShowerData, detector: Detector) -> Matrix:
    return _flat(_cells(data)) / _total(data, detector)


#: The views of a shower the classifier is trained on, name -> (description, inputs).
#: Cell energies are divided by the incident energy unless a view says otherwise; the core and
#: the central 7x7 cells are around the impact cell (index n_cells // 2 in x and y).
VIEWS: dict[str, tuple[str, Callable[[ShowerData, Detector], Matrix]]] = {
    "all cells": ("the 576 cells / E_inc (the fixed-condition classifier)", lambda d, det: _flat(_cells(d))),
    "total energy": ("E_dep / E_inc", _total),
    "cells above threshold": ("the number of cells above the zero-suppression threshold", _n_cells),
    "centroids and widths": ("centroid and width in x and y", _shape),
    "high-level features": ("the report's high-level features (observables.FEATURES)", _features),
    "40 brightest cells": ("the 40 largest cells / E_inc, sorted, without their positions", _brightest),
    "core 3x3": ("the 3x3 cells around the impact cell / E_inc", _core),
    "central 7x7": ("the 7x7 cells around the impact cell / E_inc", _central),
    "central 7x7 / total": ("the central 7x7 cells / E_dep", _central_over_total),
    "outside central 7x7": ("the cells outside the central 7x7 / E_inc", _outside),
    "hit pattern": ("which cells are above threshold (0 or 1)", _hits),
    "image / total": ("the 576 cells / E_dep", _over_total),
}


def view_inputs(data: ShowerData, view: str, detector: Detector = DEFAULT_DETECTOR) -> Matrix:
    """The classifier inputs of one view (:data:`VIEWS`) of every shower, (N, n_inputs) float64,
    with NaN (a ratio of an empty shower) as 0.

    Raises:
        ValueError for an unknown view, listing the known ones.

    Example:
        >>> from fastcalo import mc
        >>> data = mc.simulate([5.0, 5.0], seed=1).showers
        >>> view_inputs(data, "core 3x3").shape, view_inputs(data, "outside central 7x7").shape
        ((2, 9), (2, 527))
    """
    if view not in VIEWS:
        msg = f"unknown view {view!r}; the views are {', '.join(map(repr, VIEWS))}"
        raise ValueError(msg)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = VIEWS[view][1](data, detector)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def boosted_auc(
    reference: Matrix,
    generated: Matrix,
    *,
    groups: NDArray[np.int64] | None = None,
    iterations: int = 200,
    seed: int = 0,
) -> float:
    """AUC of a gradient-boosted classifier telling ``reference`` rows from ``generated`` rows.

    scikit-learn's ``HistGradientBoostingClassifier`` (``max_iter=iterations``, no early stopping,
    ``random_state=seed``, 64 bins per input) is trained on 70 % of the rows, split stratified
    with ``seed``, and its AUC measured on the other 30 %: 0.5 when the samples cannot be told
    apart, 1 when fully. 64 bins instead of scikit-learn's 255 make it about 40 % faster with the
    same AUCs (measured on Monte Carlo at 5 GeV, 1500 a side: 0.507 and 0.495 for MC against MC,
    0.873 and 0.870 against MC with 10 % smaller cell fluctuations).

    Rows with the same ``groups`` label stay on the same side of the split. This matters for a
    generated sample made for the reference's own conditions (``fastcalo mc --like``, or a
    model run on the reference's particles), with the conditions among the inputs: a classifier
    can learn each training shower's conditions, and the test shower with the same conditions,
    whose twin it saw with the other label, then scores on the wrong side (AUCs below 0.5 where
    the inputs carry no information). Grouping the twins removes that.

    Arguments:
        reference, generated: inputs (N, d) and (M, d), one row per shower.
        groups: (N + M,) labels, reference rows first (default: every row its own group).
        iterations: boosting iterations.
        seed: the split and the classifier's random state.

    Returns:
        The AUC on the held-out 30 %.

    Raises:
        ValueError for fewer than 20 rows in a sample or different numbers of columns.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> a, b = rng.normal(size=(400, 2)), rng.normal(size=(400, 2)) + [2.0, 0.0]
        >>> boosted_auc(a, b, iterations=20) > 0.85
        True
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    if min(len(reference), len(generated)) < 20:
        msg = f"boosted_auc needs at least 20 rows per sample, got {len(reference)} and {len(generated)}"
        raise ValueError(msg)
    if reference.shape[1:] != generated.shape[1:]:
        msg = f"the two samples have different inputs: {reference.shape[1:]} and {generated.shape[1:]} columns"
        raise ValueError(msg)
    x = np.vstack([reference, generated])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(generated))])
    if groups is None:
        groups = np.arange(len(y))
    if groups.shape != y.shape:
        msg = f"groups must have one label per row ({len(y)}), got shape {groups.shape}"
        raise ValueError(msg)
    # split the groups, stratified by what each holds: reference only, generated only, or both
    labels, inverse = np.unique(groups, return_inverse=True)
    kind = (np.bincount(inverse, weights=1 - y, minlength=len(labels)) > 0) + 2 * (np.bincount(inverse, weights=y, minlength=len(labels)) > 0)
    counts = np.bincount(kind)
    stratify = kind if counts[counts > 0].min() >= 2 else None
    _, test_groups = train_test_split(np.arange(len(labels)), test_size=0.3, stratify=stratify, random_state=seed)
    test = np.isin(inverse, test_groups)
    model = HistGradientBoostingClassifier(max_iter=iterations, early_stopping=False, random_state=seed, max_bins=64)
    model.fit(x[~test], y[~test])
    return float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))


@dataclass(frozen=True)
class ConditionPoint:
    """The fixed-condition classifier and the energy response at one particle and energy group."""

    particle: str
    energy_low: float
    energy_high: float
    #: showers of the group in each sample; the classifier uses at most ``max_showers`` of each.
    n_reference: int
    n_generated: int
    n_used: int
    #: the conditions appended to the classifier's inputs (those that vary in the group).
    conditions: tuple[str, ...]
    auc: float
    #: mean E_dep / E_inc, generated / reference, and its statistical error.
    response_ratio: float
    response_ratio_error: float
    #: core resolution (half the 16-84 % width of E_dep / E_inc over its median), generated / reference.
    resolution_ratio: float
    resolution_ratio_error: float

    @property
    def energy(self) -> str:
        """The point or bin as text, in GeV."""
        if self.energy_low == self.energy_high:
            return f"{self.energy_low:g}"
        return f"{self.energy_low:.3g}–{self.energy_high:.3g}"


@dataclass(frozen=True)
class Fluctuations:
    """Cell fluctuations of the cells / E_inc in two samples at one group, as (n, n) maps indexed
    [x, y]; NaN in the cells where the reference's mean is below ``min_fraction`` of its brightest
    cell's mean (or where a sample does not fluctuate)."""

    #: standard deviation, generated / reference.
    std_ratio: Matrix
    #: correlation of cell (i, j) with cell (i + 1, j) (along x), reference and generated (NaN at i = n - 1).
    correlation_x: tuple[Matrix, Matrix]
    #: correlation of cell (i, j) with cell (i, j + 1) (along y), reference and generated (NaN at j = n - 1).
    correlation_y: tuple[Matrix, Matrix]
    min_fraction: float
    #: the median standard-deviation ratio over the core (3x3 around the impact cell) and over the
    #: unmasked cells outside the central 7x7.
    core_std_ratio: float
    outside_std_ratio: float
    #: the same median outside the central 7x7 in the two directions apart: the cells farther from
    #: the impact cell along x (the eta direction, in which showers elongate) than along y, and
    #: those farther along y (phi) than along x; the diagonals are in neither.
    outside_x_std_ratio: float
    outside_y_std_ratio: float
    #: the mean neighbour correlation (x and y together) over the central 7x7, reference and generated.
    central_correlation: tuple[float, float]


def fluctuations(
    reference: ShowerData, generated: ShowerData, *, detector: Detector = DEFAULT_DETECTOR, min_fraction: float = 1e-3
) -> Fluctuations:
    """Per-cell standard-deviation ratio and neighbour correlations of cells / E_inc (see
    :class:`Fluctuations`). Meant for showers at one condition: spread from a range of energies
    or angles would mix into the fluctuations.

    Arguments:
        reference, generated: the showers, (N, n, n) and (M, n, n) images.
        detector: the geometry (the impact cell is index n_cells // 2).
        min_fraction: cells whose reference mean is below this fraction of the brightest mean are masked.

    Returns:
        The maps and their summaries.

    Example:
        >>> from fastcalo import mc
        >>> a, b = (mc.simulate(np.full(200, 2.0), seed=s).showers for s in (1, 2))
        >>> f = fluctuations(a, b)
        >>> f.std_ratio.shape, 0.8 < f.core_std_ratio < 1.25
        ((24, 24), True)
    """
    x = [_cells(s) for s in (reference, generated)]
    mean = x[0].mean(axis=0)
    keep = mean >= min_fraction * mean.max() if mean.max() > 0 else np.zeros(mean.shape, dtype=bool)
    std = [a.std(axis=0, ddof=1) for a in x]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(keep & (std[0] > 0), std[1] / std[0], np.nan)
    corr_x = tuple(_neighbour_correlation(a, 1, keep) for a in x)
    corr_y = tuple(_neighbour_correlation(a, 2, keep) for a in x)
    core, central = _window(detector, 1), _window(detector, 3)
    offset = np.abs(np.arange(detector.n_cells) - detector.n_cells // 2)
    along_x, along_y = offset[:, None] > offset[None, :], offset[None, :] > offset[:, None]
    core_values, outside_values, x_values, y_values = (
        ratio[region & np.isfinite(ratio)] for region in (core, ~central, ~central & along_x, ~central & along_y)
    )
    central_corr = []
    for cx, cy in zip(corr_x, corr_y):
        values = np.concatenate([cx[central], cy[central]])
        values = values[np.isfinite(values)]
        central_corr.append(float(values.mean()) if values.size else float("nan"))
    return Fluctuations(
        std_ratio=ratio,
        correlation_x=(corr_x[0], corr_x[1]),
        correlation_y=(corr_y[0], corr_y[1]),
        min_fraction=min_fraction,
        core_std_ratio=_median(core_values),
        outside_std_ratio=_median(outside_values),
        outside_x_std_ratio=_median(x_values),
        outside_y_std_ratio=_median(y_values),
        central_correlation=(central_corr[0], central_corr[1]),
    )


def _median(values: Matrix) -> float:
    return float(np.median(values)) if values.size else float("nan")


def _neighbour_correlation(x: Matrix, axis: int, keep: NDArray[np.bool_]) -> Matrix:
    """Correlation over the showers of each cell with its neighbour one step along ``axis`` (1: x,
    2: y), as an (n, n) map at the first cell of each pair; NaN where a cell of the pair is masked
    or does not fluctuate, and in the last row (or column)."""
    n = x.shape[1]
    first = x[:, :-1, :] if axis == 1 else x[:, :, :-1]
    second = x[:, 1:, :] if axis == 1 else x[:, :, 1:]
    kept = (keep[:-1, :] & keep[1:, :]) if axis == 1 else (keep[:, :-1] & keep[:, 1:])
    a, b = first - first.mean(axis=0), second - second.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    corr = np.where(kept, corr, np.nan)
    out = np.full((n, n), np.nan)
    if axis == 1:
        out[:-1, :] = corr
    else:
        out[:, :-1] = corr
    return out


@dataclass
class Diagnosis:
    """Where two samples differ: the fixed-condition classifier per group, the views and the
    fluctuations at the group with the most showers (:func:`diagnose`)."""

    points: list[ConditionPoint]
    #: the group the views and the fluctuations are measured at (one of ``points``).
    views_at: ConditionPoint | None
    #: view name (:data:`VIEWS`) -> AUC, in the order of :data:`VIEWS`.
    views: dict[str, float]
    fluctuations: Fluctuations | None
    #: groups left out or merged, in words ("photon 1 GeV left out: 120 reference and 120 generated
    #: showers, fewer than 300").
    notes: list[str] = field(default_factory=list)
    min_showers: int = 300
    max_showers: int = 4000
    iterations: int = 200

    def reading(self) -> str:
        """One sentence: where the classifier tells the samples apart, in which view most, and
        how the cell fluctuations compare in the core and outside the central 7x7 cells."""
        if not self.points:
            return f"No energy point has {self.min_showers} showers in both samples: no diagnosis."
        apart = [p for p in self.points if p.auc > TOLD_APART]
        aucs = [p.auc for p in self.points]
        span = f"AUC {min(aucs):.2f}" if len(aucs) == 1 else f"AUC {min(aucs):.2f}–{max(aucs):.2f}"
        if not apart:
            first = f"At fixed conditions the classifier does not tell the showers apart ({span} at {len(self.points)} point(s))"
        elif len(apart) == len(self.points):
            first = f"At fixed conditions the showers are told apart at every point ({span})"
        else:
            first = f"At fixed conditions the showers are told apart at {len(apart)} of {len(self.points)} points ({span})"
        parts = [first]
        views = {k: v for k, v in self.views.items() if k != "all cells"}
        if views and self.views_at is not None:
            where = f"{self.views_at.particle} {self.views_at.energy} GeV"
            worst = max(views, key=lambda k: views[k])
            n_apart = sum(v > TOLD_APART for v in views.values())
            if n_apart == 0:
                parts.append(f"at {where} no single view tells them apart (at most {views[worst]:.2f}, {worst})")
            else:
                extent = "in every view" if n_apart == len(views) else f"in {n_apart} of {len(views)} views"
                parts.append(f"at {where} {extent}, most in {worst} (AUC {views[worst]:.2f})")
        f = self.fluctuations
        if f is not None:
            parts.append(
                f"cell fluctuations {_deviation(f.core_std_ratio)} in the core and {_deviation(f.outside_std_ratio)} "
                f"outside the central 7x7 cells ({f.outside_x_std_ratio:.2f} along x, the eta direction; "
                f"{f.outside_y_std_ratio:.2f} along y)"
            )
        return "; ".join(parts) + "."

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the points, the views, the maps (masked cells as None) and the settings."""
        from dataclasses import asdict

        f = self.fluctuations
        maps: dict[str, object] | None = None
        if f is not None:
            maps = {
                "std_ratio": _listed(f.std_ratio),
                "correlation_x": {"reference": _listed(f.correlation_x[0]), "generated": _listed(f.correlation_x[1])},
                "correlation_y": {"reference": _listed(f.correlation_y[0]), "generated": _listed(f.correlation_y[1])},
                "min_fraction": f.min_fraction,
                "core_std_ratio": f.core_std_ratio,
                "outside_std_ratio": f.outside_std_ratio,
                "outside_x_std_ratio": f.outside_x_std_ratio,
                "outside_y_std_ratio": f.outside_y_std_ratio,
                "central_correlation": {"reference": f.central_correlation[0], "generated": f.central_correlation[1]},
            }
        return {
            "reading": self.reading(),
            "points": [{**asdict(p), "energy": p.energy} for p in self.points],
            "views_at": None if self.views_at is None else {"particle": self.views_at.particle, "energy": self.views_at.energy},
            "views": self.views,
            "fluctuations": maps,
            "notes": self.notes,
            "settings": {"min_showers": self.min_showers, "max_showers": self.max_showers, "iterations": self.iterations},
        }


def _deviation(ratio: float) -> str:
    """A standard-deviation ratio in words: "agree (within 3 %)", "too small by ~9 %"."""
    if not np.isfinite(ratio):
        return "not measured"
    if abs(ratio - 1) < _AGREE:
        return f"agree (ratio {ratio:.2f})"
    return f"too {'small' if ratio < 1 else 'large'} by ~{abs(ratio - 1):.0%} (ratio {ratio:.2f})"


def _listed(x: Matrix) -> list[list[float | None]]:
    return [[float(v) if np.isfinite(v) else None for v in row] for row in x]


def condition_groups(
    reference: ShowerData, generated: ShowerData, *, min_showers: int = 300, bin_factor: float = 1.5
) -> tuple[list[tuple[int, float, float]], list[str]]:
    """The (pdgid, energy low, energy high) groups to diagnose, and notes on what was left out.

    Per particle of the reference: each energy point of a fixed-energy sample (at most 20
    distinct energies, as :func:`fastcalo.validation.observables.energy_groups`), else
    log-spaced bins about ``bin_factor`` wide over the reference's range. A group needs
    ``min_showers`` in both samples: a point below that is left out, a bin below that is merged
    with its smaller neighbour (and left out if one bin for the whole range is still too small).

    Returns:
        The groups (a point has low == high; a bin is [low, high)) and the notes, in words.

    Example:
        >>> import numpy as np
        >>> energy = np.repeat([1.0, 10.0], [500, 100])
        >>> data = ShowerData.from_arrays(energy=energy, eta=np.zeros(600), phi=np.zeros(600), pdgid=np.full(600, 22),
        ...                               impact_x=np.zeros(600), impact_y=np.zeros(600), images=np.ones((600, 24, 24)))
        >>> condition_groups(data, data)
        ([(22, 1.0, 1.0)], ['photon 10 GeV left out: 100 reference and 100 generated showers, fewer than 300'])
    """
    names = {pdgid: name for name, pdgid in PARTICLES.items()}
    groups: list[tuple[int, float, float]] = []
    notes: list[str] = []
    for pdgid in np.unique(reference.pdgid).tolist():
        name = names.get(int(pdgid), f"pdgid {pdgid}")
        energies = [s.energy[s.pdgid == pdgid] for s in (reference, generated)]
        distinct = np.unique(energies[0])
        if distinct.size <= 20:
            candidates = [(float(e), float(e)) for e in distinct]
        else:
            low, high = float(energies[0].min()), float(energies[0].max()) * (1 + 1e-9)
            n_bins = max(1, int(round(math.log(high / low) / math.log(bin_factor))))
            edges = np.geomspace(low, high, n_bins + 1)
            candidates = [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]

        def counts(group: tuple[float, float]) -> tuple[int, int]:
            return (int(obs.in_group(energies[0], *group).sum()), int(obs.in_group(energies[1], *group).sum()))

        if distinct.size > 20:
            merged = False
            while len(candidates) > 1:
                sizes = [min(counts(g)) for g in candidates]
                i = int(np.argmin(sizes))
                if sizes[i] >= min_showers:
                    break
                j = i + 1 if i == 0 else i - 1 if i == len(candidates) - 1 else (i - 1 if sizes[i - 1] <= sizes[i + 1] else i + 1)
                a, b = sorted((i, j))
                candidates[a : b + 1] = [(candidates[a][0], candidates[b][1])]
                merged = True
            if merged:
                notes.append(f"{name}: energy bins with fewer than {min_showers} showers merged with a neighbour")
        for group in candidates:
            n_ref, n_gen = counts(group)
            if min(n_ref, n_gen) < min_showers:
                text = f"{group[0]:g} GeV" if group[0] == group[1] else f"{group[0]:.3g}–{group[1]:.3g} GeV"
                notes.append(f"{name} {text} left out: {n_ref} reference and {n_gen} generated showers, fewer than {min_showers}")
            else:
                groups.append((int(pdgid), *group))
    return groups, notes


def _condition_columns(data: ShowerData, binned: bool) -> tuple[str, ...]:
    """The conditions that vary within a group (log10 E_inc only for a bin)."""
    names = ["log10_energy"] if binned else []
    for name in ("eta", "impact_x", "impact_y"):
        if np.ptp(getattr(data, name)) > 0:
            names.append(name)
    return tuple(names)


def _twins(data: ShowerData) -> NDArray[np.int64]:
    """A label per shower, equal for showers with the same conditions (energy, eta, impact point,
    particle): the twins that a sample made for another's conditions has (see :func:`boosted_auc`)."""
    rows = np.column_stack([data.energy, data.eta, data.impact_x, data.impact_y, data.pdgid.astype(np.float64)])
    _, inverse = np.unique(rows, axis=0, return_inverse=True)
    return np.asarray(inverse.reshape(-1), dtype=np.int64)


def _with_conditions(x: Matrix, data: ShowerData, conditions: Sequence[str]) -> Matrix:
    columns = [np.log10(data.energy) if name == "log10_energy" else getattr(data, name) for name in conditions]
    return np.column_stack([x, *columns]) if columns else x


def _ratio(a: float, ea: float, b: float, eb: float) -> tuple[float, float]:
    """b / a with its propagated error, NaN when a or b is not positive."""
    if not (a > 0 and b > 0):
        return float("nan"), float("nan")
    return b / a, b / a * float(np.hypot(ea / a, eb / b))


def diagnose(
    reference: ShowerData,
    generated: ShowerData,
    *,
    detector: Detector = DEFAULT_DETECTOR,
    min_showers: int = 300,
    max_showers: int = 4000,
    iterations: int = 200,
    views: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Diagnosis:
    """Where ``generated`` differs from ``reference``: the steps of the module docstring.

    Arguments:
        reference, generated: the two samples (the same particles and incident energies).
        detector: the geometry of the images.
        min_showers: a group needs this many showers in both samples (:func:`condition_groups`).
        max_showers: the classifier uses at most this many showers of each sample per group (a
            random subset, fixed by ``seed``); the response ratios use them all.
        iterations: boosting iterations of each classifier (:func:`boosted_auc`).
        views: the views to measure (default: all of :data:`VIEWS`; ``()`` for none).
        seed: the subsets, the splits and the classifiers.
        progress: a progress bar over the classifiers.

    Returns:
        A :class:`Diagnosis`; with no group large enough, one with no points (its notes say why).

    Raises:
        ValueError for an unknown view or ``min_showers`` below 20.
    """
    from tqdm.auto import tqdm

    if min_showers < 20:
        msg = f"min_showers must be at least 20, got {min_showers}"
        raise ValueError(msg)
    chosen = list(VIEWS) if views is None else list(views)
    unknown = [v for v in chosen if v not in VIEWS]
    if unknown:
        msg = f"unknown view(s) {unknown}; the views are {', '.join(map(repr, VIEWS))}"
        raise ValueError(msg)
    groups, notes = condition_groups(reference, generated, min_showers=min_showers)
    names = {pdgid: name for name, pdgid in PARTICLES.items()}
    rng = np.random.default_rng(seed)
    bar = tqdm(total=len(groups) + len(chosen), desc="diagnosis", unit="fit", disable=not progress)
    points: list[ConditionPoint] = []
    subsets: list[tuple[ShowerData, ShowerData, tuple[str, ...], NDArray[np.int64]]] = []
    with bar:
        for pdgid, low, high in groups:
            in_group = [s[(s.pdgid == pdgid) & obs.in_group(s.energy, low, high)] for s in (reference, generated)]
            used = []
            for s in in_group:
                if len(s) > max_showers:
                    s = s[np.sort(rng.choice(len(s), max_showers, replace=False))]
                used.append(s)
            both = ShowerData.concatenate(used)
            conditions = _condition_columns(both, binned=low != high)
            twins = _twins(both)
            x = [_with_conditions(view_inputs(s, "all cells", detector), s, conditions) for s in used]
            auc = boosted_auc(x[0], x[1], groups=twins, iterations=iterations, seed=seed)
            bar.update()
            rows = [obs.response_table(s, [(low, high)])[0] for s in in_group]
            response = _ratio(rows[0].mean, rows[0].mean_error, rows[1].mean, rows[1].mean_error)
            resolution = _ratio(rows[0].core_resolution, rows[0].core_resolution_error, rows[1].core_resolution, rows[1].core_resolution_error)
            points.append(
                ConditionPoint(
                    particle=names.get(pdgid, f"pdgid {pdgid}"), energy_low=low, energy_high=high,
                    n_reference=len(in_group[0]), n_generated=len(in_group[1]), n_used=min(len(u) for u in used),
                    conditions=conditions, auc=auc, response_ratio=response[0], response_ratio_error=response[1],
                    resolution_ratio=resolution[0], resolution_ratio_error=resolution[1],
                )  # fmt: skip
            )
            subsets.append((used[0], used[1], conditions, twins))
        if not points:
            return Diagnosis(points, None, {}, None, notes, min_showers, max_showers, iterations)
        # the most showers; among those with at least 90 % of the most (e.g. all capped, or bins of a
        # log-uniform spectrum), the one nearest the middle of the log energy range
        middle = 0.5 * (math.log(float(reference.energy.min())) + math.log(float(reference.energy.max())))
        most = max(p.n_used for p in points)
        best = min(
            (i for i, p in enumerate(points) if p.n_used >= 0.9 * most),
            key=lambda i: abs(0.5 * math.log(points[i].energy_low * points[i].energy_high) - middle),
        )
        ref, gen, conditions, twins = subsets[best]
        view_aucs: dict[str, float] = {}
        for view in chosen:
            if view == "all cells":
                view_aucs[view] = points[best].auc
            else:
                x = [_with_conditions(view_inputs(s, view, detector), s, conditions) for s in (ref, gen)]
                view_aucs[view] = boosted_auc(x[0], x[1], groups=twins, iterations=iterations, seed=seed)
            bar.update()
    return Diagnosis(
        points=points,
        views_at=points[best],
        views=view_aucs,
        fluctuations=fluctuations(ref, gen, detector=detector),
        notes=notes,
        min_showers=min_showers,
        max_showers=max_showers,
        iterations=iterations,
    )
