"""Generation throughput: showers per second against batch size, beside the reference MC and the
machine's own matrix-multiply peak, all measured in this one run.

    python benchmarks/throughput.py --label dev_2cores
    python benchmarks/throughput.py --model runs/default/best --device cuda --label h100

For each batch size the model generates showers for random conditions drawn like the training
data (log-uniform 1-100 GeV, |eta| < 1.5, photons/electrons/positrons, impact point in the central
cell) until at least ``--min-seconds`` have passed; the generator's dense-layer FLOPs per shower give
the achieved GFLOP/s, compared with a float32 GEMM (n x n times n x n) timed on the same device.
The reference MC is timed on the same conditions on all CPU cores (numba threads), so the speed-up
is a ratio of two numbers from the same run.

Two end-to-end measurements follow: ``fastcalo.Simulator.sample`` at each batch size (the model
plus the per-particle random streams and the host copy: what a user gets in memory), and
file to file: ``Simulator.run_file`` on a NanoAOD-style file of ``--file-events`` events (written
by ``fastcalo.particles.write_example``; photons) into ROOT, against uproot writing exactly the
same output arrays (already in memory) into a ROOT file in the same chunks: the ratio says how close
simulation gets to the cost of just writing its output. JSON and a PNG go to ``benchmarks/results/``.
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


def simulator_rate(model: Path, device: torch.device, batch: int, min_seconds: float) -> float:
    """Showers/s of ``Simulator.sample`` at one batch size (random streams and host copy included)."""
    from fastcalo import Simulator

    sim = Simulator(model, device=str(device), batch_size=batch, seed=1)
    c = conditions(batch, seed=batch)
    names = {22: "photon", 11: "electron", -11: "positron"}
    particle = np.array([names[int(p)] for p in c["pdgid"]], dtype=object)
    kwargs = {"energy": c["energy"], "eta": c["eta"], "particle": particle, "impact_x": c["impact_x"], "impact_y": c["impact_y"]}
    sim.sample(**kwargs)  # warm-up
    n, index, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        sim.sample(**kwargs, first_index=index)
        n += batch
        index += batch
    return n / (time.perf_counter() - start)


def file_rates(model: Path, device: torch.device, n_events: int) -> dict[str, float | int]:
    """File to file (NanoAOD-style photons -> showers by event, ROOT) against uproot writing the
    same output arrays, in the same chunks, from memory."""
    import tempfile

    import awkward as ak
    import uproot

    from fastcalo import Simulator, datasets, particles

    sim = Simulator(model, device=str(device), seed=1)
    step = 10_000
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "events.root", Path(tmp) / "showers.root"
        particles.write_example(source, n_events=n_events, seed=1)
        sim.run_file(source, Path(tmp) / "warm.root", collection="Photon", step_size=step, progress=False)
        start = time.perf_counter()
        sim.run_file(source, out, collection="Photon", step_size=step, progress=False)
        simulate_s = time.perf_counter() - start
        written = uproot.open(out)["Events"].arrays()
        n_showers = int(ak.sum(written["nPhoton"]))
        chunks = [written[i : i + step] for i in range(0, len(written), step)]
        fields = [f for f in written.fields if f.startswith("Photon_") and f != "Photon_image"]
        raw = Path(tmp) / "raw.root"
        start = time.perf_counter()
        with uproot.recreate(raw) as f:
            tree = None
            for chunk in chunks:
                arrays = {
                    "Photon": ak.zip({name.removeprefix("Photon_"): chunk[name] for name in fields}),
                    "Photon_image": chunk["Photon_image"],
                }
                if tree is None:
                    tree = f.mktree("Events", {k: v.type.content for k, v in arrays.items()})
                tree.extend(arrays)
        write_s = time.perf_counter() - start
        size = out.stat().st_size
        check = datasets.read(out, entry_stop=10)
        assert check.images.shape[1:] == (24, 24)
    return {
        "events": n_events,
        "showers": n_showers,
        "output_bytes": size,
        "run_file_s": simulate_s,
        "run_file_showers_per_s": n_showers / simulate_s,
        "uproot_write_s": write_s,
        "uproot_write_showers_per_s": n_showers / write_s,
        "run_file_over_uproot_write": (n_showers / simulate_s) / (n_showers / write_s),
    }


def main() -> None:
    from fastcalo import mc
    from fastcalo.model import load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("fastcalo/models/default"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384, 65536])
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--mc-showers", type=int, default=400, help="reference-MC showers to time (all cores)")
    parser.add_argument("--file-events", type=int, default=50_000, help="events of the file-to-file test (0: skip)")
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
        z = torch.randn((batch, model.generator.n_inputs), generator=gen, device=device)
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

    for row in rows:
        row["simulator_showers_per_s"] = simulator_rate(args.model, device, row["batch_size"], args.min_seconds)
        print(json.dumps({"batch_size": row["batch_size"], "simulator_showers_per_s": row["simulator_showers_per_s"]}), flush=True)
    file_to_file = file_rates(args.model, device, args.file_events) if args.file_events else None
    if file_to_file:
        print(json.dumps(file_to_file), flush=True)

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
        "best_simulator_showers_per_s": max(r["simulator_showers_per_s"] for r in rows),
        "simulator_speed_up_over_mc": max(r["simulator_showers_per_s"] for r in rows) / mc_rate,
        "file_to_file": file_to_file,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"throughput_{args.label}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["batch_size"] for r in rows], [r["showers_per_s"] for r in rows], "o-", label=f"generator ({result['device']})")
    ax.plot(
        [r["batch_size"] for r in rows], [r["simulator_showers_per_s"] for r in rows], "s-", label="Simulator.sample (end to end)"
    )
    if file_to_file:
        ax.axhline(file_to_file["run_file_showers_per_s"], color="C2", ls=":", label="run_file, ROOT to ROOT")
        ax.axhline(file_to_file["uproot_write_showers_per_s"], color="C3", ls="-.", label="uproot writing the same output")
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
