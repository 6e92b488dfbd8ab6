"""Distances between two shower samples, one number per observable.

References:
    CaloChallenge evaluation, arXiv:2410.21611 (separation power);
    R. Kansal et al., arXiv:2211.10295 (Wasserstein-1 distances of high-level features).
"""

from __future__ import annotations

import hist
import numpy as np

__all__ = ("separation_power", "wasserstein_1")


def separation_power(a: hist.Hist, b: hist.Hist) -> float:
    """0.5 * sum((p - q)^2 / (p + q)) of two histograms normalised to unit sum (0: identical, 1: disjoint).

    Example:
        >>> import hist
        >>> h = hist.Hist(hist.axis.Regular(2, 0, 2)).fill([0.5])
        >>> separation_power(h, h)
        0.0
    """
    p, q = a.values(flow=False), b.values(flow=False)
    if p.sum() <= 0 or q.sum() <= 0:
        msg = "separation power needs two non-empty histograms"
        raise ValueError(msg)
    p, q = p / p.sum(), q / q.sum()
    s = p + q
    return float(0.5 * np.sum(np.divide((p - q) ** 2, s, out=np.zeros_like(s), where=s > 0)))


def wasserstein_1(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 (earth mover's) distance of two 1D samples: the integral of |F_a - F_b|,
    in the units of the values. Non-finite values are left out.

    Example:
        >>> wasserstein_1(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
        2.0
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = np.sort(a[np.isfinite(a)]), np.sort(b[np.isfinite(b)])
    if a.size == 0 or b.size == 0:
        msg = f"Wasserstein distance needs two non-empty samples, got {a.size} and {b.size} finite values"
        raise ValueError(msg)
    points = np.concatenate([a, b])
    points.sort()
    cdf_a = np.searchsorted(a, points[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, points[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(points)))
