"""Training: config loading, gradient penalty, a tiny real run that improves, resume, BCE baseline, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fastcalo import cli
from fastcalo.model import load
from fastcalo.rundir import RunDirectory
from fastcalo.train import dataset_path, gradient_penalty, load_config, retrain_energy, summed_energy_mmd, train

TINY = """
data_dir = "{data_dir}"
[data]
n_per_particle = 300
energy = [1.0, 10.0]
seed = 3
[monitor]
points = [2.0, 6.0]
n_per_point = 250
seed = 1003
[model]
latent_dim = 8
generator_hidden = [64, 128]
critic_hidden = [128, 64]
energy_hidden = [16]
n_quantiles = 20
cell_noise = {cell_noise}
energy = "{energy}"
{model_extra}
[train]
steps = {steps}
eval_every = {eval_every}
energy_steps = 200
threads = 1
loss = "{loss}"
n_critic = {n_critic}
ema_decay = {ema_decay}
ema_start = {ema_start}
lr_decay_start = {lr_decay_start}
lr_decay_steps = {lr_decay_steps}
"""


def tiny_config(
    tmp_path: Path,
    data_dir: Path,
    *,
    steps: int = 200,
    eval_every: int = 100,
    loss: str = "wgan-gp",
    n_critic: int = 5,
    cell_noise: bool = False,
    energy: str = "model",
    ema_decay: float = 0.0,
    ema_start: int = 0,
    lr_decay: tuple[int, int] = (0, 0),
    model_extra: str = "",
) -> Path:
    path = tmp_path / f"tiny-{loss}-{steps}-{cell_noise}-{energy}-{n_critic}-{ema_decay}-{ema_start}-{lr_decay[0]}-{lr_decay[1]}-{len(model_extra)}.toml"
    text = TINY.format(
        data_dir=data_dir, steps=steps, eval_every=eval_every, loss=loss, n_critic=n_critic, cell_noise=str(cell_noise).lower(), energy=energy,
        ema_decay=ema_decay, ema_start=ema_start, lr_decay_start=lr_decay[0], lr_decay_steps=lr_decay[1], model_extra=model_extra,
    )  # fmt: skip
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mc-data")


def test_gradient_penalty_of_a_quadratic_critic() -> None:
    """D(x) = |x|^2 / 2 has gradient x: at x_hat = real = fake the penalty is (|x| - 1)^2 exactly."""
    x = torch.tensor([[3.0, 4.0], [0.0, 0.5], [1.0, 0.0]])
    gp = gradient_penalty(lambda v: 0.5 * (v**2).sum(1), x, x.clone())
    assert gp.item() == pytest.approx(((5 - 1) ** 2 + 0.5**2 + 0) / 3)


def test_load_config_rejects_what_it_does_not_know(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['stepz'\] in \[train\]; valid keys are .*'steps'"):
        load_config(bad)
    bad.write_text("[trian]\nsteps = 3\n")
    with pytest.raises(ValueError, match=r"unknown table\(s\) or key\(s\) \['trian'\]"):
        load_config(bad)
    bad.write_text("[train\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ValueError, match="train.loss must be 'wgan-gp' or 'bce', got 'mse'"):
        load_config(None, train={"loss": "mse"})
    # values of the right kind only: refused on loading, not hours later (or never)
    refused = {
        r"monitor.seed = 2 must keep the \[monitor\] seeds \(2..2\) apart from the \[data\] ones \(1..3": {"monitor": {"seed": 2}},
        r"energy_data.seed = 3 must keep the \[energy_data\] seeds \(3..5\) apart from the \[data\] ones \(1..3": {"energy_data": {"seed": 3}},
        r"energy_data.seed = 999 .* apart from the \[monitor\] ones \(1000..1000": {"energy_data": {"seed": 999}},
        r"\[energy_data\] feeds the energy model's pre-training, which model.energy = 'loss' does not have": {"energy_data": {"seed": 11}, "model": {"energy": "loss"}},
        r"data.particles must be a non-empty list of \['photon', 'electron', 'positron'\].*got 'photon'": {"data": {"particles": "photon"}},
        r"monitor.particles must be .* got \('muon',\)": {"monitor": {"particles": ["muon"]}},
        "train.batch_size must be a positive integer, got True": {"train": {"batch_size": True}},
        r"train.lr must be a learning rate > 0, got -1.0": {"train": {"lr": -1.0}},
        r"train.threshold must be 'soft' or 'straight-through', got 'hard'": {"train": {"threshold": "hard"}},
    }
    for match, overrides in refused.items():
        with pytest.raises(ValueError, match=match):
            load_config(None, **overrides)
    assert load_config(None, monitor={"seed": 4}).monitor.seed == 4  # next to the data's 1..3: apart
    assert load_config(None).energy_data is None and load_config(None, energy_data={"seed": 11}).energy_data.seed == 11  # type: ignore[union-attr]


def test_the_run_config_is_importable_from_train_and_takes_data_dir(tmp_path: Path) -> None:
    from fastcalo import runconfig
    from fastcalo import train as train_module

    for name in ("DataConfig", "MonitorConfig", "RunConfig", "TrainConfig", "dataset_path", "load_config", "make_dataset"):
        assert getattr(train_module, name) is getattr(runconfig, name) and name in train_module.__all__
    config = load_config(None, data={"n_per_particle": 10}, data_dir=str(tmp_path))
    assert config.data_dir == str(tmp_path) and config.data.n_per_particle == 10


def test_tiny_run_improves_the_monitor_and_shows_its_health(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    best = train(load_config(tiny_config(tmp_path, data_dir)), run, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 100, 200]
    # fixed monitor showers and fixed noise: the score's change is the model's, not sampling noise
    assert evals[-1]["score"] < 0.9 * evals[0]["score"], [r["score"] for r in evals]
    assert all(np.isfinite(r["wasserstein"]) for r in records if r["kind"] == "train")
    assert all(0.0 <= r["classifier_auc"] <= 1.0 for r in evals)  # the target metric is watched too
    assert evals[0]["classifier_auc"] > 0.9  # the untrained generator is told apart at once
    for name in ("config.json", "losses.png", "monitor.png", "grids/step_0000000.png", "grids/step_0000200.png", "checkpoint.safetensors"):
        assert (run / name).is_file(), name
    model = load(best)
    assert model.metadata["training"]["step"] == min((r for r in evals), key=lambda r: r["score"])["step"]  # type: ignore[attr-defined]
    images = model.sample(energy=[3.0], eta=[0.2], pdgid=[22], impact_x=[5.0], impact_y=[5.0])
    assert images.shape == (1, 24, 24) and 2.0 < images.sum() < 3.2
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(load_config(tiny_config(tmp_path, data_dir)), run, resume=False, progress=False)


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tmp_path: Path, data_dir: Path) -> None:
    config = load_config(tiny_config(tmp_path, data_dir, steps=40, eval_every=20))
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "resumed", progress=False, until=30)
    assert not (tmp_path / "resumed" / "final").exists()
    train(config, tmp_path / "resumed", progress=False)
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_energy_data_trains_only_the_energy_model_and_retrain_energy_gives_it_again(tmp_path: Path, data_dir: Path) -> None:
    plain = tiny_config(tmp_path, data_dir, steps=4, eval_every=4)
    extra = tmp_path / "energy-data.toml"  # 300 more photons at 5-10 GeV, for the energy model only
    extra.write_text(plain.read_text() + '[energy_data]\nparticles = ["photon"]\nn_per_particle = 300\nenergy = [5.0, 10.0]\nseed = 21\n')
    config = load_config(extra)
    assert config.energy_data is not None
    train(load_config(plain), tmp_path / "plain", progress=False)
    train(config, tmp_path / "extra", progress=False)
    assert dataset_path(config.energy_data, data_dir).is_file()
    a, b = load(tmp_path / "plain" / "final"), load(tmp_path / "extra" / "final")
    assert json.loads((tmp_path / "extra" / "config.json").read_text())["energy_data"]["seed"] == 21
    for net in ("generator", "critic"):  # the GAN never sees the energy model while it trains
        for key, value in getattr(a, net).state_dict().items():
            torch.testing.assert_close(getattr(b, net).state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(value, b.energy.state_dict()[key]) for key, value in a.energy.state_dict().items())
    # the plain run's model takes the energy model the other config trains: the same to the bit
    retrain_energy(a, config, progress=False)
    for key, value in b.energy.state_dict().items():
        torch.testing.assert_close(a.energy.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match=r"fields that differ: \['n_quantiles'\]"):
        retrain_energy(a, load_config(extra, model={"n_quantiles": 30}), progress=False)
    with pytest.raises(ValueError, match="is not the model's training data"):
        retrain_energy(a, load_config(extra, data={"seed": 4}, energy_data={"seed": 31}), progress=False)
    # a run made before the table existed resumes under a config without it, and one whose table
    # lacks a field added since (at its default) under the config with it
    for run, path, edit in (("plain", plain, lambda c: c.pop("energy_data")), ("extra", extra, lambda c: c["energy_data"].pop("showers_per_condition"))):
        stored = json.loads((tmp_path / run / "config.json").read_text())
        edit(stored)
        (tmp_path / run / "config.json").write_text(json.dumps(stored))
        train(load_config(path), tmp_path / run, progress=False)
    with pytest.raises(ValueError, match="different config.*energy_data"):
        train(load_config(plain), tmp_path / "extra", progress=False)


def test_bce_baseline_trains(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "bce"
    train(load_config(tiny_config(tmp_path, data_dir, steps=20, eval_every=20, loss="bce", n_critic=1)), run, progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 20]
    assert all(np.isfinite(r["critic_loss"]) and r["critic_loss"] > 0 for r in rows if r["kind"] == "train")


def test_cli_train_and_export(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(tmp_path, data_dir, steps=10, eval_every=10)
    export = tmp_path / "exported"
    argv = ["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--export", str(export), "--no-progress"]
    assert cli.main(argv) == 0
    assert (export / "train.toml").read_text() == config.read_text()
    assert load(export).sample(energy=[2.0], eta=[0.0], pdgid=[11], impact_x=[5.0], impact_y=[5.0]).shape == (1, 24, 24)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert f"error: {export} already exists (--overwrite replaces it)" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite"]) == 0  # a model directory fastcalo wrote: replaced
    assert sorted(p.name for p in export.iterdir()) == ["model.json", "model.safetensors", "train.toml"]
    mine = tmp_path / "configs"  # anyone else's directory is never replaced (nor emptied)
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for target in (mine, tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*argv[:-3], "--export", str(target), "--overwrite", "--no-progress"])
        assert exit_info.value.code == 2
        assert f"{target} already exists and is not a model directory of fastcalo (it holds [" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "mine" and (tmp_path / "run").is_dir()
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nkind = 'rnn'\n")
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "r2")])
    assert "kind must be 'mlp' or 'conv', got 'rnn'" in capsys.readouterr().err


def test_data_parallel_with_two_gloo_processes(tmp_path: Path, data_dir: Path) -> None:
    """torchrun, 2 CPU processes: gradients averaged over both, weights identical at the end."""
    import subprocess
    import sys

    config = tiny_config(tmp_path, data_dir, steps=20, eval_every=10)
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "fastcalo", "train", "--config", str(config), "--run-dir", str(run), "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    processes = json.loads((run / "processes.json").read_text())
    assert processes == {"processes": 2, "max_weight_difference": 0.0}
    assert json.loads((run / "final" / "model.json").read_text())["training"]["processes"] == 2
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [r["step"] for r in evals] == [0, 10, 20]


def test_training_with_cell_noise(tmp_path: Path, data_dir: Path) -> None:
    """The detector's noise added to generated deposits: training runs and its showers carry hits."""
    run = tmp_path / "noise"
    best = train(load_config(tiny_config(tmp_path, data_dir, steps=20, eval_every=20, cell_noise=True)), run, progress=False)
    model = load(best)
    assert model.config.cell_noise
    images = model.sample(energy=np.full(200, 2.0), eta=np.zeros(200), pdgid=np.full(200, 22), impact_x=np.full(200, 5.0), impact_y=np.full(200, 5.0))
    border = np.concatenate([images[:, :3].reshape(200, -1), images[:, -3:].reshape(200, -1)], axis=1)
    assert np.count_nonzero(border) > 0  # noise hits far from the shower, as in the MC
    assert images[images > 0].min() >= model.preprocessing.threshold


