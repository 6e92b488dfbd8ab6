"""Generation throughput: showers per second against batch size, beside the reference MC and the
machine's own matrix-multiply peak, all measured in this one run.

    python benchmarks/throughput.py --label dev_2cores
    python benchmarks/throughput.py --model runs/default/best --device cuda --label h100
    python benchmarks/throughput.py --dtype bfloat16 --batch-sizes 4096 65536 --file-events 0 --no-peers --label dev_2cores_bf16

For each batch size the model generates showers for random conditions drawn like the training
data (log-uniform 1-100 GeV, |eta| < 1.5, photons/electrons/positrons, impact point in the central
cell) until at least ``--min-seconds`` have passed; the generator's dense-layer FLOPs per shower give
the achieved GFLOP/s, compared with a float32 GEMM (n x n times n x n) timed on the same device.
The reference MC is timed on the same conditions on all CPU cores (numba threads), so the speed-up
is a ratio of two numbers from the same run.

The network-bound rate is the generator and energy networks alone on inputs drawn beforehand, in
the calls the engine makes (on the CPU blocks of 1024 rows, one per thread, side by side; on a GPU
the whole batch): the most any sampling path could reach with this model. The generator there is
its forward pass, the stochastic output layer included (mu + exp(log sigma) g, the normals drawn
beforehand); on the CPU its layers alone (the matrix products and activations: all the engine
now runs in torch, a numba kernel doing the rest) are timed too, a stricter bound. The bounds and
``Simulator.sample`` are timed in turn ``--rounds`` times at each batch size (default 3) and each
rate is the mean of its rounds: on a shared machine rates drift by tens of percent within a minute. On the CPU the same
networks are also timed with each block split among torch's threads, one block after the other
(the engine's former way), and the faster of the two is the bound. End to end follow:
``fastcalo.Simulator.sample`` at each batch size (the model plus the per-particle random streams, the detector response and the
host copy: what a user gets in memory), and file to file: ``fastcalo simulate`` (``run_file``) on a
NanoAOD-style file of ``--file-events`` events (``fastcalo.particles.write_example``; photons) into
ROOT with its default options, in a child process that reports its peak memory, for both cell
layouts (hits, the default, and dense) with their file sizes. ONNX Runtime on the exported model
(``benchmarks/onnx_speed.py``, when onnxruntime is installed) and the GFlash-style peer
(``benchmarks/gflash_speed.py``) are timed in the same run. JSON and a PNG go to
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
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


def simulator_rate(model: Path, device: torch.device, batch: int, min_seconds: float, dtype: str = "float32") -> float:
    """Showers/s of ``Simulator.sample`` at one batch size (random streams and host copy included)."""
    from fastcalo import Simulator

    sim = Simulator(model, device=str(device), batch_size=batch, seed=1, dtype=dtype)
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


_FILE_CHILD = """
import json, resource, sys, time
import numpy as np
import fastcalo
sim = fastcalo.Simulator(sys.argv[1], device=sys.argv[2], seed=1)
sim.sample(energy=np.full(4096, 10.0))  # warm-up: numba caches, torch's first calls
start = time.perf_counter()
sim.run_file(sys.argv[3], sys.argv[4], collection="Photon", cells=sys.argv[5], progress=False)
seconds = time.perf_counter() - start
try:  # this process's own peak (ru_maxrss would also count the parent's memory before the exec)
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak}))
"""


def file_rates(model: Path, device: torch.device, n_events: int) -> dict[str, object]:
    """``run_file`` (what ``fastcalo simulate`` runs) with its default options, NanoAOD-style
    photons into ROOT, for each cell layout, each in a child process that reports its peak memory."""
    import subprocess
    import sys
    import tempfile

    import awkward as ak
    import uproot

    from fastcalo import datasets, particles

    out: dict[str, object] = {"events": n_events, "default_cells": datasets.CELLS, "compression": datasets.COMPRESSION}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "events.root"
        particles.write_example(source, n_events=n_events, seed=1)
        for cells in datasets.CELL_LAYOUTS:
            target = Path(tmp) / f"showers-{cells}.root"
            child = subprocess.run(
                [sys.executable, "-c", _FILE_CHILD, str(model), str(device), str(source), str(target), cells],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(child.stdout.strip().splitlines()[-1])
            n_showers = int(ak.sum(uproot.open(target)["Events"]["nPhoton"].array()))
            out["showers"] = n_showers
            out[cells] = {
                "run_file_s": result["seconds"], "run_file_showers_per_s": n_showers / result["seconds"],
                "peak_rss_bytes": result["peak_rss_bytes"], "output_bytes": target.stat().st_size,
                "output_bytes_per_shower": target.stat().st_size / n_showers,
            }  # fmt: skip
            check = datasets.read(target, entry_stop=10)
            assert check.images.shape[1:] == (24, 24)
    return out


def network_rate(
    model: torch.nn.Module, device: torch.device, batch: int, min_seconds: float, *, side_by_side: bool = True, layers_only: bool = False
) -> float:
    """Showers/s of the generator and energy networks alone, inputs drawn beforehand, in the calls
    the engine makes: on the CPU blocks of BLOCK rows, one per thread, as many at once as torch has
    threads (``side_by_side``; False: one block after the other, each split among torch's threads,
    as the engine did before); on a GPU the whole batch. The generator is its forward pass
    (``Generator.forward``: with the stochastic output layer's mu + exp(log sigma) g on normals
    drawn beforehand), or with ``layers_only`` its layers alone (``Generator.outputs``: the matrix
    products and activations, which is all the CPU engine runs in torch)."""
    from concurrent.futures import ThreadPoolExecutor

    from fastcalo.engine import BLOCK, one_torch_thread

    c_np = conditions(batch, seed=batch)
    c = model.conditions.encode(**c_np).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    z = torch.randn((batch, model.generator.n_inputs), generator=gen, device=device)
    u = torch.rand((batch,), generator=gen, device=device)
    step = BLOCK if device.type == "cpu" else batch
    with torch.inference_mode():
        r = model.energy.sample(c, u)

    generator = model.generator.outputs if layers_only else model.generator

    def call(i: int) -> None:
        with torch.inference_mode():
            model.energy.sample(c[i : i + step], u[i : i + step])
            generator(z[i : i + step], c[i : i + step], r[i : i + step])

    def run(once: Callable[[], None]) -> float:
        once()
        sync(device)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            once()
            n += batch
        sync(device)
        return n / (time.perf_counter() - start)

    starts = range(0, batch, step)
    if device.type == "cpu" and side_by_side:
        with one_torch_thread() as threads, ThreadPoolExecutor(threads) as pool:

            def together() -> None:
                for _ in pool.map(call, starts):
                    pass

            return run(together)

    def in_turn() -> None:
        for i in starts:
            call(i)

    return run(in_turn)


def main() -> None:
    from fastcalo import mc
    from fastcalo.model import load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("fastcalo/models/default"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384, 65536])
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3, help="times the bound and Simulator.sample are timed in turn at each batch size")
    parser.add_argument("--mc-showers", type=int, default=400, help="reference-MC showers to time (all cores)")
    parser.add_argument("--file-events", type=int, default=50_000, help="events of the file-to-file test (0: skip)")
    parser.add_argument("--no-peers", action="store_true", help="skip the GFlash peer and ONNX Runtime")
    parser.add_argument("--dtype", default="float32", help="Simulator.sample's dtype (the networks alone stay float32; another dtype is also timed in float32)")
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
        # the bound and Simulator.sample timed in turn, ``--rounds`` times: on a shared machine the
        # rates drift by tens of percent within a minute, and a ratio of rates taken side by side
        # in time is steadier than one of rates taken minutes apart; each rate is the rounds' mean
        batch = row["batch_size"]
        timed: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            rates = {"network_side_by_side_showers_per_s": network_rate(model, device, batch, args.min_seconds)}
            if device.type == "cpu":  # both ways to use the cores, each kept; the better one is the bound
                rates["network_split_calls_showers_per_s"] = network_rate(model, device, batch, args.min_seconds, side_by_side=False)
                rates["network_layers_showers_per_s"] = network_rate(model, device, batch, args.min_seconds, layers_only=True)
            rates["simulator_showers_per_s"] = simulator_rate(args.model, device, batch, args.min_seconds, args.dtype)
            if args.dtype != "float32":
                rates["simulator_float32_showers_per_s"] = simulator_rate(args.model, device, batch, args.min_seconds)
            for name, value in rates.items():
                timed.setdefault(name, []).append(value)
        row.update({name: float(np.mean(values)) for name, values in timed.items()})
        row["rounds"] = {name: values for name, values in timed.items()}
        row["network_showers_per_s"] = max(row["network_side_by_side_showers_per_s"], row.get("network_split_calls_showers_per_s", 0.0))
        row["simulator_over_network"] = row["simulator_showers_per_s"] / row["network_showers_per_s"]
        if "network_layers_showers_per_s" in row:
            row["simulator_over_network_layers"] = row["simulator_showers_per_s"] / row["network_layers_showers_per_s"]
        keys = ("batch_size", "network_showers_per_s", "network_layers_showers_per_s", "simulator_showers_per_s", "simulator_over_network", "simulator_over_network_layers")
        print(json.dumps({k: row[k] for k in keys if k in row}), flush=True)
    file_to_file = file_rates(args.model, device, args.file_events) if args.file_events else None
    if file_to_file:
        print(json.dumps(file_to_file), flush=True)
    peers: dict[str, object] = {}
    if device.type == "cpu" and not args.no_peers:
        import importlib.util

        from gflash_speed import measure  # benchmarks/gflash_speed.py, beside this script

        peers["gflash"] = measure(batch_size=4096, seconds=args.min_seconds, n_mc=50, rounds=1)
        print(json.dumps({"gflash": peers["gflash"]}), flush=True)
        if importlib.util.find_spec("onnxruntime") is not None:
            from onnx_speed import onnx_rate  # benchmarks/onnx_speed.py

            peers["onnxruntime_showers_per_s"] = onnx_rate(args.model, batch=4096)
            print(json.dumps({"onnxruntime_showers_per_s": peers["onnxruntime_showers_per_s"]}), flush=True)

    peak = gemm_gflops(device, 4096 if device.type == "cuda" else 2048, args.min_seconds)
    c_np = conditions(args.mc_showers, seed=7)
    mc.simulate(c_np["energy"][:4], c_np["eta"][:4], c_np["pdgid"][:4], seed=1)  # compile
    start = time.perf_counter()
    mc.simulate(c_np["energy"], c_np["eta"], c_np["pdgid"], impact_x=c_np["impact_x"], impact_y=c_np["impact_y"], seed=1)
    mc_rate = args.mc_showers / (time.perf_counter() - start)
    best = max(rows, key=lambda r: r["showers_per_s"])
    at = next((r for r in rows if r["batch_size"] == 4096), best)  # the CPU default batch size
    if file_to_file:
        for cells in ("hits", "dense"):
            entry = file_to_file[cells]
            assert isinstance(entry, dict)
            entry["over_simulator_sample"] = entry["run_file_showers_per_s"] / at["simulator_showers_per_s"]
    result = {
        "label": args.label,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "model": str(args.model),
        "simulator_dtype": args.dtype,
        "generator_flops_per_shower": flops,
        "gemm_peak_gflops": peak,
        "rows": [dict(r, fraction_of_gemm_peak=r["gflops"] / peak) for r in rows],
        "mc_showers_per_s_all_cores": mc_rate,
        "mc_conditions": "log-uniform 1-100 GeV, |eta| < 1.5, photons/electrons/positrons",
        "best_showers_per_s": best["showers_per_s"],
        "speed_up_over_mc": best["showers_per_s"] / mc_rate,
        "best_simulator_showers_per_s": max(r["simulator_showers_per_s"] for r in rows),
        "simulator_speed_up_over_mc": max(r["simulator_showers_per_s"] for r in rows) / mc_rate,
        "network_showers_per_s_at_4096": at["network_showers_per_s"],
        "simulator_showers_per_s_at_4096": at["simulator_showers_per_s"],
        "simulator_over_network_at_4096": at["simulator_over_network"],
        "network_layers_showers_per_s_at_4096": at.get("network_layers_showers_per_s"),
        "simulator_over_network_layers_at_4096": at.get("simulator_over_network_layers"),
        "file_to_file": file_to_file,
        "peers": peers,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"throughput_{args.label}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    draw(result, args.results / f"throughput_{args.label}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


def draw(result: dict, path: Path) -> None:
    """The PNG of a result (``python -c "import json, throughput; throughput.draw(json.load(open(F)), P)"`` redraws a saved one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    sizes = [r["batch_size"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(sizes, [r["network_showers_per_s"] for r in rows], "^:", color="C2", label="networks alone (network-bound)")
    if all("network_layers_showers_per_s" in r for r in rows):
        ax.plot(sizes, [r["network_layers_showers_per_s"] for r in rows], "v:", color="C4", label="networks' layers alone")
    ax.plot(sizes, [r["simulator_showers_per_s"] for r in rows], "s-", color="C1", label="Simulator.sample (end to end)")
    ax.plot(sizes, [r["showers_per_s"] for r in rows], "o-", color="C0", label="ShowerModel.generate, dense torch normals")
    file_to_file = result.get("file_to_file")
    if file_to_file:
        for cells, color, style in (("hits", "C4", "-"), ("dense", "C3", "-.")):
            ax.axhline(file_to_file[cells]["run_file_showers_per_s"], color=color, ls=style, label=f"fastcalo simulate, ROOT to ROOT ({cells})")
    peers = result.get("peers") or {}
    if "gflash" in peers:
        ax.axhline(peers["gflash"]["gflash"], color="C5", ls=":", label="GFlash-style peer")
    ax.axhline(result["mc_showers_per_s_all_cores"], color="k", ls="--", label=f"reference MC, {result['cpu_count']} cores")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (on the CPU: particles per call)")
    ax.set_ylabel("showers / s")
    ax.set_title(f"{result['label']} ({result['device']}): speed-up over the MC {result['speed_up_over_mc']:.0f}x, GEMM peak {result['gemm_peak_gflops']:.0f} GFLOP/s", fontsize=8)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
