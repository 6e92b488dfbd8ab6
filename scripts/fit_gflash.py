"""Fit the parametrised peer (fastcalo.gflash) to the reference MC, starting from the published values.

    fastcalo mc --particle photon --energy 1,2,5,10,20,50,100 --n 1000 --eta -1.5:1.5 --seed 4001 -o data/fit-photons.h5
    fastcalo mc --particle electron --energy 1,2,5,10,20,50,100 --n 400 --eta -1.5:1.5 --seed 4002 -o data/fit-electrons.h5
    python scripts/fit_gflash.py --photons data/fit-photons.h5 --electrons data/fit-electrons.h5 \
        -o fastcalo/models/gflash/parameters.json --overwrite

What the images show is fitted in stages, each with a few physical parameters and the others held:

1. longitudinal (``t_offset``, ``alpha_intercept``): the depth of the maximum and the gamma
   shape of the mean profile of MC electrons at eta 0 (``fastcalo.mc.simulate(profiles=True)``,
   seed 4003, cached in ``--profiles``), measured on the peer's profile the same way
   (``fastcalo.mc.shower_maximum``, ``fastcalo.mc.longitudinal_fit``);
2. lateral (``core_scale``, ``tail_scale``, ``core_probability_scale``): the mean 3x3, 5x5 and 7x7
   containments and the mean widths along x and y of the photon images, per energy point;
3. fluctuations (``spot_scale``, ``fluctuation_scale``): the resolution sigma/mu, the mean number
   of cells above threshold and the spread of the width along y and of the 3x3 containment;
4. response (``visible`` = v0 + v1 ln E): least squares on the mean response, per point.

Stages 2-4 are repeated twice. The peer's showers are drawn for the MC's own particles (energy,
eta, impact point), ``--n-fit`` per energy point, with one seed throughout (common random numbers:
the loss is a smooth function of the parameters). Prints and stores (in the parameter file's
``fit`` entry) the observables per energy point for the MC, the published and the fitted peer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from fastcalo import datasets, mc
from fastcalo.datasets import ShowerData
from fastcalo.detector import DEFAULT_DETECTOR
from fastcalo.gflash import GFlash, GFlashParameters, save_parameters
from fastcalo.validation.observables import features

POINTS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
PROFILE_POINTS = (1.0, 5.0, 20.0, 100.0)
SEED = 4101  # the peer's seed during the fit (common random numbers)

Observables = dict[float, dict[str, float]]


def observables(data: ShowerData) -> Observables:
    """Per energy point: mean response, sigma/mu, widths, containments, cells above threshold, spreads."""
    f = features(data)
    table: Observables = {}
    for energy in np.unique(data.energy):
        at = data.energy == energy
        response = f["response"][at]
        table[float(energy)] = {
            "response": float(response.mean()),
            "resolution": float(response.std() / response.mean()),
            "width_x": float(np.nanmean(f["width_x"][at])),
            "width_y": float(np.nanmean(f["width_y"][at])),
            "width_y_sd": float(np.nanstd(f["width_y"][at])),
            "containment_3x3": float(np.nanmean(f["containment_3x3"][at])),
            "containment_3x3_sd": float(np.nanstd(f["containment_3x3"][at])),
            "containment_5x5": float(np.nanmean(f["containment_5x5"][at])),
            "containment_7x7": float(np.nanmean(f["containment_7x7"][at])),
            "n_cells": float(f["n_cells"][at].mean()),
        }
    return table


def per_point(data: ShowerData, n: int) -> ShowerData:
    """The first ``n`` showers at each energy point."""
    keep = np.zeros(len(data), dtype=bool)
    for energy in np.unique(data.energy):
        keep[np.flatnonzero(data.energy == energy)[:n]] = True
    return data[keep]


def peer_like(peer: GFlash, data: ShowerData) -> ShowerData:
    """The peer's showers for exactly the particles of ``data``."""
    return peer.simulate(
        data.energy, data.eta, data.pdgid, impact_x=data.impact_x, impact_y=data.impact_y, seed=SEED
    ).showers


def mc_profiles(path: Path) -> dict[float, np.ndarray]:
    """Mean longitudinal profiles of MC electrons at eta 0 (cached in ``path``, an .npz)."""
    if not path.exists():
        profiles = {}
        for energy in PROFILE_POINTS:
            n = 200 if energy < 50 else 60
            result = mc.simulate(np.full(n, energy), 0.0, "electron", seed=4003, first_index=int(energy) * 10_000, profiles=True, response=False)
            profiles[energy] = np.asarray(result.longitudinal).mean(axis=0)
        with datasets.atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.savez(out, **{f"{e:g}": p for e, p in profiles.items()})
    with np.load(path) as stored:
        return {float(k): stored[k] for k in stored.files}


