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
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from .observables import ResponsePoint  # noqa: E402

__all__ = ("draw_mean_image", "draw_overlay", "draw_response")

_COLOURS = ("black", "tab:red", "tab:blue", "tab:green")


def _style() -> None:
    # from matplotlib's defaults every time, so that earlier rcParams changes do not leak in
    plt.style.use(["default", mplhep.style.ROOT])
    plt.rcParams.update({"font.size": 14, "figure.dpi": 100, "savefig.dpi": 100})


def draw_overlay(
    histograms: Sequence[hist.Hist[hist.storage.Weight]], labels: Sequence[str], *, log_y: bool = False
) -> Figure:
    """Unit-normalised overlay of 1D histograms with their statistical errors, and the ratio to
    the first one (with its error band) in a lower panel when there are several.

    Arguments:
        histograms: 1D histograms on the same axis, with weight storage (as
            :mod:`fastcalo.validation.observables` fills them); the first is the reference.
        labels: one per histogram, for the legend.
        log_y: a logarithmic vertical axis.

    Example:
        >>> import hist
        >>> h = hist.Hist(hist.axis.Regular(10, 0, 1, label="x"), storage=hist.storage.Weight()).fill([0.2, 0.5])
        >>> fig = draw_overlay([h, h], ["a", "b"])
        >>> len(fig.axes)  # the overlay and the ratio panel
        2
        >>> plt.close(fig)
    """
    _style()
    ratio_panel = len(histograms) > 1
    fig, axes = plt.subplots(
        2 if ratio_panel else 1, 1, figsize=(7, 6.5 if ratio_panel else 5), sharex=True,
        gridspec_kw={"height_ratios": [3, 1]} if ratio_panel else None, squeeze=False,
    )  # fmt: skip
    top = axes[0, 0]
    ref = histograms[0]
    widths = ref.axes[0].widths
    norms = []
    for h, label, colour in zip(histograms, labels, _COLOURS):
        total = h.values().sum()
        norm = total * widths if total > 0 else np.ones_like(widths)
        norms.append(norm)
        mplhep.histplot(
            h.values() / norm, ref.axes[0].edges, yerr=np.sqrt(h.variances()) / norm, ax=top,
            label=f"{label} (N = {int(h.sum(flow=True).value)})", color=colour, histtype="step",
        )  # fmt: skip
    top.set_ylabel("normalised density")
    if log_y:
        top.set_yscale("log")
    top.legend(fontsize=11)
    if ref.axes[0].transform is not None:
        top.set_xscale("log")
    if ratio_panel:
        low = axes[1, 0]
        ref_density = ref.values() / norms[0]
        ref_error = np.sqrt(ref.variances()) / norms[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            band = ref_error / ref_density
            low.fill_between(ref.axes[0].edges, np.append(1 - band, 1 - band[-1]), np.append(1 + band, 1 + band[-1]),
                             step="post", color="grey", alpha=0.3, label="ref. stat.")  # fmt: skip
            for h, norm, colour in zip(histograms[1:], norms[1:], _COLOURS[1:]):
                ratio = (h.values() / norm) / ref_density
                mplhep.histplot(ratio, ref.axes[0].edges, yerr=np.sqrt(h.variances()) / norm / ref_density,
                                ax=low, color=colour, histtype="errorbar")  # fmt: skip
        low.axhline(1.0, color="black", lw=0.8)
        low.set_ylim(0.5, 1.5)
        low.set_ylabel("ratio")
        low.set_xlabel(ref.axes[0].label)
    else:
        top.set_xlabel(ref.axes[0].label)
    fig.tight_layout()
    return fig


def draw_mean_image(
    images: Sequence[NDArray[np.floating[Any]]], labels: Sequence[str], edges: NDArray[np.float64]
) -> Figure:
    """Mean images (log colour scale, GeV) side by side, and their ratio to the first.

    Arguments:
        images: (n, n) mean cell energies in GeV, one per dataset; the first is the reference.
        labels: one per image.
        edges: (n + 1,) cell edges in mm, the same in x and y (:attr:`fastcalo.detector.Detector.cell_edges`).
    """
    _style()
    n = len(images) + (1 if len(images) > 1 else 0)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 5), squeeze=False)
    positive = np.concatenate([im[im > 0].ravel() for im in images])
    vmin, vmax = (positive.min(), positive.max()) if positive.size else (1e-6, 1.0)
    for ax, image, label in zip(axes[0], images, labels):
        mesh = ax.pcolormesh(edges, edges, image.T, norm=LogNorm(vmin=max(vmin, vmax * 1e-6), vmax=vmax), cmap="viridis")
        ax.set_title(label, fontsize=13)
        ax.set_xlabel("x [mm]")
        ax.set_ylabel("y [mm]")
        fig.colorbar(mesh, ax=ax, label="mean cell energy [GeV]")
    if len(images) > 1:
        ax = axes[0, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(images[0] > 0, images[1] / images[0], np.nan)
        mesh = ax.pcolormesh(edges, edges, ratio.T, vmin=0.5, vmax=1.5, cmap="coolwarm")
        ax.set_title(f"{labels[1]} / {labels[0]}", fontsize=13)
        ax.set_xlabel("x [mm]")
        fig.colorbar(mesh, ax=ax, label="ratio")
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
