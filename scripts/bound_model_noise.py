"""Save a model with its stochastic output layer's noise bounded (``ModelConfig.generator_noise_max``):
the same weights, a new model directory (the bound is part of the model's physics record, so
model.json cannot simply be edited).

    python scripts/bound_model_noise.py fastcalo/models/default 5 -o runs/default-b5
    python scripts/bound_model_noise.py fastcalo/models/default none -o runs/default-unbounded
    python scripts/bound_model_noise.py runs/critic-conv/best 4 -o runs/conv-b4 --no-critic

The training record is kept, with the bound noted (``"noise_bound_set_after_training"``; ``none``
removes the bound: the model as trained).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fastcalo.model import ShowerModel, load, save


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a model directory (generator_noise = 'cells')")
    parser.add_argument("bound", help="the largest noise term sigma g of a cell's logit, > 0, or 'none' (unbounded)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the model directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace the output directory")
    parser.add_argument("--no-critic", action="store_true", help="leave the critic's weights out (a model to generate with; model.save(critic=False))")
    args = parser.parse_args()
    model = load(args.model)
    try:
        bound = None if args.bound.lower() == "none" else float(args.bound)
        config = dataclasses.replace(model.config, generator_noise_max=bound)
    except ValueError as err:
        parser.error(str(err))
    bounded = ShowerModel(config, preprocessing=model.preprocessing, detector=model.detector)
    bounded.load_state_dict(model.state_dict())
    bounded.has_critic = model.has_critic  # an untrained critic is not saved as if it were one
    training = dict(model.metadata.get("training", {}), noise_bound_set_after_training=bound)
    path = save(bounded, args.output, training=training, overwrite=args.overwrite, critic=not args.no_critic)
    print(f"{path}: generator_noise_max = {bound}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