def shape_of(profile: np.ndarray, bin_width: float) -> tuple[float, float]:
    """(depth of the maximum, gamma shape alpha) of a mean profile, X0."""
    alpha, _, _ = mc.longitudinal_fit(profile, bin_width)
    return mc.shower_maximum(profile, bin_width), alpha


def peer_profile_shapes(peer: GFlash) -> dict[float, tuple[float, float]]:
    shapes = {}
    for energy in PROFILE_POINTS:
        result = peer.simulate(np.full(400, energy), 0.0, "electron", seed=SEED, response=False, profiles=True)
        shapes[energy] = shape_of(np.asarray(result.longitudinal).mean(axis=0), result.bin_width)
    return shapes


def fit(peer: GFlash, names: Sequence[str], loss: Callable[[GFlash], float], *, log: bool, max_evals: int) -> GFlash:
    """Nelder-Mead over ``names`` (in log for scales), starting from the peer's values."""
    start = np.array([getattr(peer.parameters, name) for name in names], dtype=np.float64)
    x0 = np.log(start) if log else start

    def build(x: np.ndarray) -> GFlash:
        values = np.exp(x) if log else x
        return peer.with_parameters(**{name: float(v) for name, v in zip(names, values, strict=True)})

    calls = [0]

    def objective(x: np.ndarray) -> float:
        calls[0] += 1
        try:
            return loss(build(x))
        except ValueError:  # parameters outside what the parametrisation allows
            return 1e9

    began = time.perf_counter()
    step = 0.1 if log else 0.05
    simplex = np.vstack([x0] + [x0 + step * np.eye(len(x0))[i] for i in range(len(x0))])
    result = minimize(objective, x0, method="Nelder-Mead", options={"maxfev": max_evals, "initial_simplex": simplex, "xatol": 2e-3, "fatol": 1e-3})
    fitted = build(result.x)
    print(f"  {', '.join(names)}: {calls[0]} evaluations in {time.perf_counter() - began:.0f} s, loss {result.fun:.4g}", flush=True)
    return fitted


def lateral_loss(reference: Observables, sample: ShowerData) -> Callable[[GFlash], float]:
    def loss(peer: GFlash) -> float:
        got = observables(peer_like(peer, sample))
        total = 0.0
        for energy, ref in reference.items():
            g = got[energy]
            for key in ("containment_3x3", "containment_5x5", "containment_7x7"):
                total += ((g[key] - ref[key]) / 0.003) ** 2
            for key in ("width_x", "width_y"):
                total += ((g[key] / ref[key] - 1.0) / 0.01) ** 2
        return total

    return loss


def fluctuation_loss(reference: Observables, sample: ShowerData) -> Callable[[GFlash], float]:
    def loss(peer: GFlash) -> float:
        got = observables(peer_like(peer, sample))
        total = 0.0
        for energy, ref in reference.items():
            g = got[energy]
            for key, tolerance in (("resolution", 0.05), ("n_cells", 0.03), ("width_y_sd", 0.05), ("containment_3x3_sd", 0.05)):
                total += ((g[key] / ref[key] - 1.0) / tolerance) ** 2
        return total

    return loss


def fit_visible(peer: GFlash, reference: Observables, sample: ShowerData) -> GFlash:
    """v0 + v1 ln E from the ratio of the mean responses (MC / peer), twice (the threshold is not linear)."""
    for _ in range(2):
        got = observables(peer_like(peer, sample))
        energies = np.array(sorted(reference))
        v0, v1 = peer.parameters.visible
        current = v0 + v1 * np.log(energies)
        target = current * np.array([reference[e]["response"] / got[e]["response"] for e in energies])
        slope, intercept = np.polyfit(np.log(energies), target, 1)
        peer = peer.with_parameters(visible=(float(intercept), float(slope)))
    return peer


