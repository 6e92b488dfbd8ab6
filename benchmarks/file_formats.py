"""Shower output on disk: write time, read time and size for every compression uproot writes, with
the dense (576 floats per particle) and the hits (cells above threshold, index + energy) layouts.

    python benchmarks/file_formats.py --label dev_2cores

The showers are those of ``fastcalo simulate`` with the shipped default model on a NanoAOD-style
file of ``--events`` events (photons, ``fastcalo.particles.write_example``), simulated once; then
each (layout, compression) writes them with :class:`fastcalo.datasets.EventWriter` in chunks of
``--step-size`` events, as ``Simulator.run_file`` does, and :func:`fastcalo.datasets.read` reads
them back (checked equal to what was written). Each write and read is timed ``--repeats`` times
(the fastest kept: the machine is shared). HDF5 (the CaloChallenge layout, dense, gzip 1) is
timed beside them. JSON and a table go to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import cpu_model  # benchmarks/_machine.py, beside this script

HERE = Path(__file__).resolve().parent
COMPRESSIONS = ["none", "zlib:1", "zlib:4", "zlib:9", "lz4:1", "lz4:4", "lz4:9", "zstd:1", "zstd:3", "zstd:9", "lzma:1"]


def main() -> None:
    import awkward as ak
    import torch
    import uproot

    from fastcalo import Simulator, datasets, particles

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--step-size", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compressions", nargs="+", default=COMPRESSIONS)
    parser.add_argument("--label", default=platform.node())
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "events.root"
        particles.write_example(source, n_events=args.events, seed=1)
        plain = Simulator(seed=1).run_file(source, tmp / "plain.root", collection="Photon", cells="dense", compression="none", progress=False)
        counts = np.asarray(uproot.open(plain)["Events"]["nPhoton"].array(library="np"), dtype=np.int64)
        showers = datasets.read(plain)
        n = len(showers)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        chunks = [(start, slice(int(bounds[start]), int(bounds[min(start + args.step_size, len(counts))])), counts[start : start + args.step_size])
                  for start in range(0, len(counts), args.step_size)]  # fmt: skip
        print(f"{n} showers in {len(counts)} events, {int((showers.images > 0).sum()) / n:.1f} cells above threshold per shower", flush=True)

        def write(path: Path, cells: str, compression: str | None) -> float:
            start = time.perf_counter()
            with datasets.EventWriter(path, tree="Events", collection="Photon", cells=cells, compression=compression, overwrite=True) as out:
                for first, part, c in chunks:
                    out.write(showers[part], counts=c, first_event=first)
            return time.perf_counter() - start

        def read(path: Path) -> float:
            start = time.perf_counter()
            back = datasets.read(path)
            seconds = time.perf_counter() - start
            same = np.array_equal if path.suffix == ".root" else lambda a, b: np.allclose(a, b, rtol=1e-6, atol=0)  # HDF5 holds MeV
            if not same(back.images, showers.images):
                msg = f"{path}: read back differs"
                raise RuntimeError(msg)
            return seconds

        layouts = [("root", cells, compression) for cells in datasets.CELL_LAYOUTS for compression in args.compressions]
        layouts.append(("hdf5", "dense", "gzip:1"))
        for kind, cells, compression in layouts:
            path = tmp / f"out-{cells}-{compression.replace(':', '')}.{'root' if kind == 'root' else 'h5'}"
            spec = compression if kind == "root" else None
            write_s = min(write(path, cells, spec) for _ in range(args.repeats))
            read_s = min(read(path) for _ in range(args.repeats))
            row = {
                "format": kind, "cells": cells, "compression": compression, "bytes": path.stat().st_size,
                "bytes_per_shower": path.stat().st_size / n, "write_s": write_s, "write_showers_per_s": n / write_s,
                "read_s": read_s, "read_showers_per_s": n / read_s,
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            path.unlink()

    result = {
        "label": args.label, "device": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "uproot_version": uproot.__version__, "awkward_version": ak.__version__, "events": args.events, "showers": n,
        "step_size_events": args.step_size, "rows": rows,
    }  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"file_formats_{args.label}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| format | cells | compression | bytes/shower | write showers/s | read showers/s |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['format']} | {r['cells']} | {r['compression']} | {r['bytes_per_shower']:.0f} | {r['write_showers_per_s']:.0f} | {r['read_showers_per_s']:.0f} |"
        for r in rows
    ]
    table = "\n".join(lines)
    (args.results / f"file_formats_{args.label}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
