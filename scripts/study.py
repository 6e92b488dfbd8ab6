"""Training choices compared at equal cost: short runs of one base config with overrides.

    python scripts/study.py --config fastcalo/models/default/train.toml --steps 2000 \
        --variant v2 \
        --variant photostatistics model.photostatistics=true \
        --variant mbstd model.critic_minibatch_std=4 \
        --reference data/fixed-photon-15GeV-eta0.4.h5 -o validation/fluctuations

Each variant is the base config with ``table.key=value`` overrides (values in TOML syntax) and
``train.steps`` set to ``--steps``; it trains in ``<runs>/<prefix>-<name>`` (resumed if it exists,
so a variant can be trained by another process: ``--train-only NAME``). Every variant is then
judged on its final model, through ``fastcalo.Simulator`` (the path users get):

- the training monitor's records at every evaluation (the low-level classifier AUC on the
  monitor's held-out showers, the score), so the learning curves can be compared;
- the validation report's fixed-condition diagnosis (``fastcalo.validation.diagnosis``): its
  gradient-boosted classifier on cells / E_inc of the ``--reference`` MC showers (one particle,
  energy and eta, impact points uniform in the central cell) against as many generated at the
  same conditions, the mean-response and core-resolution ratios, and the cell standard-deviation
  ratio (generated / MC) in the core and outside the central 7x7.

Writes ``summary.json`` and ``README-table.md`` (a markdown table) to ``-o``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any


def overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["model.photostatistics=true", ...]`` -> ``{"model": {"photostatistics": True}}``."""
    tables: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        table, _, name = key.partition(".")
        if not name or not value:
            msg = f"an override is table.key=value, got {item!r}"
            raise ValueError(msg)
        tables.setdefault(table, {})[name] = tomllib.loads(f"v = {value}")["v"]
    return tables


def train_variant(base: Path, name: str, items: list[str], steps: int, run_dir: Path, threads: int) -> float:
    import torch

    from fastcalo.train import load_config, train

    if threads:
        torch.set_num_threads(threads)
    tables = overrides(items)
    tables.setdefault("train", {})["steps"] = steps
    config = load_config(base, **tables)
    start = time.perf_counter()
    train(config, run_dir, progress=False)
    seconds = time.perf_counter() - start
    print(f"{name}: trained in {seconds:.0f} s", flush=True)
    return seconds


def fixed_condition(model_dir: Path, reference: Path, seed: int) -> dict[str, Any]:
    """The report's fixed-condition diagnosis (:func:`fastcalo.validation.diagnosis.diagnose`) of
    showers drawn through ``fastcalo.Simulator`` at the reference's one condition."""
    import numpy as np

    import fastcalo
    from fastcalo import datasets
    from fastcalo.validation.diagnosis import diagnose

    mc = datasets.read(reference)
    energy, eta, pdgid = float(mc.energy[0]), float(mc.eta[0]), int(mc.pdgid[0])
    if not (np.all(mc.energy == energy) and np.all(mc.eta == eta) and np.all(mc.pdgid == pdgid)):
        msg = f"{reference} must hold one condition (one energy, eta and particle)"
        raise ValueError(msg)
    sim = fastcalo.Simulator(model_dir, device="cpu", seed=seed)
    # the MC's own impact points (uniform in the central cell), so that the two samples are twins
    images = sim.sample(energy=energy, eta=eta, particle=pdgid, n=len(mc), impact_x=mc.impact_x, impact_y=mc.impact_y)
    gen = datasets.ShowerData(energy=mc.energy, eta=mc.eta, phi=mc.phi, pdgid=mc.pdgid, impact_x=mc.impact_x, impact_y=mc.impact_y, images=images)
    result = diagnose(mc, gen, views=())
    point = result.points[0]
    f = result.fluctuations
    return {
        "energy": energy, "eta": eta, "pdgid": pdgid, "n": len(mc), "fixed_auc": point.auc,
        "response_ratio": point.response_ratio, "core_ratio": point.resolution_ratio,
        "core_std_ratio": None if f is None else f.core_std_ratio, "outside_std_ratio": None if f is None else f.outside_std_ratio,
        "outside_x_std_ratio": None if f is None else f.outside_x_std_ratio, "outside_y_std_ratio": None if f is None else f.outside_y_std_ratio,
    }  # fmt: skip


