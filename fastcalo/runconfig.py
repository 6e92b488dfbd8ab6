"""The run config of a training: its tables as frozen dataclasses, loaded from TOML, and the
reference-MC files that its ``[data]``, ``[monitor]`` and ``[energy_data]`` tables name.

A config fully determines its data: the showers are generated from the table's seed on first use
and cached under ``data_dir`` in a file named after a hash of the table (:func:`dataset_path`),
whose metadata records the table (checked on reuse, :func:`ensure_dataset`).

Example:
    >>> cfg = load_config(None, train={"steps": 10}, data={"particles": ["photon"]})
    >>> cfg.train.steps, cfg.data.particles, cfg.model.kind
    (10, ('photon',), 'mlp')
    >>> dataset_path(cfg.data, "data").name[:6]
    'train-'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .detector import DEFAULT_DETECTOR, PARTICLES, Detector
from .model import ModelConfig, config_from_dict

__all__ = (
    "DataConfig",
    "MonitorConfig",
    "RunConfig",
    "TrainConfig",
    "dataset_path",
    "ensure_dataset",
    "load_config",
    "make_dataset",
)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Reference-MC showers to train on, generated from a fixed seed (so a run is reproducible).

    Arguments:
        particles: particle names; ``n_per_particle`` showers of each.
        n_per_particle: showers per particle type.
        energy: (low, high) incident energy range in GeV.
        eta: (low, high) pseudorapidity range.
        log_uniform: draw energies uniformly in log(E).
        seed: seeds the conditions (``seed + k`` for the k-th particle) and the MC (``seed``).
        showers_per_condition: showers simulated at each drawn condition (energy, eta, impact
            point), stored one after the other: ``n_per_particle / showers_per_condition``
            conditions per particle. With more than one, every training batch is made of such
            groups, and the critic's minibatch standard deviation (``critic_minibatch_std``, the
            same group size) compares the spread of showers at one condition, MC against
            generated: the shower-to-shower fluctuations themselves, not the spread of the
            conditions. 1 (the default) leaves the table's cache name as it was.
    """

    particles: tuple[str, ...] = ("photon", "electron", "positron")
    n_per_particle: int = 60_000
    energy: tuple[float, float] = (1.0, 100.0)
    eta: tuple[float, float] = (-1.5, 1.5)
    log_uniform: bool = True
    seed: int = 1
    showers_per_condition: int = 1

    def __post_init__(self) -> None:
        _check_particles("data", self.particles)
        k = self.showers_per_condition
        if not isinstance(k, int) or isinstance(k, bool) or k < 1 or self.n_per_particle % k:
            msg = f"data.showers_per_condition must be an integer >= 1 that divides n_per_particle ({self.n_per_particle}), got {k!r}"
            raise ValueError(msg)

    def conditions(self, detector: Detector = DEFAULT_DETECTOR) -> dict[str, np.ndarray]:
        """The condition columns of every shower, particle by particle (not shuffled).

        Returns:
            ``energy`` (GeV), ``eta``, ``pdgid``, ``impact_x``, ``impact_y`` (mm), ... as
            :func:`fastcalo.mc.sample_conditions` gives them, each of shape
            (``n_per_particle`` x number of particles,).
        """
        from .mc import sample_conditions

        repeat = self.showers_per_condition
        parts = [
            sample_conditions(
                self.n_per_particle // repeat,
                energy=self.energy,
                eta=self.eta,
                particle=particle,
                log_uniform=self.log_uniform,
                seed=self.seed + k,
                detector=detector,
            )
            for k, particle in enumerate(self.particles)
        ]
        return {key: np.repeat(np.concatenate([p[key] for p in parts]), repeat) for key in parts[0]}


