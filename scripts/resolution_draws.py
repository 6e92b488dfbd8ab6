"""The energy response and resolution of a model against a reference file, with many generated draws.

A report compares one generated file with one reference file of the same size, so each side's
sigma / mu carries its own statistical error; with the leakage tails of E_dep / E_inc (kurtosis
50-120 at 10-100 GeV) that is 3-6 % for 10 000 showers per side, and the ratio of two such
estimates scatters by 5-8 %. The model's side costs nothing to sharpen: this script generates the
reference's particles ``--draws`` times (``Simulator.sample`` with seeds ``--seed``, ``--seed`` + 1,
...; the draw of seed s is the file ``fastcalo simulate --like REFERENCE --seed s`` writes), pools the
draws, and compares mean, sigma / mu and the core resolution per energy point or bin with the
reference's (``fastcalo.validation.observables.response_points``), with the error of each ratio
from both sides. The reference's own limit stays: per bin it also gives the share of the
reference's variance that its single farthest shower carries, and the generated and reference
1e-3 quantiles relative to the median.

    python scripts/resolution_draws.py --reference data/heldout-points.h5 --model v9=runs/v9 \\
        --draws 20 -o validation/energy-tail/resolution-draws-points.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import fastcalo
from fastcalo import datasets
from fastcalo.model import DEFAULT_MODEL
from fastcalo.validation.observables import energy_groups, in_group, response_points

PARTICLES = {"photon": (22,), "electron": (11,), "positron": (-11,), "e+-": (11, -11)}


def responses(model: str, reference: datasets.ShowerData, seeds: range, chunk: int = 20_000) -> np.ndarray:
    """(len(seeds), N) E_dep / E_inc of the reference's particles generated with each seed."""
    out = np.empty((len(seeds), len(reference)))
    for k, seed in enumerate(seeds):
        sim = fastcalo.Simulator(model=model, seed=seed)
        for start in range(0, len(reference), chunk):
            part = reference[start : start + chunk]
            images = sim.sample(energy=part.energy, eta=part.eta, particle=part.pdgid, phi=part.phi,
                                impact_x=part.impact_x, impact_y=part.impact_y, first_index=start)  # fmt: skip
            out[k, start : start + len(part)] = images.sum(axis=(1, 2), dtype=np.float64) / part.energy
    return out


def ratio(a: float, ea: float, b: float, eb: float) -> tuple[float, float]:
    """a / b with the error from both (independent) sides."""
    r = a / b
    return r, abs(r) * math.hypot(ea / a, eb / b)


def compare(energy: np.ndarray, reference: np.ndarray, generated: np.ndarray) -> list[dict[str, float]]:
    """Per energy group: the ratios generated / reference and the reference's tail indicators."""
    draws = generated.shape[0]
    groups = energy_groups(energy)
    ref_rows = response_points(energy, reference, groups)
    gen_rows = response_points(np.tile(energy, draws), generated.reshape(-1), groups)
    rows = []
    for ref, gen in zip(ref_rows, gen_rows):
        chosen = in_group(energy, ref.energy_low, ref.energy_high)
        r, g = reference[chosen], generated[:, chosen].reshape(-1)
        deviation = (r - r.mean()) ** 2
        q_ref = np.quantile(r, [1e-3, 0.5])
        q_gen = np.quantile(g, [1e-3, 0.5])
        rows.append({
            "energy_low": ref.energy_low, "energy_high": ref.energy_high, "n_reference": ref.n, "n_generated": gen.n,
            "resolution_reference": ref.resolution, "resolution_reference_error": ref.resolution_error,
            "resolution_generated": gen.resolution, "resolution_generated_error": gen.resolution_error,
            "mean_ratio": ratio(gen.mean, gen.mean_error, ref.mean, ref.mean_error),
            "resolution_ratio": ratio(gen.resolution, gen.resolution_error, ref.resolution, ref.resolution_error),
            "core_ratio": ratio(gen.core_resolution, gen.core_resolution_error, ref.core_resolution, ref.core_resolution_error),
            "largest_variance_share": float(deviation.max() / deviation.sum()),
            "q1e-3_reference": float(q_ref[0] / q_ref[1] - 1), "q1e-3_generated": float(q_gen[0] / q_gen[1] - 1),
        })  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="a shower file (the held-out Monte Carlo)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="a model directory (repeat; default: the shipped model)")
    parser.add_argument("--draws", type=int, default=20, help="generated samples of the reference's particles (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="the first draw's seed (default 1)")
    parser.add_argument("-o", "--output", type=Path, help="write the numbers as JSON")
    args = parser.parse_args()
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    models = dict(m.split("=", 1) if "=" in m else (m, m) for m in args.model) or {"default": str(DEFAULT_MODEL)}
    data = datasets.read(args.reference)
    r_ref = data.images.sum(axis=(1, 2), dtype=np.float64) / data.energy
    result: dict[str, object] = {"reference": str(args.reference), "draws": args.draws, "seeds": [args.seed, args.seed + args.draws - 1], "models": models, "results": {}}
    for name, directory in models.items():
        started = time.perf_counter()
        r_gen = responses(directory, data, range(args.seed, args.seed + args.draws))
        seconds = time.perf_counter() - started
        per_particle: dict[str, list[dict[str, float]]] = {}
        for particle, codes in PARTICLES.items():
            chosen = np.isin(data.pdgid, codes)
            if chosen.sum() >= 2 and (particle != "e+-" or (np.isin(data.pdgid, 11).any() and np.isin(data.pdgid, -11).any())):
                per_particle[particle] = compare(data.energy[chosen], r_ref[chosen], r_gen[:, chosen])
        result["results"][name] = {"seconds": seconds, "particles": per_particle}  # type: ignore[index]
        print(f"{name} ({directory}): {args.draws} draws of {len(data)} showers in {seconds:.0f} s")
        print(f"{'particle':9s} {'E, GeV':>12s} {'MC sigma/mu':>15s} {'sigma/mu ratio':>15s} {'core ratio':>15s} {'mean ratio':>9s} {'MC top share':>12s} {'q1e-3 MC/gen':>14s}")
        for particle, rows in per_particle.items():
            for row in rows:
                energies = f"{row['energy_low']:g}" if row["energy_low"] == row["energy_high"] else f"{row['energy_low']:.3g}-{row['energy_high']:.3g}"
                rr, cr, mr = row["resolution_ratio"], row["core_ratio"], row["mean_ratio"]
                print(f"{particle:9s} {energies:>12s} {row['resolution_reference']:.4f}±{row['resolution_reference_error'] / row['resolution_reference']:4.1%}"
                      f" {rr[0]:7.3f}±{rr[1]:.3f} {cr[0]:7.3f}±{cr[1]:.3f} {mr[0]:9.4f} {row['largest_variance_share']:12.1%}"
                      f" {row['q1e-3_reference']:+.3f}/{row['q1e-3_generated']:+.3f}")  # fmt: skip
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.output)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
