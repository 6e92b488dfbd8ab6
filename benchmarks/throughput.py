"""Generation throughput: showers per second against batch size, beside the reference MC and the
machine's own matrix-multiply peak, all measured in this one run.

    python benchmarks/throughput.py --label dev_2cores
    python benchmarks/throughput.py --model runs/default/best --device cuda --label h100

For each batch size the model generates showers for random conditions drawn like the training
data (log-uniform 1-100 GeV, |eta| < 1.5, photons/electrons/positrons, impact point in the central
cell) until at least ``--min-seconds`` have passed; the generator's dense-layer FLOPs per shower give
the achieved GFLOP/s, compared with a float32 GEMM (n x n times n x n) timed on the same device.
The reference MC is timed on the same conditions on all CPU cores (numba threads), so the speed-up
is a ratio of two numbers from the same run. JSON and a PNG go to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from _machine import cpu_model  # benchmarks/_machine.py, beside this script

HERE = Path(__file__).resolve().parent


def conditions(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "energy": np.exp(rng.uniform(np.log(1.0), np.log(100.0), n)),
        "eta": rng.uniform(-1.5, 1.5, n),
        "pdgid": rng.choice([22, 11, -11], n).astype(np.int32),
        "impact_x": rng.uniform(0.0, 10.0, n),
        "impact_y": rng.uniform(0.0, 10.0, n),
    }


def generator_flops(model: torch.nn.Module) -> float:
    """2 x multiply-adds of the generator's and energy model's linear layers, per shower."""
    total = 0
    for module in (model.generator, model.energy):
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                total += 2 * layer.in_features * layer.out_features
    return float(total)


def gemm_gflops(device: torch.device, n: int, min_seconds: float) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        torch.mm(a, b)
        reps += 1
        sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    from fastcalo import mc
    from fastcalo.model import load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("fastcalo/models/default"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384, 65536])
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--mc-showers", type=int, default=400, help="reference-MC showers to time (all cores)")
    parser.add_argument("--label", default=platform.node())
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = load(args.model).to(device)
    model.eval()
    flops = generator_flops(model)
    rows = []
    for batch in args.batch_sizes:
        c_np = conditions(batch, seed=batch)
        c = model.conditions.encode(**c_np).to(device)
        e = torch.as_tensor(c_np["energy"], dtype=torch.float32, device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        z = torch.randn((batch, model.config.latent_dim), generator=gen, device=device)
        u = torch.rand((batch,), generator=gen, device=device)
        noise = torch.randn((batch, model.detector.n_total_cells), generator=gen, device=device) if model.config.cell_noise else None
        model.generate(c, e, z, u, noise)  # warm-up
        sync(device)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.min_seconds:
            z.normal_(generator=gen)
            u.uniform_(generator=gen)
            if noise is not None:
                noise.normal_(generator=gen)
            images = model.generate(c, e, z, u, noise)
            if device.type == "cuda":
                images = images.cpu()  # showers are only useful on the host
            n += batch
        sync(device)
        rate = n / (time.perf_counter() - start)
        rows.append({"batch_size": batch, "showers_per_s": rate, "gflops": rate * flops / 1e9})
        print(json.dumps(rows[-1]), flush=True)

    peak = gemm_gflops(device, 4096 if device.type == "cuda" else 2048, args.min_seconds)
    c_np = conditions(args.mc_showers, seed=7)
    mc.simulate(c_np["energy"][:4], c_np["eta"][:4], c_np["pdgid"][:4], seed=1)  # compile
    start = time.perf_counter()
    mc.simulate(c_np["energy"], c_np["eta"], c_np["pdgid"], impact_x=c_np["impact_x"], impact_y=c_np["impact_y"], seed=1)
    mc_rate = args.mc_showers / (time.perf_counter() - start)
    best = max(rows, key=lambda r: r["showers_per_s"])
    result = {
        "label": args.label,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "model": str(args.model),
        "generator_flops_per_shower": flops,
        "gemm_peak_gflops": peak,
        "rows": [dict(r, fraction_of_gemm_peak=r["gflops"] / peak) for r in rows],
        "mc_showers_per_s_all_cores": mc_rate,
        "mc_conditions": "log-uniform 1-100 GeV, |eta| < 1.5, photons/electrons/positrons",
        "best_showers_per_s": best["showers_per_s"],
        "speed_up_over_mc": best["showers_per_s"] / mc_rate,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"throughput_{args.label}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["batch_size"] for r in rows], [r["showers_per_s"] for r in rows], "o-", label=f"fastcalo ({result['device']})")
    ax.axhline(mc_rate, color="k", ls="--", label=f"reference MC, {os.cpu_count()} cores")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("showers / s")
    ax.set_title(f"{args.label}: speed-up {result['speed_up_over_mc']:.0f}x, GEMM peak {peak:.0f} GFLOP/s", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.results / f"throughput_{args.label}.png", dpi=100)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
