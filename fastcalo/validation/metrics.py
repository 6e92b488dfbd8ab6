"""Distances between two shower samples, one number per observable.

References:
    CaloChallenge evaluation, arXiv:2410.21611 (separation power);
    R. Kansal et al., arXiv:2211.10295 (Wasserstein-1 distances of high-level features, FPD, KPD);
    T. Kynkäänniemi et al., arXiv:1904.06991 and M. F. Naeem et al., arXiv:2002.09797 (diversity).
"""

from __future__ import annotations

from typing import Any

import hist
import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ("diversity", "fpd", "frechet_distance", "kpd", "separation_power", "wasserstein_1")


def separation_power(a: hist.Hist[Any], b: hist.Hist[Any], *, flow: bool = False) -> float:
    """0.5 * sum((p - q)^2 / (p + q)) of two histograms normalised to unit sum (0: identical, 1: disjoint).

    With ``flow``, the underflow and overflow bins count as two more bins, so that a sample whose
    values fall outside the axis is not judged on its in-range part alone.

    Arguments:
        a, b: histograms with the same axes, of any storage (``Any``: only their values are read).
        flow: count the underflow and overflow bins.

    Raises:
        ValueError if either histogram is empty.

    Example:
        >>> import hist
        >>> h = hist.Hist(hist.axis.Regular(2, 0, 2)).fill([0.5])
        >>> separation_power(h, h)
        0.0
        >>> separation_power(h, hist.Hist(hist.axis.Regular(2, 0, 2)).fill([5.0]), flow=True)
        1.0
    """
    p, q = a.values(flow=flow), b.values(flow=flow)
    if p.sum() <= 0 or q.sum() <= 0:
        msg = "separation power needs two non-empty histograms"
        raise ValueError(msg)
    p, q = p / p.sum(), q / q.sum()
    s = p + q
    return float(0.5 * np.sum(np.divide((p - q) ** 2, s, out=np.zeros_like(s), where=s > 0)))


def wasserstein_1(a: ArrayLike, b: ArrayLike) -> float:
    """Wasserstein-1 (earth mover's) distance of two 1D samples: the integral of |F_a - F_b|,
    in the units of the values. Non-finite values are left out.

    Raises:
        ValueError if either sample has no finite value.

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


def _standardise(x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Scale both samples by the reference's mean and spread, so that features in mm and in
    fractions weigh alike; non-finite entries become 0 (the reference mean)."""
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    std[~(std > 0)] = 1.0
    return np.nan_to_num((x - mean) / std), np.nan_to_num((y - mean) / std)


def frechet_distance(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """|mu_x - mu_y|^2 + tr(C_x + C_y - 2 (C_x C_y)^(1/2)) of two (N, d) samples.

    The trace of the matrix root is computed as the sum of the square roots of the eigenvalues of
    C_x^(1/2) C_y C_x^(1/2) (symmetric, positive semi-definite), which also holds for singular
    covariances (a constant feature).

    Example:
        >>> x = np.array([[0.0, 0.0], [2.0, 2.0]])
        >>> round(frechet_distance(x, x), 12), round(frechet_distance(x, x + 1.0), 12)
        (0.0, 2.0)
    """
    cx, cy = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    w, v = np.linalg.eigh(cx)
    root_x = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_x @ cy @ root_x)
    diff = x.mean(axis=0) - y.mean(axis=0)
    return float(diff @ diff + np.trace(cx) + np.trace(cy) - 2.0 * np.sum(np.sqrt(np.clip(middle, 0.0, None))))


#: The fewest showers per sample :func:`fpd` extrapolates from (its subsamples go down to a quarter).
FPD_MIN_SHOWERS = 100


