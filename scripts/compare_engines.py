"""Showers of two checkouts of fastcalo against each other and against held-out Monte Carlo, at
fixed conditions: did a change of the sampling path change the distribution of the showers?

Each checkout simulates the particles of each Monte Carlo file (their energies, eta, particle
types and impact points) with ``fastcalo.Simulator(seed=...)`` in its own process, the way users
call it; then, in this process, the report's gradient-boosted classifier
(``fastcalo.validation.diagnosis.boosted_auc``) is trained on several views of the showers:
old against new (0.5 if the change kept the distribution) and each against the Monte Carlo (the
two AUCs should agree within their spread over seeds), with the mean response, sigma/mu and the
number of cells above threshold beside them.

    git worktree add /tmp/old <commit>
    python scripts/compare_engines.py --old /tmp/old --new . --reference data/fixed-photon-15GeV-eta0.4.h5 \
        -o validation/engine/compare.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_CHILD = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import fastcalo
from fastcalo import datasets
assert fastcalo.__file__.startswith(sys.argv[1]), fastcalo.__file__
ref = datasets.read(sys.argv[2])
names = {22: "photon", 11: "electron", -11: "positron"}
particle = np.array([names[int(p)] for p in ref.pdgid], dtype=object)
sim = fastcalo.Simulator(device="cpu", seed=int(sys.argv[4]))
images = sim.sample(energy=ref.energy, eta=ref.eta, particle=particle, impact_x=ref.impact_x, impact_y=ref.impact_y)
np.save(sys.argv[3], images)
"""

VIEWS = ("all cells", "central 7x7", "outside central 7x7", "hit pattern", "high-level features")


def simulate(checkout: Path, reference: Path, out: Path, seed: int) -> np.ndarray:
    subprocess.run([sys.executable, "-c", _CHILD, str(checkout.resolve()), str(reference), str(out), str(seed)], check=True)
    return np.load(out)


def summary(images: np.ndarray, energy: np.ndarray, threshold: float) -> dict[str, float]:
    r = images.sum(axis=(1, 2)) / energy
    return {"response": float(r.mean()), "sigma_over_mu": float(r.std() / r.mean()), "cells_above_threshold": float((images >= threshold).sum(axis=(1, 2)).mean())}


def main() -> None:
    from fastcalo import datasets
    from fastcalo.detector import DEFAULT_DETECTOR
    from fastcalo.validation.diagnosis import boosted_auc, view_inputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the old version (its repository root)")
    parser.add_argument("--new", type=Path, default=Path("."))
    parser.add_argument("--reference", type=Path, nargs="+", required=True, help="held-out Monte Carlo files (HDF5 or ROOT)")
    parser.add_argument("--seed", type=int, default=1, help="the simulators' seed")
    parser.add_argument("--classifier-seeds", type=int, default=3)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    threshold = DEFAULT_DETECTOR.response.threshold
    result: dict[str, object] = {"old": str(args.old), "new": str(args.new), "seed": args.seed, "files": {}}
    for path in args.reference:
        ref = datasets.read(path)
        with tempfile.TemporaryDirectory() as tmp:
            images = {name: simulate(checkout, path, Path(tmp) / f"{name}.npy", args.seed) for name, checkout in (("old", args.old), ("new", args.new))}
        samples = {"mc": ref, **{k: datasets.ShowerData(energy=ref.energy, eta=ref.eta, phi=ref.phi, pdgid=ref.pdgid, impact_x=ref.impact_x, impact_y=ref.impact_y, images=v) for k, v in images.items()}}
        row: dict[str, object] = {"showers": len(ref.energy), **{f"summary_{k}": summary(v.images, ref.energy, threshold) for k, v in samples.items()}}
        for view in VIEWS:
            x = {k: view_inputs(v, view) for k, v in samples.items()}
            for a, b in (("old", "new"), ("mc", "old"), ("mc", "new")):
                aucs = [boosted_auc(x[a], x[b], seed=s) for s in range(args.classifier_seeds)]
                row[f"auc {a} vs {b}: {view}"] = {"mean": float(np.mean(aucs)), "spread": float(np.std(aucs)), "seeds": aucs}
                print(f"{path.name}  {view:22s} {a} vs {b}: {np.mean(aucs):.4f} +- {np.std(aucs):.4f}", flush=True)
        for k in samples:
            print(f"{path.name}  {k}: {row[f'summary_{k}']}", flush=True)
        result["files"][path.name] = row  # type: ignore[index]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
