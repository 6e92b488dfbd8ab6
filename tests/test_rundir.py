"""The run directory: the resume check (refusal, extension), the checkpoint round trip, the log."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

from fastcalo.averaging import WeightAverage
from fastcalo.model import ModelConfig, ShowerModel
from fastcalo.rundir import Progress, RunDirectory
from fastcalo.runconfig import RunConfig, load_config

SMALL = ModelConfig(latent_dim=4, generator_hidden=(8,), critic_hidden=(8,), energy_hidden=(4,), n_quantiles=5)


def config(**train: object) -> RunConfig:
    return load_config(None, model=dataclasses.asdict(SMALL), train={"steps": 40, **train})


def written(path: Path, step: int = 0, **train: object) -> RunDirectory:
    """A run directory as a run of ``config(**train)`` leaves it, with a checkpoint at ``step``."""
    run = RunDirectory(path, config(**train))
    run.check()
    run.create()
    (path / "checkpoint.json").write_text(json.dumps({"step": step}))
    return run


def test_a_new_directory_is_created_by_the_lead_only(tmp_path: Path) -> None:
    RunDirectory(tmp_path / "other", config(), lead=False).create()
    assert not (tmp_path / "other").exists()
    run = RunDirectory(tmp_path / "run", config())
    run.check(resume=False)  # nothing there yet
    run.create()
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == config().to_dict()
    assert (tmp_path / "run" / "grids").is_dir()


def test_a_run_stopped_early_can_end_where_it_stopped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run set up for 60 steps and stopped at 40 may be given 40 or 50 (never fewer than done)."""
    written(tmp_path, step=40, steps=60)
    with caplog.at_level(logging.INFO, logger="fastcalo.train"):
        RunDirectory(tmp_path, config(steps=50)).check()
    assert f"ending {tmp_path} at 50 generator steps (its config said 60)" in caplog.text
    with pytest.raises(ValueError, match="already trained 40 steps; train.steps = 30 cannot shorten it"):
        RunDirectory(tmp_path, config(steps=30)).check()


def test_an_existing_run_is_refused_without_resume_and_resumed_with_it(tmp_path: Path) -> None:
    written(tmp_path, step=20)
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunDirectory(tmp_path, config()).check(resume=False)
    RunDirectory(tmp_path, config()).check()


def test_only_more_steps_extend_a_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    written(tmp_path, step=40)
    with caplog.at_level(logging.INFO, logger="fastcalo.train"):
        RunDirectory(tmp_path, config(steps=60)).check()
    assert f"extending {tmp_path} from 40 to 60 generator steps" in caplog.text
    with pytest.raises(ValueError, match="already trained 40 steps; train.steps = 30 cannot shorten it"):
        RunDirectory(tmp_path, config(steps=30)).check()
    with pytest.raises(ValueError, match=r"different config \(train.lr, train.steps\)"):
        RunDirectory(tmp_path, config(steps=60, lr=1e-3)).check()


def test_weight_averaging_may_be_added_only_after_the_steps_done(tmp_path: Path) -> None:
    written(tmp_path, step=40)
    RunDirectory(tmp_path, config(steps=60, ema_decay=0.9, ema_start=40)).check()
    with pytest.raises(ValueError, match=r"different config \(train.ema_decay, train.ema_start, train.steps\)"):
        RunDirectory(tmp_path, config(steps=60, ema_decay=0.9, ema_start=10)).check()


def test_learning_rate_decay_may_be_added_only_after_the_steps_done(tmp_path: Path) -> None:
    written(tmp_path, step=40)
    RunDirectory(tmp_path, config(steps=60, lr_decay_start=40, lr_decay_steps=20)).check()
    with pytest.raises(ValueError, match=r"different config \(train.lr_decay_start, train.lr_decay_steps, train.steps\)"):
        RunDirectory(tmp_path, config(steps=60, lr_decay_start=30, lr_decay_steps=20)).check()
    for bad in ({"lr_decay_start": -1}, {"lr_decay_steps": 1.5}, {"lr_decay_steps": True}):
        with pytest.raises(ValueError, match=f"train.{next(iter(bad))} must be an integer >= 0"):
            config(steps=60, **bad)


