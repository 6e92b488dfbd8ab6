"""Shower observables: high-level features per shower, their histograms, and the energy response.

Computing only: everything here returns numpy arrays, numbers and ``hist.Hist`` objects;
drawing is in :mod:`fastcalo.validation.plots`.

Example:
    >>> import numpy as np
    >>> from fastcalo import mc
    >>> from fastcalo.validation import observables
    >>> data = mc.simulate(np.full(20, 10.0), 0.0, "photon", seed=1).showers
    >>> features = observables.features(data)
    >>> 0.9 < float(np.mean(features["response"])) < 1.0
    True
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import hist
import numpy as np
import numpy.typing as npt

from ..datasets import ShowerData
from ..detector import DEFAULT_DETECTOR, Detector

#: The histograms of the validation: weighted storage (sums of weights and of their squares).
WeightHist = hist.Hist[hist.storage.Weight]

__all__ = (
    "FEATURES",
    "ResponsePoint",
    "DISPLACED_MM",
    "cell_spectrum",
    "displacement",
    "energy_groups",
    "feature_histograms",
    "features",
    "in_group",
    "response_points",
    "response_table",
)

#: High-level features: name -> (axis label, binning as (bins, low, high) or None for automatic).
#: The containments' lower edges are where the axis starts when no shower lies below them; it
#: reaches further down to show every shower (:func:`feature_histograms`).
FEATURES: dict[str, tuple[str, tuple[int, float, float] | None]] = {
    "response": ("$E_{dep} / E_{inc}$", None),
    "n_cells": ("cells above threshold", None),
    "centroid_x": ("centroid x [mm]", None),
    "centroid_y": ("centroid y [mm]", None),
    "width_x": ("width x [mm]", None),
    "width_y": ("width y [mm]", None),
    "containment_3x3": ("$E_{3x3} / E_{dep}$", (50, 0.5, 1.0)),
    "containment_5x5": ("$E_{5x5} / E_{dep}$", (50, 0.7, 1.0)),
    "containment_7x7": ("$E_{7x7} / E_{dep}$", (50, 0.8, 1.0)),
    "brightest_fraction": ("$E_{max} / E_{dep}$", (50, 0.0, 1.0)),
    "second_to_first": ("$E_{2nd} / E_{max}$", (50, 0.0, 1.0)),
}


def _window_sum(images: np.ndarray, centre: np.ndarray, half: int) -> np.ndarray:
    """Sum of the (2 half + 1)^2 cells around each image's centre cell (clipped at the edges)."""
    n = images.shape[1]
    idx = np.arange(n)
    rows = np.abs(idx[None, :] - centre[:, 0, None]) <= half
    cols = np.abs(idx[None, :] - centre[:, 1, None]) <= half
    sums: np.ndarray = np.einsum("nij,ni,nj->n", images, rows.astype(images.dtype), cols.astype(images.dtype))
    return sums


def features(data: ShowerData, detector: Detector = DEFAULT_DETECTOR) -> dict[str, np.ndarray]:
    """High-level features of every shower, each of shape (N,); see :data:`FEATURES`.

    Centroid and width are energy-weighted in mm; containments are around the brightest cell.
    Empty showers (no cell above threshold) get NaN for the ratios.
    """
    images = data.images.astype(np.float64)
    n, side, _ = images.shape
    centres = detector.cell_edges[:-1] + 0.5 * detector.cell_size
    total = images.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        px, py = images.sum(axis=2), images.sum(axis=1)
        cx = px @ centres / total
        cy = py @ centres / total
        wx = np.sqrt(np.maximum(px @ centres**2 / total - cx**2, 0.0))
        wy = np.sqrt(np.maximum(py @ centres**2 / total - cy**2, 0.0))
        flat = images.reshape(n, -1)
        order = np.argsort(flat, axis=1)
        first = np.take_along_axis(flat, order[:, -1:], axis=1)[:, 0]
        second = np.take_along_axis(flat, order[:, -2:-1], axis=1)[:, 0]
        peak = np.column_stack(np.unravel_index(order[:, -1], (side, side)))
        result = {
            "response": total / data.energy,
            "n_cells": np.count_nonzero(flat > 0, axis=1).astype(np.float64),
            "centroid_x": cx,
            "centroid_y": cy,
            "width_x": wx,
            "width_y": wy,
            "containment_3x3": _window_sum(images, peak, 1) / total,
            "containment_5x5": _window_sum(images, peak, 2) / total,
            "containment_7x7": _window_sum(images, peak, 3) / total,
            "brightest_fraction": first / total,
            "second_to_first": second / first,
        }
    return result


