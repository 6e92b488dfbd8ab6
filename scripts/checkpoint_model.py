"""Save a training checkpoint (a copy of a run's ``checkpoint.safetensors``) as a model directory,
so that a step other than the run's ``best/`` and ``final/`` can be simulated and validated.

    python scripts/checkpoint_model.py runs/critic-conv runs/critic-conv-ckpts/step_9000.safetensors -o runs/critic-conv-9k

The architecture, preprocessing and training config come from the run's ``best/`` model (the
same for every step of a run); the weights (raw, not averaged) from the checkpoint, whose step
(stored inside it) goes into the model's ``training`` record.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file

from fastcalo.model import load, save
from fastcalo.rundir import checkpoint_progress


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run directory (its best/ gives the architecture)")
    parser.add_argument("checkpoint", type=Path, help="a checkpoint.safetensors of that run")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the model directory to write")
    args = parser.parse_args()
    model = load(args.run / "best")
    progress = checkpoint_progress(args.checkpoint)
    if progress is None:
        parser.error(f"{args.checkpoint} holds no progress record (written by an older fastcalo?)")
    tensors = load_file(str(args.checkpoint))
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    training = dict(model.metadata.get("training", {}), step=progress["step"], checkpoint=str(args.checkpoint), averaged=False)
    training.pop("score", None)
    path = save(model, args.output, training=training)
    print(f"{path}: step {progress['step']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
