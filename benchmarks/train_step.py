"""Training speed: seconds per generator step of a run config's WGAN-GP game (``n_critic`` critic
steps with the gradient penalty, then one generator step, at the config's batch size), in float32
and under bfloat16 autocast, timed in turn in this one run.

    python benchmarks/train_step.py --label dev_2cores
    python benchmarks/train_step.py --config validation/critic-conv/critic-conv.toml --rounds 6 --label conv

The showers the critic sees as real are reference-MC showers made here (``--showers``, photons
log-uniform in 1-100 GeV); the game is the one ``fastcalo train`` plays (its batch draws and
losses), with plain Adam optimisers; the energy model is left untrained (its speed does not enter
the game). bfloat16 autocast runs the matrix products and convolutions in bfloat16 where torch's CPU
autocast does (float32 weights and optimiser state): worth it only on CPUs with bfloat16 matrix
units (Intel AMX). The result (median of ``--rounds`` rounds of ``--steps`` steps each) goes to
``benchmarks/results/train_step_<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _machine import cpu_model

HERE = Path(__file__).resolve().parent


def main() -> None:
    from fastcalo import mc
    from fastcalo import train as training
    from fastcalo.runconfig import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE.parent / "fastcalo" / "models" / "default" / "train.toml")
    parser.add_argument("--showers", type=int, default=1024, help="reference-MC showers to draw the real batches from")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="generator steps per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--label", default="dev")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    tc = config.train
    energies = np.exp(np.random.default_rng(5).uniform(0.0, np.log(100.0), args.showers))
    data = mc.simulate(energies, 0.3, "photon", seed=5).showers
    device = torch.device("cpu")
    model = training._initial_model(config, data, training.DEFAULT_DETECTOR, device)
    model.energy.requires_grad_(False)
    real = training._Batchable.build(model, data, device)
    rng = torch.Generator().manual_seed(0)
    energy = training._energy_source(model, rng)
    critic_loss, generator_loss = training._losses(config, model, rng)
    critic_adam = torch.optim.Adam(model.critic.parameters(), lr=tc.lr, betas=tc.betas)
    generator_adam = torch.optim.Adam(model.generator.parameters(), lr=tc.lr, betas=tc.betas)
    group = config.model.critic_minibatch_std or 1

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for _ in range(tc.n_critic):
                with torch.no_grad():
                    b = training._draw(model, real, rng, energy, tc.batch_size, group)
                loss, _ = critic_loss(model.critic(b.x, b.c, b.r_real), model.critic(b.fake, b.c, b.r_fake), b)
                critic_adam.zero_grad()
                loss.backward()
                critic_adam.step()
            b = training._draw(model, real, rng, energy, tc.batch_size, group)
            loss, _ = generator_loss(model.critic(b.fake, b.c, b.r_fake), b)
            generator_adam.zero_grad()
            loss.backward()
            generator_adam.step()

    times: dict[str, list[float]] = {"float32": [], "bfloat16_autocast": []}
    for name in times:  # warm-up
        step(name != "float32")
    for _ in range(args.rounds):
        for name in times:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(name != "float32")
            times[name].append((time.perf_counter() - start) / args.steps)
    median = {name: float(np.median(t)) for name, t in times.items()}
    result = {
        "label": args.label,
        "device": cpu_model(),
        "torch_threads": args.threads,
        "torch_version": torch.__version__,
        "config": str(args.config.resolve().relative_to(HERE.parent)) if args.config.resolve().is_relative_to(HERE.parent) else str(args.config),
        "batch_size": tc.batch_size,
        "n_critic": tc.n_critic,
        "seconds_per_generator_step": median,
        "rounds": times,
        "float32_over_bfloat16_autocast": median["float32"] / median["bfloat16_autocast"],
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"train_step_{args.label}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
