"""Energy response and resolution of trained models against held-out MC, per energy point.

The measurement behind validation/energy-mechanism/: which way of learning the total energy (a
dedicated energy model, ``ModelConfig.energy = "model"``, or the summed-energy loss with the total
trained with the GAN, ``energy = "loss"``) reproduces the MC's mean, sigma/mu and core width (half
the 16-84 % interval, over the mean) of E_dep / E_inc. Every model generates full showers for
exactly the particles of the held-out file (energy, eta, pdgid, impact point), so the totals
include everything the generated showers carry (the threshold, the cell noise).

    python scripts/energy_mechanism.py --heldout data/heldout-points.h5 \
        --model energy-model=runs/cmp-wgan-gp-cell-noise/final \
        --model summed-energy-loss=runs/cmp-energy-loss/final -o validation/energy-mechanism/summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastcalo import datasets
from fastcalo.model import load


def summary(r: np.ndarray) -> dict[str, float]:
    """Mean, sigma/mu and core width of the deposited fractions ``r``, with the statistical error
    of sigma/mu (bootstrap, 200 resamples)."""
    q16, q84 = np.quantile(r, [0.16, 0.84])
    boot = np.random.default_rng(0).integers(0, r.size, (200, r.size))
    spread = r[boot].std(axis=1, ddof=1) / r[boot].mean(axis=1)
    return {
        "mean": float(r.mean()),
        "resolution": float(r.std(ddof=1) / r.mean()),
        "resolution_error": float(spread.std()),
        "core": float((q84 - q16) / 2 / r.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", type=Path, required=True, help="held-out MC showers at fixed energy points")
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=DIR", help="a model to measure (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON summary")
    args = parser.parse_args()

    mc = datasets.read(args.heldout)
    points = np.unique(mc.energy)
    r_mc = mc.images.sum(axis=(1, 2), dtype=np.float64) / mc.energy
    result: dict[str, object] = {"heldout": str(args.heldout), "showers_per_point": int(r_mc.size // points.size), "mc": {}, "models": {}}
    for e in points:
        result["mc"][f"{e:g}"] = summary(r_mc[mc.energy == e])  # type: ignore[index]
    for spec in args.model:
        label, _, path = spec.partition("=")
        model = load(path)
        r = np.empty_like(r_mc)
        for start in range(0, len(mc), 8192):
            part = mc[start : start + 8192]
            images = model.sample(
                energy=part.energy, eta=part.eta, pdgid=part.pdgid, impact_x=part.impact_x, impact_y=part.impact_y,
                seed=args.seed * 1_000_003 + start,
            )
            r[start : start + len(part)] = images.sum(axis=(1, 2), dtype=np.float64) / part.energy
        rows = []
        for e in points:
            gen, ref = summary(r[mc.energy == e]), result["mc"][f"{e:g}"]  # type: ignore[index]
            rows.append(
                {
                    "energy": float(e),
                    **{f"{k}": v for k, v in gen.items()},
                    "response_ratio": gen["mean"] / ref["mean"],
                    "resolution_ratio": gen["resolution"] / ref["resolution"],
                    "resolution_ratio_error": float(np.hypot(gen["resolution_error"] / ref["resolution"], ref["resolution_error"] * gen["resolution"] / ref["resolution"] ** 2)),
                    "core_ratio": gen["core"] / ref["core"],
                }
            )
        result["models"][label] = {"path": path, "points": rows}  # type: ignore[index]
        print(f"{label} ({path})")
        print("  E [GeV]  response  sigma/mu ratio  core ratio")
        for row in rows:
            print(f"  {row['energy']:7g}  {row['response_ratio']:.4f}  {row['resolution_ratio']:.3f} +- {row['resolution_ratio_error']:.3f}  {row['core_ratio']:.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.output)


if __name__ == "__main__":
    main()
