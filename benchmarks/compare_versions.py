"""Simulator.sample throughput of two checkouts of fastcalo, interleaved in one run.

On a shared machine the absolute rate drifts by tens of percent from one minute to the next, so a
change of speed is measured as a ratio: each round times the old and the new checkout one after the
other (each in its own process, ``--seconds`` of batches of ``--batch-size`` photons, log-uniform
1-100 GeV, |eta| < 1.5, the shipped default model of each checkout), and the result is the ratio of
the rates summed over the rounds.

With ``--stage kernel`` each round times the CPU engine's numba kernel alone
(``fastcalo._response.generate``, the end of generation after the networks) on one thread, on the
networks' outputs for one block of photons (``fastcalo.engine.BLOCK``, whatever ``--batch-size``;
computed once per process, the same numbers in both checkouts), in showers/s: a change to the
kernel that the whole pipeline's noise would hide.

    git worktree add /tmp/old <commit>
    python benchmarks/compare_versions.py --old /tmp/old --new . --label dev_2cores
    python benchmarks/compare_versions.py --old /tmp/old --new . --stage kernel --label kernel_dev_1thread
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_TIMER = """
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import fastcalo
assert fastcalo.__file__.startswith(sys.argv[1]), fastcalo.__file__
n, seconds = int(sys.argv[2]), float(sys.argv[3])
sim = fastcalo.Simulator(device="cpu", batch_size=n, seed=1)
rng = np.random.default_rng(0)
kwargs = dict(energy=np.exp(rng.uniform(0.0, np.log(100.0), n)), eta=rng.uniform(-1.5, 1.5, n), particle="photon")
sim.sample(**kwargs)
k, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    sim.sample(**kwargs, first_index=k * n)
    k += 1
print(json.dumps(k * n / (time.perf_counter() - start)))
"""

_KERNEL_TIMER = """
import json, sys, time
import numpy as np
import torch
sys.path.insert(0, sys.argv[1])
import fastcalo
from fastcalo._response import ResponseKernel, generate
from fastcalo.engine import BLOCK, Engine
from fastcalo.model import DEFAULT_MODEL, load
assert fastcalo.__file__.startswith(sys.argv[1]), fastcalo.__file__
torch.set_num_threads(1)
n, seconds = BLOCK, float(sys.argv[3])  # one block, as the engine hands it to the kernel
model = load(DEFAULT_MODEL)
rng = np.random.default_rng(0)
energy = np.exp(rng.uniform(0.0, np.log(100.0), n))
c = model.conditions.encode(energy=energy, eta=rng.uniform(-1.5, 1.5, n), pdgid=np.full(n, 22), impact_x=np.full(n, 5.0), impact_y=np.full(n, 5.0))
draws = Engine(model, seed=1)._draws(range(1), ())[0]
with torch.inference_mode():
    outputs, total = model.outputs(c, torch.as_tensor(energy, dtype=torch.float32), draws.z, draws.u)
outputs, total = outputs.numpy(), total.numpy()
out = np.empty((n, model.detector.n_total_cells), dtype=np.float32)
kernel = ResponseKernel.of(model)
generate(outputs, total, out, range(n), draws.key, kernel)
k, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    generate(outputs, total, out, range(n), draws.key, kernel)
    k += 1
print(json.dumps(k * n / (time.perf_counter() - start)))
"""


def rate(checkout: Path, batch: int, seconds: float, stage: str = "sample") -> float:
    timer = _KERNEL_TIMER if stage == "kernel" else _TIMER
    out = subprocess.run([sys.executable, "-c", timer, str(checkout.resolve()), str(batch), str(seconds)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the old version (its repository root)")
    parser.add_argument("--new", type=Path, default=Path("."), help="checkout of the new version")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stage", choices=("sample", "kernel"), default="sample", help="time Simulator.sample (default) or the CPU kernel alone on one thread")
    parser.add_argument("--label", default="local")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()

    rounds = []
    for _ in range(args.rounds):
        row = {"old": rate(args.old, args.batch_size, args.seconds, args.stage), "new": rate(args.new, args.batch_size, args.seconds, args.stage)}
        rounds.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "label": args.label,
        "old": str(args.old),
        "new": str(args.new),
        "batch_size": args.batch_size,
        "stage": args.stage,
        "rounds": rounds,
        "new_over_old": sum(r["new"] for r in rounds) / sum(r["old"] for r in rounds),
    }
    print(json.dumps({"new_over_old": result["new_over_old"]}))
    args.results.mkdir(parents=True, exist_ok=True)
    target = args.results / f"compare_versions_{args.label}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(target)


if __name__ == "__main__":
    main()
