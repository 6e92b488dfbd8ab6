"""Where a model's halo differs from the MC's, ring by ring, at one fixed condition.

    python scripts/halo_rings.py --reference data/fixed-photon-15GeV-eta0.4.h5 \
        --model v4=fastcalo/models/default --model profiles=runs/critic-profiles/best -o out/rings.json

For MC showers at one condition (one particle, energy and eta; impact points uniform in the
central cell) and as many showers of each model drawn through ``fastcalo.Simulator`` at the same
conditions and impact points, per ring of cells at Chebyshev distance 0, 1, ... from the central
cell: the fraction of cells above threshold, the mean, standard deviation and 99.9 % quantile of a
cell's energy, and the mean energy of the cells above threshold; per shower: the energy outside
the central 7x7 cells (mean and standard deviation: the halo's shower-to-shower fluctuation) and
its number of cells above threshold. With ``--classifier``, also the validation report's
fixed-condition diagnosis of each model (``scripts/study.py``'s ``fixed_condition``: the
gradient-boosted classifier's AUC, the response and core-resolution ratios, the median cell
standard-deviation ratios in the core and outside the central 7x7, and outside along x and
along y apart), on the same showers (same seed). Prints markdown tables and writes the numbers
as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


def ring_stats(images: NDArray[np.float32], distance: NDArray[np.int64]) -> dict[str, Any]:
    """The statistics of showers ``images`` (N, n, n) GeV, per ring (``distance`` (n, n))."""
    rings = []
    for ring in range(int(distance.max()) + 1):
        cells = images[:, distance == ring].ravel() * 1e3  # MeV
        hit = cells > 0
        rings.append({
            "ring": ring, "hit_fraction": float(hit.mean()), "mean_mev": float(cells.mean()), "std_mev": float(cells.std()),
            "q999_mev": float(np.quantile(cells, 0.999)), "hit_mean_mev": float(cells[hit].mean()) if hit.any() else 0.0,
        })  # fmt: skip
    halo = images[:, distance > 3]
    energy, hits = halo.sum(axis=1) * 1e3, (halo > 0).sum(axis=1)
    return {
        "rings": rings, "halo_mev_mean": float(energy.mean()), "halo_mev_std": float(energy.std()),
        "halo_hits_mean": float(hits.mean()), "halo_hits_std": float(hits.std()),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="MC showers at one condition (ROOT or HDF5)")
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=DIR", help="a model directory to compare (repeatable)")
    parser.add_argument("--seed", type=int, default=1, help="the Simulator's seed")
    parser.add_argument("--classifier", action="store_true", help="also run the report's fixed-condition diagnosis on each model")
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON file for the numbers")
    args = parser.parse_args()

    import fastcalo
    from fastcalo import datasets

    mc = datasets.read(args.reference)
    energy, eta, pdgid = float(mc.energy[0]), float(mc.eta[0]), int(mc.pdgid[0])
    if not (np.all(mc.energy == energy) and np.all(mc.eta == eta) and np.all(mc.pdgid == pdgid)):
        msg = f"{args.reference} must hold one condition (one energy, eta and particle)"
        raise ValueError(msg)
    side = mc.images.shape[1]
    index = np.arange(side) - side // 2
    distance = np.maximum(np.abs(index)[:, None], np.abs(index)[None, :])
    results = {"reference": str(args.reference), "energy": energy, "eta": eta, "pdgid": pdgid, "n": len(mc), "MC": ring_stats(mc.images, distance)}
    for item in args.model:
        label, directory = item.split("=", 1)
        sim = fastcalo.Simulator(directory, device="cpu", seed=args.seed)
        images = sim.sample(energy=energy, eta=eta, particle=pdgid, n=len(mc), impact_x=mc.impact_x, impact_y=mc.impact_y)
        results[label] = ring_stats(images, distance)
        if args.classifier:
            from study import fixed_condition  # scripts/study.py, beside this script

            results[label]["diagnosis"] = fixed_condition(Path(directory), args.reference, seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")

    labels = ["MC", *(item.split("=", 1)[0] for item in args.model)]
    print(f"{pdgid} at {energy:g} GeV, eta {eta:g}, {len(mc)} showers each")
    print("| ring | " + " | ".join(f"hit fraction {lab}" for lab in labels) + " | " + " | ".join(f"std MeV {lab}" for lab in labels) + " | " + " | ".join(f"q99.9 MeV {lab}" for lab in labels) + " |")
    print("|---" * (1 + 3 * len(labels)) + "|")
    for ring in range(int(distance.max()) + 1):
        rows = [results[lab]["rings"][ring] for lab in labels]
        print(f"| {ring} | " + " | ".join(f"{r['hit_fraction']:.4f}" for r in rows) + " | " + " | ".join(f"{r['std_mev']:.1f}" for r in rows) + " | " + " | ".join(f"{r['q999_mev']:.0f}" for r in rows) + " |")
    if args.classifier:
        print("| model | fixed-condition AUC | cell std ratio core / outside 7x7 (along x / along y) | response ratio | core-resolution ratio |")
        print("|---|---|---|---|---|")
        for lab in labels[1:]:
            d = results[lab]["diagnosis"]
            print(f"| {lab} | {d['fixed_auc']:.4f} | {d['core_std_ratio']:.2f} / {d['outside_std_ratio']:.2f} ({d['outside_x_std_ratio']:.2f} / {d['outside_y_std_ratio']:.2f}) | {d['response_ratio']:.4f} | {d['core_ratio']:.3f} |")
    for lab in labels:
        r = results[lab]
        print(f"{lab}: outside the central 7x7 {r['halo_mev_mean']:.0f} ± {r['halo_mev_std']:.0f} MeV (mean ± sd), {r['halo_hits_mean']:.1f} ± {r['halo_hits_std']:.1f} cells above threshold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
