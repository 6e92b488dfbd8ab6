"""Compare training runs by their monitor metrics (metrics.jsonl), as a markdown table and JSON.

    python scripts/compare_runs.py runs/default runs/cmp-bce-7000 --steps 500 1000 2000 4000 6000 7000 \
        -o validation/loss-comparison/summary.json --plot validation/loss-comparison/learning-curves.png

For every run and every requested evaluation step: the monitor's low-level classifier AUC (where
the run logged it), the monitor score (mean separation power of the high-level features over the
energy points), the mean separation power without the response
(shape only), the n_cells and width_y separation powers, precision / recall / density / coverage,
and the wall time to that step; with ``--plot``, the monitor AUC against the step, one line per
run (the drawing of scripts/study.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows_of(run: Path, steps: list[int] | None) -> list[dict[str, float | int | str]]:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] != "eval" or (steps and record["step"] not in steps):
            continue
        sp = record["separation_power"]
        shape = [v for k, v in sp.items() if k != "response"]
        rows.append(
            {
                "run": run.name,
                "step": record["step"],
                "auc": record.get("classifier_auc", float("nan")),
                "score": record["score"],
                "shape_sp": sum(shape) / len(shape),
                "n_cells_sp": sp["n_cells"],
                "width_y_sp": sp["width_y"],
                **{k: record[k] for k in ("precision", "recall", "density", "coverage")},
                "seconds": record["seconds"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--steps", type=int, nargs="*", default=None)
    parser.add_argument("-o", "--output", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the monitor AUC against the step, one line per run")
    parser.add_argument("--line", nargs="*", default=[], metavar="LABEL=AUC", help="horizontal lines on the plot")
    args = parser.parse_args()
    rows = [row for run in args.runs for row in rows_of(run, args.steps)]
    header = "| run | step | monitor AUC | score | shape SP | n_cells SP | width_y SP | precision | recall | density | coverage | wall s |\n" + "|---" * 12 + "|"
    lines = [
        f"| {r['run']} | {r['step']} | {r['auc']:.3f} | {r['score']:.3f} | {r['shape_sp']:.3f} | {r['n_cells_sp']:.3f} | {r['width_y_sp']:.3f} "
        f"| {r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} | {r['coverage']:.3f} | {r['seconds']:.0f} |"
        for r in rows
    ]
    print(header)
    print("\n".join(lines))
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")
    if args.plot:
        from study import draw_curves, records  # this directory is on sys.path when the script runs

        marks = {k: float(v) for k, v in (x.rsplit("=", 1) for x in args.line)}
        draw_curves({run.name: records(run) for run in args.runs}, args.plot, marks)


if __name__ == "__main__":
    main()
