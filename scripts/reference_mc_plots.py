"""Draw the plots of docs/reference-mc.md: the reference Monte Carlo against PDG shower phenomenology.

Every sample is simulated with the public API (``fastcalo.mc.simulate``) from a fixed seed, so the
plots and ``numbers.json`` are reproducible (all but the timings). At ``--n-scale 1`` the whole run
takes 2.5 to 5 minutes on 2 CPU cores, depending on what else runs there.

Usage:
    python scripts/reference_mc_plots.py [--n-scale 1] [--seed 1] [-o docs/img/reference-mc]

Outputs (in the output directory):
    longitudinal_profiles.png, lateral_containment.png, mean_images.png, energy_resolution.png,
    cut_independence_10GeV.png, cut_independence_50GeV.png and numbers.json (every number printed).

References:
    PDG, Review of Particle Physics, "Passage of particles through matter", section 34.5
    (eqs. 34.35-34.36 for the longitudinal profile, the Moliere radius for containment).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mplhep  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, TwoSlopeNorm  # noqa: E402

from fastcalo import DEFAULT_DETECTOR, mc  # noqa: E402

log = logging.getLogger("reference_mc_plots")

MATERIAL = DEFAULT_DETECTOR.material
X0 = MATERIAL.radiation_length  # mm
EC = MATERIAL.critical_energy  # GeV
RM = MATERIAL.moliere_radius  # mm
EDGES = DEFAULT_DETECTOR.cell_edges  # mm
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])  # mm
NOMINAL = mc.MCConfig()
HALVED = NOMINAL.halved()

#: PDG eq. 34.36: t_max = ln(E/Ec) + C_j, C_j = -0.5 for electrons, +0.5 for photons.
C_J = {"electron": -0.5, "photon": +0.5}
#: PDG: b ~ 0.5 for the gamma-function profile (eq. 34.35), a = b t_max + 1.
B_PDG = 0.5
#: PDG 34.5: ~90 % of the energy within 1 R_M; the common rule of thumb ~95 % within 2 R_M;
#: ~99 % within 3.5 R_M.
CONTAINMENT_EXPECTED = {1.0: 0.90, 2.0: 0.95, 3.5: 0.99}

PROFILE_ENERGIES = (1.0, 10.0, 100.0)
RESOLUTION_ENERGIES = (2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
CUT_ENERGIES = (10.0, 50.0)
COLOURS = ("#3f90da", "#e42536", "#964a8b", "#f89c20", "#5790fc", "#7a21dd")
SYMBOL = {"electron": "e$^-$", "photon": r"$\gamma$"}

#: Showers per sample at --n-scale 1 (the cost is about 0.35 ms per GeV per shower on 2 cores,
#: twice that with halved cuts).
N_PROFILE = {1.0: 4000, 10.0: 1000, 100.0: 250}
N_IMAGE_ETA1 = {1.0: 2000, 10.0: 500, 100.0: 120}
N_RESOLUTION = {2.0: 4000, 5.0: 3000, 10.0: 2000, 20.0: 1500, 50.0: 800, 100.0: 500}
N_CUTS = {10.0: 2000, 50.0: 500}
#: Step limits varied at 10 GeV (photons), against the nominal-cut sample of the same size.
STEP_VARIANTS = {"max_loss_0.05": {"max_loss": 0.05}, "max_step_0.1": {"max_step": 0.1}}


@dataclass
class Runner:
    """Simulates samples with independent, reproducible seeds and keeps their timings."""

    seed: int
    n_scale: float
    timing: dict[str, float]

    def n(self, base: int) -> int:
        return max(20, int(round(base * self.n_scale)))

    def __call__(
        self, key: str, energy: float, base_n: int, particle: str, *, eta: float = 0.0,
        config: mc.MCConfig = NOMINAL,
    ) -> mc.MCResult:  # fmt: skip
        n = self.n(base_n)
        seed = (self.seed << 32) ^ zlib.crc32(key.encode())  # one independent stream family per sample
        start = time.perf_counter()
        result = mc.simulate(
            np.full(n, energy), eta, particle, seed=seed, profiles=True, response=True, config=config
        )
        elapsed = time.perf_counter() - start
        self.timing[key] = 1e3 * elapsed / n
        log.info("%-28s %5d showers in %6.1f s (%.2f ms per shower)", key, n, elapsed, 1e3 * elapsed / n)
        return result


def _r(value: float, digits: int = 5) -> float:
    """Round to ``digits`` significant digits for numbers.json."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def _label(ax: Any, text: str = "") -> None:
    mplhep.label.exp_label(exp="fastcalo", text="reference MC", data=True, rlabel=text, ax=ax, loc=0, fontsize=20)


def gamma_profile(t: np.ndarray, a: float, b: float) -> np.ndarray:
    """(1/E) dE/dt = b (bt)^(a-1) e^(-bt) / Gamma(a), per X0 (PDG eq. 34.35)."""
    return b * (b * t) ** (a - 1.0) * np.exp(-b * t) / math.gamma(a)