def table(rows: dict[str, Observables], keys: Sequence[str]) -> str:
    lines = ["| E [GeV] | " + " | ".join(f"{k} {label}" for k in keys for label in rows) + " |"]
    lines.append("|---" * (1 + len(keys) * len(rows)) + "|")
    first = next(iter(rows.values()))
    for energy in first:
        cells = [f"{rows[label][energy][k]:.4g}" for k in keys for label in rows]
        lines.append(f"| {energy:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photons", type=Path, required=True, help="MC photons at the energy points (fit sample)")
    parser.add_argument("--electrons", type=Path, required=True, help="MC electrons at the energy points (checked, not fitted)")
    parser.add_argument("--profiles", type=Path, default=Path("data/fit-profiles.npz"), help="cache of the MC's mean profiles")
    parser.add_argument("--n-fit", type=int, default=300, help="showers per energy point in the fit's loss")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the lateral, fluctuation and response stages")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the parameter file (JSON)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    photons = datasets.read(args.photons)
    electrons = datasets.read(args.electrons)
    sample = per_point(photons, args.n_fit)
    reference = observables(sample)
    start = GFlash(GFlashParameters())
    peer = start

    print("stage 1: longitudinal (MC electrons at eta 0, mean profiles)")
    mc_shapes = {e: shape_of(p, mc.MCConfig().longitudinal_bin / DEFAULT_DETECTOR.material.radiation_length) for e, p in mc_profiles(args.profiles).items()}

    def longitudinal_loss(candidate: GFlash) -> float:
        got = peer_profile_shapes(candidate)
        return sum(((got[e][0] - t) / 0.05) ** 2 + ((got[e][1] / a - 1.0) / 0.03) ** 2 for e, (t, a) in mc_shapes.items())

    peer = fit(peer, ("t_offset", "alpha_intercept"), longitudinal_loss, log=False, max_evals=60)
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}: lateral, fluctuations, response")
        peer = fit_visible(peer, reference, sample)
        peer = fit(peer, ("core_scale", "tail_scale", "core_probability_scale"), lateral_loss(reference, sample), log=True, max_evals=70)
        peer = fit(peer, ("spot_scale", "fluctuation_scale"), fluctuation_loss(reference, sample), log=True, max_evals=40)
    peer = fit_visible(peer, reference, sample)

    # before and after, on all the fit sample's photons and on the electrons (not fitted)
    record: dict[str, Any] = {"longitudinal": {}, "photons": {}, "electrons": {}}
    before_shapes, after_shapes = peer_profile_shapes(start), peer_profile_shapes(peer)
    for e, (t, a) in mc_shapes.items():
        record["longitudinal"][f"{e:g}"] = {
            "mc": {"t_max": t, "alpha": a},
            "published": dict(zip(("t_max", "alpha"), before_shapes[e], strict=True)),
            "fitted": dict(zip(("t_max", "alpha"), after_shapes[e], strict=True)),
        }
    print("\nlongitudinal (electrons, eta 0): depth of the maximum [X0] and alpha, MC / published / fitted")
    for e, entry in record["longitudinal"].items():
        print(f"  {e:>4} GeV: T {entry['mc']['t_max']:.2f} / {entry['published']['t_max']:.2f} / {entry['fitted']['t_max']:.2f}; "
              f"alpha {entry['mc']['alpha']:.2f} / {entry['published']['alpha']:.2f} / {entry['fitted']['alpha']:.2f}")
    keys = ("response", "resolution", "width_y", "width_y_sd", "containment_3x3", "containment_7x7", "n_cells")
    for name, data in (("photons", photons), ("electrons", electrons)):
        rows = {"MC": observables(data), "published": observables(peer_like(start, data)), "fitted": observables(peer_like(peer, data))}
        record[name] = {label: {f"{e:g}": v for e, v in obs.items()} for label, obs in rows.items()}
        print(f"\n{name} ({len(data)} MC showers, |eta| < 1.5), MC / published / fitted:")
        print(table(rows, keys))
    fitted_names = ("t_offset", "alpha_intercept", "core_scale", "tail_scale", "core_probability_scale", "spot_scale", "fluctuation_scale", "visible")
    print("\nfitted parameters (published -> fitted):")
    for name in fitted_names:
        print(f"  {name}: {getattr(start.parameters, name)} -> {getattr(peer.parameters, name)}")
    extra = {
        "fitted": list(fitted_names),
        "published": start.parameters.to_dict(),
        "fit": {
            "command": "python scripts/fit_gflash.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "photons": str(args.photons),
            "electrons": str(args.electrons),
            "n_fit_per_point": args.n_fit,
            "seed": SEED,
            "observables": record,
        },
        "references": [
            "G. Grindhammer and S. Peters, hep-ex/0001020",
            "Geant4 GFlashHomoShowerParameterisation.cc, GVFlashHomoShowerTuning.hh",
            "CMSSW GflashEMShowerProfile.cc (PbWO4 tune)",
        ],
    }
    save_parameters(peer.parameters, args.output, extra=extra, overwrite=args.overwrite)
    print(f"\nwrote {args.output}")
    print(json.dumps(peer.parameters.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
