"""The validation plots against committed baseline images (matplotlib's compare_images, tolerance 5).

The plots are drawn from fixed synthetic inputs (no Monte Carlo), so only a change in the drawing
code or in the plotting libraries changes them. After an intended change, regenerate the
baselines and look at them before committing:

    FASTCALO_UPDATE_BASELINES=1 .venv/bin/python -m pytest tests/test_validation_plots.py
"""

from __future__ import annotations

import os
from pathlib import Path

import hist
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.testing.compare import compare_images

from fastcalo.detector import DEFAULT_DETECTOR
from fastcalo.validation import plots
from fastcalo.validation.diagnosis import Fluctuations
from fastcalo.validation.observables import ResponsePoint

BASELINE = Path(__file__).parent / "baseline"
TOLERANCE = 5  # RMS of the pixel difference, 0-255


def overlay_inputs(shift: float = 0.0) -> tuple[list[hist.Hist], list[str]]:
    rng = np.random.default_rng(0)
    axis = hist.axis.Regular(40, -4.0, 4.0, name="x", label="feature [a.u.]")
    a = hist.Hist(axis, storage=hist.storage.Weight()).fill(rng.normal(0.0, 1.0, 5000))
    b = hist.Hist(axis, storage=hist.storage.Weight()).fill(rng.normal(0.1 + shift, 1.05, 5000))
    return [a, b], ["reference", "generated"]


def mean_images() -> list[np.ndarray]:
    centres = DEFAULT_DETECTOR.cell_edges[:-1] + 5.0
    x, y = np.meshgrid(centres, centres, indexing="ij")
    core = np.exp(-np.hypot(x - 5.0, y - 5.0) / 8.0)
    return [10.0 * core / core.sum(), 10.0 * np.exp(-np.hypot(x - 5.0, y - 5.0) / 8.2) / core.sum()]


def response_rows(scale: float) -> list[ResponsePoint]:
    rows = []
    for e in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0):
        resolution = scale * np.hypot(0.03 / np.sqrt(e), 0.005)
        mean = (0.98 - 0.03 / np.sqrt(e)) * (1 + 0.3 * (scale - 1))
        rows.append(ResponsePoint(e, e, 1000, mean, 0.001, resolution, resolution / 45, 0.9 * resolution, resolution / 33))
    return rows


def fluctuation_maps() -> Fluctuations:
    """Synthetic maps: fluctuations 10 % too large in the core, 10 % too small around it."""
    idx = np.arange(24) - 12
    x, y = np.meshgrid(idx, idx, indexing="ij")
    r = np.hypot(x / 1.6, y)
    inside = r < 6.5
    ratio = np.where(inside, 0.9 + 0.2 * np.exp(-(r**2) / 4), np.nan)
    reference = np.where(inside, 0.8 * np.exp(-r / 4) - 0.1, np.nan)
    generated = np.where(inside, reference - 0.05 * np.cos(x), np.nan)
    corr = (reference, generated)
    return Fluctuations(
        std_ratio=ratio, correlation_x=corr, correlation_y=(reference.T.copy(), generated.T.copy()), min_fraction=1e-3,
        core_std_ratio=1.08, outside_std_ratio=0.91, outside_x_std_ratio=0.93, outside_y_std_ratio=0.89, central_correlation=(0.56, 0.52),
    )  # fmt: skip


FIGURES = {
    "overlay": lambda: plots.draw_overlay(*overlay_inputs()),
    "mean_image": lambda: plots.draw_mean_image(mean_images(), ["reference", "generated"], DEFAULT_DETECTOR.cell_edges),
    "response": lambda: plots.draw_response([response_rows(1.0), response_rows(1.1)], ["reference", "generated"]),
    "std_ratio": lambda: plots.draw_std_ratio(fluctuation_maps(), ["reference", "generated"], DEFAULT_DETECTOR.cell_edges, title="photon, 10 GeV"),
    "correlations": lambda: plots.draw_correlations(fluctuation_maps(), ["reference", "generated"], DEFAULT_DETECTOR.cell_edges, title="photon, 10 GeV"),
}


def save(fig: object, path: Path) -> Path:
    fig.savefig(path)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_plot_matches_baseline(name: str, tmp_path: Path) -> None:
    expected = BASELINE / f"{name}.png"
    if os.environ.get("FASTCALO_UPDATE_BASELINES"):
        save(FIGURES[name](), expected)
        pytest.skip(f"regenerated {expected}")
    actual = save(FIGURES[name](), tmp_path / f"{name}.png")
    assert compare_images(str(expected), str(actual), tol=TOLERANCE) is None


def test_the_comparison_sees_a_change(tmp_path: Path) -> None:
    # a shift of 0.3 sigma of the generated histogram must not pass as the baseline
    actual = save(plots.draw_overlay(*overlay_inputs(shift=0.3)), tmp_path / "overlay.png")
    result = compare_images(str(BASELINE / "overlay.png"), str(actual), tol=TOLERANCE)
    assert result is not None and "Image files did not match" in result