def test_a_config_stored_before_a_field_existed_compares_at_its_default(tmp_path: Path) -> None:
    written(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["train"]["ema_decay"], stored["train"]["ema_start"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    RunDirectory(tmp_path, config()).check()


def parts(decay: float = 0.0) -> tuple[ShowerModel, dict[str, torch.optim.Optimizer], torch.Generator, WeightAverage]:
    torch.manual_seed(0)
    model = ShowerModel(SMALL)
    optimizers: dict[str, torch.optim.Optimizer] = {"generator": torch.optim.Adam(model.generator.parameters()), "critic": torch.optim.Adam(model.critic.parameters())}
    average = WeightAverage(list(model.generator.parameters()), decay=decay, start=1)
    return model, optimizers, torch.Generator().manual_seed(5), average


def test_a_checkpoint_restores_weights_moments_random_state_and_average(tmp_path: Path) -> None:
    run = written(tmp_path, ema_decay=0.5, ema_start=1)
    model, optimizers, rng, average = parts(decay=0.5)
    for opt in optimizers.values():  # one step, so that the moments exist
        opt.zero_grad()
        sum(p.sum() for p in model.parameters()).backward()  # type: ignore[union-attr]
        opt.step()
    average.update(2)
    run.log({"step": 10, "kind": "train"})
    run.log({"step": 20, "kind": "eval"})
    run.log({"step": 30, "kind": "train"})  # after the checkpoint: cut on resume
    run.save_checkpoint(model, optimizers, [rng.get_state()], Progress(step=20, best_score=0.5, best_step=20), average)
    expected = torch.rand(3, generator=rng)

    again, optimizers2, rng2, average2 = parts(decay=0.5)
    with torch.no_grad():
        for p in again.parameters():
            p.zero_()
    state = run.resume(again, optimizers2, rng2, average2)
    assert state == Progress(step=20, best_score=0.5, best_step=20)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    for name, opt in optimizers.items():
        a, b = opt.state_dict()["state"], optimizers2[name].state_dict()["state"]
        assert a.keys() == b.keys() and all(torch.equal(a[i][k], b[i][k]) for i in a for k in a[i]), name
    assert torch.equal(torch.rand(3, generator=rng2), expected)
    assert average2.started and all(torch.equal(a, b) for a, b in zip(average.state(), average2.state()))
    assert [json.loads(line)["step"] for line in run.metrics_path.read_text().splitlines()] == [10, 20]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_the_checkpoint_follows_the_umask(tmp_path: Path, mask: int) -> None:
    """Every file of the run directory, the checkpoint's weights too (safetensors writes them
    0600), gets 0o666 & ~umask: a run is as shareable as the user's other files."""
    import os
    import stat

    original = os.umask(mask)
    try:
        run = written(tmp_path)
        model, optimizers, rng, average = parts()
        run.log({"step": 10, "kind": "eval"})
        run.save_checkpoint(model, optimizers, [rng.get_state()], Progress(step=10), average)
    finally:
        os.umask(original)
    files = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert {"checkpoint.safetensors", "checkpoint.json", "config.json"} <= set(files)
    assert {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in files} == dict.fromkeys(files, 0o666 & ~mask)


def test_a_checkpoint_without_what_the_run_needs_is_refused(tmp_path: Path) -> None:
    run = written(tmp_path, ema_decay=0.5, ema_start=1)
    model, optimizers, rng, _ = parts()
    run.save_checkpoint(model, optimizers, [rng.get_state()], Progress(step=20), WeightAverage([], decay=0.0, start=0))
    with pytest.raises(ValueError, match="no random state for process 1"):
        run.resume(*parts(), rank=1)
    with pytest.raises(ValueError, match=r"holds 0 averaged weights.*ema_start = 1"):
        run.resume(*parts(decay=0.5))


def test_without_a_checkpoint_the_run_starts_afresh(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path, config())
    run.create()
    run.log({"step": 50, "kind": "train"})  # left by an earlier run that never checkpointed
    assert run.resume(*parts()) == Progress()
    assert not run.metrics_path.exists()


def test_the_kept_model_is_an_averaged_one_once_averaging_is_on() -> None:
    state = Progress()
    assert state.keep(0.5, 0, averaging=True, averaged=False) is False  # raw, before the average starts
    assert state.keep(0.9, 10, averaging=True, averaged=True) is True  # the first averaged one
    assert state.keep(0.95, 20, averaging=True, averaged=True) is False
    extended = Progress(best_score=0.1, best_step=20)  # a raw best, then averaging added
    assert extended.keep(0.4, 30, averaging=True, averaged=True) is True and extended.best_averaged


def test_the_checkpoint_is_whole_after_a_stop_between_its_two_files(tmp_path: Path) -> None:
    """The progress is stored inside checkpoint.safetensors, so a run killed after the weights'
    rename but before checkpoint.json's resumes at the weights' step, not the older copy's; a
    write that fails leaves no temporary file."""
    run = written(tmp_path)
    model, optimizers, rng, average = parts()
    run.save_checkpoint(model, optimizers, [rng.get_state()], Progress(step=10), average)
    old_copy = (tmp_path / "checkpoint.json").read_text()
    run.save_checkpoint(model, optimizers, [rng.get_state()], Progress(step=20, best_step=20), average)
    (tmp_path / "checkpoint.json").write_text(old_copy)  # as if killed between the two renames
    assert run.resume(*parts()) == Progress(step=20, best_step=20)
    assert run._checkpoint_step() == 20
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # as a full disk, for this write only
    try:
        with pytest.raises(Exception, match=r"File too large \(os error 27\)"):  # noqa: PT011: safetensors' own error type
            run.save_checkpoint(model, optimizers, [rng.get_state()], Progress(step=30), average)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert run._checkpoint_step() == 20  # the last whole checkpoint stays
