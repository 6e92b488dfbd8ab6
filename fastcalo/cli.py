"""Command-line interfaces: ``fastcalo`` (sub-commands) and ``fastcalo-validate``.

Thin by design: parse the arguments, call the library, turn its errors into one clear line.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .datasets import OutputExistsError

__all__ = ("main", "validate_main")

log = logging.getLogger("fastcalo")

# Options whose values may start with "-" (e.g. "--eta -1.5:1.5"); argparse would read them as options.
_SIGNED_OPTIONS = ("--eta", "--energy")


def _join_signed(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        if tokens[i] in _SIGNED_OPTIONS and i + 1 < len(tokens) and tokens[i + 1].startswith("-"):
            out.append(f"{tokens[i]}={tokens[i + 1]}")
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return out


def parse_span(text: str, what: str) -> tuple[float, float] | list[float]:
    """'1:100' -> (1.0, 100.0); '10' or '1,2,5' -> [10.0] or [1.0, 2.0, 5.0].

    Example:
        >>> parse_span("-1.5:1.5", "eta"), parse_span("1,10", "energy")
        ((-1.5, 1.5), [1.0, 10.0])
    """
    try:
        if ":" in text:
            low, high = (float(v) for v in text.split(":"))
            return (low, high)
        return [float(v) for v in text.split(",")]
    except ValueError:
        msg = f"--{what}: expected LOW:HIGH, a value or a comma-separated list of values, got {text!r}"
        raise ValueError(msg) from None


def _mc(args: argparse.Namespace) -> int:
    import numba
    import numpy as np

    from . import mc

    _check_threads(args.threads, "all cores", int(numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if args.chunk_size < 1:
        msg = f"--chunk-size must be >= 1 (showers per chunk in memory), got {args.chunk_size}"
        raise ValueError(msg)
    if args.threads:
        numba.set_num_threads(args.threads)
    given = {"--particle": args.particle, "--energy": args.energy, "--eta": args.eta, "--log-uniform": args.log_uniform or None, "--n": args.n}
    if args.like is not None and any(v is not None for v in given.values()):
        msg = f"{', '.join(k for k, v in given.items() if v is not None)}: not with --like (the showers follow the particles of the --like file)"
        raise ValueError(msg)
    particle = args.particle or "photon"
    energy = parse_span(args.energy or "1:100", "energy")
    eta = parse_span(args.eta or "0", "eta")
    if isinstance(eta, list):
        if len(eta) != 1:
            msg = f"--eta: expected LOW:HIGH or one value, got {args.eta!r}"
            raise ValueError(msg)
        eta = (eta[0], eta[0])
    if args.like is not None:
        from . import datasets

        datasets.check_not_input(args.output, args.like)
        data = [(c, getattr(part, c)) for part in datasets.iterate(args.like, step_size=100_000) for c in datasets.CONDITION_COLUMNS]
        if not data:  # no chunk at all: an empty file
            msg = f"--like {args.like}: the file holds no showers"
            raise ValueError(msg)
        conditions = {c: np.concatenate([v for name, v in data if name == c]) for c in datasets.CONDITION_COLUMNS}
        if conditions["energy"].size == 0:
            msg = f"--like {args.like}: the file holds no showers"
            raise ValueError(msg)
    elif args.n is None:
        msg = "--n is required (or --like FILE)"
        raise ValueError(msg)
    elif isinstance(energy, tuple):
        conditions = mc.sample_conditions(
            args.n, energy=energy, eta=eta, particle=particle, log_uniform=args.log_uniform, seed=args.seed
        )
    else:
        conditions = mc.sample_conditions(args.n, points=energy, eta=eta, particle=particle, seed=args.seed)
    n = mc.simulate_to_file(
        conditions,
        args.output,
        seed=args.seed,
        overwrite=args.overwrite,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
        metadata={"command": "fastcalo " + " ".join(args.argv)},  # args.argv starts with "mc"
    )
    log.info("wrote %d showers to %s", n, args.output)
    return 0


def _train(args: argparse.Namespace) -> int:
    from .model import _check_replaceable, load, save
    from .runconfig import load_config
    from .train import train

    overrides = {"train": {"steps": args.steps}} if args.steps is not None else {}
    config = load_config(args.config, **overrides)
    if args.export is not None and (args.export.exists() or args.export.is_symlink()):
        if not args.overwrite:
            raise OutputExistsError(args.export)
        _check_replaceable(args.export)  # before the training, not hours later
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run_dir = args.run_dir or Path("runs") / args.config.stem
    best = train(config, run_dir, resume=not args.fresh_only, progress=not args.no_progress, start_from=args.start_from)
    log.info("kept model (lowest monitor score; the latest once the learning rates anneal): %s", best)
    if args.export is not None:
        config_text = args.config.read_bytes()  # read first: --export may be the config's own directory
        model = load(best)
        save(model, args.export, training=model.metadata["training"], overwrite=True)
        (args.export / "train.toml").write_bytes(config_text)
        log.info("exported %s to %s", best, args.export)
    return 0


def _check_threads(threads: int, default: str, most: int | None = None) -> None:
    """--threads: 0 (the default: ``default``) or a positive number (at most ``most``)."""
    if threads < 0 or (most is not None and threads > most):
        upper = f", at most {most} here" if most is not None else ""
        msg = f"--threads must be 0 ({default}) or a positive number of threads{upper}, got {threads}"
        raise ValueError(msg)


def _simulate(args: argparse.Namespace) -> int:
    from .simulator import Simulator

    _check_threads(args.threads, "torch's choice")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.workers is not None and args.scheduler is not None:
        msg = "--workers and --scheduler: give one (a local cluster of N workers, or an existing scheduler)"
        raise ValueError(msg)
    branches = dict(_key_value(item, "--branch") for item in args.branch) if args.branch else None
    copy: bool | list[str] = False
    if args.copy_branches is not None:
        copy = True if args.copy_branches == [] else list(args.copy_branches)
    sim = Simulator(
        args.model,
        device=args.device,
        batch_size=args.batch_size,
        seed=args.seed,
        dtype=args.dtype,
        out_of_range=args.out_of_range,
    )
    sim.threads = args.threads or None
    if (args.input is None) == (args.like is None):
        msg = "give an input ROOT file of particles, or --like a shower file, not both" if args.like else "give an input ROOT file of particles (or --like a shower file)"
        raise ValueError(msg)
    if args.like is not None:
        others = [
            name
            for name in ("tree", "collection", "preset", "branch", "particle", "copy_branches", "workers", "scheduler", "cells", "compression")
            if getattr(args, name) is not None
        ]
        if others:
            msg = f"--like reads its particles from a shower file: --{', --'.join(o.replace('_', '-') for o in others)} do not apply"
            raise ValueError(msg)
        sim.run_like(args.like, args.output, step_size=args.step_size, overwrite=args.overwrite, progress=not args.no_progress)
        log.info("wrote %s", args.output)
        return 0
    client = _dask_client(args.workers, args.scheduler, args.threads or 1)
    try:
        sim.run_file(
            args.input,
            args.output,
            tree=args.tree,
            collection=args.collection,
            preset=args.preset or "auto",
            branches=branches,
            particle=args.particle,
            step_size=args.step_size,
            copy_branches=copy,
            cells=args.cells,
            compression=args.compression,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            client=client,
        )
    finally:
        if client is not None:
            cluster = client.cluster
            client.close()
            if cluster is not None and args.scheduler is None:
                cluster.close()
    log.info("wrote %s", args.output)
    return 0


def _dask_client(workers: int | None, scheduler: str | None, threads: int) -> Any:  # a dask.distributed.Client (untyped)
    if workers is None and scheduler is None:
        return None
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as err:
        msg = "--workers/--scheduler need dask.distributed: pip install 'fastcalo[dask]'"
        raise ValueError(msg) from err
    logging.getLogger("distributed").setLevel(logging.WARNING)  # not its INFO lines about every worker
    if scheduler is not None:
        return Client(scheduler)
    if workers is not None and workers <= 0:
        msg = f"--workers must be > 0, got {workers}"
        raise ValueError(msg)
    # one task at a time per worker process; torch in each worker uses --threads threads (set per task)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster)


def _key_value(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        msg = f"{option}: expected FIELD=BRANCH (e.g. pt=ph_pt), got {item!r}"
        raise ValueError(msg)
    return key, value


def _events(args: argparse.Namespace) -> int:
    from . import particles

    path = particles.write_example(args.output, n_events=args.n_events, seed=args.seed, overwrite=args.overwrite)
    log.info("wrote %d NanoAOD-style events to %s", args.n_events, path)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import check_output, export_onnx

    check_output(args.output, overwrite=args.overwrite)  # refuse before loading torch's exporter, not after
    try:
        path = export_onnx(args.output, model=args.model, opset=args.opset, overwrite=args.overwrite)
    except ImportError as error:  # the optional onnx extra: one line naming it, as for other bad input
        raise ValueError(str(error)) from None
    log.info("wrote %s (the model %s as one ONNX graph, opset %d; docs/export.md)", path, args.model, args.opset)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastcalo", description="Fast calorimeter shower simulation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "mc",
        help="generate reference Monte Carlo showers",
        description="Generate showers with the reference Monte Carlo, on all cores, into a ROOT or HDF5 file.",
        epilog="example: fastcalo mc --particle photon --energy 1:100 --log-uniform --eta -1.5:1.5 "
        "--n 100000 --seed 1 -o reference.h5",
    )
    # the defaults of --particle, --energy and --eta are set in _mc, so that --like can refuse them when given
    p.add_argument("--particle", default=None, help="photon, electron or positron (default photon)")
    p.add_argument(
        "--energy", default=None, help="GeV: LOW:HIGH range (n in all) or points '1,10,100' (n at each point; default 1:100)"
    )
    p.add_argument("--log-uniform", action="store_true", help="sample the energy range uniformly in log(E)")
    p.add_argument("--eta", default=None, help="LOW:HIGH (uniform) or one value (default 0)")
    p.add_argument("--n", type=int, default=None, help="showers in all, or per energy point")
    p.add_argument(
        "--like",
        type=Path,
        default=None,
        help="simulate exactly the particles (energy, eta, phi, pdgid, impact point) of this shower file, "
        "e.g. the output of 'fastcalo simulate', instead of --energy/--eta/--particle/--n",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file, .root or .h5")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    p.add_argument("--chunk-size", type=int, default=2000, help="showers per chunk in memory (default 2000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_mc)

    p = sub.add_parser(
        "simulate",
        help="simulate the showers of every particle in a ROOT file with a trained model",
        description="Read particle kinematics from a ROOT TTree (NanoAOD, Delphes, flat trees or an explicit "
        "branch mapping; docs/particles.md), generate one shower per particle and write them by event, "
        "atomically, to ROOT or HDF5 (docs/user-guide.md).",
        epilog="examples: fastcalo simulate events.root -o showers.root --collection Photon; "
        "fastcalo simulate --like reference.h5 -o generated.h5",
    )
    p.add_argument("input", type=Path, nargs="?", default=None, help="input ROOT file")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file, .root or .h5")
    p.add_argument(
        "--like",
        type=Path,
        default=None,
        help="instead of an input ROOT file: simulate exactly the particles (energy, eta, phi, pdgid, impact point) "
        "of this shower file, e.g. a reference MC sample, into a flat shower file to compare with it",
    )
    p.add_argument("--tree", default=None, help="input TTree (default: the only one in the file)")
    p.add_argument("--collection", default=None, help="particle collection, e.g. Photon, Electron, GenPart")
    # the choices below spell out particles.PRESETS, engine.DTYPES and engine.OUT_OF_RANGE, so that
    # the parser needs neither awkward nor torch (seconds of start-up); a test holds them equal
    p.add_argument("--preset", default=None, choices=("auto", "nanoaod", "delphes", "flat"), help="input layout (default auto)")
    p.add_argument(
        "--branch", action="append", default=None, metavar="FIELD=BRANCH", help="explicit branch mapping, repeatable"
    )
    p.add_argument("--particle", default=None, help="particle type where the input does not say it")
    p.add_argument("--model", default="default", help="model directory, 'default' (the shipped model) or 'gflash' (the parametrised peer)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=None, help="particles per generator call")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="generator arithmetic")
    p.add_argument(
        "--out-of-range", default="error", choices=("error", "clip", "skip"), help="particles outside the model's ranges"
    )
    p.add_argument("--step-size", type=int, default=10_000, help="input events per chunk (default 10000; simulator.STEP_SIZE)")
    p.add_argument(
        "--copy-branches", nargs="*", default=None, metavar="BRANCH", help="copy input branches (all if none named)"
    )
    p.add_argument(
        "--cells", default=None, choices=("dense", "hits"),
        help="ROOT output: 576 cells per particle, or the cells above threshold as index + energy (default: datasets.CELLS)",
    )  # fmt: skip
    p.add_argument(
        "--compression", default=None, metavar="ALGORITHM[:LEVEL]",
        help="ROOT output: zlib, lz4, zstd or lzma with a level, or none (default: datasets.COMPRESSION)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=None, help="simulate on a local dask.distributed cluster of N workers")
    p.add_argument("--scheduler", default=None, help="simulate on an existing dask.distributed scheduler (ADDRESS)")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads of this process and of each dask worker (default: torch's choice)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_simulate)

    p = sub.add_parser(
        "events",
        help="write an example NanoAOD-style input file (photons and electrons)",
        description="Write a NanoAOD-style ROOT file (tree Events: nPhoton, Photon_pt/eta/phi/mass, nElectron, "
        "Electron_pt/eta/phi/mass/charge/pdgId, ...) with photons and electrons of 1-100 GeV, |eta| < 1.4.",
        epilog="example: fastcalo events -o events.root --n-events 1000 --seed 1",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output ROOT file")
    p.add_argument("--n-events", type=int, default=1000, help="events (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_events)

    p = sub.add_parser(
        "export",
        help="write a model's whole generation as one ONNX graph, for C++ frameworks (ONNX Runtime)",
        description="Write the whole generation of a model (condition encoding, energy model, generator, detector "
        "response) as one ONNX graph whose random numbers are inputs, atomically; its inputs, outputs and "
        "metadata: docs/export.md. Needs pip install 'fastcalo[onnx]'.",
        epilog="example: fastcalo export --onnx fastcalo-default.onnx",
    )
    # dest "output": the name the interrupt handling of _run looks for
    p.add_argument("--onnx", dest="output", type=Path, required=True, metavar="FILE", help="the ONNX file to write")
    p.add_argument("--model", default="default", help="model directory (default: the shipped model)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 18 (default 18; export.DEFAULT_OPSET)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing file, and only one that fastcalo export wrote"
    )
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "train",
        help="train a model (WGAN-GP) on reference-MC showers that its config generates",
        description="Train a model as a TOML config says (see docs/model.md, section Training); the run directory "
        "holds the config, metrics.jsonl, plots, shower grids, a resumable checkpoint, best/ and final/. "
        "Running again on the same directory resumes.",
        epilog="example: fastcalo train --config fastcalo/models/default/train.toml --run-dir runs/default",
    )
    p.add_argument("--config", type=Path, required=True, help="TOML run config")
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default runs/<config name>)")
    p.add_argument("--steps", type=int, default=None, help="override [train] steps")
    p.add_argument("--export", type=Path, default=None, help="copy the kept model (and the config) to this directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --export directory")
    p.add_argument("--fresh-only", action="store_true", help="refuse to resume an existing run directory")
    p.add_argument(
        "--start-from", type=Path, default=None, metavar="RUN_DIR",
        help="begin at the checkpoint of the run in RUN_DIR (same [model] and [data]) under this config: a second phase of training",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads for this process (default: the config's [train] threads)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)
    return parser


class _Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) as an exception, so that the writers' clean-up runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: the signals received by this process's command: a library that catches the KeyboardInterrupt
#: (scikit-learn's MLPClassifier.fit does) loses its signal number; the re-raised one has none.
_SIGNALS: list[int] = []


def _interrupt(signum: int, frame: object) -> None:
    _SIGNALS.append(signum)
    # a second signal ends the process at once, as SIGKILL would (the next run removes leftovers)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise _Interrupted(signum)


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Run the parsed command: its errors become one line and exit 2; SIGINT and SIGTERM stop it
    with clean-up (no temporary file left), one line and exit 128 + the signal (130, 143)."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_join_signed(raw))
    args.argv = raw
    output = getattr(args, "output", None)
    existed = output is not None and Path(output).exists()
    previous = None
    _SIGNALS.clear()
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return int(args.func(args))
    except OutputExistsError as error:  # the library's hint names its keyword; here, the option
        parser.exit(2, f"{parser.prog}: error: {error.path} already exists (--overwrite replaces it)\n")
    except (ValueError, KeyError, OSError) as error:
        # KeyError's own str() quotes its argument; errors that format themselves keep their message
        plain_key = isinstance(error, KeyError) and type(error).__str__ is KeyError.__str__
        message = error.args[0] if plain_key and error.args else error
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    except KeyboardInterrupt as error:
        signum = error.signum if isinstance(error, _Interrupted) else (_SIGNALS[-1] if _SIGNALS else int(signal.SIGINT))
        outcome = ": no output written" if output is not None and not existed and not Path(output).exists() else ""
        sys.stderr.write(f"{parser.prog}: interrupted ({signal.Signals(signum).name}){outcome}\n")
        return 128 + signum
    finally:
        for signum, handler in (previous or {}).items():
            if handler is not None:  # None: not installed from Python, nothing to restore
                signal.signal(signum, handler)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``fastcalo``: the command-line entry point."""
    return _run(_parser(), argv)


