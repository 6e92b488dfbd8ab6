"""Speed of the reference Monte Carlo.

Measures, in one run on the same machine:
  1. milliseconds per shower at 1, 10, 50 and 100 GeV (photons and electrons, eta = 0) on one thread;
  2. showers per second on all threads at the same points;
  3. the wall time of a log-uniform 1-100 GeV photon sample over |eta| < 1.5 (a training set)
     of ``--n-production`` showers, written to HDF5 as ``fastcalo mc`` does, and its
     extrapolation to 200 000 showers (the target: 30 minutes on 2 cores).

Results are printed and saved as JSON (``--output``, default benchmarks/results/mc_speed.json).

    python benchmarks/mc_speed.py --n-production 20000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from fastcalo import mc
from _machine import cpu_model  # benchmarks/_machine.py, beside this script

ENERGIES = (1.0, 10.0, 50.0, 100.0)


def time_point(energy: float, particle: str, n: int, threads: int, seed: int) -> float:
    """Seconds per shower at one energy with ``threads`` threads."""
    numba.set_num_threads(threads)
    start = time.perf_counter()
    mc.simulate(np.full(n, energy), 0.0, particle, seed=seed)
    return (time.perf_counter() - start) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds to spend per point and thread count")
    parser.add_argument("--n-production", type=int, default=20_000, help="showers in the production-like sample")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "mc_speed.json")
    args = parser.parse_args(argv)

    all_threads = numba.config.NUMBA_NUM_THREADS
    mc.simulate(np.full(4, 5.0), 0.0, "photon", seed=0)  # compile (or load the cache) first
    rows = []
    for particle in ("photon", "electron"):
        for energy in ENERGIES:
            # size each measurement to the budget from a short probe
            probe = time_point(energy, particle, 8, all_threads, seed=1)
            n_all = max(8, int(args.budget / probe))
            n_one = max(4, int(args.budget / (probe * all_threads)))
            per_shower_one = time_point(energy, particle, n_one, 1, seed=2)
            per_shower_all = time_point(energy, particle, n_all, all_threads, seed=3)
            row = {
                "particle": particle,
                "energy_gev": energy,
                "ms_per_shower_1_thread": 1e3 * per_shower_one,
                f"showers_per_s_{all_threads}_threads": 1.0 / per_shower_all,
                "parallel_speedup": per_shower_one / per_shower_all,
                "n_1_thread": n_one,
                f"n_{all_threads}_threads": n_all,
            }
            rows.append(row)
            print(
                f"{particle:8s} {energy:6.1f} GeV: {row['ms_per_shower_1_thread']:8.2f} ms/shower on 1 thread, "
                f"{1.0 / per_shower_all:9.1f} showers/s on {all_threads} threads (x{row['parallel_speedup']:.2f})"
            )

    numba.set_num_threads(all_threads)
    conditions = mc.sample_conditions(args.n_production, energy=(1.0, 100.0), eta=(-1.5, 1.5), seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        mc.simulate_to_file(conditions, Path(tmp) / "train.h5", seed=7, progress=False)
        production = time.perf_counter() - start
    per_shower = production / args.n_production
    estimate_200k = 200_000 * per_shower
    print(
        f"production: {args.n_production} photons log-uniform 1-100 GeV, |eta| < 1.5, to HDF5: "
        f"{production:.1f} s ({1e3 * per_shower:.2f} ms/shower) on {all_threads} threads -> "
        f"200 000 showers in {estimate_200k / 60:.1f} min (target <= 30 min)"
    )
    result = {
        "benchmark": "mc_speed",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_model(),
        "cores_visible": os.cpu_count(),
        "threads": all_threads,
        "mc_config": mc.MCConfig().__dict__,
        "points": rows,
        "production": {
            "n": args.n_production,
            "seconds": production,
            "ms_per_shower": 1e3 * per_shower,
            "minutes_for_200k": estimate_200k / 60,
            "target_minutes_for_200k": 30,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
