"""Peak memory and speed of ``fastcalo simulate`` against its ``--step-size``.

Writes a NanoAOD-style file of ``--n-events`` events (:func:`fastcalo.particles.write_example`:
about 2 photons per event) and runs ``fastcalo simulate FILE -o OUT --collection Photon`` on it in
a fresh subprocess per step size, measuring the child's peak resident memory (``ru_maxrss`` of
``os.wait4``), its wall time and its CPU time (user + system; start-up included in both, the
same for every step size). On a shared machine the wall time follows the other jobs; the CPU time
much less so. A step size may be given more than once (repeats, interleaved). The default step
size should be the fastest whose peak memory stays under about 1 GB.

Results are printed and saved as JSON (``--output``, default
benchmarks/results/step_size_<label>.json).

    python benchmarks/step_size.py --label dev_2cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import uproot

from _machine import cpu_model  # benchmarks/_machine.py, beside this script
from fastcalo.particles import write_example

STEP_SIZES = (5_000, 10_000, 20_000, 50_000, 100_000)


def run_once(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (GB) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode() if child.stderr is not None else ""
    if child.returncode != 0:
        msg = f"{' '.join(command)} failed ({child.returncode}): {stderr[-2000:]}"
        raise RuntimeError(msg)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-events", type=int, default=200_000, help="events in the input file (default 200000)")
    parser.add_argument("--step-sizes", type=int, nargs="+", default=list(STEP_SIZES))
    parser.add_argument("--format", choices=("root", "h5"), default="root", help="output format (default root)")
    parser.add_argument("--label", default="dev", help="result file suffix, e.g. dev_2cores")
    parser.add_argument("--note", default="", help="free text saved with the results (e.g. 'machine shared')")
    args = parser.parse_args(argv)

    out_path = Path(__file__).parent / "results" / f"step_size_{args.label}.json"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        events = write_example(Path(tmp) / "events.root", n_events=args.n_events, seed=1)
        with uproot.open(events) as f:
            n_photons = int(f["Events"]["nPhoton"].array(library="np").sum())
        print(f"{args.n_events} events, {n_photons} photons")
        for step in args.step_sizes:
            output = Path(tmp) / f"showers.{args.format}"
            command = [
                sys.executable, "-m", "fastcalo", "simulate", str(events), "-o", str(output), "--collection", "Photon",
                "--step-size", str(step), "--device", "cpu", "--seed", "1", "--overwrite", "--no-progress",
            ]  # fmt: skip
            wall, cpu, peak_gb = run_once(command)
            row = {
                "step_size": step, "wall_s": wall, "showers_per_s": n_photons / wall,
                "cpu_s": cpu, "showers_per_cpu_s": n_photons / cpu, "peak_rss_gb": peak_gb,
            }  # fmt: skip
            rows.append(row)
            print(
                f"step {step:7d}: {wall:7.1f} s, {n_photons / wall:8.0f} showers/s, "
                f"{n_photons / cpu:8.0f} showers per CPU second, peak RSS {peak_gb:.2f} GB"
            )
            output.unlink()
    result = {
        "benchmark": "step_size",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_model(),
        "cores_visible": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "n_events": args.n_events,
        "n_photons": n_photons,
        "output_format": args.format,
        "command": "fastcalo simulate events.root -o showers.<format> --collection Photon --step-size N --device cpu",
        "note": args.note,
        "rows": rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
