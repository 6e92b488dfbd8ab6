"""Nothing lost on faults and signals: real processes, real signals, a real file size limit.

Each test runs ``python -m fastcalo`` as a subprocess (the installed command's code path), sends
it a signal or limits the size of the files it may write (RLIMIT_FSIZE: writes beyond it fail
with EFBIG, as on a full disk), and checks the exit status, the one-line message and that no
temporary or partial file is left.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fastcalo import datasets as ds
from fastcalo.cli import main, validate_main

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def _size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills it instead of failing the write
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _fastcalo(*args: str, limit: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastcalo", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=None if limit is None else _size_limit(limit),
        check=False,
    )


@pytest.fixture(scope="module", autouse=True)
def _compiled_kernels(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compile the MC kernels (numba writes its cache beside the sources) once, without a size
    limit: else a limited child fails on numba's cache file before fastcalo writes anything."""
    run = _fastcalo("mc", "--n", "2", "-o", str(tmp_path_factory.mktemp("warm") / "warm.h5"), "--no-progress")
    assert run.returncode == 0, run.stderr


def _assert_one_line(stderr: str, expected: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert expected in lines[0], stderr
    assert "Traceback" not in stderr and "Segmentation" not in stderr


@pytest.mark.parametrize("suffix", [".h5", ".root"])
def test_mc_on_a_full_disk(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"ref{suffix}"
    run = _fastcalo("mc", "--n", "200", "--energy", "1:5", "--chunk-size", "100", "-o", str(out), "--no-progress", limit=20_000)
    assert run.returncode == 2, run.stderr  # before: HDF5 gave hundreds of tracebacks and a segfault (139)
    _assert_one_line(run.stderr, f"fastcalo: error: cannot write {out}: File too large (EFBIG); {out} was not written")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".h5", ".root"])
def test_simulate_on_a_full_disk(tmp_path: Path, suffix: str) -> None:
    from fastcalo import particles

    events = particles.write_example(tmp_path / "events.root", n_events=200, seed=2)
    out = tmp_path / f"showers{suffix}"
    run = _fastcalo("simulate", str(events), "-o", str(out), "--collection", "Photon", "--device", "cpu", "--no-progress", limit=20_000)
    assert run.returncode == 2, run.stderr
    _assert_one_line(run.stderr, f"fastcalo: error: cannot write {out}: File too large (EFBIG)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.root"]