def fpd(reference: ArrayLike, generated: ArrayLike, *, n_points: int = 8, repeats: int = 3, seed: int = 0) -> tuple[float, float]:
    """Fréchet physics distance (arXiv:2211.10295): the Fréchet distance of the standardised
    features, extrapolated to infinite sample size by a straight-line fit in 1/N over subsamples
    of N = n_max/4 ... n_max.

    Arguments:
        reference, generated: feature matrices (N, d); the reference's mean and spread
            standardise both.
        n_points: subsample sizes in the fit.
        repeats: subsamples drawn at each size (their distances are averaged).
        seed: seed of the subsampling.

    Returns:
        (FPD, its standard error from the fit); 0 is ideal.

    Raises:
        ValueError if a sample has fewer than 100 rows.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> value, error = fpd(rng.normal(size=(2000, 3)), rng.normal(size=(2000, 3)))
        >>> abs(value) < 0.01
        True

    References:
        R. Kansal et al., arXiv:2211.10295.
    """
    x, y = _standardise(np.asarray(reference, float), np.asarray(generated, float))
    n_max = min(len(x), len(y))
    if n_max < FPD_MIN_SHOWERS:
        msg = f"FPD needs at least {FPD_MIN_SHOWERS} showers per sample, got {n_max}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    sizes = np.linspace(n_max // 4, n_max, n_points).astype(int)
    values = []
    for n in sizes:
        values.append(np.mean([frechet_distance(x[rng.choice(len(x), n, replace=False)],
                                                y[rng.choice(len(y), n, replace=False)]) for _ in range(repeats)]))  # fmt: skip
    design = np.column_stack([np.ones(n_points), 1.0 / sizes])
    coef, residuals, *_ = np.linalg.lstsq(design, np.array(values), rcond=None)
    dof = max(n_points - 2, 1)
    sigma2 = float(residuals[0]) / dof if residuals.size else 0.0
    error = float(np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[0, 0]))
    return float(coef[0]), error


def kpd(
    reference: ArrayLike, generated: ArrayLike, *, batch_size: int = 1000, n_batches: int = 10, seed: int = 0, degree: int = 3
) -> tuple[float, float]:
    """Kernel physics distance (arXiv:2211.10295): the unbiased squared MMD of the standardised
    features with the polynomial kernel k(a, b) = (a.b / d + 1)^degree, over ``n_batches``
    batches.

    ``degree`` 3 is the kernel of the kernel inception distance; jetnet's ``kpd`` uses 4 (with
    batches drawn with replacement), and on the same batch ``degree=4`` reproduces its value.

    Arguments:
        reference, generated: feature matrices (N, d); the reference's mean and spread
            standardise both.
        batch_size: rows per batch, drawn without replacement; at most half the smaller sample,
            so that batches differ and their spread is an error (batches of a whole sample are
            the same rows: a spread of 0).
        n_batches: batches; their spread gives the error.
        seed: seed of the batches.
        degree: power of the polynomial kernel.

    Returns:
        (median, half the interquartile range) over the batches; 0 is ideal, values can be < 0.

    Raises:
        ValueError if a sample has fewer than 20 rows.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> value, error = kpd(rng.normal(size=(2000, 3)), rng.normal(size=(2000, 3)))
        >>> abs(value) < 0.01
        True

    References:
        R. Kansal et al., arXiv:2211.10295; M. Bińkowski et al., arXiv:1801.01401 (kernel
        inception distance).
    """
    x, y = _standardise(np.asarray(reference, float), np.asarray(generated, float))
    n = min(batch_size, len(x) // 2, len(y) // 2)
    if n < 10:
        msg = f"KPD needs at least 20 showers per sample, got {min(len(x), len(y))}"
        raise ValueError(msg)
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_batches):
        a = x[rng.choice(len(x), n, replace=False)]
        b = y[rng.choice(len(y), n, replace=False)]
        kxx, kyy, kxy = (a @ a.T / d + 1) ** degree, (b @ b.T / d + 1) ** degree, (a @ b.T / d + 1) ** degree
        off = n * (n - 1)
        values.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float(median), float((q3 - q1) / 2)


