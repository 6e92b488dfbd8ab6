"""ONNX Runtime (CPU) throughput of the exported default model, beside torch's Engine in the same run.

    python benchmarks/onnx_speed.py --label dev_2cores
    python benchmarks/onnx_speed.py --model runs/default/best --batch 4096 --repeats 9 --label mine

The model is exported with ``fastcalo.export.export_onnx`` into a temporary file and run by an
ONNX Runtime CPU session with as many intra-op threads as torch uses. Conditions are drawn like
the training data (log-uniform 1-100 GeV, |eta| < 1.5, photons, electrons and positrons, impact
point uniform in the central cell). Each repetition draws the graph's random inputs with numpy
(z and the cell noise standard normal, u uniform; timed on their own), then times
``session.run`` alone, then ``Engine.simulate`` on the same particles (torch: its random streams,
condition encoding and generation, all included, as ``Simulator.sample`` gets them), and
``ShowerModel.generate`` on pre-drawn torch inputs (the graph's work in torch, no draws), so the
three are interleaved and a drift of the shared machine touches all alike. After ``--warm-up``
untimed rounds, the medians over ``--repeats`` rounds are reported in showers per second, with
the ratios. JSON goes to ``benchmarks/results/onnx_speed_<label>.json``.

``onnx_rate`` (the session alone, random draws excluded) is what ``benchmarks/throughput.py`` may
call for its table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _machine import cpu_model  # benchmarks/_machine.py, beside this script

HERE = Path(__file__).resolve().parent


def conditions(n: int, seed: int) -> dict[str, np.ndarray]:
    """Particles drawn like the training data, in the graph's input types (float32, int32)."""
    rng = np.random.default_rng(seed)
    return {
        "energy": np.exp(rng.uniform(np.log(1.0), np.log(100.0), n)).astype(np.float32),
        "eta": rng.uniform(-1.5, 1.5, n).astype(np.float32),
        "pdgid": rng.choice([22, 11, -11], n).astype(np.int32),
        "impact_x": rng.uniform(0.0, 10.0, n).astype(np.float32),
        "impact_y": rng.uniform(0.0, 10.0, n).astype(np.float32),
    }


def draw(session: Any, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The random inputs the session's graph declares: z and noise standard normal, u uniform."""
    out = {}
    for arg in session.get_inputs():
        if arg.name in ("z", "noise"):
            out[arg.name] = rng.standard_normal((n, int(arg.shape[1])), dtype=np.float32)
        elif arg.name == "u":
            out[arg.name] = rng.random(n, dtype=np.float32)
    return out


def make_session(model_dir: Path | None, directory: Path, threads: int) -> Any:  # an onnxruntime.InferenceSession
    import onnxruntime as ort

    from fastcalo.export import export_onnx

    path = export_onnx(directory / "model.onnx", model="default" if model_dir is None else model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_rate(model_dir: Path | None = None, *, batch: int = 4096, repeats: int = 7, warm_up: int = 2, threads: int | None = None) -> float:
    """Showers per second of ONNX Runtime's CPU session on the exported model (default: the
    shipped one) at batch ``batch``: the median over ``repeats`` runs after ``warm_up`` runs, the
    random inputs drawn beforehand (not included), ``threads`` intra-op threads (default: torch's)."""
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(model_dir, Path(tmp), threads or torch.get_num_threads())
        feed = dict(conditions(batch, seed=batch), **draw(session, batch, np.random.default_rng(0)))
        for _ in range(warm_up):
            session.run(["showers"], feed)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(["showers"], feed)
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> None:
    from fastcalo.engine import Engine, Particles
    from fastcalo.model import DEFAULT_MODEL, load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warm-up", type=int, default=2)
    parser.add_argument("--label", default=platform.node())
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()

    import onnxruntime as ort

    threads = torch.get_num_threads()
    model = load(args.model or DEFAULT_MODEL)
    model.eval()
    n = args.batch
    c = conditions(n, seed=n)
    table = Particles.of(energy=c["energy"], eta=c["eta"], pdgid=c["pdgid"], impact_x=c["impact_x"], impact_y=c["impact_y"])
    engine = Engine(model, seed=1, batch_size=n)
    encoded, e_inc = model.conditions.encode(**c), torch.as_tensor(c["energy"])
    gen = torch.Generator().manual_seed(2)
    z = torch.randn((n, model.generator.n_inputs), generator=gen)
    u = torch.rand(n, generator=gen)
    noise = torch.randn((n, model.detector.n_total_cells), generator=gen) if model.config.cell_noise else None
    rng = np.random.default_rng(3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(args.model, Path(tmp), threads)
        for k in range(args.warm_up + args.repeats):
            start = time.perf_counter()
            randoms = draw(session, n, rng)
            draw_s = time.perf_counter() - start
            feed = dict(c, **randoms)
            start = time.perf_counter()
            session.run(["showers"], feed)
            run_s = time.perf_counter() - start
            start = time.perf_counter()
            engine.simulate(table, first_index=k * n)
            engine_s = time.perf_counter() - start
            start = time.perf_counter()
            model.generate(encoded, e_inc, z, u, noise)
            generate_s = time.perf_counter() - start
            if k >= args.warm_up:
                rows.append({"draw_s": draw_s, "onnx_run_s": run_s, "engine_s": engine_s, "torch_generate_s": generate_s})
                print(json.dumps(rows[-1]), flush=True)

    def rate(key: str) -> float:
        return n / statistics.median(r[key] for r in rows)

    onnx = rate("onnx_run_s")
    with_draws = n / statistics.median(r["draw_s"] + r["onnx_run_s"] for r in rows)
    result = {
        "label": args.label,
        "device": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
        "model": str(args.model or "default"),
        "batch": n,
        "repeats": args.repeats,
        "warm_up": args.warm_up,
        "rows": rows,
        "onnx_showers_per_s": onnx,
        "onnx_showers_per_s_note": "session.run alone, median; the random inputs drawn beforehand (numpy), not included",
        "numpy_draws_showers_per_s": rate("draw_s"),
        "onnx_with_draws_showers_per_s": with_draws,
        "engine_showers_per_s": rate("engine_s"),
        "engine_showers_per_s_note": "Engine.simulate: its random streams, condition encoding and generation, all included",
        "torch_generate_showers_per_s": rate("torch_generate_s"),
        "onnx_over_torch_generate": onnx / rate("torch_generate_s"),
        "onnx_with_draws_over_engine": with_draws / rate("engine_s"),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    args.results.mkdir(parents=True, exist_ok=True)
    target = args.results / f"onnx_speed_{args.label}.json"
    tmp_target = target.with_suffix(".json.tmp")
    tmp_target.write_text(json.dumps(result, indent=1) + "\n")
    tmp_target.replace(target)


if __name__ == "__main__":
    main()