def _start_mc(out: Path) -> subprocess.Popen[str]:
    """A ``fastcalo mc`` run of many minutes, returned once its temporary output file exists."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fastcalo", "mc", "--n", "20000", "--energy", "50:100", "-o", str(out), "--no-progress"],
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not ds.leftover_temporaries(out):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "fastcalo mc did not start writing"
        time.sleep(0.1)
    time.sleep(2.0)  # into the simulation (numba kernels running)
    return process


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_mc_stops_cleanly_on_a_signal(tmp_path: Path, signum: signal.Signals, code: int) -> None:
    out = tmp_path / "ref.h5"
    process = _start_mc(out)
    sent = time.monotonic()
    process.send_signal(signum)
    stderr = process.communicate(timeout=60)[1]
    reaction = time.monotonic() - sent
    assert process.returncode == code, stderr  # before: SIGTERM 143 without clean-up, SIGINT a traceback
    _assert_one_line(stderr, f"fastcalo: interrupted ({signum.name}): no output written")
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary file
    assert reaction < 15, f"took {reaction:.1f} s to stop"  # before: a whole chunk (7.6 s to minutes)


def test_leftover_of_a_killed_run_is_removed_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "ref.root"
    process = _start_mc(out)
    process.kill()  # SIGKILL cannot be caught: the temporary stays
    process.communicate(timeout=60)
    [(leftover, _, pid)] = ds.leftover_temporaries(out)
    assert pid == process.pid and leftover.name.startswith(".ref.root.") and leftover.name.endswith(".fastcalo-tmp.root")
    run = _fastcalo("mc", "--n", "3", "--energy", "2", "-o", str(out), "--no-progress")
    assert run.returncode == 0, run.stderr
    assert f"removed {leftover}, left by an interrupted fastcalo run (process {pid}, no longer running)" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.root"]
    assert len(ds.read(out)) == 3


@pytest.mark.parametrize("mask", [0o022, 0o077])
@pytest.mark.parametrize("suffix", [".h5", ".root"])
def test_mc_output_follows_the_umask(tmp_path: Path, mask: int, suffix: str) -> None:
    original = os.umask(mask)
    try:
        assert main(["mc", "--n", "2", "--energy", "2", "-o", str(tmp_path / f"ref{suffix}"), "--no-progress"]) == 0
    finally:
        os.umask(original)
    assert stat.S_IMODE((tmp_path / f"ref{suffix}").stat().st_mode) == 0o666 & ~mask  # before: always 0600


@pytest.fixture
def damaged(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    rng = np.random.default_rng(3)
    n = 200
    good = ds.write(
        ds.ShowerData.from_arrays(energy=rng.uniform(1, 100, n), eta=np.zeros(n), phi=np.zeros(n), pdgid=np.full(n, 22),
                                  impact_x=np.full(n, 5.0), impact_y=np.full(n, 5.0), images=rng.exponential(0.1, (n, 24, 24))),
        tmp_path / "good.h5",
    )  # fmt: skip
    content = good.read_bytes()
    bad = tmp_path / f"{request.param}.h5"
    bad.write_bytes({"truncated": content[: len(content) // 2], "garbage": rng.bytes(4096), "empty": b""}[request.param])
    return bad


@pytest.mark.parametrize("damaged", ["truncated", "garbage", "empty"], indirect=True)
def test_damaged_hdf5_through_the_commands(damaged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = f"error: {damaged}: not a readable HDF5 file ("
    with pytest.raises(SystemExit) as info:
        validate_main(["--reference", str(damaged), "-o", str(tmp_path / "report"), "--no-progress", "--no-classifier"])
    assert info.value.code == 2
    _assert_one_line(capsys.readouterr().err, "fastcalo-validate: " + expected)
    with pytest.raises(SystemExit) as info:
        main(["mc", "--like", str(damaged), "-o", str(tmp_path / "mc.h5"), "--no-progress"])
    assert info.value.code == 2
    _assert_one_line(capsys.readouterr().err, "fastcalo: " + expected)
    assert not (tmp_path / "mc.h5").exists() and not (tmp_path / "report").exists()


def test_validate_stops_on_a_signal_while_the_classifier_trains(tmp_path: Path) -> None:
    """scikit-learn's MLPClassifier.fit catches the KeyboardInterrupt that SIGTERM becomes and
    returns its half-trained model: the report went on and was written with that classifier's AUC
    (and a second signal was needed to stop it). It must stop, write nothing and exit 143."""
    from fastcalo import mc

    for seed, name in ((1, "ref.h5"), (2, "gen.h5")):
        c = mc.sample_conditions(3000, energy=(1.0, 2.0), eta=(-0.5, 0.5), seed=seed)
        ds.write(mc.simulate(c["energy"], c["eta"], impact_x=c["impact_x"], impact_y=c["impact_y"], seed=seed).showers, tmp_path / name)
    out = tmp_path / "report"
    code = "import sys; from fastcalo.cli import validate_main; sys.exit(validate_main())"
    args = ["--reference", str(tmp_path / "ref.h5"), "--generated", str(tmp_path / "gen.h5"), "-o", str(out)]
    process = subprocess.Popen([sys.executable, "-c", code, *args], env=_env(), stderr=subprocess.PIPE)
    assert process.stderr is not None
    seen, deadline = b"", time.monotonic() + 240
    while b"classifier (low-level)" not in seen:  # the progress bar: the first classifier starts
        assert time.monotonic() < deadline and process.poll() is None, seen.decode()
        seen += os.read(process.stderr.fileno(), 4096)
    time.sleep(1.0)  # inside the first seed's fit (3 fits of a few seconds each follow)
    process.send_signal(signal.SIGTERM)
    rest = process.communicate(timeout=120)[1]
    stderr = (seen + rest).decode()
    assert process.returncode == 143, stderr  # before: 0, and a report with a half-trained classifier's AUC
    assert stderr.rstrip().splitlines()[-1].endswith("fastcalo-validate: interrupted (SIGTERM): no output written"), stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.h5", "ref.h5"]