def t_max_with_error(profiles: np.ndarray, bin_x0: float, groups: int = 10) -> tuple[float, float, float, float]:
    """(a, b, t_max) of the gamma-function fit to the mean profile, and the statistical error of
    t_max from ``groups`` sub-samples."""
    a, b, t_max = mc.longitudinal_fit(profiles.mean(axis=0), bin_x0)
    parts = [mc.longitudinal_fit(p.mean(axis=0), bin_x0)[2] for p in np.array_split(profiles, groups)]
    return a, b, t_max, float(np.std(parts, ddof=1) / math.sqrt(groups))


def peak_with_error(profiles: np.ndarray, bin_x0: float, groups: int = 10) -> tuple[float, float]:
    """The maximum of the mean profile itself (``mc.shower_maximum``) and its error from sub-samples."""
    peak = mc.shower_maximum(profiles.mean(axis=0), bin_x0)
    parts = []
    for part in np.array_split(profiles, groups):
        try:
            parts.append(mc.shower_maximum(part.mean(axis=0), bin_x0))
        except ValueError:  # a sub-sample too noisy to show a maximum
            continue
    error = float(np.std(parts, ddof=1) / math.sqrt(len(parts))) if len(parts) > 2 else float("nan")
    return peak, error


# --------------------------------------------------------------------------------------------
# a. longitudinal profiles
# --------------------------------------------------------------------------------------------


def plot_longitudinal(samples: dict[tuple[str, float], mc.MCResult], out: Path) -> dict[str, Any]:
    from scipy.stats import gamma as gamma_dist  # the [docs] extra

    bin_x0 = NOMINAL.longitudinal_bin / X0
    numbers: dict[str, Any] = {}
    fig, axes = plt.subplots(1, 2, figsize=(22, 11), sharey=True)
    for ax, particle in zip(axes, ("electron", "photon")):
        rows = []
        numbers[particle] = {}
        for energy, colour in zip(PROFILE_ENERGIES, COLOURS):
            result = samples[(particle, energy)]
            profiles = result.longitudinal
            mean = profiles.mean(axis=0)
            t_edges = np.arange(mean.size + 1) * bin_x0
            ax.stairs(mean / (energy * bin_x0), t_edges, color=colour, lw=2.5, label=f"MC, {energy:g} GeV")
            a, b, t_max, t_err = t_max_with_error(profiles, bin_x0)
            peak, peak_err = peak_with_error(profiles, bin_x0)
            expected = math.log(energy / EC) + C_J[particle]
            t = np.linspace(1e-3, 25.0, 500)
            ax.plot(t, gamma_profile(t, B_PDG * expected + 1.0, B_PDG), ls="--", lw=2, color=colour)
            ax.plot(t, gamma_profile(t, a, b) * mean.sum() / energy, ls=":", lw=2, color="k", alpha=0.6)
            rows.append(f"{energy:5.0f} {t_max:6.2f}$\\pm${t_err:4.2f} {peak:6.2f}$\\pm${peak_err:4.2f} {expected:6.2f}")
            contained = np.cumsum(mean) / energy  # fraction of E_inc deposited before depth t
            t_95 = float(np.interp(0.95, contained, t_edges[1:])) if contained[-1] > 0.95 else float("nan")
            numbers[particle][f"{energy:g}GeV"] = {
                "n": int(profiles.shape[0]),
                "t_max_fit": _r(t_max, 4),
                "t_max_stat_error": _r(t_err, 2),
                "t_max_pdg": _r(expected, 4),
                "relative_difference": _r(t_max / expected - 1.0, 3),
                "t_max_peak": _r(peak, 4),
                "t_max_peak_stat_error": _r(peak_err, 2),
                "relative_difference_peak": _r(peak / expected - 1.0, 3),
                "a_fit": _r(a, 4),
                "b_fit": _r(b, 4),
                "deposit_fraction": _r(mean.sum() / energy, 4),
                "t_95_x0": _r(t_95, 4),
                # 95 % depth of the PDG gamma-function profile, and PDG's t_max + 0.08 Z + 9.6 with Z_eff
                "t_95_pdg_gamma_x0": _r(gamma_dist.ppf(0.95, B_PDG * expected + 1.0, scale=1.0 / B_PDG), 4),
                "t_95_pdg_z_formula_x0": _r(expected + 0.08 * MATERIAL.effective_z + 9.6, 4),
            }
        log_e = np.log(PROFILE_ENERGIES)
        fitted = [numbers[particle][f"{e:g}GeV"]["t_max_fit"] for e in PROFILE_ENERGIES]
        numbers[particle]["t_max_slope_per_ln_E"] = _r(np.polyfit(log_e, fitted, 1)[0], 3)  # PDG: 1
        peaks = [numbers[particle][f"{e:g}GeV"]["t_max_peak"] for e in PROFILE_ENERGIES]
        numbers[particle]["t_max_peak_slope_per_ln_E"] = _r(np.polyfit(log_e, peaks, 1)[0], 3)
        ax.plot([], [], ls="--", color="grey", lw=2, label=r"PDG, $b=0.5$, $t_{max}=\ln(E/E_c)+C_j$")
        ax.plot([], [], ls=":", color="k", lw=2, alpha=0.6, label="gamma-function fit to MC")
        ax.set_xlim(0, 25)
        ax.set_xlabel(r"depth along the shower axis $t$ [$X_0$]")
        ax.legend(loc="upper right", fontsize=17)
        header = r"E [GeV] $t_{max}$: $\Gamma$ fit    peak       PDG"
        ax.text(
            0.97, 0.64, "\n".join([header, *rows]), transform=ax.transAxes, ha="right", va="top",
            fontsize=17, family="monospace", bbox={"fc": "white", "ec": "0.6"},
        )  # fmt: skip
        ax.set_title(f"{SYMBOL[particle]}, $\\eta=0$, $C_j={C_J[particle]:+.1f}$", fontsize=22, loc="right", y=1.0)
        _label(ax)
    axes[0].set_ylabel(r"$(1/E)\,dE/dt$ [$X_0^{-1}$]")
    axes[0].set_ylim(0, 0.21)  # room for the legend and the table above the curves
    fig.tight_layout()
    fig.savefig(out / "longitudinal_profiles.png", dpi=80)
    plt.close(fig)
    return numbers


