"""The energy model alone: how well do its quantiles give the response and the resolution?

Trains only the energy model (it is independent of the GAN: the generator is conditioned on the
real E_dep / E_inc while training) on a run config's training showers, for several variants, and
compares mean, sigma/mu and the core width (half the 16-84 % interval) of E_dep / E_inc per energy
point with held-out MC showers.

    python scripts/energy_model_study.py --config fastcalo/models/default/train.toml \
        --heldout data/heldout-points.h5 -o validation/energy-model-study
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from fastcalo import datasets
from fastcalo.detector import DEFAULT_DETECTOR
from fastcalo.model import ModelConfig, Preprocessing, ShowerModel
from fastcalo.train import cosine_lr, dataset_path, load_config

VARIANTS = {
    "uniform-100 (shipped v1)": ({}, 3000),
    "logit-100, tail 1e-3": ({"quantile_tail": 1e-3}, 3000),
    "logit-100, tail 1e-3, 8000 steps": ({"quantile_tail": 1e-3}, 8000),
    "logit-100, tail 1e-3, 12000 steps (shipped v3)": ({"quantile_tail": 1e-3}, 12000),
    "logit-100, tail 1e-4, 12000 steps": ({"quantile_tail": 1e-4}, 12000),
    "logit-200, tail 1e-4, 12000 steps": ({"quantile_tail": 1e-4, "n_quantiles": 200}, 12000),
}


def summary(r: np.ndarray) -> dict[str, float]:
    q16, q84 = np.quantile(r, [0.16, 0.84])
    return {"mean": float(r.mean()), "resolution": float(r.std(ddof=1) / r.mean()), "core": float((q84 - q16) / 2 / r.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="run the variants whose names contain one of these")
    parser.add_argument("--name", default="energy_model_study", help="the JSON's file name, without .json")
    args = parser.parse_args()

    config = load_config(args.config)
    data = datasets.read(dataset_path(config.data, config.data_dir))
    held = datasets.read(args.heldout)
    r = data.images.sum(axis=(1, 2), dtype=np.float64) / data.energy
    pre = Preprocessing.for_detector(DEFAULT_DETECTOR, r_mean=float(r.mean()), r_std=float(r.std()))
    r_held = held.images.sum(axis=(1, 2), dtype=np.float64) / held.energy
    points = np.unique(held.energy)
    truth = {float(e): summary(r_held[held.energy == e]) for e in points}
    results = {}
    for name, (changes, steps) in VARIANTS.items():
        if args.only is not None and not any(part in name for part in args.only):
            continue
        torch.manual_seed(args.seed)
        model = ShowerModel(dataclasses.replace(config.model, **changes), preprocessing=pre)
        c = model.conditions.encode(energy=data.energy, eta=data.eta, pdgid=data.pdgid, impact_x=data.impact_x, impact_y=data.impact_y)
        code = pre.encode_r(torch.as_tensor(r, dtype=torch.float32))
        g = torch.Generator().manual_seed(args.seed)
        model.energy.start_from(code)
        opt = torch.optim.Adam(model.energy.parameters(), lr=config.train.energy_lr)
        for step in range(steps):
            opt.param_groups[0]["lr"] = cosine_lr(config.train.energy_lr, step, steps)
            index = torch.randint(len(code), (config.train.energy_batch,), generator=g)
            loss = model.energy.loss(c[index], code[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
        ch = model.conditions.encode(energy=held.energy, eta=held.eta, pdgid=held.pdgid, impact_x=held.impact_x, impact_y=held.impact_y)
        with torch.no_grad():
            drawn = pre.decode_r(model.energy.sample(ch, torch.rand(len(held), generator=g))).numpy()
        rows = []
        for e in points:
            s, t = summary(drawn[held.energy == e]), truth[float(e)]
            rows.append({"energy": float(e), "response_ratio": s["mean"] / t["mean"], "resolution_ratio": s["resolution"] / t["resolution"], "core_ratio": s["core"] / t["core"]})
        results[name] = rows
        print(name)
        for row in rows:
            print("  " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.name}.json").write_text(json.dumps({"truth": truth, "variants": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