def test_summed_energy_mmd_compares_the_spread_at_given_conditions() -> None:
    """Two energies with different widths of r: a generator that swaps the widths matches the pooled
    distribution exactly but not the conditional ones, and the loss sees it."""
    g = torch.Generator().manual_seed(1)
    n = 400
    c = torch.zeros((2 * n, 7))
    c[:, 2] = 1.0  # photons
    c[n:, 0] = 0.8  # a second, higher energy
    widths = torch.cat([torch.full((n,), 1.0), torch.full((n,), 0.3)])
    real = widths * torch.randn(2 * n, generator=g)
    right = widths * torch.randn(2 * n, generator=g)
    swapped = widths.flip(0) * torch.randn(2 * n, generator=g)
    d_right, d_swapped = summed_energy_mmd(c, real, right), summed_energy_mmd(c, real, swapped)
    assert d_swapped > 2.5 * d_right, (float(d_right), float(d_swapped))
    # differentiable in the generated r
    fake = swapped.clone().requires_grad_(True)
    summed_energy_mmd(c, real, fake).backward()
    assert fake.grad is not None and torch.all(torch.isfinite(fake.grad)) and torch.any(fake.grad != 0)


def test_energy_learned_by_the_gan_with_the_summed_energy_loss(tmp_path: Path, data_dir: Path) -> None:
    """model.energy = "loss": no energy model; the total is trained with the generator, and the
    response at the monitor's energy points moves from its random start to the MC's."""
    run = tmp_path / "energy-loss"
    best = train(load_config(tiny_config(tmp_path, data_dir, steps=200, eval_every=100, energy="loss")), run, progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any(r["kind"] == "energy" for r in rows)  # no energy-model pre-training
    mmd = [r["energy_mmd"] for r in rows if r["kind"] == "train"]
    assert len(mmd) == 4 and all(np.isfinite(mmd))
    # the total starts as the pooled distribution (resolution 1.8x the MC's at 6 GeV, 0.95x at 2 GeV)
    # and learns its dependence on the energy
    evals = [r for r in rows if r["kind"] == "eval"]
    deviation = [r["max_resolution_deviation"] for r in evals]
    assert deviation[-1] < 0.8 * deviation[0], deviation
    model = load(best)
    assert model.config.energy == "loss" and type(model.energy).__name__ == "EnergyGenerator"


def test_a_run_can_be_extended_and_is_then_the_longer_run(tmp_path: Path, data_dir: Path) -> None:
    """train.steps may grow on resume (nothing in a step depends on the total); the extended run
    ends with exactly the weights of a run that was that long from the start. Other changes, or
    fewer steps than already done, are refused and named."""
    short, long = (load_config(tiny_config(tmp_path, data_dir, steps=s, eval_every=20)) for s in (20, 40))
    train(long, tmp_path / "long", progress=False)
    train(short, tmp_path / "extended", progress=False)
    train(long, tmp_path / "extended", progress=False)
    a = load_file(str(tmp_path / "long" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "extended" / "final" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert json.loads((tmp_path / "extended" / "config.json").read_text())["train"]["steps"] == 40
    with pytest.raises(ValueError, match="already trained 40 steps; train.steps = 20 cannot shorten it"):
        train(short, tmp_path / "extended", progress=False)
    other = load_config(tiny_config(tmp_path, data_dir, steps=60, eval_every=20, n_critic=3))
    with pytest.raises(ValueError, match=r"different config \(train.n_critic, train.steps\)"):
        train(other, tmp_path / "extended", progress=False)


def test_a_run_started_from_another_goes_on_from_its_checkpoint_under_its_own_config(tmp_path: Path, data_dir: Path) -> None:
    """A second phase of training (``start_from``): the parent's checkpoint, history and energy
    model, this config's settings (here the straight-through threshold and a decay), the parent
    left as it was; the energy model trained again when its settings differ; refusals named."""
    first = load_config(tiny_config(tmp_path, data_dir, steps=10, eval_every=10))
    train(first, tmp_path / "first", progress=False)
    parent_files = {p.name: p.read_bytes() for p in (tmp_path / "first").iterdir() if p.is_file()}
    text = tiny_config(tmp_path, data_dir, steps=14, eval_every=10, lr_decay=(10, 4)).read_text()
    (tmp_path / "second.toml").write_text(text.replace('loss = "wgan-gp"', 'loss = "wgan-gp"\nthreshold = "straight-through"'))
    second = load_config(tmp_path / "second.toml")
    assert second.train.threshold == "straight-through"
    train(second, tmp_path / "second", progress=False, start_from=tmp_path / "first")
    assert {p.name: p.read_bytes() for p in (tmp_path / "first").iterdir() if p.is_file()} == parent_files
    rows = [json.loads(line) for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 10, 14]  # the parent's history goes on
    started = json.loads((tmp_path / "second" / "started_from.json").read_text())
    assert (started["run"], started["step"], started["config"]["train"]["steps"]) == (str((tmp_path / "first").resolve()), 10, 10)
    a, b = load(tmp_path / "first" / "final"), load(tmp_path / "second" / "final")
    assert b.metadata["training"]["started_from"] == {"run": started["run"], "step": 10}
    assert b.metadata["training"]["train"]["threshold"] == "straight-through"
    assert any(not torch.equal(v, b.generator.state_dict()[k]) for k, v in a.generator.state_dict().items())
    for key, value in a.energy.state_dict().items():  # the same energy settings: the parent's energy model
        torch.testing.assert_close(b.energy.state_dict()[key], value, rtol=0, atol=0, msg=key)
    before = (tmp_path / "second" / "checkpoint.safetensors").read_bytes()
    train(second, tmp_path / "second", progress=False, start_from=tmp_path / "first")  # done: resumes, nothing to do
    assert (tmp_path / "second" / "checkpoint.safetensors").read_bytes() == before
    # other energy settings: the energy model is trained again from the start, as retrain_energy would
    (tmp_path / "third.toml").write_text((tmp_path / "second.toml").read_text().replace("energy_steps = 200", "energy_steps = 250"))
    third = load_config(tmp_path / "third.toml")
    train(third, tmp_path / "third", progress=False, start_from=tmp_path / "first")
    c = load(tmp_path / "third" / "final")
    retrain_energy(a, third, progress=False)
    for key, value in a.energy.state_dict().items():
        torch.testing.assert_close(c.energy.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for key, value in b.generator.state_dict().items():  # the GAN's phase as the second's
        torch.testing.assert_close(c.generator.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="only a run of the same model and training data can start from .*keys that differ: model.latent_dim"):
        train(load_config(tmp_path / "second.toml", model={"latent_dim": 4}), tmp_path / "fourth", progress=False, start_from=tmp_path / "first")
    with pytest.raises(ValueError, match="has trained 10 steps; train.steps = 10 must be more"):
        train(first, tmp_path / "fourth", progress=False, start_from=tmp_path / "first")
    with pytest.raises(ValueError, match="already holds a run started from .*first; start from .*second in a new directory"):
        train(second, tmp_path / "third", progress=False, start_from=tmp_path / "second")
    with pytest.raises(ValueError, match="holds no run with a checkpoint to start from"):
        train(second, tmp_path / "fourth", progress=False, start_from=tmp_path / "nothing")
    RunDirectory(tmp_path / "fifth", second).start_from(tmp_path / "first")  # the kept model is chosen anew
    copied = json.loads((tmp_path / "fifth" / "checkpoint.json").read_text())
    assert (copied["step"], copied["best_score"], copied["best_step"], copied["energy_done"]) == (10, None, None, True)


def test_weight_averaging_resumes_and_extends_exactly(tmp_path: Path, data_dir: Path) -> None:
    """train.ema_decay: the saved models carry the averaged generator, not the raw one that trains
    on; the average survives a resume, and adding it to a finished run as an extension (starting
    after its steps) gives exactly the run that had it in its config from the start."""
    short = load_config(tiny_config(tmp_path, data_dir, steps=20, eval_every=20))
    averaged = load_config(tiny_config(tmp_path, data_dir, steps=40, eval_every=20, ema_decay=0.9, ema_start=20))
    train(averaged, tmp_path / "straight", progress=False)
    train(averaged, tmp_path / "resumed", progress=False, until=30)
    train(averaged, tmp_path / "resumed", progress=False)
    train(short, tmp_path / "extended", progress=False)
    train(averaged, tmp_path / "extended", progress=False)
    finals = [load_file(str(tmp_path / name / "final" / "model.safetensors")) for name in ("straight", "resumed", "extended")]
    for other in finals[1:]:
        for key in finals[0]:
            torch.testing.assert_close(other[key], finals[0][key], rtol=0, atol=0, msg=key)
    raw = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    generator = [k for k in finals[0] if k.startswith("generator.")]
    assert generator and all(not torch.equal(finals[0][k], raw[f"model.{k}"]) for k in generator if k.endswith("weight"))
    assert all(torch.equal(finals[0][k], raw[f"model.{k}"]) for k in finals[0] if k.startswith("critic."))
    assert json.loads((tmp_path / "straight" / "final" / "model.json").read_text())["training"]["averaged"] is True
    for name in ("straight", "extended"):  # the kept model is an averaged one (evaluated at step 40), also when extended
        kept = json.loads((tmp_path / name / "best" / "model.json").read_text())["training"]
        assert kept["averaged"] is True and kept["step"] == 40, (name, kept["step"])
    with pytest.raises(ValueError, match="ema_start"):  # the average cannot start before steps already done
        train(load_config(tiny_config(tmp_path, data_dir, steps=60, eval_every=20, ema_decay=0.9, ema_start=10)), tmp_path / "extended", progress=False)


def test_learning_rate_decay_anneals_resumes_and_extends_exactly(tmp_path: Path, data_dir: Path) -> None:
    """train.lr_decay_start / lr_decay_steps: the GAN's learning rates fall on a cosine and are 0
    after it (generator and critic stop moving); a resumed run and a constant-rate run extended
    with the decay (starting after its steps) are exactly the run that decayed from the start; a
    decay that has begun cannot be changed."""
    short = load_config(tiny_config(tmp_path, data_dir, steps=20, eval_every=20))
    decayed = load_config(tiny_config(tmp_path, data_dir, steps=40, eval_every=20, lr_decay=(20, 10)))
    constant = load_config(tiny_config(tmp_path, data_dir, steps=40, eval_every=20))
    train(decayed, tmp_path / "straight", progress=False, until=30)
    at_30 = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    train(decayed, tmp_path / "straight", progress=False)
    train(short, tmp_path / "extended", progress=False)
    train(decayed, tmp_path / "extended", progress=False)
    train(constant, tmp_path / "constant", progress=False)
    at_40 = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    networks = [k for k in at_40 if k.startswith(("model.generator.", "model.critic."))]
    assert networks and all(torch.equal(at_30[k], at_40[k]) for k in networks)  # the rate is 0 from step 30 on
    finals = {name: load_file(str(tmp_path / name / "final" / "model.safetensors")) for name in ("straight", "extended", "constant")}
    for key in finals["straight"]:
        torch.testing.assert_close(finals["extended"][key], finals["straight"][key], rtol=0, atol=0, msg=key)
    assert not torch.equal(finals["constant"]["generator.net.0.weight"], finals["straight"]["generator.net.0.weight"])
    for name in ("straight", "extended"):  # during the decay the latest evaluation is kept, whatever its score
        kept = json.loads((tmp_path / name / "best" / "model.json").read_text())["training"]
        assert kept["step"] == 40, name
    later = load_config(tiny_config(tmp_path, data_dir, steps=60, eval_every=20, lr_decay=(25, 10)))
    with pytest.raises(ValueError, match=r"different config \(train.lr_decay_start, train.steps\)"):
        train(later, tmp_path / "straight", progress=False)


def test_fluctuation_options_train_and_improve_the_fixed_condition_classifier(tmp_path: Path, data_dir: Path) -> None:
    """Photo-statistics in the response layer, per-unit generator noise and the critic's minibatch
    standard deviation: a tiny run trains, and the report's fixed-condition classifier tells its
    showers from the MC's less well than the untrained model's (2 GeV photons, eta 0.3). On all
    the cells both stay near 1 after 300 tiny steps (measured: 1.0 and 0.99997); on the number of
    cells above threshold the AUC went from 0.985 to 0.71, outside the central 7x7 from 1.0 to 0.97."""
    import shutil

    import fastcalo
    from fastcalo import mc
    from fastcalo.validation.diagnosis import diagnose

    extra = 'photostatistics = true\ngenerator_noise = "hidden"\ncritic_minibatch_std = 4'
    config = load_config(tiny_config(tmp_path, data_dir, steps=300, eval_every=300, cell_noise=True, model_extra=extra))
    run = tmp_path / "fluctuations"
    train(config, run, progress=False, until=1)  # best/ is now the untrained model (step 0)
    shutil.copytree(run / "best", tmp_path / "untrained")
    train(config, run, progress=False)
    trained = load(run / "final")
    assert trained.config.photostatistics and trained.config.generator_noise == "hidden" and trained.config.critic_minibatch_std == 4
    assert float(trained.generator.noise_scale.detach().abs().max()) > 0  # the noise is used

    c = mc.sample_conditions(600, energy=2.0, eta=0.3, seed=5)
    reference = mc.simulate(c["energy"], c["eta"], impact_x=c["impact_x"], impact_y=c["impact_y"], seed=5).showers

    def fixed_condition_auc(model_dir: Path) -> float:
        images = fastcalo.Simulator(model_dir, device="cpu", seed=1).sample(
            energy=2.0, eta=0.3, particle="photon", n=600, impact_x=c["impact_x"], impact_y=c["impact_y"]
        )
        generated = dataclasses.replace(reference, images=images)
        return diagnose(reference, generated, views=("cells above threshold",), iterations=100).views["cells above threshold"]

    before, after = fixed_condition_auc(tmp_path / "untrained"), fixed_condition_auc(run / "final")
    assert before > 0.9 and after < before - 0.1, (before, after)


def test_showers_per_condition_groups_the_data_and_the_batches(tmp_path: Path, data_dir: Path) -> None:
    """data.showers_per_condition = 4: the MC file holds 4 different showers at each drawn
    condition, one after the other; every batch is made of whole groups, the generated showers
    at the same conditions in the same rows, so that the critic's groups of 4 (its minibatch
    standard deviation) are showers of one condition; a tiny run trains on it. The default (1)
    leaves the shipped config's cache name as it was."""
    from fastcalo import datasets
    from fastcalo import train as training
    from fastcalo.runconfig import dataset_path, ensure_dataset

    shipped = load_config(Path(__file__).parents[1] / "fastcalo" / "models" / "default" / "train.toml")
    assert dataset_path(shipped.data, "data").name == "train-fddacc6e7514.h5"
    path = tiny_config(tmp_path, data_dir, steps=20, eval_every=20)
    with pytest.raises(ValueError, match="needs model.critic_minibatch_std = 4"):
        load_config(path, data={"showers_per_condition": 4})
    with pytest.raises(ValueError, match="divides n_per_particle"):
        load_config(path, data={"showers_per_condition": 7}, model={"critic_minibatch_std": 7})
    config = load_config(path, data={"showers_per_condition": 4}, model={"critic_minibatch_std": 4})
    assert dataset_path(config.data, data_dir) != dataset_path(dataclasses.replace(config.data, showers_per_condition=1), data_dir)

    data = datasets.read(ensure_dataset(config.data, config.data_dir, progress=False))
    assert len(data) == 900
    columns = np.stack([data.energy, data.eta, data.impact_x, data.impact_y, data.pdgid]).T.reshape(-1, 4, 5)
    assert (columns == columns[:, :1]).all()  # one condition per group of 4
    assert len(np.unique(columns[:, 0, 0])) == 225  # and 225 different ones
    images = data.images.reshape(-1, 4, 576)
    assert not (images[:, 1:] == images[:, :1]).all(axis=2).any()  # four different showers each

    model = training._initial_model(config, data, training.DEFAULT_DETECTOR, torch.device("cpu"))
    real = training._Batchable.build(model, data, torch.device("cpu"))
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        batch = training._draw(model, real, rng, training._energy_source(model, rng), 64, 4)
    grouped = batch.c.reshape(16, 4, -1)
    assert (grouped == grouped[:, :1]).all() and len(torch.unique(grouped[:, 0, 0])) > 1
    assert batch.fake.shape == batch.x.shape == (64, 576)

    trained = load(train(config, tmp_path / "grouped", progress=False))
    assert trained.config.critic_minibatch_std == 4
    assert trained.metadata["training"]["data"]["showers_per_condition"] == 4