def _validate(args: argparse.Namespace) -> int:
    from .validation import Thresholds, compare
    from .validation.observables import DISPLACED_MM
    from .validation.report import check_report_directory

    inputs = [p for p in (args.reference, args.generated, args.thresholds) if p is not None]
    check_report_directory(args.output, overwrite=args.overwrite, keep=inputs)  # refuse before the work, not after
    thresholds = Thresholds.from_toml(args.thresholds) if args.thresholds else Thresholds()
    report = compare(
        args.reference,
        args.generated,
        classifier=not args.no_classifier,
        thresholds=thresholds,
        max_showers=args.max_showers,
        progress=not args.no_progress,
    )
    path = report.write(args.output, overwrite=args.overwrite, keep=inputs, progress=not args.no_progress)
    checks = report.summary()
    failed = [c.name for c in checks if not c.passed]
    if checks:
        log.info("%d of %d checks pass%s", len(checks) - len(failed), len(checks), f"; failed: {', '.join(failed)}" if failed else "")
    if len(report.displaced) == 2:
        (a, n_a), (b, n_b) = report.displaced
        log.info("showers far off the impact point (centroid beyond %g mm along y): reference %d of %d, generated %d of %d", DISPLACED_MM, a, n_a, b, n_b)
    log.info("wrote the report to %s (open %s)", path, path / "index.html")
    return 1 if args.strict and failed else 0


def _validate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastcalo-validate",
        description="Validation plots and metrics of a shower dataset, or of a generated one against a reference.",
        epilog="example: fastcalo-validate --reference reference.h5 --generated generated.root -o report/",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--reference", type=Path, required=True, help="reference showers (.root or .h5)")
    parser.add_argument("--generated", type=Path, help="showers to compare with the reference (.root or .h5)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the report directory, which must not exist (see --overwrite)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing report directory; only a fastcalo report is replaced, never the current directory or one holding an input",
    )
    parser.add_argument("--max-showers", type=int, default=None, help="read at most this many showers per file")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a check fails (the report is written all the same): a gate for CI")
    parser.add_argument("--no-classifier", action="store_true", help="skip the classifiers: the AUC and the 'Where it fails' diagnosis (the slowest steps)")
    parser.add_argument(
        "--thresholds", type=Path, default=None, help="TOML file overriding pass/fail thresholds (docs/validation.md)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_validate)
    return parser


def validate_main(argv: Sequence[str] | None = None) -> int:
    """``fastcalo-validate``: plots and metrics of shower datasets (see ``docs/validation.md``)."""
    return _run(_validate_parser(), argv)