# --------------------------------------------------------------------------------------------
# b. lateral containment
# --------------------------------------------------------------------------------------------


def plot_containment(samples: dict[str, mc.MCResult], out: Path) -> dict[str, Any]:
    edges = np.arange(NOMINAL.n_radial + 1) * NOMINAL.radial_bin
    numbers: dict[str, Any] = {}
    fig, (ax, ax_out) = plt.subplots(1, 2, figsize=(22, 10))
    for (name, result), colour in zip(samples.items(), COLOURS):
        particle, energy = name.split("_")
        label = f"{SYMBOL[particle]}, {energy.replace('GeV', ' GeV')}"
        deposit = result.true_images.sum(axis=(1, 2))  # all deposits, also beyond the last radial bin
        cumulative = np.concatenate([[0.0], np.cumsum(result.radial, axis=1).mean(axis=0)]) / deposit.mean()
        per_shower = np.concatenate([np.zeros((deposit.size, 1)), np.cumsum(result.radial, axis=1)], axis=1)
        per_shower /= deposit[:, None]
        ax.plot(edges / RM, cumulative, color=colour, lw=2.5, label=label)
        ax_out.plot(edges / RM, np.clip(1.0 - cumulative, 1e-5, None), color=colour, lw=2.5, label=label)
        numbers[name] = {"n": int(deposit.size)}
        for radius in CONTAINMENT_EXPECTED:
            fraction = np.interp(radius * RM, edges, cumulative)
            spread = np.array([np.interp(radius * RM, edges, row) for row in per_shower])
            numbers[name][f"within_{radius:g}_RM"] = _r(fraction, 4)
            numbers[name][f"within_{radius:g}_RM_stat_error"] = _r(spread.std() / math.sqrt(spread.size), 2)
        numbers[name]["radius_90pc_RM"] = _r(np.interp(0.90, cumulative, edges) / RM, 4)
        numbers[name]["radius_95pc_RM"] = _r(np.interp(0.95, cumulative, edges) / RM, 4)
    for radius, fraction in CONTAINMENT_EXPECTED.items():
        for axis, value in ((ax, fraction), (ax_out, 1.0 - fraction)):
            axis.plot([radius], [value], marker="*", ms=26, color="k", ls="none", zorder=5)
            axis.axvline(radius, color="0.6", ls=":", lw=1.5)
        ax.annotate(f"{100 * fraction:.0f} % at {radius:g} $R_M$", (radius, fraction), (radius + 0.15, fraction - 0.07),
                    fontsize=17)  # fmt: skip
    ax.plot([], [], marker="*", ms=20, color="k", ls="none", label="PDG / rule of thumb")
    ax.set_xlim(0, 5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(r"distance to the shower axis $r$ [$R_M$]")
    ax.set_ylabel("fraction of the deposit within $r$")
    ax.legend(loc="lower right", fontsize=18)
    ax_out.set_xlim(0, 5)
    ax_out.set_yscale("log")
    ax_out.set_ylim(1e-3, 1.5)
    ax_out.set_xlabel(r"distance to the shower axis $r$ [$R_M$]")
    ax_out.set_ylabel("fraction of the deposit beyond $r$")
    ax_out.legend(loc="upper right", fontsize=18)
    for axis in (ax, ax_out):
        _label(axis, rf"$R_M$ = {RM:.2f} mm, $\eta=0$")
    fig.tight_layout()
    fig.savefig(out / "lateral_containment.png", dpi=80)
    plt.close(fig)
    return numbers


# --------------------------------------------------------------------------------------------
# c. mean images
# --------------------------------------------------------------------------------------------


def _widths(image: np.ndarray) -> tuple[float, float]:
    """RMS width (mm) of an image's projections on x (eta direction) and y (phi direction)."""
    px, py = image.sum(axis=1), image.sum(axis=0)
    mx, my = (px * CENTRES).sum() / px.sum(), (py * CENTRES).sum() / py.sum()
    wx = math.sqrt((px * (CENTRES - mx) ** 2).sum() / px.sum())
    wy = math.sqrt((py * (CENTRES - my) ** 2).sum() / py.sum())
    return wx, wy


def plot_images(samples: dict[tuple[float, float], mc.MCResult], out: Path) -> dict[str, Any]:
    numbers: dict[str, Any] = {}
    etas = sorted({eta for eta, _ in samples})
    fig, axes = plt.subplots(len(etas), len(PROFILE_ENERGIES), figsize=(27, 8.5 * len(etas)))
    for row, eta in enumerate(etas):
        for col, energy in enumerate(PROFILE_ENERGIES):
            ax = axes[row, col]
            result = samples[(eta, energy)]
            mean = result.true_images.mean(axis=0)  # (x, y)
            cmap = plt.get_cmap("viridis").with_extremes(under="#2a0a3a", bad="#2a0a3a")  # empty cells: darkest
            norm = LogNorm(vmin=mean.max() * 1e-6, vmax=mean.max())
            mesh = ax.pcolormesh(EDGES, EDGES, np.ma.masked_less_equal(mean.T, 0.0), norm=norm, cmap=cmap)
            bar = fig.colorbar(mesh, ax=ax, pad=0.02, extend="min")
            bar.set_label("mean deposit per cell [GeV]", fontsize=18)
            bar.ax.tick_params(labelsize=15)
            ax.set_aspect("equal")
            ax.set_xlabel(r"$x$ ($\eta$ direction) [mm]", fontsize=20)
            ax.set_ylabel(r"$y$ ($\phi$ direction) [mm]", fontsize=20)
            ax.tick_params(labelsize=16)
            wx, wy = _widths(mean)
            ax.set_title(rf"$\gamma$, {energy:g} GeV, $\eta={eta:g}$", fontsize=22)
            ax.text(0.03, 0.97, f"RMS x {wx:.1f} mm\nRMS y {wy:.1f} mm", transform=ax.transAxes, va="top",
                    fontsize=16, bbox={"fc": "white", "ec": "0.6", "alpha": 0.9})  # fmt: skip
            numbers[f"photon_{energy:g}GeV_eta{eta:g}"] = {
                "n": int(result.true_images.shape[0]),
                "rms_x_mm": _r(wx, 4),
                "rms_y_mm": _r(wy, 4),
                "elongation_rms_x_over_y": _r(wx / wy, 4),
                "mean_deposit_fraction": _r(result.true_images.sum(axis=(1, 2)).mean() / energy, 4),
            }
    fig.suptitle("mean deposit per cell before the detector response (log scale)", fontsize=24)
    fig.tight_layout()
    fig.savefig(out / "mean_images.png", dpi=70)
    plt.close(fig)
    return numbers


# --------------------------------------------------------------------------------------------
# d. energy resolution
# --------------------------------------------------------------------------------------------


def _resolution_model(energy: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return np.sqrt(a**2 / energy + b**2 + (c / energy) ** 2)


def plot_resolution(samples: dict[float, mc.MCResult], out: Path) -> dict[str, Any]:
    from scipy.optimize import curve_fit  # the [docs] extra

    energies = np.array(sorted(samples))
    points: dict[str, Any] = {}
    pe_per_gev = DEFAULT_DETECTOR.response.photoelectrons_per_gev
    rows: dict[str, list[float]] = {
        key: [] for key in ("res", "res_err", "res_true", "res_true_err", "res_pe", "resp", "resp_err", "resp_true")
    }
    for energy in energies:
        result = samples[float(energy)]
        measured = result.showers.images.sum(axis=(1, 2)).astype(np.float64)
        true = result.true_images.sum(axis=(1, 2))
        n = measured.size
        res, res_true = measured.std(ddof=1) / measured.mean(), true.std(ddof=1) / true.mean()
        rows["res"].append(res)
        rows["res_err"].append(res / math.sqrt(2 * (n - 1)))
        rows["res_true"].append(res_true)
        rows["res_true_err"].append(res_true / math.sqrt(2 * (n - 1)))
        # the sum of Poisson cells is Poisson: photo-statistics add E_dep / N_pe per GeV to the variance
        res_pe = math.sqrt(true.var(ddof=1) + true.mean() / pe_per_gev) / true.mean()
        rows["res_pe"].append(res_pe)
        rows["resp"].append(measured.mean() / energy)
        rows["resp_err"].append(measured.std(ddof=1) / math.sqrt(n) / energy)
        rows["resp_true"].append(true.mean() / energy)
        points[f"{energy:g}GeV"] = {
            "n": n,
            "sigma_over_E": _r(res, 4),
            "sigma_over_E_stat_error": _r(res / math.sqrt(2 * (n - 1)), 2),
            "sigma_over_E_true_deposit": _r(res_true, 4),
            "sigma_over_E_deposit_and_photostatistics": _r(res_pe, 4),
            "response_measured_over_incident": _r(measured.mean() / energy, 5),
            "deposit_over_incident": _r(true.mean() / energy, 5),
            "leakage_over_incident": _r(result.leakage.mean() / energy, 3),
            "cells_above_threshold": _r((result.showers.images > 0).sum(axis=(1, 2)).mean(), 4),
            # what noise and zero suppression add in quadrature, as an energy: E sqrt(res^2 - res_pe^2)
            "noise_and_threshold_term_GeV": _r(energy * math.sqrt(max(res**2 - res_pe**2, 0.0)), 3),
        }
    res, res_err = np.array(rows["res"]), np.array(rows["res_err"])
    popt, pcov = curve_fit(_resolution_model, energies, res, p0=(0.03, 0.003, 0.01), sigma=res_err,
                           absolute_sigma=True, bounds=(0.0, np.inf))  # fmt: skip
    perr = np.sqrt(np.diag(pcov))
    chi2 = float((((res - _resolution_model(energies, *popt)) / res_err) ** 2).sum())
    log.info("resolution fit: a %.4f b %.4f c %.4f GeV, chi2 %.1f / %d", *popt, chi2, energies.size - 3)
    a_pe = 1.0 / math.sqrt(pe_per_gev)

    fig, (ax, ax_resp) = plt.subplots(2, 1, figsize=(13, 14), sharex=True, height_ratios=(2, 1))
    grid = np.geomspace(1.5, 130.0, 200)
    ax.errorbar(energies, 100 * res, 100 * res_err, fmt="o", ms=10, color=COLOURS[0], label="MC with detector response")
    ax.errorbar(energies, 100 * np.array(rows["res_true"]), 100 * np.array(rows["res_true_err"]), fmt="s", ms=9,
                mfc="none", color=COLOURS[1], label="MC deposit before response")  # fmt: skip
    ax.plot(energies, 100 * np.array(rows["res_pe"]), "D", ms=9, mfc="none", color=COLOURS[3],
            label="deposit with photo-statistics only (no noise, no threshold)")  # fmt: skip
    fit_label = (
        rf"fit $a E^{{-1/2}} \oplus b \oplus c E^{{-1}}$: a = {100 * popt[0]:.2f}%, "
        rf"b = {100 * popt[1]:.2f}%, c = {1e3 * popt[2]:.0f} MeV, $\chi^2$/ndf = {chi2:.0f}/{energies.size - 3}"
    )
    ax.plot(grid, 100 * _resolution_model(grid, *popt), color=COLOURS[0], lw=2, label=fit_label)
    ax.plot(grid, 100 * a_pe / np.sqrt(grid), ls="--", color="0.4", lw=2,
            label=rf"photo-statistics alone, $N_{{pe}}^{{-1/2}}$ = {100 * a_pe:.2f}% $E^{{-1/2}}$")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_yticks([0.2, 0.3, 0.5, 1.0, 2.0, 3.0], ["0.2", "0.3", "0.5", "1", "2", "3"])
    ax.set_yticks([], minor=True)
    ax.set_ylim(0.18, 4.0)
    ax.set_ylabel(r"$\sigma_E / E$ [%]")
    ax.legend(loc="upper right", fontsize=16)
    _label(ax, r"e$^-$, $\eta=0$")
    ax_resp.errorbar(energies, rows["resp"], rows["resp_err"], fmt="o", ms=10, color=COLOURS[0],
                     label=r"$E_{meas}/E_{inc}$ (response)")  # fmt: skip
    ax_resp.plot(energies, rows["resp_true"], "s", ms=9, mfc="none", color=COLOURS[1], label=r"$E_{dep}/E_{inc}$ (deposit)")
    ax_resp.axhline(1.0, color="0.5", ls=":")
    ax_resp.set_xlabel(r"incident energy $E_{inc}$ [GeV]")
    ax_resp.set_xticks([2, 5, 10, 20, 50, 100], ["2", "5", "10", "20", "50", "100"])
    ax_resp.set_ylabel(r"mean $E/E_{inc}$")
    ax_resp.set_ylim(0.95, 1.01)
    ax_resp.legend(loc="lower right", fontsize=16)
    fig.tight_layout()
    fig.savefig(out / "energy_resolution.png", dpi=80)
    plt.close(fig)
    return {
        "points": points,
        "fit": {
            "a_stochastic": _r(popt[0], 4),
            "a_error": _r(perr[0], 2),
            "b_constant": _r(popt[1], 4),
            "b_error": _r(perr[1], 2),
            "c_noise_GeV": _r(popt[2], 4),
            "c_error_GeV": _r(perr[2], 2),
            "chi2": _r(chi2, 3),
            "ndf": int(energies.size - 3),
        },
        "expected_photostatistics_a": _r(a_pe, 4),
        "noise_per_cell_GeV": DEFAULT_DETECTOR.response.noise,
        "threshold_GeV": DEFAULT_DETECTOR.response.threshold,
    }


# --------------------------------------------------------------------------------------------
# e. cut independence
# --------------------------------------------------------------------------------------------


def _image_pulls(a: np.ndarray, b: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Per-cell pulls of the mean images of two independent samples (NaN outside ``used``)."""
    err2 = a.var(axis=0, ddof=1) / a.shape[0] + b.var(axis=0, ddof=1) / b.shape[0]
    return np.where(used, (b.mean(axis=0) - a.mean(axis=0)) / np.sqrt(np.where(used, err2, 1.0)), np.nan)


def compare_cuts(nominal: mc.MCResult, halved: mc.MCResult, permutations: int = 400) -> dict[str, Any]:
    """chi2 of the mean true images (cells above 1e-3 of the peak), pulls and the total deposits.

    The cells of one shower are correlated, so chi2 does not follow the chi2 distribution with
    ndf degrees of freedom; its null distribution is also estimated by permuting the labels
    nominal/halved over the pooled showers.
    """
    a, b = nominal.true_images, halved.true_images
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    used = mean_a > 1e-3 * mean_a.max()
    pulls = _image_pulls(a, b, used)
    chi2 = float(np.nansum(pulls**2))
    ndf = int(used.sum())
    pooled = np.concatenate([a[:, used], b[:, used]])[:, :, None]  # (N_a + N_b, ndf, 1)
    rng = np.random.default_rng(20240601)
    null_chi2, null_pull_mean = [], []
    for _ in range(permutations):
        order = rng.permutation(pooled.shape[0])
        p = _image_pulls(pooled[order[: a.shape[0]]], pooled[order[a.shape[0] :]], np.ones((ndf, 1), dtype=bool))
        null_chi2.append(float((p**2).sum()))
        null_pull_mean.append(float(p.mean()))
    sum_a, sum_b = a.sum(axis=(1, 2)), b.sum(axis=(1, 2))
    diff = sum_b.mean() - sum_a.mean()
    diff_err = math.sqrt(sum_a.var(ddof=1) / sum_a.size + sum_b.var(ddof=1) / sum_b.size)
    return {
        "mean_a": mean_a, "mean_b": mean_b, "used": used, "pulls": pulls, "sum_a": sum_a, "sum_b": sum_b,
        "chi2": chi2, "ndf": ndf, "diff": diff, "diff_err": diff_err,
        "null_chi2": np.array(null_chi2), "null_pull_mean": np.array(null_pull_mean),
    }  # fmt: skip


def plot_cuts(energy: float, nominal: mc.MCResult, halved: mc.MCResult, out: Path) -> dict[str, Any]:
    from scipy.stats import chi2 as chi2_dist

    c = compare_cuts(nominal, halved)
    bin_x0 = NOMINAL.longitudinal_bin / X0
    _, _, t_nom, t_nom_err = t_max_with_error(nominal.longitudinal, bin_x0)
    _, _, t_half, t_half_err = t_max_with_error(halved.longitudinal, bin_x0)
    cut_text = (
        rf"nominal: $k_\gamma$ > {1e3 * NOMINAL.gamma_cut:.2f} MeV, $T_e$ > {1e3 * NOMINAL.electron_cut:.2f} MeV;"
        rf"  halved: {1e3 * HALVED.gamma_cut:.2f} MeV, {1e3 * HALVED.electron_cut:.2f} MeV"
    )
    fig, axes = plt.subplots(2, 2, figsize=(22, 19))
    ratio = np.where(c["used"], c["mean_b"] / np.where(c["used"], c["mean_a"], 1.0), np.nan)
    mesh = axes[0, 0].pcolormesh(EDGES, EDGES, ratio.T, cmap="RdBu_r", norm=TwoSlopeNorm(1.0, 0.9, 1.1))
    fig.colorbar(mesh, ax=axes[0, 0], pad=0.02).set_label("mean image ratio halved / nominal")
    axes[0, 0].set_title("ratio of the mean images", fontsize=22)
    mesh = axes[0, 1].pcolormesh(EDGES, EDGES, c["pulls"].T, cmap="RdBu_r", vmin=-4, vmax=4)
    fig.colorbar(mesh, ax=axes[0, 1], pad=0.02).set_label("per-cell pull (halved - nominal) / $\\sigma$")
    p_perm = (1 + (c["null_chi2"] >= c["chi2"]).sum()) / (1 + c["null_chi2"].size)
    axes[0, 1].set_title(
        rf"$\chi^2$/ndf = {c['chi2']:.0f}/{c['ndf']} = {c['chi2'] / c['ndf']:.2f} (permutation p = {p_perm:.3f})",
        fontsize=20,
    )
    for ax in axes[0]:
        ax.set_aspect("equal")
        ax.set_xlabel(r"$x$ [mm]")
        ax.set_ylabel(r"$y$ [mm]")
        ax.set_xlim(-60, 60)
        ax.set_ylim(-60, 60)

    ax = axes[1, 0]
    bins = np.linspace(0.9, 1.0, 51)
    for values, colour, name in ((c["sum_a"], COLOURS[0], "nominal cuts"), (c["sum_b"], COLOURS[1], "halved cuts")):
        counts, _ = np.histogram(np.clip(values / energy, bins[0], None), bins)
        mplhep.histplot(counts, bins, ax=ax, color=colour, lw=2.5, yerr=False,
                        label=f"{name}: mean {values.mean() / energy:.4f}")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel(r"total deposit / $E_{inc}$ (first bin: underflow)")
    ax.set_ylabel("showers per bin")
    ax.legend(loc="upper left", fontsize=17)
    ax.set_title(f"difference of the means: {1e3 * c['diff']:.1f} $\\pm$ {1e3 * c['diff_err']:.1f} MeV", fontsize=22)

    ax = axes[1, 1]
    pulls = c["pulls"][c["used"]]
    pull_bins = np.linspace(-5, 5, 26)
    counts, _ = np.histogram(np.clip(pulls, -4.99, 4.99), pull_bins)
    mplhep.histplot(counts, pull_bins, ax=ax, color=COLOURS[2], lw=2.5, yerr=np.sqrt(counts),
                    label=f"cells used ({pulls.size})")  # fmt: skip
    x = np.linspace(-5, 5, 200)
    ax.plot(x, pulls.size * (pull_bins[1] - pull_bins[0]) * np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi),
            color="k", ls="--", lw=2, label="N(0, 1)")  # fmt: skip
    ax.set_xlabel("per-cell pull")
    ax.set_ylabel("cells per bin")
    ax.legend(loc="upper right", fontsize=17)
    ax.set_title(f"pull mean {pulls.mean():.2f}, RMS {pulls.std():.2f}", fontsize=22)
    fig.suptitle(
        rf"$\gamma$, {energy:g} GeV, $\eta=0$: {nominal.true_images.shape[0]} + {halved.true_images.shape[0]} showers"
        + "\n" + cut_text, fontsize=22,
    )  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / f"cut_independence_{energy:g}GeV.png", dpi=70)
    plt.close(fig)
    return {
        "n_nominal": int(nominal.true_images.shape[0]),
        "n_halved": int(halved.true_images.shape[0]),
        "chi2": _r(c["chi2"], 4),
        "ndf": c["ndf"],
        "chi2_per_ndf": _r(c["chi2"] / c["ndf"], 3),
        "p_value_chi2_distribution": _r(chi2_dist.sf(c["chi2"], c["ndf"]), 2),
        "permutations": int(c["null_chi2"].size),
        "p_value_permutation": _r((1 + (c["null_chi2"] >= c["chi2"]).sum()) / (1 + c["null_chi2"].size), 2),
        "permutation_chi2_per_ndf_mean": _r(c["null_chi2"].mean() / c["ndf"], 3),
        "permutation_chi2_per_ndf_95pc": _r(np.quantile(c["null_chi2"], 0.95) / c["ndf"], 3),
        "pull_mean": _r(pulls.mean(), 2),
        "permutation_pull_mean_rms": _r(c["null_pull_mean"].std(), 2),
        "pull_rms": _r(pulls.std(), 3),
        "mean_deposit_nominal_GeV": _r(c["sum_a"].mean(), 6),
        "mean_deposit_halved_GeV": _r(c["sum_b"].mean(), 6),
        "mean_deposit_difference_GeV": _r(c["diff"], 2),
        "mean_deposit_difference_error_GeV": _r(c["diff_err"], 2),
        "t_max_nominal": _r(t_nom, 4),
        "t_max_nominal_error": _r(t_nom_err, 2),
        "t_max_halved": _r(t_half, 4),
        "t_max_halved_error": _r(t_half_err, 2),
    }


# --------------------------------------------------------------------------------------------


def core_numbers(result: mc.MCResult, energy: float) -> dict[str, float]:
    """Fraction of E_inc in the cell of the impact point, of the deposit within 1 R_M, the deposited
    fraction and the shower maximum, with statistical errors."""
    n = DEFAULT_DETECTOR.n_cells // 2
    central = result.true_images[:, n, n] / energy
    deposit = result.true_images.sum(axis=(1, 2))
    edges = np.arange(NOMINAL.n_radial + 1) * NOMINAL.radial_bin
    cumulative = np.concatenate([np.zeros((deposit.size, 1)), np.cumsum(result.radial, axis=1)], axis=1)
    within = np.array([np.interp(RM, edges, row) for row in cumulative])
    peak, peak_error = peak_with_error(result.longitudinal, NOMINAL.longitudinal_bin / X0)
    return {
        "central_cell_fraction": _r(central.mean(), 5),
        "central_cell_fraction_error": _r(central.std(ddof=1) / math.sqrt(central.size), 2),
        "within_1_RM": _r(within.mean() / deposit.mean(), 5),
        "within_1_RM_error": _r((within / deposit).std(ddof=1) / math.sqrt(deposit.size), 2),
        "deposit_fraction": _r(deposit.mean() / energy, 5),
        "deposit_fraction_error": _r(deposit.std(ddof=1) / math.sqrt(deposit.size) / energy, 2),
        "t_max_peak": _r(peak, 4),
        "t_max_peak_error": _r(peak_error, 2),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-scale", type=float, default=1.0, help="scale every sample size (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="base random seed (default 1)")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/img/reference-mc"), help="output directory")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.n_scale) and args.n_scale > 0):
        parser.error(f"--n-scale must be > 0, got {args.n_scale}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)  # this script's progress, without matplotlib's font messages
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    mplhep.style.use("CMS")
    start = time.perf_counter()
    timing: dict[str, float] = {}
    run = Runner(seed=args.seed, n_scale=args.n_scale, timing=timing)
    mc.simulate([1.0], 0.0, "electron", profiles=True)  # compile the kernels outside the timings

    profile_samples = {
        (particle, energy): run(f"{particle}_{energy:g}GeV_eta0", energy, N_PROFILE[energy], particle)
        for particle in ("electron", "photon")
        for energy in PROFILE_ENERGIES
    }
    image_samples = {(0.0, energy): profile_samples[("photon", energy)] for energy in PROFILE_ENERGIES}
    image_samples.update(
        {(1.0, e): run(f"photon_{e:g}GeV_eta1", e, N_IMAGE_ETA1[e], "photon", eta=1.0) for e in PROFILE_ENERGIES}
    )
    resolution_samples = {
        e: run(f"electron_{e:g}GeV_eta0_resolution", e, N_RESOLUTION[e], "electron") for e in RESOLUTION_ENERGIES
    }
    cut_samples = {
        e: (
            run(f"photon_{e:g}GeV_eta0_nominal_cuts", e, N_CUTS[e], "photon"),
            run(f"photon_{e:g}GeV_eta0_halved_cuts", e, N_CUTS[e], "photon", config=HALVED),
        )
        for e in CUT_ENERGIES
    }
    step_samples = {
        name: run(f"photon_10GeV_eta0_{name}", 10.0, N_CUTS[10.0], "photon", config=replace(NOMINAL, **change))
        for name, change in STEP_VARIANTS.items()
    }
    containment_samples = {
        **{f"electron_{e:g}GeV": resolution_samples[e] for e in CUT_ENERGIES},
        **{f"photon_{e:g}GeV": cut_samples[e][0] for e in CUT_ENERGIES},
    }

    numbers: dict[str, Any] = {
        "command": " ".join(["python scripts/reference_mc_plots.py", *(sys.argv[1:] if argv is None else argv)]),
        "n_scale": args.n_scale,
        "seed": args.seed,
        "detector": {
            "radiation_length_mm": X0,
            "critical_energy_GeV": EC,
            "moliere_radius_mm": RM,
            "depth_x0": DEFAULT_DETECTOR.depth_x0,
            "cells": DEFAULT_DETECTOR.n_cells,
            "cell_size_mm": DEFAULT_DETECTOR.cell_size,
        },
        "cuts": {"nominal": NOMINAL.__dict__, "halved": HALVED.__dict__},
    }
    numbers["longitudinal"] = plot_longitudinal(profile_samples, out)
    numbers["containment"] = plot_containment(containment_samples, out)
    numbers["images"] = plot_images(image_samples, out)
    numbers["resolution"] = plot_resolution(resolution_samples, out)
    numbers["cut_independence"] = {
        f"photon_{e:g}GeV": plot_cuts(e, *cut_samples[e], out) for e in CUT_ENERGIES
    }
    numbers["step_limits_photon_10GeV"] = {
        "nominal": core_numbers(cut_samples[10.0][0], 10.0),
        "halved_cuts": core_numbers(cut_samples[10.0][1], 10.0),
        **{name: core_numbers(result, 10.0) for name, result in step_samples.items()},
    }
    numbers["timing_ms_per_shower"] = {key: _r(value, 3) for key, value in timing.items()}
    numbers["wall_time_s"] = _r(time.perf_counter() - start, 3)
    (out / "numbers.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(json.dumps({k: v for k, v in numbers.items() if k not in ("cuts", "timing_ms_per_shower")}, indent=2))
    log.info("wrote %d plots and numbers.json to %s in %.0f s", len(list(out.glob("*.png"))), out, numbers["wall_time_s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
