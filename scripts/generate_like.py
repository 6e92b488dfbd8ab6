"""Generate showers with a trained model for the conditions of an existing shower file.

For validation campaigns: the generated file has the same particles (energy, eta, phi, pdgid,
impact point), in the same order, as the reference, so fastcalo-validate compares like with like.

    python scripts/generate_like.py --model fastcalo/models/default --like data/heldout-points.h5 \
        -o data/generated-points.h5 --seed 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fastcalo import datasets
from fastcalo.model import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--like", type=Path, required=True, help="reference shower file whose conditions to use")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output shower file (.h5 or .root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=65536)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    model = load(args.model)
    start = time.perf_counter()
    n = 0
    with datasets.ShowerWriter(
        args.output, overwrite=args.overwrite, metadata={"generator": "fastcalo.model", "model": str(args.model), "seed": args.seed}
    ) as out:
        for k, chunk in enumerate(datasets.iterate(args.like, step_size=args.batch_size)):
            images = model.sample(
                energy=chunk.energy, eta=chunk.eta, pdgid=chunk.pdgid, impact_x=chunk.impact_x, impact_y=chunk.impact_y,
                seed=args.seed * 1_000_003 + k,
            )
            out.write(datasets.ShowerData(**{**{f: getattr(chunk, f) for f in datasets.CONDITION_COLUMNS}, "images": images}))
            n += len(chunk)
    seconds = time.perf_counter() - start
    print(json.dumps({"showers": n, "seconds": round(seconds, 2), "threads": torch.get_num_threads(), "output": str(args.output)}))


if __name__ == "__main__":
    main()
