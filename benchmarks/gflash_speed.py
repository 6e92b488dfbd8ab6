"""Speed of the parametrised peer against the default GAN and the reference MC, in one run.

Each round times, one after the other in this process, ``Simulator(model="gflash").sample`` and
``Simulator().sample`` (the shipped default, CPU) on ``--seconds`` of batches of ``--batch-size``
photons (log-uniform 1-100 GeV, |eta| < 1.5: the continuous validation sample's conditions), and
``fastcalo.mc.simulate`` on ``--n-mc`` such photons. Rates are showers per second on the threads
numba and torch are given (set NUMBA_NUM_THREADS / torch threads before running); the ratios are
of rates summed over the rounds, which a shared machine's drift affects least.

    python benchmarks/gflash_speed.py --label dev_2cores

``measure`` is the function other benchmark scripts call.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch

import fastcalo
from fastcalo import mc
from _machine import cpu_model  # benchmarks/_machine.py, beside this script

HERE = Path(__file__).resolve().parent


def _conditions(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"energy": np.exp(rng.uniform(0.0, np.log(100.0), n)), "eta": rng.uniform(-1.5, 1.5, n)}


def _sample_rate(sim: Any, batch: int, seconds: float) -> float:
    kwargs = _conditions(batch, 0)
    sim.sample(**kwargs, particle="photon")  # compile / warm up
    k, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sim.sample(**kwargs, particle="photon", first_index=k * batch)
        k += 1
    return k * batch / (time.perf_counter() - start)


def _mc_rate(n: int) -> float:
    c = _conditions(n, 1)
    mc.simulate(c["energy"][:2], c["eta"][:2], "photon", seed=1)  # compile
    start = time.perf_counter()
    mc.simulate(c["energy"], c["eta"], "photon", seed=1)
    return n / (time.perf_counter() - start)


def measure(*, batch_size: int = 4096, seconds: float = 5.0, n_mc: int = 300, rounds: int = 3) -> dict[str, Any]:
    """Showers per second of the peer, the default GAN and the MC, interleaved over ``rounds``.

    Returns:
        ``rounds`` (one dict of rates per round) and ``gflash``, ``gan``, ``mc`` (rates summed
        over the rounds, divided by their number), ``gan_over_gflash``, ``gflash_over_mc``.
    """
    peer = fastcalo.Simulator(model="gflash", seed=1, batch_size=batch_size)
    gan = fastcalo.Simulator(device="cpu", seed=1, batch_size=batch_size)
    table = []
    for _ in range(rounds):
        row = {"gflash": _sample_rate(peer, batch_size, seconds), "gan": _sample_rate(gan, batch_size, seconds), "mc": _mc_rate(n_mc)}
        table.append(row)
        print(json.dumps(row), flush=True)
    mean = {key: sum(r[key] for r in table) / len(table) for key in ("gflash", "gan", "mc")}
    return {
        "rounds": table,
        **mean,
        "gan_over_gflash": mean["gan"] / mean["gflash"],
        "gflash_over_mc": mean["gflash"] / mean["mc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--n-mc", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", default="local")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    result = {
        "benchmark": "gflash_speed",
        "label": args.label,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_model(),
        "numba_threads": numba.get_num_threads(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "sample": "photons, log-uniform 1-100 GeV, |eta| < 1.5",
        **measure(batch_size=args.batch_size, seconds=args.seconds, n_mc=args.n_mc, rounds=args.rounds),
    }
    print(json.dumps({k: result[k] for k in ("gflash", "gan", "mc", "gan_over_gflash", "gflash_over_mc")}))
    args.results.mkdir(parents=True, exist_ok=True)
    target = args.results / f"gflash_speed_{args.label}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(target)


if __name__ == "__main__":
    main()
