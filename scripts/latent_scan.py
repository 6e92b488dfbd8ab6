"""Latent dimension and mode collapse: short training runs that differ only in the latent size.

    python scripts/latent_scan.py --config validation/loss-comparison/wgan-gp-cell-noise.toml \
        --latent 2 8 32 128 --reuse 32=runs/cmp-wgan-gp-cell-noise -o validation/latent-scan

Each run starts from ``--config`` with ``[model] latent_dim`` replaced (same data, monitor set,
seeds and steps), trains in ``runs/latent-<d>`` (resumed if it exists) and is summarised from its
metrics log: the monitor score (mean separation power of the high-level features over the energy
points), the shape-only separation power, precision / recall / density / coverage of the feature
vectors (recall and coverage fall when the generator drops modes). ``--reuse D=RUN`` takes an existing
run of the same config for latent size D instead of training it again. Writes ``summary.json``
and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_runs import rows_of  # noqa: E402  (scripts/compare_runs.py, beside this script)


def run_for(latent: int, config_path: Path, runs: Path, reuse: dict[int, Path], threads: int) -> Path:
    if latent in reuse:
        return reuse[latent]
    import torch

    from fastcalo.train import load_config, train

    if threads:
        torch.set_num_threads(threads)
    run_dir = runs / f"latent-{latent}"
    config = load_config(config_path, model={"latent_dim": latent})
    start = time.perf_counter()
    train(config, run_dir, progress=False)
    print(f"latent {latent}: trained in {time.perf_counter() - start:.0f} s", flush=True)
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="base run config (TOML)")
    parser.add_argument("--latent", type=int, nargs="+", required=True, help="latent sizes to compare")
    parser.add_argument("--reuse", nargs="*", default=[], metavar="D=RUN", help="existing run for latent size D")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the new run directories go")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="directory for summary.json")
    args = parser.parse_args()

    reuse = {int(k): Path(v) for k, v in (item.split("=", 1) for item in args.reuse)}
    rows = []
    for latent in args.latent:
        run = run_for(latent, args.config, args.runs, reuse, args.threads)
        for row in rows_of(run, None):
            rows.append({"latent_dim": latent, **row})
    best = {}
    for row in rows:
        if row["step"] == 0:
            continue
        if row["latent_dim"] not in best or row["score"] < best[row["latent_dim"]]["score"]:
            best[row["latent_dim"]] = row
    header = "| latent | step | score | shape SP | n_cells SP | width_y SP | precision | recall | density | coverage |\n" + "|---" * 10 + "|"
    lines = [
        f"| {r['latent_dim']} | {r['step']} | {r['score']:.3f} | {r['shape_sp']:.3f} | {r['n_cells_sp']:.3f} | {r['width_y_sp']:.3f} "
        f"| {r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} | {r['coverage']:.3f} |"
        for r in rows
        if r["step"] != 0
    ]
    print(header)
    print("\n".join(lines))
    print("\nbest evaluation per latent size:")
    for latent, row in sorted(best.items()):
        print(f"  latent {latent}: score {row['score']:.3f} at step {row['step']}, recall {row['recall']:.3f}, coverage {row['coverage']:.3f}")
    args.output.mkdir(parents=True, exist_ok=True)
    summary = {"config": str(args.config), "reused": {str(k): str(v) for k, v in reuse.items()}, "rows": rows, "best": best}
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
