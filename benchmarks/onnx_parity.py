"""How close ONNX Runtime's showers are to the torch path's, for the same random inputs, measured.

    python benchmarks/onnx_parity.py --label dev_1thread

For the shipped model (``--default-showers``, in batches of 8192) and each tiny model variant of
``tests/test_model.py`` (``--variant-showers``, untrained, weights seeded with 0), the model is
exported (``fastcalo.export.export_onnx``) and run by an ONNX Runtime CPU session on conditions
drawn over the whole range and random inputs drawn with torch; ``ShowerModel.generate`` runs on
the same inputs. Reported per model: the largest absolute and relative difference of a cell in
showers where no cell crossed the zero-suppression threshold, the cells that did cross it
(zero in one, kept in the other), the showers holding them and the largest relative difference
in those showers, and what is left of a difference over ``RTOL`` times the cell (what
``tests/test_export.py`` needs as an absolute tolerance beside it), split into small cells (below
50 MeV, where the noise can cancel most of the deposit, so that its rounding becomes a large
fraction of the cell) and large ones. ``tests/test_export.py`` asserts bounds on all of these; this measures them on
more showers. JSON goes to ``benchmarks/results/onnx_parity_<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
#: the relative tolerance of tests/test_export.py: what is left over it is its absolute tolerance
RTOL = 1e-4


def measure(model: torch.nn.Module, n: int, batch: int, directory: Path, threads: int) -> dict[str, float | int]:
    import onnxruntime as ort

    from fastcalo.export import export_onnx

    path = export_onnx(directory / "model.onnx", model=model, overwrite=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    stats = {"showers": 0, "nonzero_cells": 0, "flipped_cells": 0, "showers_with_flips": 0, "max_abs_gev": 0.0, "max_rel": 0.0, "max_rel_in_flipped_showers": 0.0, "max_excess_over_rtol_gev": 0.0, "max_abs_below_50mev_gev": 0.0, "max_rel_above_50mev": 0.0}
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        rng = np.random.default_rng(start)
        c = {
            "energy": np.exp(rng.uniform(0.0, np.log(100.0), rows)).astype(np.float32),
            "eta": rng.uniform(-1.5, 1.5, rows).astype(np.float32),
            "pdgid": rng.choice([22, 11, -11], rows).astype(np.int32),
            "impact_x": rng.uniform(0.0, 10.0, rows).astype(np.float32),
            "impact_y": rng.uniform(0.0, 10.0, rows).astype(np.float32),
        }
        g = torch.Generator().manual_seed(10_000 + start)
        draws = {"z": torch.randn((rows, model.generator.n_inputs), generator=g), "u": torch.rand(rows, generator=g)}
        if model.config.cell_noise:
            draws["noise"] = torch.randn((rows, model.detector.n_total_cells), generator=g)
        (out,) = session.run(["showers"], dict(c, **{k: v.numpy() for k, v in draws.items()}))
        out = out.reshape(rows, -1)
        ref = model.generate(model.conditions.encode(**c), torch.as_tensor(c["energy"]), draws["z"], draws["u"], draws.get("noise")).numpy()
        flipped = (out == 0) != (ref == 0)
        dirty = flipped.any(axis=1)
        diff = np.abs(out - ref)
        both = (out != 0) & (ref != 0)
        rel = np.where(both, diff / np.where(both, np.abs(ref), 1.0), 0.0)
        stats["showers"] += rows
        stats["nonzero_cells"] += int((ref != 0).sum())
        stats["flipped_cells"] += int(flipped.sum())
        stats["showers_with_flips"] += int(dirty.sum())
        if (~dirty).any():
            stats["max_abs_gev"] = max(stats["max_abs_gev"], float(diff[~dirty].max()))
            stats["max_rel"] = max(stats["max_rel"], float(rel[~dirty].max()))
            clean = ~dirty[:, None] & both
            stats["max_excess_over_rtol_gev"] = max(stats["max_excess_over_rtol_gev"], float((diff - RTOL * np.abs(ref))[~dirty].max()))
            small = clean & (np.abs(ref) < 0.05)
            if small.any():
                stats["max_abs_below_50mev_gev"] = max(stats["max_abs_below_50mev_gev"], float(diff[small].max()))
            if (clean & ~small).any():
                stats["max_rel_above_50mev"] = max(stats["max_rel_above_50mev"], float(rel[clean & ~small].max()))
        if dirty.any():
            stats["max_rel_in_flipped_showers"] = max(stats["max_rel_in_flipped_showers"], float(rel[dirty].max()))
    return stats


def main() -> None:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_model import CONFIGS  # the tiny variants of the tests

    from fastcalo.model import DEFAULT_MODEL, ModelConfig, ShowerModel, load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default-showers", type=int, default=131_072)
    parser.add_argument("--variant-showers", type=int, default=4096)
    parser.add_argument("--label", default=platform.node())
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()

    import onnxruntime as ort

    variants = dict(CONFIGS)
    variants["mlp-photostatistics"] = ModelConfig(
        latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), n_quantiles=20, cell_noise=True, photostatistics=True
    )
    threads = torch.get_num_threads()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["default"] = measure(load(DEFAULT_MODEL), args.default_showers, 8192, Path(tmp), threads)
        print(json.dumps({"default": results["default"]}), flush=True)
        for name, config in sorted(variants.items()):
            torch.manual_seed(0)
            results[name] = measure(ShowerModel(config).eval(), args.variant_showers, 8192, Path(tmp), threads)
            print(json.dumps({name: results[name]}), flush=True)
    out = {"label": args.label, "torch_version": torch.__version__, "onnxruntime_version": ort.__version__, "threads": threads, "models": results}
    args.results.mkdir(parents=True, exist_ok=True)
    target = args.results / f"onnx_parity_{args.label}.json"
    tmp_target = target.with_suffix(".json.tmp")
    tmp_target.write_text(json.dumps(out, indent=1) + "\n")
    tmp_target.replace(target)


if __name__ == "__main__":
    main()
