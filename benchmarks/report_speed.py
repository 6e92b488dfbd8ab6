"""Time and peak memory of the full validation report.

Makes (once; they are cached) two independent reference-MC files of ``--n`` photons each,
log-uniform in 1-20 GeV over |eta| < 1.5 (the report's cost does not depend on the energy; low
energies keep the Monte Carlo quick), then times ``compare(reference, generated)`` (reading the
files, every metric, the classifier with its three seeds per input type) and ``Report.write``
(the PNGs, metrics.json, index.html). The Monte Carlo runs in a child process, so that the peak
resident memory (``ru_maxrss``) of this process is that of the report alone; the peak of the
Python-level allocations (tracemalloc, numpy included) is measured in a second, separate pass
only with ``--tracemalloc``, since tracing slows the run down.

Results are printed and saved as JSON under benchmarks/results/report_speed_<label>.json.

    python benchmarks/report_speed.py --n 100000 --label dev_2cores          # the full benchmark
    python benchmarks/report_speed.py --n 3000 --cache /tmp/bench --label smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from _machine import cpu_model  # benchmarks/_machine.py, beside this script

ENERGY = (1.0, 20.0)  # GeV, log-uniform
SEEDS = (101, 102)


def _generate(path: str, n: int, seed: int) -> None:
    from fastcalo import mc

    conditions = mc.sample_conditions(n, energy=ENERGY, eta=(-1.5, 1.5), particle="photon", log_uniform=True, seed=seed)
    mc.simulate_to_file(conditions, path, seed=seed, progress=True, metadata={"command": f"benchmarks/report_speed.py seed {seed}"})


def sample_files(cache: Path, n: int) -> list[Path]:
    """The two MC files of ``n`` showers, made in a child process if not in ``cache`` yet."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = [cache / f"photons_1-20GeV_n{n}_seed{seed}.h5" for seed in SEEDS]
    for path, seed in zip(paths, SEEDS):
        if path.is_file():
            print(f"using cached {path}")
            continue
        start = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(target=_generate, args=(str(path), n, seed))
        child.start()
        child.join()
        if child.exitcode != 0:
            msg = f"generating {path} failed (exit code {child.exitcode})"
            raise RuntimeError(msg)
        print(f"generated {path} in {time.perf_counter() - start:.1f} s")
    return paths


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def run_report(paths: list[Path], out: Path, *, classifier: bool) -> dict[str, object]:
    from fastcalo.validation import compare

    start = time.perf_counter()
    report = compare(paths[0], paths[1], classifier=classifier, progress=True)
    compared = time.perf_counter()
    report.write(out, progress=True)
    written = time.perf_counter()
    checks = report.summary()
    return {
        "seconds_total": written - start,
        "seconds_compare": compared - start,
        "seconds_write": written - compared,
        "steps_s": report.timings,
        "summary": {c.name: {"value": c.value, "passed": c.passed} for c in checks},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="showers per file (default 100 000)")
    parser.add_argument("--cache", type=Path, default=Path("data/bench"), help="where the MC files are kept (default data/bench/)")
    parser.add_argument("--label", default=platform.node() or "local", help="names the result file (default: the host name)")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results", help="directory of the JSON result")
    parser.add_argument("--no-classifier", action="store_true", help="leave the classifier out (to see its share)")
    parser.add_argument("--tracemalloc", action="store_true", help="a second pass measuring the peak of Python allocations")
    args = parser.parse_args(argv)

    import numpy as np

    import fastcalo

    paths = sample_files(args.cache, args.n)
    baseline_rss = _peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        timing = run_report(paths, Path(tmp) / "report", classifier=not args.no_classifier)
        peak_rss = _peak_rss_mb()
        traced = None
        if args.tracemalloc:
            import tracemalloc

            tracemalloc.start()
            run_report(paths, Path(tmp) / "report_traced", classifier=not args.no_classifier)
            traced = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    result = {
        "benchmark": "report_speed",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "label": args.label,
        "machine": {
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "fastcalo": fastcalo.__version__,
        },
        "n_per_file": args.n,
        "files": [str(p) for p in paths],
        "sample": {"particle": "photon", "energy_gev": list(ENERGY), "log_uniform": True, "eta": [-1.5, 1.5], "seeds": list(SEEDS)},
        "classifier": not args.no_classifier,
        **timing,
        "peak_rss_mb": peak_rss,
        "peak_rss_before_report_mb": baseline_rss,
        "peak_tracemalloc_mb": traced,
    }
    print(
        f"report for {args.n} vs {args.n} showers: {timing['seconds_total']:.1f} s "
        f"(compare {timing['seconds_compare']:.1f} s, write {timing['seconds_write']:.1f} s), "
        f"peak RSS {peak_rss:.0f} MB" + (f", peak traced {traced:.0f} MB" if traced is not None else "")
    )
    print("steps [s]: " + ", ".join(f"{k} {v:.1f}" for k, v in timing["steps_s"].items()))  # type: ignore[attr-defined]
    output = args.results / f"report_speed_{args.label}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
