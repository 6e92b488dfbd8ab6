"""Drawing validation histograms with mplhep: overlays with a ratio panel, images, response.

Every function takes computed objects (``hist.Hist``, arrays, response rows) and returns a
matplotlib Figure; nothing here computes an observable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hist
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
# mplhep ships no type information: to mypy its functions are Any
import mplhep  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from .diagnosis import Fluctuations  # noqa: E402
from .observables import ResponsePoint  # noqa: E402

__all__ = ("draw_correlations", "draw_mean_image", "draw_overlay", "draw_response", "draw_std_ratio")

_COLOURS = ("black", "tab:red", "tab:blue", "tab:green")


def _style() -> None:
    # from matplotlib's defaults every time, so that earlier rcParams changes do not leak in
    plt.style.use(["default", mplhep.style.ROOT])
    plt.rcParams.update({"font.size": 14, "figure.dpi": 100, "savefig.dpi": 100})


#: The ratio panel's axis reaches at most this far from 1 (a factor); points beyond are arrows at the edge.
_RATIO_LIMITS = (0.0, 3.0)


def _ratio_limits(ratios: Sequence[NDArray[np.float64]], errors: Sequence[NDArray[np.float64]]) -> tuple[float, float]:
    """Vertical limits of the ratio panel from the data: the finite ratios measured to better than
    +-1 (bins of a few showers do not set the scale), padded by 15 %, at least 0.9-1.1 and at most
    :data:`_RATIO_LIMITS`."""
    low, high = 0.9, 1.1
    for r, e in zip(ratios, errors):
        measured = r[np.isfinite(r) & (e < 1.0)]
        low, high = min(low, float(np.min(measured, initial=low))), max(high, float(np.max(measured, initial=high)))
    pad = 0.15 * (high - low)
    return max(low - pad, _RATIO_LIMITS[0]), min(high + pad, _RATIO_LIMITS[1])


def draw_overlay(
    histograms: Sequence[hist.Hist[hist.storage.Weight]], labels: Sequence[str], *, log_y: bool = False
) -> Figure:
    """Unit-normalised overlay of 1D histograms with their statistical errors, and the ratio of
    each to the first one in a lower panel when there are several.

    The ratio panel's limits follow the data (every ratio with its error and the reference's
    statistical band, within 0-3); a ratio beyond them, or a bin that the reference leaves empty
    while another sample fills it, is an arrow at the edge, and the panel says how many there are.

    Arguments:
        histograms: 1D histograms on the same axis, with weight storage (as
            :mod:`fastcalo.validation.observables` fills them); the first is the reference.
        labels: one per histogram, for the legend (e.g. "reference: heldout.h5").
        log_y: a logarithmic vertical axis.

    Example:
        >>> import hist
        >>> h = hist.Hist(hist.axis.Regular(10, 0, 1, label="x"), storage=hist.storage.Weight()).fill([0.2, 0.5])
        >>> fig = draw_overlay([h, h], ["reference", "generated"])
        >>> len(fig.axes), fig.axes[1].get_ylabel()  # the overlay and the ratio panel
        (2, 'generated / reference')
        >>> plt.close(fig)
    """
    _style()
    ratio_panel = len(histograms) > 1
    fig, axes = plt.subplots(
        2 if ratio_panel else 1, 1, figsize=(7, 6.5 if ratio_panel else 5), sharex=True,
        gridspec_kw={"height_ratios": [3, 1.3]} if ratio_panel else None, squeeze=False,
    )  # fmt: skip
    top = axes[0, 0]
    ref = histograms[0]
    edges = ref.axes[0].edges
    widths = ref.axes[0].widths
    norms = []
    for h, label, colour in zip(histograms, labels, _COLOURS):
        total = h.values().sum()
        norm = total * widths if total > 0 else np.ones_like(widths)
        norms.append(norm)
        mplhep.histplot(
            h.values() / norm, edges, yerr=np.sqrt(h.variances()) / norm, ax=top,
            label=f"{label} (N = {int(h.sum(flow=True).value)})", color=colour, histtype="step",
        )  # fmt: skip
    top.set_ylabel("normalised density")
    if log_y:
        top.set_yscale("log")
    top.legend(fontsize=11)
    if ref.axes[0].transform is not None:
        top.set_xscale("log")
    if not ratio_panel:
        top.set_xlabel(ref.axes[0].label)
        fig.tight_layout()
        return fig
    low = axes[1, 0]
    centres = ref.axes[0].centers
    ref_density = ref.values() / norms[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        band = np.sqrt(ref.variances()) / norms[0] / ref_density
        ratios = [(h.values() / norm) / ref_density for h, norm in zip(histograms[1:], norms[1:])]
        errors = [np.sqrt(h.variances()) / norm / ref_density for h, norm in zip(histograms[1:], norms[1:])]
    y_low, y_high = _ratio_limits(ratios, errors)
    shown_band = np.where(np.isfinite(band), band, np.nan)
    low.fill_between(edges, np.append(1 - shown_band, 1 - shown_band[-1]), np.append(1 + shown_band, 1 + shown_band[-1]),
                     step="post", color="grey", alpha=0.3, label=f"{labels[0].split(':')[0]} stat. unc.")  # fmt: skip
    span = y_high - y_low
    outside = 0
    for ratio, error, colour in zip(ratios, errors, _COLOURS[1:]):
        inside = np.isfinite(ratio) & (ratio >= y_low) & (ratio <= y_high)
        mplhep.histplot(np.where(inside, ratio, np.nan), edges, yerr=np.where(inside, error, 0.0), ax=low,
                        color=colour, histtype="errorbar")  # fmt: skip
        above = (ratio > y_high) | np.isposinf(ratio)  # inf: a bin the reference leaves empty
        below = ratio < y_low
        outside += int(above.sum() + below.sum())
        low.plot(centres[above], np.full(above.sum(), y_high - 0.08 * span), "^", color=colour, ms=7)
        low.plot(centres[below], np.full(below.sum(), y_low + 0.08 * span), "v", color=colour, ms=7)
    if outside:  # said in the legend: a point beyond the axis is not silently dropped
        low.plot([], [], "^", color="grey", ms=7, label=f"beyond the axis ({outside} bin{'s' if outside > 1 else ''})")
    low.axhline(1.0, color="black", lw=0.8)
    low.set_ylim(y_low, y_high)
    low.legend(fontsize=10, loc="upper right", ncol=2, framealpha=0.8)
    names = [label.split(":")[0] for label in labels]
    low.set_ylabel(f"{names[1]} / {names[0]}" if len(histograms) == 2 else f"sample / {names[0]}", fontsize=12)
    low.set_xlabel(ref.axes[0].label)
    fig.tight_layout()
    return fig


def draw_mean_image(
    images: Sequence[NDArray[np.floating[Any]]], labels: Sequence[str], edges: NDArray[np.float64]
) -> Figure:
    """Mean images (log colour scale, GeV), one panel each, and for two samples their ratio and
    their projections onto x, on a 2x2 grid (about 1000 px wide: show it at full width).

    The ratio's colour range is symmetric around 1 and follows the data (the 98th percentile of
    |ratio - 1| over the cells with at least 1e-4 of the brightest mean, within 0.05-1); cells
    beyond it take the end colours (the colour bar's arrows).

    Arguments:
        images: (n, n) mean cell energies in GeV, one per dataset; the first is the reference.
        labels: one per image (e.g. "reference: heldout.h5").
        edges: (n + 1,) cell edges in mm, the same in x and y (:attr:`fastcalo.detector.Detector.cell_edges`).
    """
    _style()
    if len(images) == 1:
        fig, axes = plt.subplots(1, 1, figsize=(6.5, 5.5), squeeze=False)
        panels = [axes[0, 0]]
    else:
        fig, axes = plt.subplots(2, 2, figsize=(12, 10.5), squeeze=False)
        panels = [axes[0, 0], axes[0, 1]]
    positive = np.concatenate([im[im > 0].ravel() for im in images])
    vmin, vmax = (positive.min(), positive.max()) if positive.size else (1e-6, 1.0)
    for ax, image, label in zip(panels, images, labels):
        mesh = ax.pcolormesh(edges, edges, image.T, norm=LogNorm(vmin=max(vmin, vmax * 1e-6), vmax=vmax), cmap="viridis")
        ax.set_title(label, fontsize=13)
        ax.set_xlabel("x [mm]")
        ax.set_ylabel("y [mm]")
        ax.set_aspect("equal")
        fig.colorbar(mesh, ax=ax, label="mean cell energy [GeV]")
    if len(images) > 1:
        names = [label.split(":")[0] for label in labels]
        ax = axes[1, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(images[0] > 0, images[1] / images[0], np.nan)
        bright = np.isfinite(ratio) & (images[0] >= 1e-4 * vmax)
        spread = float(np.quantile(np.abs(ratio[bright] - 1), 0.98)) if bright.any() else 0.5
        spread = min(max(spread, 0.05), 1.0)
        mesh = ax.pcolormesh(edges, edges, ratio.T, vmin=1 - spread, vmax=1 + spread, cmap="coolwarm")
        ax.set_title(f"{names[1]} / {names[0]}", fontsize=13)
        ax.set_xlabel("x [mm]")
        ax.set_ylabel("y [mm]")
        ax.set_aspect("equal")
        fig.colorbar(mesh, ax=ax, label=f"ratio {names[1]} / {names[0]}", extend="both")
        ax = axes[1, 1]
        for image, label, colour in zip(images, labels, _COLOURS):
            ax.stairs(image.sum(axis=1), edges, color=colour, label=label, lw=1.5)
        ax.set_yscale("log")
        ax.set_xlabel("x [mm]")
        ax.set_ylabel("mean energy per column [GeV]")
        ax.set_title("projection onto x", fontsize=13)
        ax.legend(fontsize=10)
    fig.tight_layout()
    return fig


def draw_response(tables: Sequence[Sequence[ResponsePoint]], labels: Sequence[str]) -> Figure:
    """Mean response and resolution against incident energy, one series per dataset: the
    resolution as sigma / mu (filled) and as the core resolution, half the central 68 % over the
    median (open, slightly to the right), which leakage tails do not dominate.

    Arguments:
        tables: one row per energy point (:func:`fastcalo.validation.observables.response_table`)
            for each dataset.
        labels: one per dataset.
    """
    _style()
    fig, (top, low) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for rows, label, colour in zip(tables, labels, _COLOURS):
        centre = np.array([np.sqrt(r.energy_low * r.energy_high) for r in rows])
        top.errorbar(centre, [r.mean for r in rows], yerr=[r.mean_error for r in rows], fmt="o", color=colour, label=label)
        low.errorbar(centre, [r.resolution for r in rows], yerr=[r.resolution_error for r in rows], fmt="o", color=colour)
        low.errorbar(centre * 1.04, [r.core_resolution for r in rows], yerr=[r.core_resolution_error for r in rows],
                     fmt="o", mfc="white", color=colour)  # fmt: skip
    low.plot([], [], "o", color="grey", label=r"$\sigma/\mu$")
    low.plot([], [], "o", color="grey", mfc="white", label="core (68 %)")
    low.legend(fontsize=11)
    top.set_ylabel("mean $E_{dep}/E_{inc}$")
    low.set_ylabel(r"resolution of $E_{dep}/E_{inc}$")
    low.set_xlabel("incident energy [GeV]")
    low.set_xscale("log")
    low.set_yscale("log")
    for axis in (low.xaxis, low.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())
    top.legend(fontsize=11)
    fig.tight_layout()
    return fig


def _outline_windows(ax: Any, edges: NDArray[np.float64]) -> None:
    """Outline the core (3x3) and the central 7x7 cells around the impact cell (index n // 2)."""
    n = len(edges) - 1
    size = edges[1] - edges[0]
    for half, style, label in ((1, "-", "core 3x3"), (3, "--", "central 7x7")):
        low = edges[n // 2 - half]
        ax.add_patch(Rectangle((low, low), (2 * half + 1) * size, (2 * half + 1) * size, fill=False, lw=1.2, ls=style, ec="black", label=label))
    ax.legend(loc="upper left", fontsize=9, framealpha=0.8)


def _zoom(ax: Any, masks: Sequence[NDArray[np.bool_]], edges: NDArray[np.float64]) -> None:
    """Limit the axes to the cells that hold a value (at least the central 7x7), square."""
    n = len(edges) - 1
    shown = np.zeros((n, n), dtype=bool)
    for m in masks:
        shown |= m
    rows = np.flatnonzero(shown.any(axis=1) | shown.any(axis=0))
    first, last = min(int(rows.min(initial=n)), n // 2 - 3), max(int(rows.max(initial=0)), n // 2 + 3)
    first, last = max(first - 1, 0), min(last + 1, n - 1)
    ax.set_xlim(edges[first], edges[last + 1])
    ax.set_ylim(edges[first], edges[last + 1])


def draw_std_ratio(fluctuations: Fluctuations, labels: Sequence[str], edges: NDArray[np.float64], *, title: str = "") -> Figure:
    """Map of the per-cell standard deviation of cells / E_inc, generated over reference, on a
    logarithmic colour scale centred on 1 (blue: too small, red: too large); masked cells (the
    reference's mean too small) are grey. The core (3x3, solid) and the central 7x7 cells
    (dashed) around the impact cell are outlined.

    Arguments:
        fluctuations: :func:`fastcalo.validation.diagnosis.fluctuations` of the two samples.
        labels: the reference's and the generated sample's labels (their part before ":" is used).
        edges: (n + 1,) cell edges in mm (:attr:`fastcalo.detector.Detector.cell_edges`).
        title: above the map (e.g. the condition).

    Example:
        >>> from fastcalo import mc
        >>> from fastcalo.validation.diagnosis import fluctuations
        >>> a, b = (mc.simulate(np.full(100, 2.0), seed=s).showers for s in (1, 2))
        >>> fig = draw_std_ratio(fluctuations(a, b), ["reference", "generated"], np.linspace(-120, 120, 25))
        >>> fig.axes[1].get_ylabel().endswith("$ reference")  # the colour bar: sigma generated / sigma reference
        True
        >>> plt.close(fig)
    """
    _style()
    names = [label.split(":")[0] for label in labels]
    ratio = fluctuations.std_ratio
    finite = ratio[np.isfinite(ratio) & (ratio > 0)]
    spread = float(np.quantile(np.abs(np.log(finite)), 0.98)) if finite.size else np.log(1.5)
    limit = float(np.exp(min(max(spread, np.log(1.12)), np.log(4.0))))
    fig, ax = plt.subplots(figsize=(7.5, 6.2))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    mesh = ax.pcolormesh(edges, edges, np.ma.masked_invalid(ratio).T, norm=LogNorm(vmin=1 / limit, vmax=limit), cmap=cmap)
    bar = fig.colorbar(mesh, ax=ax, extend="both")
    bar.set_label(rf"$\sigma$ {names[1]} / $\sigma$ {names[0]}")
    fine = (0.95, 1.05) if limit < 1.3 else ()
    ticks = [t for t in sorted((0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 2.5, 4.0, *fine)) if 1 / limit <= t <= limit]
    bar.set_ticks(ticks)
    bar.set_ticklabels([f"{t:g}" for t in ticks])
    bar.ax.minorticks_off()
    _outline_windows(ax, edges)
    _zoom(ax, [np.isfinite(ratio)], edges)
    ax.set_xlabel("x [mm]")
    ax.set_ylabel("y [mm]")
    ax.set_aspect("equal")
    f = fluctuations
    ax.set_title(
        (f"{title}\n" if title else "")
        + f"cell std. dev. ratio: core {f.core_std_ratio:.2f}, outside 7x7 {f.outside_std_ratio:.2f} (median)",
        fontsize=12,
    )
    fig.tight_layout()
    return fig


def draw_correlations(fluctuations: Fluctuations, labels: Sequence[str], edges: NDArray[np.float64], *, title: str = "") -> Figure:
    """Neighbour-cell correlations of cells / E_inc: for each cell, its correlation over the showers
    with the next cell along x (top row) and along y (bottom row), in the reference, in the
    generated sample, and their difference (generated − reference, a diverging scale centred on 0).
    Masked cells are grey; the core and the central 7x7 cells are outlined.

    Arguments:
        fluctuations: :func:`fastcalo.validation.diagnosis.fluctuations` of the two samples.
        labels: the reference's and the generated sample's labels.
        edges: (n + 1,) cell edges in mm.
        title: above the panels (e.g. the condition).
    """
    _style()
    names = [label.split(":")[0] for label in labels]
    fig, axes = plt.subplots(2, 3, figsize=(16, 10), squeeze=False)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    f = fluctuations
    differences = [pair[1] - pair[0] for pair in (f.correlation_x, f.correlation_y)]
    finite = np.concatenate([d[np.isfinite(d)] for d in differences])
    spread = float(np.quantile(np.abs(finite), 0.98)) if finite.size else 0.1
    spread = min(max(spread, 0.05), 1.0)
    for row, (pair, difference, along) in enumerate(zip((f.correlation_x, f.correlation_y), differences, ("x", "y"))):
        panels = [(pair[0], names[0], TwoSlopeNorm(0.0, -1.0, 1.0), "correlation"),
                  (pair[1], names[1], TwoSlopeNorm(0.0, -1.0, 1.0), "correlation"),
                  (difference, f"{names[1]} − {names[0]}", TwoSlopeNorm(0.0, -spread, spread), "difference")]  # fmt: skip
        for ax, (values, name, norm, what) in zip(axes[row], panels):
            mesh = ax.pcolormesh(edges, edges, np.ma.masked_invalid(values).T, norm=norm, cmap=cmap)
            fig.colorbar(mesh, ax=ax, label=f"{what}, next cell along {along}", extend="both" if what == "difference" else "neither")
            _outline_windows(ax, edges)
            _zoom(ax, [np.isfinite(f.std_ratio)], edges)
            ax.set_title(f"{name}: next cell along {along}", fontsize=12)
            ax.set_xlabel("x [mm]")
            ax.set_ylabel("y [mm]")
            ax.set_aspect("equal")
    reference, generated = f.central_correlation
    fig.suptitle(
        (f"{title}: " if title else "")
        + f"mean neighbour correlation in the central 7x7: {names[0]} {reference:.2f}, {names[1]} {generated:.2f}",
        fontsize=13,
    )
    fig.tight_layout()
    return fig