#: Fractions whose fixed axis ends at 1 but whose lower tail (leakage, a shower split between
#: cells) reaches below the axis' lower edge: the axis is widened down to the data by whole bins
#: of the same width (not below 0), so the plots show the tail instead of cutting it.
_WIDENED_DOWN = ("containment_3x3", "containment_5x5", "containment_7x7")


def _axis(name: str, values: list[np.ndarray]) -> hist.axis.Regular:
    label, binning = FEATURES[name]
    if binning is not None and name in _WIDENED_DOWN:
        bins, low, high = binning
        finite = np.concatenate([v[np.isfinite(v)] for v in values])
        lowest = float(finite.min()) if finite.size else low
        if lowest < low:  # whole bins of the fixed width added below, at least one below the lowest value
            width = (high - low) / bins
            extra = min(int(np.floor((low - lowest) / width)) + 1, int(round(low / width)))  # not below 0
            binning = (bins + extra, low - extra * width, high)
    if binning is None:
        finite = np.concatenate([v[np.isfinite(v)] for v in values])
        if name == "n_cells":  # integer counts: bins of a whole number of cells, at most 100
            top = int(finite.max()) + 1 if finite.size else 1
            width = -(-top // 100)
            bins = -(-top // width)
            return hist.axis.Regular(bins, -0.5, bins * width - 0.5, name=name, label=label)
        low, high = (np.quantile(finite, [0.001, 0.999]) if finite.size else (0.0, 1.0))
        pad = 0.05 * (high - low) if high > low else 0.5
        binning = (50, float(low - pad), float(high + pad))
    return hist.axis.Regular(*binning, name=name, label=label)


#: A shower whose centroid lies more than this (mm) from its impact point along y is *displaced*
#: (:func:`displacement`). Reference MC photons (1-100 GeV log-uniform, |eta| < 1.5, 20 000):
#: 1 shower beyond 6 mm, none beyond 8 mm (99.9 % within 4.4 mm); the fifth default model (its
#: stochastic layer unbounded): 101 beyond 6 mm, 50 beyond 8 mm; the sixth: 2 and 0.
DISPLACED_MM = 6.0


def displacement(data: ShowerData, detector: Detector = DEFAULT_DETECTOR, *, feats: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The distance (mm) along y of each shower's energy-weighted centroid from its impact point, (N,).

    The images and the impact point share one frame (the impact point lies in the central cell,
    ``[0, cell_size)`` in x and y). Along y (the azimuthal direction) the calorimeter is
    symmetric about the impact point, so the reference MC's centroid follows it to within a few mm
    (the core is narrower than a cell and the halo is symmetric); along x (the eta direction) the
    incidence angle moves the centroid by centimetres, so x is not used. A large distance marks a
    shower whose energy sits away from where the particle hit: a broken shower, rare enough that the
    binned features and the classifier average over it. An empty shower gives NaN.

    Arguments:
        data: the showers.
        detector: their geometry.
        feats: their :func:`features`, if already computed (the centroid is taken from them).

    Example:
        >>> from fastcalo import mc
        >>> data = mc.simulate(np.full(200, 10.0), 0.0, "photon", seed=1).showers
        >>> d = displacement(data)
        >>> bool(np.median(d) < 1.5), int((d > DISPLACED_MM).sum())
        (True, 0)
    """
    centroid = (features(data, detector) if feats is None else feats)["centroid_y"]
    return np.asarray(np.abs(centroid - data.impact_y))


def feature_histograms(*datasets: dict[str, np.ndarray]) -> list[dict[str, WeightHist]]:
    """Histogram the features of one or more datasets on common axes (one dict per dataset).

    Non-finite values are left out; on the fixed axes of fractions, a value equal to the upper
    edge (a shower contained entirely in 3x3 cells) is filled into the last bin. The containment
    axes reach below the lowest value of the datasets (whole bins of the fixed width, not below
    0), so that no lower tail is cut.

    Example:
        >>> low = {name: np.array([0.9, 0.95]) for name in FEATURES}
        >>> low["containment_3x3"] = np.array([0.31, 0.95])  # one shower far below 0.5
        >>> h = feature_histograms(low)[0]["containment_3x3"]
        >>> round(float(h.axes[0].edges[0]), 9), h.axes[0].size, float(h.values(flow=True)[0])  # from 0.3, bins of 0.01, no underflow
        (0.3, 70, 0.0)
    """
    out: list[dict[str, WeightHist]] = [{} for _ in datasets]
    for name in FEATURES:
        axis = _axis(name, [d[name] for d in datasets])
        top = axis.edges[-1]
        for target, feats in zip(out, datasets):
            values = feats[name]
            values = values[np.isfinite(values)]
            if FEATURES[name][1] is not None:  # a fraction of exactly 1 (the upper edge) is in the last bin
                values = np.where(values == top, np.nextafter(top, -np.inf), values)
            h = hist.Hist(axis, storage=hist.storage.Weight())
            h.fill(values)
            target[name] = h
    return out


def cell_spectrum(data: ShowerData, *, low: float = 1e-3, high: float = 200.0, bins: int = 60) -> WeightHist:
    """Spectrum of the energies of all non-empty cells, log-spaced bins in GeV."""
    values = data.images[data.images > 0]
    h = hist.Hist(hist.axis.Regular(bins, low, high, transform=hist.axis.transform.log, name="e_cell", label="cell energy [GeV]"),
                  storage=hist.storage.Weight())  # fmt: skip
    h.fill(values)
    return h


def energy_groups(energy: np.ndarray, *, max_points: int = 20, bins: int = 8) -> list[tuple[float, float]]:
    """Ranges of incident energy to report on: each distinct energy if there are at most
    ``max_points`` of them (fixed-energy samples), else ``bins`` log-spaced bins."""
    distinct = np.unique(energy)
    if distinct.size <= max_points:
        return [(float(e), float(e)) for e in distinct]
    edges = np.geomspace(energy.min(), energy.max() * (1 + 1e-9), bins + 1)
    return [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]


def in_group(energy: np.ndarray, low: float, high: float) -> np.ndarray:
    """Mask of the energies in one group of :func:`energy_groups`: equal to the point (to 1e-9
    relative, so that a MeV -> GeV round trip still matches) or in [low, high).

    Example:
        >>> in_group(np.array([2.0, 2.0000000000000004, 3.0]), 2.0, 2.0).tolist()
        [True, True, False]
    """
    if low == high:
        return np.asarray(np.isclose(energy, low, rtol=1e-9, atol=0.0))
    return (energy >= low) & (energy < high)


@dataclass(frozen=True)
class ResponsePoint:
    """Mean and resolution of E_dep / E_inc in one energy range, with statistical uncertainties.

    ``resolution`` is the standard deviation over the mean, which a few showers with large leakage
    can dominate; ``core_resolution`` is half the central 68.3 % interval over the median (the
    Gaussian sigma / mu for a Gaussian), robust to such tails.

    The errors hold for any distribution, not only a Gaussian (the leakage tails of E_dep / E_inc
    have a kurtosis of 50-120 at 10-100 GeV, where the Gaussian error of sigma, sigma /
    sqrt(2 (n - 1)), is 5-8 times too small): the standard deviation's from the fourth central
    moment, Var(s^2) = (m4 - s^4 (n - 3) / (n - 1)) / n, and the core's from the asymptotic
    covariance of the two quantiles, p (1 - p') / (n f(q_p) f(q_p')), the density f at each
    estimated from the quantiles 2 % on either side (0.96 core / sqrt(n), the Gaussian value,
    below 200 showers). On 10 000 held-out MC photons at 50 GeV they give 5.5 % and 1.1 % (a
    bootstrap: 5.6 % and 1.0 %); ``tests/test_validation.py`` checks them against the spread over
    independent samples.
    """

    energy_low: float
    energy_high: float
    n: int
    mean: float
    mean_error: float
    resolution: float  # sigma / mu
    resolution_error: float
    core_resolution: float  # (q84.1 - q15.9) / 2 / median
    core_resolution_error: float


def response_table(data: ShowerData, groups: list[tuple[float, float]] | None = None) -> list[ResponsePoint]:
    """Energy response per energy point or bin (see :func:`energy_groups`)."""
    return response_points(data.energy, data.images.sum(axis=(1, 2), dtype=np.float64) / data.energy, groups)


def response_points(energy: np.ndarray, response: np.ndarray, groups: list[tuple[float, float]] | None = None) -> list[ResponsePoint]:
    """:func:`response_table` of the responses E_dep / E_inc ``response`` (N,) of showers of
    incident energies ``energy`` (N,), GeV: for samples pooled from several files or draws
    without their images. Groups with fewer than two showers are left out.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> energy = np.repeat([10.0, 50.0], 20000)
        >>> response = 0.97 + 0.01 * rng.standard_normal(energy.size)
        >>> [(p.energy_low, round(p.mean, 3), round(p.resolution, 4)) for p in response_points(energy, response)]
        [(10.0, 0.97, 0.0102), (50.0, 0.97, 0.0102)]
    """
    rows = []
    for low, high in groups or energy_groups(energy):
        selected = response[in_group(energy, low, high)]
        n = selected.size
        if n < 2:
            continue
        mean, std = float(selected.mean()), float(selected.std(ddof=1))
        resolution = std / mean if mean > 0 else float("nan")  # every shower empty: no resolution
        q16, median, q84 = np.quantile(selected, [_LOW, 0.5, _HIGH])
        core = float((q84 - q16) / 2 / median) if median > 0 else float("nan")
        rows.append(
            ResponsePoint(
                energy_low=low, energy_high=high, n=n, mean=mean, mean_error=std / np.sqrt(n),
                resolution=resolution, resolution_error=_resolution_error(selected, mean, std),
                core_resolution=core, core_resolution_error=_core_error(selected, core, float(median)),
            )  # fmt: skip
        )
    return rows


_LOW, _HIGH = 0.158655, 0.841345  # the central 68.3 %


def _resolution_error(x: npt.NDArray[np.float64], mean: float, std: float) -> float:
    """Standard error of std / mean for any distribution (the fourth central moment; the mean's
    error in quadrature)."""
    n = x.size
    if not (mean > 0 and std > 0):
        return float("nan")
    m4 = float(np.mean((x - mean) ** 4))
    var_s2 = max(m4 - std**4 * (n - 3) / (n - 1), 0.0) / n
    relative = math.hypot(math.sqrt(var_s2) / (2 * std * std), std / np.sqrt(n) / mean)
    return std / mean * relative


def _core_error(x: npt.NDArray[np.float64], core: float, median: float, step: float = 0.02) -> float:
    """Standard error of the core resolution from the quantiles' asymptotic covariance."""
    n = x.size
    if not (median > 0 and math.isfinite(core)):
        return float("nan")
    if n < 200:
        return 0.96 * core / math.sqrt(n)
    edges = np.quantile(x, [_LOW - step, _LOW + step, _HIGH - step, _HIGH + step])
    if not (edges[1] > edges[0] and edges[3] > edges[2]):  # ties: no density to speak of
        return 0.96 * core / math.sqrt(n)
    f_low, f_high = 2 * step / (edges[1] - edges[0]), 2 * step / (edges[3] - edges[2])
    var = (_LOW * (1 - _LOW) / f_low**2 + _HIGH * (1 - _HIGH) / f_high**2 - 2 * _LOW * (1 - _HIGH) / (f_low * f_high)) / n
    return float(math.sqrt(max(var, 0.0)) / 2 / median)