def records(run_dir: Path) -> list[dict[str, Any]]:
    """The monitor's evaluations of a run (metrics.jsonl, kind "eval")."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: r[k] for k in ("step", "score", "classifier_auc", "seconds") if k in r} for r in rows if r.get("kind") == "eval"]


def draw_curves(curves: dict[str, list[dict[str, Any]]], path: Path, lines: dict[str, float] | None = None) -> None:
    """The monitor's low-level classifier AUC against the generator step, one line per run, and
    horizontal ``lines`` (label -> AUC, e.g. a shipped model's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rows in curves.items():
        points = [(r["step"], r["classifier_auc"]) for r in rows if r.get("classifier_auc") is not None and r["step"] > 0]
        ax.plot(*zip(*points), "o-", ms=3, label=label)
    ax.set_xlabel("generator step")
    ax.set_ylabel("monitor classifier AUC (low-level, 7 000 vs 7 000)")
    for k, (label, value) in enumerate((lines or {}).items()):
        ax.axhline(value, color=f"C{len(curves) + k}", lw=1.2, ls="--", label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="base run config (TOML)")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar=("NAME", "TABLE.KEY=VALUE"), help="a variant: its name and overrides")
    parser.add_argument("--steps", type=int, required=True, help="generator steps of every variant")
    parser.add_argument("--reference", type=Path, help="MC showers at one condition for the fixed-condition classifier")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the run directories go")
    parser.add_argument("--prefix", default="study", help="run directory prefix")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--train-only", metavar="NAME", help="train this variant and stop")
    parser.add_argument("--model", default="best", choices=("best", "final"), help="which model of a run to judge")
    parser.add_argument("--curve", nargs="*", default=[], metavar="LABEL=RUN", help="further runs whose monitor AUC to draw beside the variants' (e.g. a long run)")
    parser.add_argument("--line", nargs="*", default=[], metavar="LABEL=AUC", help="horizontal lines on the learning curves (e.g. a shipped model's monitor AUC)")
    parser.add_argument("-o", "--output", type=Path, help="directory for summary.json, README-table.md and learning-curves.png")
    args = parser.parse_args()

    variants = {v[0]: v[1:] for v in args.variant}
    if args.train_only:
        train_variant(args.config, args.train_only, variants[args.train_only], args.steps, args.runs / f"{args.prefix}-{args.train_only}", args.threads)
        return 0
    if args.output is None or args.reference is None:
        parser.error("-o and --reference are needed unless --train-only")
    summary = []
    # rows of an earlier summary in -o are kept (same variant, overrides, steps and model): judging costs minutes
    earlier_path = args.output / "summary.json"
    earlier = {r["variant"]: r for r in json.loads(earlier_path.read_text())} if earlier_path.is_file() else {}
    for name, items in variants.items():
        run_dir = args.runs / f"{args.prefix}-{name}"
        kept = earlier.get(name)
        if kept and kept["overrides"] == items and kept["steps"] == args.steps and kept["model"] == args.model:
            summary.append(kept)
            continue
        if not (run_dir / "final").is_dir():
            train_variant(args.config, name, items, args.steps, run_dir, args.threads)
        evaluations = records(run_dir)
        last = evaluations[-1]
        row = {"variant": name, "overrides": items, "steps": args.steps, "train_seconds": last.get("seconds")}
        row |= fixed_condition(run_dir / args.model, args.reference, seed=1)
        best = json.loads((run_dir / "best" / "model.json").read_text())["training"]
        row |= {"model": args.model, "best_step": best.get("step"), "final_monitor_auc": last.get("classifier_auc"), "final_score": last.get("score")}
        row["curve"] = evaluations
        summary.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        f"| variant | overrides | fixed-condition AUC ({summary[0]['energy']:g} GeV, eta {summary[0]['eta']:g}) | cell std ratio core / outside 7x7 | monitor AUC (last) | response ratio | core-resolution ratio | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        seconds = "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(
            f"| {r['variant']} | {' '.join(r['overrides']) or '-'} | {r['fixed_auc']:.3f} | {r['core_std_ratio']:.3f} / {r['outside_std_ratio']:.3f} | {r['final_monitor_auc']:.3f} | {r['response_ratio']:.4f} | {r['core_ratio']:.3f} | {seconds} |"
        )
    (args.output / "README-table.md").write_text("\n".join(lines) + "\n")
    curves = {r["variant"]: r["curve"] for r in summary}
    curves |= {label: records(Path(run)) for label, run in (item.split("=", 1) for item in args.curve)}
    draw_curves(curves, args.output / "learning-curves.png", {label: float(v) for label, v in (item.rsplit("=", 1) for item in args.line)})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
