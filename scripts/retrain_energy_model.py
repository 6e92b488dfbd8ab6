"""Give a trained model the energy model that a run config would train (``fastcalo.train.retrain_energy``):
the same generator and critic, the energy model trained from scratch on the config's ``[data]``
showers and its ``[energy_data]`` ones, as ``fastcalo train --config`` would train it before the GAN
(which never sees it while training). Writes a new model directory; the training record takes the
config's ``[energy_data]`` table and notes the retraining (``"energy_model_retrained"``: the
``[train]`` values it used, the torch threads). The energy model is the run's to the bit for a
run trained in one process on the CPU at the same number of threads (``--threads``).

    python scripts/retrain_energy_model.py runs/more-b4 --config fastcalo/models/default/train.toml \\
        -o runs/more-b4-tail --no-critic --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from fastcalo.model import load, save
from fastcalo.train import load_config, retrain_energy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a trained model directory (energy = 'model')")
    parser.add_argument("--config", type=Path, required=True, help="the run config whose energy model to train")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the model directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace the output directory")
    parser.add_argument("--no-critic", action="store_true", help="leave the critic's weights out (model.save(critic=False))")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the config's train.threads, or torch's default)")
    args = parser.parse_args()
    config = load_config(args.config)
    threads = args.threads or config.train.threads
    if threads:
        torch.set_num_threads(threads)
    model = load(args.model)
    try:
        retrain_energy(model, config)
    except ValueError as err:
        parser.error(str(err))
    energy_data = None if config.energy_data is None else dataclasses.asdict(config.energy_data)
    # what trained the new energy model, beside the run's record (its [train] table trained the rest)
    tc = config.train
    retrained = {"seed": tc.seed, "energy_steps": tc.energy_steps, "energy_lr": tc.energy_lr, "energy_batch": tc.energy_batch, "threads": torch.get_num_threads()}
    training = dict(model.metadata.get("training", {}), energy_data=energy_data, energy_model_retrained=retrained)
    path = save(model, args.output, training=training, overwrite=args.overwrite, critic=model.has_critic and not args.no_critic)
    print(f"{path}: energy model trained on [data] and [energy_data] = {energy_data}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