def _check_particles(table: str, particles: object) -> None:
    """A table's ``particles``: a non-empty list of names fastcalo simulates."""
    if isinstance(particles, str) or not isinstance(particles, (list, tuple)) or not particles or any(p not in PARTICLES for p in particles):
        msg = f"{table}.particles must be a non-empty list of {list(PARTICLES)}, e.g. [\"photon\"], got {particles!r}"
        raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    """Held-out reference-MC showers the run is evaluated on (never trained on).

    Arguments:
        points: incident energies in GeV; ``n_per_point`` showers of each particle at each.
        particles: particle names.
        n_per_point: showers per energy point and particle.
        eta: (low, high) pseudorapidity range.
        seed: seeds conditions and MC (``seed + k`` for the k-th particle's conditions); must
            differ from the training data's.
    """

    points: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
    particles: tuple[str, ...] = ("photon",)
    n_per_point: int = 1000
    eta: tuple[float, float] = (-1.5, 1.5)
    seed: int = 1000

    def __post_init__(self) -> None:
        _check_particles("monitor", self.particles)

    def conditions(self, detector: Detector = DEFAULT_DETECTOR) -> dict[str, np.ndarray]:
        """The condition columns of every shower, particle by particle (as :meth:`DataConfig.conditions`)."""
        from .mc import sample_conditions

        parts = [
            sample_conditions(self.n_per_point, points=self.points, eta=self.eta, particle=p, seed=self.seed + k, detector=detector)
            for k, p in enumerate(self.particles)
        ]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation (defaults: WGAN-GP as in Gulrajani et al., Algorithm 1: lambda = 10,
    n_critic = 5, Adam lr 1e-4, betas (0, 0.9)).

    Arguments:
        loss: ``"wgan-gp"`` or ``"bce"`` (the original GAN loss, a baseline to compare against).
        steps: generator steps.
        batch_size: showers per critic and generator step.
        n_critic: critic steps per generator step.
        gp_lambda: gradient-penalty weight (``wgan-gp``).
        lr, betas: Adam settings of generator and critic.
        label_smoothing: one-sided: real labels are ``1 - label_smoothing`` (``bce``).
        energy_steps, energy_lr, energy_batch: pre-training of the energy model (pinball loss,
            Adam with the learning rate decayed from ``energy_lr`` to 0 on a cosine); unused with
            ``model.energy = "loss"``, where the energy network trains with the generator (at
            ``energy_lr``, constant).
        energy_loss_weight: weight of the summed-energy loss
            (:func:`fastcalo.train.summed_energy_mmd`) in the generator's loss, with
            ``model.energy = "loss"``.
        ema_decay: if > 0, keep an exponential moving average of the generator's weights (Polyak
            averaging; Yazici et al. use 0.999-0.9999), updated after every generator step from
            step ``ema_start`` on; evaluations, ``best/`` and ``final/`` then use the averaged
            weights (training goes on with the raw ones), and ``best/`` is the averaged evaluation
            with the lowest score. It damps the step-to-step oscillation of the shower quality
            that the monitor shows.
        ema_start: the generator step after which the average starts.
        lr_decay_start, lr_decay_steps: if ``lr_decay_steps`` > 0, the learning rates of the GAN
            (generator and critic, and the energy network when it trains with them) stay at
            ``lr`` up to generator step ``lr_decay_start``, then fall on a cosine to 0 over
            ``lr_decay_steps`` steps (:func:`fastcalo.train.gan_lr_factor`, a pure function of
            the step, not of ``steps``). Annealing damps the generator's oscillation around the
            critic at the end of a run, with both networks still training on each other (unlike
            ``ema_decay``, whose average the critic never sees). From ``lr_decay_start`` on,
            every evaluation becomes ``best/`` (:meth:`fastcalo.rundir.Progress.keep`): the
            annealed end is the model, not the step the flat score happens to prefer.
        threshold: the zero suppression of the generated cells that the critic sees in training
            (:meth:`fastcalo.model.Preprocessing.zero_suppress`). ``"soft"``: a sigmoid step of
            the preprocessing's ``soft_width`` (1 MeV), differentiable, but a cell reading just
            above the threshold comes out below it, a value no real shower has, so the critic can
            tell such cells apart and the generator learns to avoid them.
            ``"straight-through"``: the hard step of generation forward, the sigmoid's gradient
            backward: the critic sees the cells exactly as generation makes them.
        eval_every: generator steps between evaluations on the monitor set (and checkpoints).
        seed: seeds parameters, batches and noise.
        threads: torch CPU threads (0: all cores).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Raises:
        ValueError naming the field for an unknown loss, a step count or batch size that is not a
        positive integer, or weight-averaging settings out of range.

    References:
        I. Gulrajani et al., *Improved Training of Wasserstein GANs*, arXiv:1704.00028;
        T. Salimans et al., *Improved Techniques for Training GANs*, arXiv:1606.03498 (label
        smoothing); Y. Yazici et al., *The Unusual Effectiveness of Averaging in GAN Training*,
        arXiv:1806.04498.
    """

    loss: str = "wgan-gp"
    steps: int = 20_000
    batch_size: int = 256
    n_critic: int = 5
    gp_lambda: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    label_smoothing: float = 0.1
    energy_steps: int = 3000
    energy_lr: float = 1e-3
    energy_batch: int = 1024
    energy_loss_weight: float = 10.0
    ema_decay: float = 0.0
    ema_start: int = 0
    lr_decay_start: int = 0
    lr_decay_steps: int = 0
    threshold: str = "soft"
    eval_every: int = 1000
    seed: int = 0
    threads: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.loss not in ("wgan-gp", "bce"):
            msg = f"train.loss must be 'wgan-gp' or 'bce', got {self.loss!r}"
            raise ValueError(msg)
        if self.threshold not in ("soft", "straight-through"):
            msg = f"train.threshold must be 'soft' or 'straight-through', got {self.threshold!r}"
            raise ValueError(msg)
        for name in ("steps", "batch_size", "n_critic", "eval_every", "energy_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"train.{name} must be a positive integer, got {value!r}"
                raise ValueError(msg)
        for name in ("lr", "energy_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                msg = f"train.{name} must be a learning rate > 0, got {value!r}"
                raise ValueError(msg)
        object.__setattr__(self, "betas", tuple(self.betas))
        if not 0.0 <= self.ema_decay < 1.0 or not isinstance(self.ema_start, int) or self.ema_start < 0:
            msg = f"train.ema_decay must be in [0, 1) and train.ema_start an integer >= 0, got {self.ema_decay!r} and {self.ema_start!r}"
            raise ValueError(msg)
        for name in ("lr_decay_start", "lr_decay_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                msg = f"train.{name} must be an integer >= 0, got {value!r}"
                raise ValueError(msg)
        if self.ema_decay > 0 and self.ema_start >= self.steps:
            msg = f"train.ema_start ({self.ema_start}) must be below train.steps ({self.steps}): the average would never start"
            raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs, as loaded from its TOML file (see :func:`load_config`).

    Arguments:
        data, monitor, model, train: the tables ``[data]``, ``[monitor]``, ``[model]``, ``[train]``.
        energy_data: the optional table ``[energy_data]``: more reference-MC showers (a
            :class:`DataConfig`) that only the energy model's pre-training reads, beside
            ``[data]``'s: the tail of E_dep / E_inc (leakage) rests on a few showers per energy,
            and more of them cost the MC's time and minutes of the energy model's pre-training,
            where more ``[data]`` would also change every GAN step's data.
        data_dir: where the generated MC files are cached (relative to the working directory).
    """

    data: DataConfig = DataConfig()
    monitor: MonitorConfig = MonitorConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    energy_data: DataConfig | None = None
    data_dir: str = "data"

    def __post_init__(self) -> None:
        tables: dict[str, DataConfig | MonitorConfig] = {"data": self.data, "monitor": self.monitor}
        if self.energy_data is not None:
            tables["energy_data"] = self.energy_data
        seeds = {name: range(t.seed, t.seed + len(t.particles)) for name, t in tables.items()}
        names = list(tables)
        for i, a in enumerate(names):  # the k-th particle's conditions take seed + k, the MC its table's seed
            for b in names[i + 1 :]:
                if set(seeds[a]) & set(seeds[b]):
                    msg = (
                        f"{b}.seed = {tables[b].seed} must keep the [{b}] seeds ({seeds[b].start}..{seeds[b].stop - 1}) apart from "
                        f"the [{a}] ones ({seeds[a].start}..{seeds[a].stop - 1}, {a}.seed = {tables[a].seed}): the two tables' "
                        "showers would share their random numbers"
                    )
                    raise ValueError(msg)
        if self.energy_data is not None and self.model.energy != "model":
            msg = f"[energy_data] feeds the energy model's pre-training, which model.energy = {self.model.energy!r} does not have; use model.energy = 'model' or drop the table"
            raise ValueError(msg)
        group = self.data.showers_per_condition
        if group > 1 and (self.model.critic_minibatch_std != group or self.train.batch_size % group):
            msg = (
                f"data.showers_per_condition = {group} needs model.critic_minibatch_std = {group} (the critic's groups are the "
                f"showers of one condition) and a train.batch_size that it divides; got critic_minibatch_std = "
                f"{self.model.critic_minibatch_std} and batch_size = {self.train.batch_size}"
            )
            raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON values (tuples as lists), as ``config.json`` stores it.

        Example:
            >>> RunConfig().to_dict()["train"]["betas"]
            [0.0, 0.9]
        """
        values: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))
        return values


_SECTIONS = {"data": DataConfig, "monitor": MonitorConfig, "model": ModelConfig, "train": TrainConfig, "energy_data": DataConfig}


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Mapping[str, Any] | str) -> RunConfig:
    """Read a TOML run config into a frozen :class:`RunConfig` (defaults for what it leaves out).

    Arguments:
        path: the TOML file, with tables ``[data]``, ``[monitor]``, ``[model]``, ``[train]``,
            optionally ``[energy_data]``, and the top-level key ``data_dir``; None for the defaults.
        overrides: ``section={key: value}`` dicts applied on top of the file's tables, and
            ``data_dir="..."``.

    Returns:
        The :class:`RunConfig`.

    Raises:
        ValueError for a file that is not valid TOML, for unknown tables or keys (listing the valid
        ones) and for values a table refuses.

    Example:
        >>> cfg = load_config(None, train={"steps": 10}, data_dir="mc-cache")
        >>> cfg.train.steps, cfg.train.gp_lambda, cfg.model.kind, cfg.data_dir
        (10, 10.0, 'mlp', 'mc-cache')
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the tomli backport (a dependency there)
        import tomli as tomllib

    values: dict[str, Any] = {}
    if path is not None:
        with Path(path).open("rb") as f:
            try:
                values = tomllib.load(f)
            except tomllib.TOMLDecodeError as err:
                msg = f"{path}: not valid TOML ({err})"
                raise ValueError(msg) from err
    for section, extra in overrides.items():
        if isinstance(extra, str):
            values[section] = extra
        else:
            values.setdefault(section, {}).update(extra)
    unknown = sorted(set(values) - set(_SECTIONS) - {"data_dir"})
    if unknown:
        msg = f"{path}: unknown table(s) or key(s) {unknown}; expected {sorted(_SECTIONS)} and 'data_dir'"
        raise ValueError(msg)
    return RunConfig(
        data=config_from_dict(DataConfig, values.get("data", {}), "data"),
        monitor=config_from_dict(MonitorConfig, values.get("monitor", {}), "monitor"),
        model=config_from_dict(ModelConfig, values.get("model", {}), "model"),
        train=config_from_dict(TrainConfig, values.get("train", {}), "train"),
        energy_data=config_from_dict(DataConfig, values["energy_data"], "energy_data") if "energy_data" in values else None,
        data_dir=str(values.get("data_dir", "data")),
    )