def _knn_radii(x: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """Distance from every row of ``x`` to its k-th nearest neighbour among the other rows."""
    from sklearn.neighbors import NearestNeighbors  # untyped: its results are Any to mypy

    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    radii: NDArray[np.float64] = distances[:, k]  # column 0 is the point itself
    return radii


def _within_radii(
    points: NDArray[np.float64], centres: NDArray[np.float64], radii: NDArray[np.float64], *, chunk: int = 1000
) -> NDArray[np.int64]:
    """For each row of ``points``, how many ``centres`` c have |point - c| <= radius(c); memory O(chunk x len(centres))."""
    counts = np.empty(len(points), dtype=np.int64)
    centre_norms = np.einsum("ij,ij->i", centres, centres)
    radii2 = radii**2
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        d2 = np.einsum("ij,ij->i", block, block)[:, None] + centre_norms[None, :] - 2.0 * block @ centres.T
        counts[start : start + chunk] = np.count_nonzero(d2 <= radii2[None, :] + 1e-9, axis=1)
    return counts


def diversity(
    reference: ArrayLike, generated: ArrayLike, *, k: int = 5, max_samples: int | None = 10_000, seed: int = 0
) -> dict[str, float]:
    """Precision, recall, density and coverage of ``generated`` with respect to ``reference``.

    Both (N, d) feature matrices are standardised by the reference's mean and spread. Around every
    reference point is a ball reaching its k-th nearest reference neighbour (its radius r_i); likewise
    for the generated points (radius s_j). Then, with N reference and M generated points,

    - precision = (1/M) sum_j [Y_j inside some reference ball] (generated showers look real);
    - recall    = (1/N) sum_i [X_i inside some generated ball] (real showers are produced);
    - density   = (1/(k M)) sum_j #(reference balls containing Y_j) (about 1 for identical samples);
    - coverage  = (1/N) sum_i [the nearest generated point to X_i is inside X_i's ball]
      (about 1 - 2^-k for identical samples of equal size; a collapsed generator covers few balls).

    Each sample is cut to ``max_samples`` random rows (fixed ``seed``) to bound the cost, which is
    O(N M d).

    Arguments:
        reference, generated: feature matrices (N, d) and (M, d); non-finite entries count as the
            reference mean.
        k: the neighbour that sets the ball radii (5 in both papers).
        max_samples: at most this many rows of each sample (None: all).
        seed: seed of the subsampling.

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` as floats.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(2000, 3))
        >>> same = diversity(real, rng.normal(size=(2000, 3)))
        >>> collapsed = diversity(real, np.repeat(real[:4], 500, axis=0))
        >>> same["coverage"] > 0.9 and collapsed["coverage"] < 0.05
        True

    References:
        T. Kynkäänniemi et al., arXiv:1904.06991 (precision and recall);
        M. F. Naeem et al., arXiv:2002.09797 (density and coverage).
    """
    x, y = np.asarray(reference, float), np.asarray(generated, float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        msg = f"diversity needs two (N, d) matrices with the same d, got shapes {x.shape} and {y.shape}"
        raise ValueError(msg)
    x, y = _standardise(x, y)
    if k < 1:
        msg = f"k must be >= 1, got {k}"
        raise ValueError(msg)
    if min(len(x), len(y)) <= k:
        msg = f"diversity with k = {k} needs more than {k} showers per sample, got {len(x)} and {len(y)}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    if max_samples is not None and len(x) > max_samples:
        x = x[np.sort(rng.choice(len(x), max_samples, replace=False))]
    if max_samples is not None and len(y) > max_samples:
        y = y[np.sort(rng.choice(len(y), max_samples, replace=False))]
    from sklearn.neighbors import NearestNeighbors

    real_radii, fake_radii = _knn_radii(x, k), _knn_radii(y, k)
    real_balls_per_fake = _within_radii(y, x, real_radii)
    fake_balls_per_real = _within_radii(x, y, fake_radii)
    nearest_fake, _ = NearestNeighbors(n_neighbors=1).fit(y).kneighbors(x)
    return {
        "precision": float(np.mean(real_balls_per_fake > 0)),
        "recall": float(np.mean(fake_balls_per_real > 0)),
        "density": float(real_balls_per_fake.sum() / (k * len(y))),
        "coverage": float(np.mean(nearest_fake[:, 0] <= real_radii)),
    }
