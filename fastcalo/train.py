"""WGAN-GP training: the loop, and the losses and variants it is made of.

:func:`train` reads top to bottom: set-up, the energy model's pre-training, then for every
generator step ``n_critic`` critic steps, one generator step, logging, evaluation and checkpoints.
What varies with the config is chosen once, before the loop: the critic's and the generator's
losses (``train.loss``: ``"wgan-gp"`` or ``"bce"``) and where the generated showers' energy comes
from (``model.energy``: the real r, or sampled from a network that trains with the generator).

Around it, one module per concept: the run config (:mod:`fastcalo.runconfig`, re-exported here),
the run directory (:mod:`fastcalo.rundir`), the monitor (:mod:`fastcalo.monitor`), weight
averaging (:mod:`fastcalo.averaging`) and the processes of data-parallel training
(``fastcalo._distributed``).

References:
    I. Gulrajani et al., *Improved Training of Wasserstein GANs*, arXiv:1704.00028 (WGAN-GP).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from . import _distributed
from .averaging import WeightAverage
from .datasets import ShowerData
from .detector import DEFAULT_DETECTOR, Detector
from .model import EnergyModel, Preprocessing, ShowerModel
from .monitor import Monitor, evaluate
from .rundir import Progress, RunDirectory
from .runconfig import DataConfig, MonitorConfig, RunConfig, TrainConfig, dataset_path, ensure_dataset, load_config, make_dataset

__all__ = (
    "DataConfig",
    "MonitorConfig",
    "RunConfig",
    "TrainConfig",
    "cosine_lr",
    "dataset_path",
    "evaluate",
    "gan_lr_factor",
    "gradient_penalty",
    "load_config",
    "make_dataset",
    "retrain_energy",
    "summed_energy_mmd",
    "train",
)

#: Generator steps between two "train" records (the losses averaged over them) in metrics.jsonl.
LOG_EVERY = 50


def gradient_penalty(critic: Callable[..., torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *args: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = eps real + (1 - eps) fake,
    eps ~ U(0, 1) per sample.

    Arguments:
        critic: D, called as ``critic(x_hat, *args)``, one score per sample.
        real, fake: (N, features) samples.
        args: further inputs of the critic (the conditions).
        generator: the random stream of eps (one number per sample).

    Returns:
        The penalty, a scalar with its graph (``create_graph=True``), to add to the critic's loss.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(3, 1, bias=False)
        >>> _ = lin.weight.data.copy_(torch.tensor([[0.0, 3.0, 4.0]]))   # |grad| = 5 everywhere
        >>> gradient_penalty(lambda x: lin(x)[:, 0], torch.zeros(4, 3), torch.ones(4, 3)).item()
        16.0

    References:
        I. Gulrajani et al., *Improved Training of Wasserstein GANs*, arXiv:1704.00028, Algorithm 1.
    """
    eps = torch.rand((real.shape[0], 1), generator=generator, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    score = critic(mixed, *args)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    penalty: torch.Tensor = ((grad.norm(2, dim=1) - 1.0) ** 2).mean()
    return penalty


def summed_energy_mmd(
    c: torch.Tensor,
    r_real: torch.Tensor,
    r_fake: torch.Tensor,
    *,
    energy_width: float = 0.1,
    eta_width: float = 0.3,
    bandwidths: tuple[float, ...] = (0.1, 0.3, 1.0),
) -> torch.Tensor:
    """The summed-energy loss: a conditional maximum mean discrepancy between the real and the
    generated standardised fractions r at the same encoded conditions ``c`` (one batch, (N, width)).

    The kernel is a product: Gaussian in r (summed over ``bandwidths``, in units of the training
    spread of r) times a Gaussian in the conditions' log E and eta columns (``energy_width``,
    ``eta_width``, in encoded units) times equality of the particle type. Pairs of showers count
    only if their conditions are alike, so the loss compares the distribution of r *at given
    conditions*, its width included, not only the pooled one.

    Arguments:
        c: encoded conditions (:class:`fastcalo.model.Conditions`), (N, width).
        r_real, r_fake: standardised deposited fractions of the real and the generated showers, (N,).
        energy_width, eta_width: widths of the kernel in the encoded log E and eta.
        bandwidths: widths of the kernels in r, summed.

    Returns:
        The unbiased estimate of MMD^2 (pairs of a shower with itself left out, so it can come out
        slightly negative), a scalar: its gradient is the unbiased estimate of the full MMD^2's.

    Example:
        >>> import torch
        >>> c = torch.zeros((512, 7)); c[:, 2] = 1.0                # one condition, photons
        >>> g = torch.Generator().manual_seed(0)
        >>> real = torch.randn(512, generator=g)
        >>> same = summed_energy_mmd(c, real, torch.randn(512, generator=g))
        >>> narrow = summed_energy_mmd(c, real, 0.5 * torch.randn(512, generator=g))
        >>> bool(narrow > 3 * same)
        True

    References:
        A. Gretton et al., *A Kernel Method for the Two-Sample Problem*, arXiv:0805.2368 (the
        unbiased estimate of MMD^2).
    """
    d_e = c[:, None, 0] - c[None, :, 0]
    d_eta = c[:, None, 1] - c[None, :, 1]
    same_type = c[:, 2:-2] @ c[:, 2:-2].T
    weight = torch.exp(-0.5 * (d_e / energy_width) ** 2 - 0.5 * (d_eta / eta_width) ** 2) * same_type

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = (a[:, None] - b[None, :]) ** 2
        return sum(torch.exp(-0.5 * d2 / h**2) for h in bandwidths)  # type: ignore[return-value]

    weight = weight * (1.0 - torch.eye(len(c), dtype=weight.dtype, device=weight.device))
    terms = k(r_real, r_real) + k(r_fake, r_fake) - k(r_real, r_fake) - k(r_fake, r_real)
    return (weight * terms).sum() / weight.sum().clamp_min(1e-12)


def cosine_lr(base: float, step: int, steps: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at ``steps`` (a pure function of the step).

    Example:
        >>> cosine_lr(1e-3, 0, 100), cosine_lr(1e-3, 50, 100), cosine_lr(1e-3, 100, 100)
        (0.001, 0.0005, 0.0)
    """
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


def gan_lr_factor(step: int, start: int, length: int) -> float:
    """The GAN's learning rate at generator step ``step`` as a fraction of ``train.lr``: 1 up to
    ``start`` (``train.lr_decay_start``), then a cosine to 0 over ``length`` steps
    (``train.lr_decay_steps``; 0: constant), and 0 after it.

    Example:
        >>> [gan_lr_factor(s, 100, 50) for s in (0, 100, 125, 150, 400)], gan_lr_factor(10**6, 0, 0)
        ([1.0, 1.0, 0.5, 0.0, 0.0], 1.0)
    """
    if length == 0 or step <= start:
        return 1.0
    return round(cosine_lr(1.0, step - start, length), 15)


@dataclasses.dataclass
class _Batchable:
    """A shower dataset as network tensors: conditions c, incident energy e, standardised r, cells x."""

    c: torch.Tensor
    e: torch.Tensor
    r_code: torch.Tensor
    x: torch.Tensor

    @classmethod
    def build(cls, model: ShowerModel, data: ShowerData, device: torch.device) -> _Batchable:
        c = model.conditions.encode(
            energy=data.energy, eta=data.eta, pdgid=data.pdgid, impact_x=data.impact_x, impact_y=data.impact_y
        )
        cells = torch.as_tensor(data.images.reshape(len(data), -1), dtype=torch.float32)
        e = torch.as_tensor(data.energy, dtype=torch.float32)
        r_code = model.preprocessing.encode_r(cells.sum(1) / e)
        x = model.preprocessing.to_network(cells)
        return cls(c.to(device), e.to(device), r_code.to(device), x.to(device))

    def __len__(self) -> int:
        return int(self.e.shape[0])

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.c[index], self.e[index], self.r_code[index], self.x[index]


class _Batch(NamedTuple):
    """Real showers and their generated twins (same conditions), in network units."""

    c: torch.Tensor  # encoded conditions, (N, width)
    e: torch.Tensor  # incident energy, (N,) GeV
    r_real: torch.Tensor  # standardised deposited fraction of the real showers, (N,)
    x: torch.Tensor  # real cells, (N, cells)
    r_fake: torch.Tensor  # r the generated showers were made with, (N,)
    fake: torch.Tensor  # generated cells, (N, cells)


#: ``(c, r_real) -> r_fake``: the deposited fraction the generator is given.
_EnergySource = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``(d_real, d_fake, batch) -> (loss, values to log)``.
_CriticLoss = Callable[[torch.Tensor, torch.Tensor, _Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]
#: ``(d_gen, batch) -> (loss, values to log)``.
_GeneratorLoss = Callable[[torch.Tensor, _Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _energy_source(model: ShowerModel, rng: torch.Generator) -> _EnergySource:
    """Where a generated shower's r comes from. ``model.energy = "model"``: the real shower's r
    (the GAN learns the shape at a given total; the energy model learns the total, apart);
    ``"loss"``: sampled from the energy network, which trains with the generator."""
    if model.config.energy == "model":
        return lambda c, r_real: r_real
    return lambda c, r_real: model.energy.sample(c, torch.rand((len(c),), generator=rng, device=c.device))


def _draw(model: ShowerModel, real: _Batchable, rng: torch.Generator, energy: _EnergySource, n: int, group: int = 1, threshold: str = "soft") -> _Batch:
    """``n`` random real showers and generated ones at their conditions. From ``rng``, in this
    order: the showers' indices, the latent noise, the energy network's uniforms (``"loss"``),
    the cell noise (``cell_noise``). With ``group`` > 1 (``data.showers_per_condition``), ``n /
    group`` random groups of ``group`` consecutive showers (the showers of one condition), each
    group's rows consecutive in the batch. ``threshold``: the zero suppression of the generated
    cells (``train.threshold``)."""
    device = real.e.device
    if group == 1:
        index = torch.randint(len(real), (n,), generator=rng, device=device)
    else:
        first = torch.randint(len(real) // group, (n // group,), generator=rng, device=device) * group
        index = (first[:, None] + torch.arange(group, device=device)).reshape(-1)
    c, e, r_real, x = real.take(index)
    z = torch.randn((n, model.generator.n_inputs), generator=rng, device=device)
    r_fake = energy(c, r_real)
    noise = torch.randn((n, model.detector.n_total_cells), generator=rng, device=device) if model.config.cell_noise else None
    fake = model.preprocessing.to_network(model.cells(z, c, r_fake, e, threshold=threshold, noise=noise))
    return _Batch(c, e, r_real, x, r_fake, fake)


def _losses(config: RunConfig, model: ShowerModel, rng: torch.Generator) -> tuple[_CriticLoss, _GeneratorLoss]:
    """The critic's and the generator's loss for ``train.loss`` and ``model.energy``.

    ``"wgan-gp"``: D(fake) - D(real) + lambda GP for the critic, -D(fake) for the generator
    (arXiv:1704.00028); with ``energy = "loss"`` r is a critic input that the generator makes, so
    the penalty is on the gradient in (cells, r). ``"bce"``: the original GAN loss with one-sided
    label smoothing (arXiv:1606.03498) and the non-saturating generator loss. With
    ``energy = "loss"`` the generator's loss adds ``energy_loss_weight`` x
    :func:`summed_energy_mmd`.
    """
    tc = config.train
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def penalty_in_cells(b: _Batch) -> torch.Tensor:
        return gradient_penalty(model.critic, b.x, b.fake, b.c, b.r_real, generator=rng)

    def penalty_in_cells_and_r(b: _Batch) -> torch.Tensor:
        def critic(xr: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            score: torch.Tensor = model.critic(xr[:, :-1], c, xr[:, -1])
            return score

        return gradient_penalty(critic, torch.cat([b.x, b.r_real[:, None]], dim=1), torch.cat([b.fake, b.r_fake[:, None]], dim=1), b.c, generator=rng)

    penalty = penalty_in_cells_and_r if config.model.energy == "loss" else penalty_in_cells

    def wasserstein_critic(d_real: torch.Tensor, d_fake: torch.Tensor, b: _Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gp = penalty(b)
        return d_fake.mean() - d_real.mean() + tc.gp_lambda * gp, {"gp": gp}

    def wasserstein_generator(d_gen: torch.Tensor, b: _Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return -d_gen.mean(), {}

    def bce_critic(d_real: torch.Tensor, d_fake: torch.Tensor, b: _Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return bce(d_real, torch.full_like(d_real, 1.0 - tc.label_smoothing)) + bce(d_fake, torch.zeros_like(d_fake)), {}

    def bce_generator(d_gen: torch.Tensor, b: _Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return bce(d_gen, torch.ones_like(d_gen)), {}

    critic_loss, adversarial = (wasserstein_critic, wasserstein_generator) if tc.loss == "wgan-gp" else (bce_critic, bce_generator)

    def with_summed_energy(d_gen: torch.Tensor, b: _Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, _ = adversarial(d_gen, b)
        mmd = summed_energy_mmd(b.c, b.r_real, b.r_fake)
        return loss + tc.energy_loss_weight * mmd, {"energy_mmd": mmd}

    return critic_loss, (with_summed_energy if config.model.energy == "loss" else adversarial)


@dataclasses.dataclass(frozen=True)
class _Optimizer:
    """An Adam optimizer and the networks it steps, their gradients averaged over the processes."""

    adam: torch.optim.Adam
    modules: tuple[torch.nn.Module, ...]
    processes: _distributed.Processes

    def scale_lr(self, factor: float, base: Sequence[float]) -> None:
        """Set every parameter group's learning rate to ``factor`` times its base, ``base[i]`` for
        group i (a resumed optimizer carries the rate of its last step, not the base)."""
        for group, lr in zip(self.adam.param_groups, base, strict=True):
            group["lr"] = lr * factor

    def step(self, loss: torch.Tensor) -> None:
        self.adam.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        for module in self.modules:
            self.processes.average_gradients(module)
        self.adam.step()


def _optimizers(model: ShowerModel, tc: TrainConfig, processes: _distributed.Processes) -> dict[str, _Optimizer]:
    """``generator``, ``critic`` and ``energy`` (the energy model's pre-training); with
    ``energy = "loss"`` the generator's optimizer steps the energy network too. Each network at
    its own learning rate: the energy network at ``energy_lr``, also when it trains with the
    generator."""
    owners: dict[str, list[torch.nn.Module]] = {"generator": [model.generator], "critic": [model.critic]}
    if model.config.energy == "loss":
        owners["generator"].append(model.energy)
    else:
        owners["energy"] = [model.energy]
    return {
        name: _Optimizer(
            torch.optim.Adam(
                [{"params": list(m.parameters()), "lr": tc.energy_lr if m is model.energy else tc.lr} for m in modules],
                betas=(0.9, 0.999) if name == "energy" else tc.betas,
            ),
            tuple(modules),
            processes,
        )
        for name, modules in owners.items()
    }


def _initial_model(config: RunConfig, data: ShowerData, detector: Detector, device: torch.device) -> ShowerModel:
    """The untrained model (parameters from ``train.seed``), r standardised with the training
    data's mean and spread; an MLP generator starts from the average shape (output bias = log of
    the mean cell fraction)."""
    r = data.images.sum(axis=(1, 2), dtype=np.float64) / data.energy
    preprocessing = Preprocessing.for_detector(detector, r_mean=float(r.mean()), r_std=float(r.std()))
    torch.manual_seed(config.train.seed)
    model = ShowerModel(config.model, preprocessing=preprocessing, detector=detector).to(device)
    if config.model.kind == "mlp":
        mean_shape = (data.images / data.images.sum(axis=(1, 2), keepdims=True)).mean(axis=0).reshape(-1)
        model.generator.start_from(mean_shape)
    return model


def _energy_inputs(model: ShowerModel, real: _Batchable, extra: ShowerData | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The energy model's training table: encoded conditions and standardised r of the training
    showers, followed by those of the ``[energy_data]`` showers (``extra``) if the config has them
    (r standardised as the training data's, the model's preprocessing)."""
    if extra is None:
        return real.c, real.r_code
    more = _Batchable.build(model, extra, real.c.device)  # r as the training showers' (float32 sums)
    return torch.cat([real.c, more.c]), torch.cat([real.r_code, more.r_code])


def _pretrain_energy(
    model: ShowerModel, c_all: torch.Tensor, r_all: torch.Tensor, optimizer: _Optimizer, tc: TrainConfig, *, processes: _distributed.Processes, run: RunDirectory | None, progress: bool
) -> None:
    """The energy model alone on the table ``c_all``, ``r_all`` (:func:`_energy_inputs`): pinball
    loss, learning rate on a cosine from ``energy_lr`` to 0, on its own random stream (so that its
    settings do not change the GAN's batches); every process starts from the lead's quantiles."""
    from tqdm.auto import tqdm

    energy = model.energy
    if not isinstance(energy, EnergyModel):
        msg = f"only the quantile energy model is pre-trained (model.energy = 'model'), not {type(energy).__name__}"
        raise TypeError(msg)
    device = c_all.device
    energy_rng = torch.Generator(device=device).manual_seed(tc.seed + 3 + 1000 * processes.rank)
    energy.start_from(r_all[torch.randperm(len(r_all), generator=energy_rng, device=device)[:200_000]])
    processes.broadcast(energy)  # each process's 200 000 are its own when the table is longer
    for step in tqdm(range(tc.energy_steps), desc="energy model", disable=not progress):
        optimizer.adam.param_groups[0]["lr"] = cosine_lr(tc.energy_lr, step, tc.energy_steps)
        index = torch.randint(len(r_all), (tc.energy_batch,), generator=energy_rng, device=device)
        c, r_code = c_all[index], r_all[index]
        loss = energy.loss(c, r_code)
        optimizer.step(loss)
        if run is not None and (step + 1) % 500 == 0:
            run.log({"step": 0, "kind": "energy", "energy_step": step + 1, "pinball": loss.item()})


_ENERGY_FIELDS = ("energy", "energy_hidden", "n_quantiles", "quantile_tail", "negative_slope")


def _fresh_energy(config: RunConfig, preprocessing: Preprocessing, detector: Detector) -> torch.nn.Module:
    """The energy model's starting weights, as :func:`_initial_model` draws them from ``train.seed``
    (the caller's global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        return ShowerModel(config.model, preprocessing=preprocessing, detector=detector).energy


def retrain_energy(model: ShowerModel, config: RunConfig, *, progress: bool = True) -> None:
    """Train the energy model of a trained ``model`` again, from scratch, as :func:`train` would
    with ``config``: the same starting weights (from ``train.seed``), the same table (the
    ``[data]`` showers and the ``[energy_data]`` ones, generated and cached first if need be) and
    the same random stream, in one process on the CPU; at the same number of torch threads as the
    run (a matrix product's last bits may depend on it), the weights are those the run would have
    trained, to the bit. The generator and the critic are left as they are: the GAN never sees the
    energy model while it trains (it is conditioned on the real showers' r), so a model trained
    with one ``[energy_data]`` table takes another's energy model this way without training its GAN
    again. What this does not redo: the monitor's scores draw r from the energy model, so where
    the run kept a step by its score (before its learning rates anneal; after, the latest is kept)
    another energy model might have kept another step.

    Arguments:
        model: a trained model (``energy = "model"``), changed in place; its detector is used.
        config: the run config; its ``[data]`` must be the model's training data (checked by the
            standardisation of r the model stores) and its energy model's architecture the model's.

    Raises:
        ValueError if the config's energy model or training data are not the model's.
    """
    from . import datasets

    if config.model.energy != "model" or model.config.energy != "model":
        msg = f"only a quantile energy model (model.energy = 'model') is pre-trained apart; the config has {config.model.energy!r}, the model {model.config.energy!r}"
        raise ValueError(msg)
    different = [f for f in _ENERGY_FIELDS if getattr(config.model, f) != getattr(model.config, f)]
    if different:
        msg = f"the config's energy model is not the model's: fields that differ: {different}"
        raise ValueError(msg)
    detector = model.detector
    for spec in (config.data, config.energy_data):
        if spec is not None:
            ensure_dataset(spec, config.data_dir, detector=detector, progress=progress)
    data = datasets.read(dataset_path(config.data, config.data_dir), detector=detector)
    r = data.images.sum(axis=(1, 2), dtype=np.float64) / data.energy
    stored = (model.preprocessing.r_mean, model.preprocessing.r_std)
    if not np.allclose((r.mean(), r.std()), stored, rtol=1e-6, atol=0):
        msg = f"{dataset_path(config.data, config.data_dir)} is not the model's training data: E_dep / E_inc has mean {r.mean():.6f} and std {r.std():.6f}, the model stores {stored[0]:.6f} and {stored[1]:.6f}"
        raise ValueError(msg)
    device = torch.device("cpu")
    model.to(device)
    model.energy.load_state_dict(_fresh_energy(config, model.preprocessing, detector).state_dict())
    real = _Batchable.build(model, data, device)
    del data
    extra = None if config.energy_data is None else datasets.read(dataset_path(config.energy_data, config.data_dir), detector=detector)
    c_all, r_all = _energy_inputs(model, real, extra)
    del real, extra
    processes = _distributed.Processes(0, 1, device, owns_group=False)
    model.energy.requires_grad_(True)
    _pretrain_energy(model, c_all, r_all, _optimizers(model, config.train, processes)["energy"], config.train, processes=processes, run=None, progress=progress)
    model.energy.requires_grad_(False)


def _evaluate(step: int, model: ShowerModel, monitor: Monitor, average: WeightAverage, run: RunDirectory, state: Progress, started: float) -> None:
    """Evaluate the (averaged) generator on the monitor's showers (process 0 only): log the
    metrics, keep the model as ``best/`` if it scores lowest yet, draw the plots."""
    if not run.lead:
        return
    model.eval()
    with average.averaged():
        generated = monitor.showers(model)
    metrics = monitor.evaluate(generated)
    run.log({"step": step, "kind": "eval", **metrics, "seconds": time.perf_counter() - started})
    state.last_score = metrics["score"]
    tc = run.config.train
    annealing = tc.lr_decay_steps > 0 and step > tc.lr_decay_start
    if state.keep(metrics["score"], step, averaging=average.decay > 0, averaged=average.started, annealing=annealing):
        with average.averaged():
            run.save_model(model, "best", step=step, score=metrics["score"], averaged=average.started)
    run.plot_grid(monitor.data, generated, step)
    run.plot_history()


class _Means:
    """Sums of logged values over generator steps, averaged into a record by :meth:`pop`."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value

    def pop(self) -> dict[str, float]:
        record = {name: value / self.n for name, value in self.sums.items()}
        self.sums, self.n = {}, 0
        return record


def train(
    config: RunConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    progress: bool = True,
    detector: Detector = DEFAULT_DETECTOR,
    until: int | None = None,
    start_from: str | os.PathLike[str] | None = None,
) -> Path:
    """Train a model as ``config`` says; the run directory shows its own health.

    ``run_dir`` receives ``config.json``, ``metrics.jsonl`` (losses every 50 steps, the monitor's
    metrics at every evaluation), ``losses.png``, ``monitor.png``, ``grids/step_*.png`` (showers
    from fixed noise and conditions beside MC ones), ``checkpoint.*`` (resumable), ``best/`` (the
    model with the lowest monitor score, the latest evaluation once the learning rates anneal) and ``final/`` (:class:`fastcalo.rundir.RunDirectory`).

    Data-parallel training: launched with ``torchrun --nproc_per_node N``, every process trains on
    its own batches (its own random stream), gradients are averaged over the processes after every
    backward pass (gloo on CPU, NCCL on GPUs), so the effective batch is N x ``batch_size``; process
    0 generates the MC data, evaluates, logs and writes the run directory.

    Arguments:
        config: the run config (:func:`load_config`).
        run_dir: the run directory. One holding a run with the same config is resumed from its
            checkpoint; with more ``train.steps`` than it has, it is extended.
        resume: False refuses to touch an existing run.
        progress: show progress bars.
        detector: the geometry of the showers.
        until: stop after this many generator steps (checkpointed, to be resumed by a later call).
        start_from: a run directory whose checkpoint this run begins at, under ``config``: a second
            phase of training (:meth:`fastcalo.rundir.RunDirectory.start_from`).

    Returns:
        The directory of the kept (best) model.

    Raises:
        FileExistsError if ``run_dir`` holds a run and ``resume`` is false; ValueError if it holds
        a run with another config (naming the keys that differ) or a longer one, or if the run in
        ``start_from`` cannot be started from (:meth:`fastcalo.rundir.RunDirectory.start_from`).
    """
    from tqdm.auto import tqdm

    from . import datasets

    tc = config.train
    processes = _distributed.setup(tc.device)
    run = RunDirectory(run_dir, config, lead=processes.lead)
    if start_from is not None:
        run.start_from(start_from)
        processes.barrier()
    run.check(resume=resume)
    processes.barrier()  # every process has checked the directory before process 0 writes to it
    run.create()
    if processes.lead:
        for spec in (config.data, config.monitor, config.energy_data):
            if spec is not None:
                ensure_dataset(spec, config.data_dir, detector=detector, progress=progress)
    processes.barrier()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    train_data = datasets.read(ensure_dataset(config.data, config.data_dir, detector=detector, progress=progress), detector=detector)
    monitor_data = datasets.read(ensure_dataset(config.monitor, config.data_dir, detector=detector, progress=progress), detector=detector)
    progress = progress and processes.lead

    model = _initial_model(config, train_data, detector, processes.device)
    real = _Batchable.build(model, train_data, processes.device)
    del train_data
    group = config.data.showers_per_condition
    if group > 1:  # the batches' groups must be showers of one condition: check the file is so ordered
        grouped = real.c[: len(real) - len(real) % group].reshape(-1, group, real.c.shape[1])
        if len(real) % group or not bool((grouped == grouped[:, :1]).all()):
            msg = f"the training data {dataset_path(config.data, config.data_dir)} is not in groups of {group} showers of one condition (data.showers_per_condition)"
            raise ValueError(msg)
    processes.broadcast(model)
    monitor = Monitor(monitor_data, seed=tc.seed + 2)
    rng = torch.Generator(device=processes.device).manual_seed(tc.seed + 1 + 1000 * processes.rank)
    optimizers = _optimizers(model, tc, processes)
    gan = ("generator", "critic")
    base_lr = {name: [group["lr"] for group in optimizers[name].adam.param_groups] for name in gan}
    adams = {name: o.adam for name, o in optimizers.items()}
    # what the average covers: parameters and floating-point buffers (BatchNorm running statistics)
    averaged = [t for m in optimizers["generator"].modules for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    average = WeightAverage(averaged, decay=tc.ema_decay, start=tc.ema_start)
    state = run.resume(model, adams, rng, average, rank=processes.rank)
    processes.barrier()
    started = time.perf_counter() - state.seconds

    if config.model.energy == "model":
        if not state.energy_done:
            if state.step > 0:  # started from another run with other energy settings: trained again, from the start
                model.energy.load_state_dict(_fresh_energy(config, model.preprocessing, detector).state_dict())
                optimizers["energy"] = _optimizers(model, tc, processes)["energy"]
                adams["energy"] = optimizers["energy"].adam
            extra = None if config.energy_data is None else datasets.read(dataset_path(config.energy_data, config.data_dir), detector=detector)
            c_all, r_all = _energy_inputs(model, real, extra)
            del extra
            _pretrain_energy(model, c_all, r_all, optimizers["energy"], tc, processes=processes, run=run, progress=progress)
            del c_all, r_all
            state.energy_done = True
        model.energy.requires_grad_(False)
    if state.step == 0:  # the starting point, so that improvement is measured, not assumed
        _evaluate(0, model, monitor, average, run, state, started)
        run.save_checkpoint(model, adams, processes.gather_rng(rng), state, average)
        processes.barrier()

    energy = _energy_source(model, rng)
    critic_loss, generator_loss = _losses(config, model, rng)
    means = _Means()
    bar = tqdm(total=tc.steps, initial=state.step, desc=f"{tc.loss} training", unit="step", disable=not progress)
    for step in range(state.step, tc.steps):
        model.train()
        for name in gan:
            optimizers[name].scale_lr(gan_lr_factor(step, tc.lr_decay_start, tc.lr_decay_steps), base_lr[name])
        for _ in range(tc.n_critic):
            with torch.no_grad():
                b = _draw(model, real, rng, energy, tc.batch_size, group, tc.threshold)
            d_real, d_fake = model.critic(b.x, b.c, b.r_real), model.critic(b.fake, b.c, b.r_fake)
            loss_c, logged = critic_loss(d_real, d_fake, b)
            for name, value in logged.items():
                means.add(name, value.item() / tc.n_critic)
            optimizers["critic"].step(loss_c)
        means.add("wasserstein", (d_real.mean() - d_fake.mean()).item())
        means.add("critic_loss", loss_c.item())

        b = _draw(model, real, rng, energy, tc.batch_size, group, tc.threshold)
        loss_g, logged = generator_loss(model.critic(b.fake, b.c, b.r_fake), b)
        for name, value in logged.items():
            means.add(name, value.item())
        optimizers["generator"].step(loss_g)
        average.update(step + 1)
        means.add("generator_loss", loss_g.item())
        means.n += 1
        bar.update(1)

        done = step + 1
        if done % LOG_EVERY == 0 or done == tc.steps:
            record = means.pop()
            run.log({"step": done, "kind": "train", **record, "seconds": time.perf_counter() - started})
            bar.set_postfix(W=f"{record['wasserstein']:.3f}")
        stop = until is not None and done >= until
        if done % tc.eval_every == 0 or done == tc.steps:
            _evaluate(done, model, monitor, average, run, state, started)
            if processes.lead:  # the only one that evaluates
                bar.set_postfix(score=f"{state.last_score:.4f}", best=state.best_step)
        if done % tc.eval_every == 0 or done == tc.steps or stop:
            state.step, state.seconds = done, time.perf_counter() - started
            run.save_checkpoint(model, adams, processes.gather_rng(rng), state, average)
            processes.barrier()
        if stop:
            break
    bar.close()

    if state.step >= tc.steps and processes.lead:
        with average.averaged():
            run.save_model(model, "final", step=tc.steps, processes=processes.world, averaged=average.started)
    if processes.world > 1:
        run.record_processes(processes.world, processes.weight_spread(model))
        processes.close()
    return run.path / "best"