def _as_json(spec: DataConfig | MonitorConfig) -> dict[str, Any]:
    """The table as JSON values, as a file's metadata records it."""
    values: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(spec)))
    if values.get("showers_per_condition") == 1:  # the tables written before the field existed
        del values["showers_per_condition"]
    return values


def dataset_path(spec: DataConfig | MonitorConfig, data_dir: str | os.PathLike[str]) -> Path:
    """Where the showers of ``spec`` are cached.

    Returns:
        ``<data_dir>/<kind>-<hash>.h5``: kind ``train`` or ``monitor``, the hash the first 12 hex
        digits of the sha256 of the table as sorted JSON.

    Example:
        >>> a, b = dataset_path(DataConfig(), "data"), dataset_path(DataConfig(seed=2), "data")
        >>> a.parent.name, a.suffix, a != b
        ('data', '.h5', True)
    """
    kind = "train" if isinstance(spec, DataConfig) else "monitor"
    text = json.dumps(_as_json(spec), sort_keys=True)
    return Path(data_dir) / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.h5"


def make_dataset(
    spec: DataConfig | MonitorConfig,
    path: str | os.PathLike[str],
    *,
    detector: Detector = DEFAULT_DETECTOR,
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Simulate the showers of ``spec`` with the reference MC into ``path`` (atomically).

    The file's metadata records ``spec`` under ``"training_data"`` so that a later run can tell
    whether a cached file is the one its config asks for.

    Arguments:
        spec: the table whose showers to simulate.
        path: the output file (.h5).
        detector: the geometry and response to simulate.
        overwrite: replace an existing file.
        progress: show a progress bar.

    Returns:
        The number of showers written.
    """
    from .mc import simulate_to_file

    return simulate_to_file(
        spec.conditions(detector),
        Path(path),
        seed=spec.seed,
        overwrite=overwrite,
        detector=detector,
        progress=progress,
        metadata={"training_data": _as_json(spec)},
    )


def ensure_dataset(spec: DataConfig | MonitorConfig, data_dir: str | os.PathLike[str], *, detector: Detector = DEFAULT_DETECTOR, progress: bool = True) -> Path:
    """The cached file of ``spec`` under ``data_dir``, simulated first if it is not there.

    Returns:
        Its path (:func:`dataset_path`).

    Raises:
        ValueError if the file exists but its metadata records another table (it is not replaced).
    """
    from .datasets import metadata

    path = dataset_path(spec, data_dir)
    if path.is_file():
        stored = metadata(path).get("training_data")
        if stored != _as_json(spec):
            msg = f"{path} holds showers for {stored}, not for {dataclasses.asdict(spec)}; remove it to regenerate"
            raise ValueError(msg)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    make_dataset(spec, path, detector=detector, progress=progress)
    return path
