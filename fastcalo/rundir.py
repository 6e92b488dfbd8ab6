"""The run directory of a training: its config, metrics log, checkpoint, kept models and plots.

::

    config.json                 the full run config (resuming compares against it)
    metrics.jsonl               one JSON record per line: "train" (losses), "eval" (monitor), "energy"
    losses.png, monitor.png     the history of the losses and of the monitor's metrics
    grids/step_*.png            MC and generated showers at every evaluation
    checkpoint.safetensors      weights, Adam moments, random states, averaged weights, the progress (metadata)
    checkpoint.json             a copy of the progress to read: the run's :class:`Progress` and the optimizers' settings
    best/, final/               models (fastcalo.model.save): the lowest monitor score (the latest evaluation once the learning rates anneal), the last step
    processes.json              with several processes: whether they ended with the same weights
    started_from.json           a run started from another run's checkpoint (:meth:`RunDirectory.start_from`)

Only the lead process (process 0) writes; the others read (the config check, the checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .averaging import WeightAverage
from .datasets import ShowerData
from .model import ShowerModel, save
from .runconfig import DataConfig, RunConfig

__all__ = ("Progress", "RunDirectory")

log = logging.getLogger("fastcalo.train")

# the key of the checkpoint's progress (JSON) in the metadata of checkpoint.safetensors
_PROGRESS_KEY = "fastcalo.progress"


@dataclasses.dataclass
class Progress:
    """How far a run has come: what a checkpoint records beside the tensors.

    Arguments:
        step: generator steps done.
        energy_done: whether the energy model's pre-training is done.
        best_score, best_step: the kept evaluation's monitor score and step (``best/``: the lowest score, or the latest while the rates anneal).
        best_averaged: whether ``best_score`` is of averaged weights (weight averaging).
        last_score: the latest monitor score.
        seconds: wall time spent training, over all sessions of the run.
    """

    step: int = 0
    energy_done: bool = False
    best_score: float | None = None
    best_step: int | None = None
    best_averaged: bool = False
    last_score: float | None = None
    seconds: float = 0.0

    def keep(self, score: float, step: int, *, averaging: bool, averaged: bool, annealing: bool = False) -> bool:
        """Whether the evaluation of ``step`` with ``score`` becomes the kept model (recorded if so).

        With weight averaging on (``averaging``) the kept model is an averaged one: evaluations
        before the average starts (``averaged`` false) are not candidates, and the first averaged
        one replaces a raw best (of a run extended with averaging), as in a run that had it from
        the start.

        While the learning rates anneal (``annealing``: the step is past ``train.lr_decay_start``
        of a run with a decay) every evaluation is kept: as the rates fall the generator and the
        critic stop chasing each other and the showers settle, while the monitor's score is too
        flat by then to tell the steps apart. In the three decays of the fourth default's run
        (``validation/lr-decay/``) the last evaluation had the lowest monitor AUC each time
        (0.751, 0.750, 0.759), where the lowest score picked a step of AUC 0.827 once.

        Example:
            >>> progress = Progress()
            >>> progress.keep(0.3, 10, averaging=False, averaged=False), progress.keep(0.4, 20, averaging=False, averaged=False)
            (True, False)
            >>> progress.keep(0.5, 30, averaging=True, averaged=True), progress.best_step   # the first averaged one
            (True, 30)
            >>> progress.keep(0.6, 40, averaging=True, averaged=True, annealing=True), progress.best_step   # annealing
            (True, 40)
        """
        if averaging and not averaged:
            return False
        if averaging and not self.best_averaged:
            self.best_score, self.best_averaged = None, True
        if annealing or self.best_score is None or score < self.best_score:
            self.best_score, self.best_step = score, step
            return True
        return False


class RunDirectory:
    """The directory of one training run; only the lead process writes to it.

    Arguments:
        path: the directory (created by :meth:`create`).
        config: the run's config.
        lead: whether this is process 0, the one that writes.
    """

    def __init__(self, path: str | os.PathLike[str], config: RunConfig, *, lead: bool = True) -> None:
        self.path = Path(path)
        self.config = config
        self.wanted = config.to_dict()
        self.lead = lead

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``."""
        return self.path / "metrics.jsonl"

    @property
    def started_from(self) -> dict[str, Any] | None:
        """``started_from.json`` of a run started from another's checkpoint (the parent's path,
        step and config), else None."""
        path = self.path / "started_from.json"
        return dict(json.loads(path.read_text())) if path.is_file() else None

    def start_from(self, parent: str | os.PathLike[str]) -> None:
        """Begin this run at the checkpoint of the run in ``parent``, under this run's config: a
        second phase of training (a fine-tune with other settings: learning rates, their schedule,
        ``train.threshold``, more steps). The parent's directory is only read.

        The new directory receives the parent's checkpoint, its metrics log up to the checkpoint's
        step (the history goes on) and ``started_from.json`` (the parent's path, step and config);
        the run then resumes from that checkpoint as from its own. ``[model]`` and ``[data]`` must
        be the parent's (the weights and the training showers), and ``train.steps`` more than its
        step. If the energy model's settings differ (``[energy_data]``, ``train.energy_steps``,
        ``energy_lr``, ``energy_batch``, ``seed``), the energy model is trained again, from the
        start, as :func:`fastcalo.train.retrain_energy` would (the GAN never sees it). Called on a
        directory that this started already, it does nothing (the run resumes from its own
        checkpoint). ``best/`` is chosen among this run's own evaluations.

        Raises:
            ValueError if the parent holds no run or no checkpoint, if the configs differ in
            ``[model]`` or ``[data]`` (naming the keys), if ``train.steps`` is not above the
            parent's step, or if this directory holds another run.
        """
        parent = Path(parent)
        mine = self.started_from
        if mine is not None and Path(mine["run"]) == parent.resolve():
            return
        if (self.path / "config.json").is_file():
            msg = f"{self.path} already holds a run{' started from ' + mine['run'] if mine else ''}; start from {parent} in a new directory"
            raise ValueError(msg)
        if not (parent / "config.json").is_file() or not (parent / "checkpoint.safetensors").is_file():
            msg = f"{parent} holds no run with a checkpoint to start from (config.json and checkpoint.safetensors)"
            raise ValueError(msg)
        stored = _with_defaults(json.loads((parent / "config.json").read_text()))
        different = [key for table in ("model", "data") for key in _differences({table: stored[table]}, {table: self.wanted[table]})]
        if different:
            msg = f"{self.path}: only a run of the same model and training data can start from {parent}; keys that differ: {', '.join(different)}"
            raise ValueError(msg)
        progress = RunDirectory(parent, self.config)._checkpoint_progress()
        if self.config.train.steps <= progress["step"]:
            msg = f"{parent} has trained {progress['step']} steps; train.steps = {self.config.train.steps} must be more to start from it"
            raise ValueError(msg)
        if not self.lead:
            return
        from safetensors.torch import load_file, save_file

        if _energy_settings(stored) != _energy_settings(self.wanted):
            progress["energy_done"] = False  # trained again, from the start (fastcalo.train.train)
        # best/ is chosen among this run's own evaluations (the parent's kept model is not here)
        progress.update(best_score=None, best_step=None, best_averaged=False)
        self.path.mkdir(parents=True, exist_ok=True)
        tensors = load_file(str(parent / "checkpoint.safetensors"))
        lines = (parent / "metrics.jsonl").read_text().splitlines() if (parent / "metrics.jsonl").is_file() else []
        tmp = self.path / ".start.tmp.safetensors"
        try:
            save_file(tensors, str(tmp), metadata={_PROGRESS_KEY: json.dumps(progress)})
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
            self.metrics_path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= progress["step"]))
            (self.path / "checkpoint.json").write_text(json.dumps(progress))
            os.replace(tmp, self.path / "checkpoint.safetensors")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # last: until it is there, a call again copies the parent's checkpoint again
        (self.path / "started_from.json").write_text(json.dumps({"run": str(parent.resolve()), "step": progress["step"], "config": stored}, indent=2) + "\n")
        log.info("starting %s from the checkpoint of %s at step %d", self.path, parent, progress["step"])

    def check(self, *, resume: bool = True) -> None:
        """Whether the run may go on here: a new directory, or one holding this run, or this run
        with fewer generator steps (then it is extended, and says so in the log).

        Only ``train.steps`` may grow, and the weight-averaging and learning-rate-decay settings
        change if the average or the decay starts after the steps already done: nothing in a step
        depends on the total (the learning rate is a function of the step alone) and the average
        never feeds back into training, so a run extended from its checkpoint is the longer run. Configs written before a field was added
        to the config compare with that field at its default.

        Raises:
            FileExistsError if the directory holds a run and ``resume`` is false.
            ValueError naming the keys that differ, or if the run has already trained more steps
            than ``train.steps``.
        """
        config_path = self.path / "config.json"
        if not config_path.is_file():
            return
        if not resume:
            msg = f"{self.path} already holds a run (pass resume=True to continue it, or choose another directory)"
            raise FileExistsError(msg)
        stored = _with_defaults(json.loads(config_path.read_text()))
        if stored == self.wanted:
            return
        if not _only_longer(stored, self.wanted, self._checkpoint_step(), self.path):
            msg = (
                f"{self.path} holds a run with a different config ({', '.join(_differences(stored, self.wanted))}); choose "
                "another directory (only train.steps may grow, and the weight averaging or learning-rate decay change if it starts after the steps done)"
            )
            raise ValueError(msg)
        if self.lead:
            before, after = stored["train"]["steps"], self.config.train.steps
            if after > before:
                log.info("extending %s from %d to %d generator steps", self.path, before, after)
            else:  # no fewer than the steps done (checked above)
                log.info("ending %s at %d generator steps (its config said %d)", self.path, after, before)

    def create(self) -> None:
        """Make the directory and write ``config.json``."""
        if not self.lead:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "grids").mkdir(exist_ok=True)
        (self.path / "config.json").write_text(json.dumps(self.wanted, indent=2) + "\n")

    def resume(
        self, model: ShowerModel, optimizers: Mapping[str, torch.optim.Optimizer], rng: torch.Generator, average: WeightAverage, *, rank: int = 0
    ) -> Progress:
        """Where the run starts: from its checkpoint if there is one (weights, optimizer moments,
        process ``rank``'s random state and the average restored into the objects given, the
        metrics log cut back to the checkpoint's step), else from the beginning (an old metrics
        log removed).

        Raises:
            ValueError if the checkpoint holds no random state for ``rank`` (made with fewer
            processes) or not the averaged weights that the config asks for.
        """
        if not (self.path / "checkpoint.safetensors").is_file():
            if self.lead and self.metrics_path.exists():
                self.metrics_path.unlink()
            return Progress()
        from safetensors.torch import load_file

        tensors = load_file(str(self.path / "checkpoint.safetensors"))
        meta = self._checkpoint_progress()
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for prefix, opt in optimizers.items():
            _restore_optimizer(prefix, opt, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, meta["param_groups"][prefix])
        if f"rng.{rank}" not in tensors:
            msg = f"{self.path}: the checkpoint holds no random state for process {rank} (was it made with fewer processes?)"
            raise ValueError(msg)
        rng.set_state(tensors[f"rng.{rank}"])
        progress = Progress(**{f.name: meta[f.name] for f in dataclasses.fields(Progress) if f.name in meta})
        try:
            average.restore([tensors[f"ema.{i}"] for i in range(sum(k.startswith("ema.") for k in tensors))], progress.step)
        except ValueError as err:
            msg = f"{self.path}: {err}"
            raise ValueError(msg) from err
        if self.lead:
            lines = self.metrics_path.read_text().splitlines() if self.metrics_path.is_file() else []
            kept = [line for line in lines if json.loads(line)["step"] <= progress.step]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
            log.info("resuming %s from the checkpoint of step %d", self.path, progress.step)
        return progress

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl``."""
        if self.lead:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def save_checkpoint(
        self,
        model: ShowerModel,
        optimizers: Mapping[str, torch.optim.Optimizer],
        rng_states: list[torch.Tensor],
        progress: Progress,
        average: WeightAverage,
    ) -> None:
        """Write ``checkpoint.safetensors`` (weights, optimizer moments, every process's random
        state, averaged weights) and ``checkpoint.json`` (``progress``, the optimizers' settings),
        each atomically."""
        if not self.lead:
            return
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tensors.update({f"ema.{i}": t.detach().cpu().contiguous() for i, t in enumerate(average.state())})
        groups = {}
        for prefix, opt in optimizers.items():
            extra, groups[prefix] = _optimizer_tensors(prefix, opt)
            tensors.update({f"opt.{k}": v for k, v in extra.items()})
        for rank, state in enumerate(rng_states):
            tensors[f"rng.{rank}"] = state.cpu()
        record = json.dumps(dict(dataclasses.asdict(progress), param_groups=groups))
        tmp, tmp_json = self.path / ".checkpoint.tmp.safetensors", self.path / ".checkpoint.tmp.json"
        try:
            # the progress also inside the weights' file: one rename makes the checkpoint whole
            # (checkpoint.json, a copy to read, may lag by one checkpoint if the process is killed)
            save_file(tensors, str(tmp), metadata={_PROGRESS_KEY: record})
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)  # safetensors writes it private; the run's other files follow the umask
            tmp_json.write_text(record)
            os.replace(tmp, self.path / "checkpoint.safetensors")
            os.replace(tmp_json, self.path / "checkpoint.json")
        except BaseException:  # an error, Ctrl-C or SIGTERM (fastcalo train): no temporary file stays
            tmp.unlink(missing_ok=True)
            tmp_json.unlink(missing_ok=True)
            raise

    def save_model(self, model: ShowerModel, name: str, **training: object) -> Path:
        """Save ``model`` as ``<name>/`` (``best``, ``final``), replacing it; its metadata's
        ``training`` is the run config plus ``training`` (step, score, ...).

        Returns:
            The model's directory.
        """
        target = self.path / name
        if self.lead:
            started = self.started_from
            if started is not None:  # where the run began: the parent's path and step (its config is in started_from.json)
                training = dict(training, started_from={"run": started["run"], "step": started["step"]})
            save(model, target, training=dict(self.wanted, **training), overwrite=True)
        return target

    def plot_grid(self, reference: ShowerData, generated: ShowerData, step: int) -> None:
        """``grids/step_<step>.png``: MC showers (top row) and generated ones (bottom row)."""
        if self.lead:
            _plot_grid(reference, generated, self.path / "grids" / f"step_{step:07d}.png", title=f"step {step}")

    def plot_history(self) -> None:
        """``losses.png`` and ``monitor.png`` from ``metrics.jsonl``."""
        if self.lead:
            _plot_history(self.metrics_path, self.path)

    def record_processes(self, processes: int, max_weight_difference: float) -> None:
        """``processes.json``: how many processes trained and how far apart their weights ended."""
        if self.lead:
            text = json.dumps({"processes": processes, "max_weight_difference": max_weight_difference})
            (self.path / "processes.json").write_text(text + "\n")

    def _checkpoint_step(self) -> int:
        has = (self.path / "checkpoint.safetensors").is_file() or (self.path / "checkpoint.json").is_file()
        return int(self._checkpoint_progress()["step"]) if has else 0

    def _checkpoint_progress(self) -> dict[str, Any]:
        """The checkpoint's progress and optimizer settings: from the weights' own file (written
        with them in one rename), or, for runs made before it held them, ``checkpoint.json``."""
        weights = self.path / "checkpoint.safetensors"
        stored = checkpoint_progress(weights) if weights.is_file() else None
        if stored is not None:
            return stored
        progress: dict[str, Any] = json.loads((self.path / "checkpoint.json").read_text())
        return progress


def checkpoint_progress(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The progress record (step, best score, optimizer settings) stored inside a checkpoint's
    weights file (a run's ``checkpoint.safetensors`` or a copy of it), or None for checkpoints
    written before it was stored there."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        stored = (f.metadata() or {}).get(_PROGRESS_KEY)
    return None if stored is None else dict(json.loads(stored))


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A run's stored config with the keys it lacks (fields added to the config since that run was
    made, whose defaults keep the old behaviour) at their defaults."""
    defaults = RunConfig().to_dict()
    defaults["energy_data"] = json.loads(json.dumps(dataclasses.asdict(DataConfig())))  # the optional table's fields, when it is there
    merged = {"energy_data": None, **stored}  # a table added since (``energy_data``) at its default, None
    return {key: {**defaults[key], **value} if isinstance(value, dict) and isinstance(defaults.get(key), dict) else value for key, value in merged.items()}


def _energy_settings(config: dict[str, Any]) -> list[Any]:
    """What the energy model's pre-training depends on beside ``[model]`` and ``[data]``."""
    return [config["energy_data"], *(config["train"][key] for key in ("energy_steps", "energy_lr", "energy_batch", "seed"))]


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


def _only_longer(stored: dict[str, Any], wanted: dict[str, Any], done: int, path: Path) -> bool:
    """Whether ``wanted`` differs from the run's ``stored`` config only by more generator steps (and
    weight-averaging and learning-rate-decay settings, if neither the average nor the decay has
    begun by step ``done`` in either).

    Raises:
        ValueError if ``wanted`` has fewer steps than ``done``.
    """
    free = ["steps"]
    if all(c["train"]["ema_decay"] == 0 or c["train"]["ema_start"] >= done for c in (stored, wanted)):
        free += ["ema_decay", "ema_start"]  # no averaging has begun in either
    if all(c["train"]["lr_decay_steps"] == 0 or c["train"]["lr_decay_start"] >= done for c in (stored, wanted)):
        free += ["lr_decay_start", "lr_decay_steps"]  # the learning rate has been constant in both so far
    if {**stored, "train": {**stored["train"], **{k: wanted["train"][k] for k in free}}} != wanted:
        return False
    if wanted["train"]["steps"] < done:
        msg = f"{path} has already trained {done} steps; train.steps = {wanted['train']['steps']} cannot shorten it"
        raise ValueError(msg)
    return True


def _optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[Any]]:
    state = opt.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{prefix}.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, state["param_groups"]


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        head, index, key = name.split(".", 2)
        if head == prefix:
            state.setdefault(int(index), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


def _plot_grid(reference: ShowerData, generated: ShowerData, path: Path, *, title: str) -> None:
    """MC (top row) and generated (bottom row) showers: the first shower at up to 5 energy points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    energies = np.unique(reference.energy)
    picks = [int(np.flatnonzero(reference.energy == e)[0]) for e in energies[:: max(1, -(-energies.size // 5))]]
    fig, axes = plt.subplots(2, len(picks), figsize=(2.6 * len(picks), 5.6), squeeze=False)
    for col, index in enumerate(picks):
        for row, (data, label) in enumerate(((reference, "MC"), (generated, "generated"))):
            ax = axes[row, col]
            image = data.images[index]
            ax.imshow(np.where(image > 0, image, np.nan), norm=LogNorm(vmin=1e-3, vmax=max(float(image.max()), 2e-3)), cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label} {reference.energy[index]:g} GeV, E={image.sum():.2f}", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_history(log_path: Path, run_dir: Path) -> None:
    """losses.png (critic's Wasserstein estimate, losses) and monitor.png (score, response, resolution)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    train_rows = [r for r in records if r["kind"] == "train"]
    eval_rows = [r for r in records if r["kind"] == "eval"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = [r["step"] for r in train_rows]
    axes[0].plot(steps, [r["wasserstein"] for r in train_rows], label="critic: D(real) - D(fake)")
    axes[0].set_xlabel("generator step")
    axes[0].legend()
    axes[1].plot(steps, [r["critic_loss"] for r in train_rows], label="critic loss")
    axes[1].plot(steps, [r["generator_loss"] for r in train_rows], label="generator loss")
    axes[1].set_xlabel("generator step")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(run_dir / "losses.png", dpi=80)
    plt.close(fig)
    if eval_rows:
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
        steps = [r["step"] for r in eval_rows]
        axes[0].plot(steps, [r["score"] for r in eval_rows], "o-", label="mean separation power (score)")
        axes[0].set_yscale("log")
        axes[0].set_xlabel("generator step")
        axes[0].legend()
        axes[1].plot(steps, [r["max_response_deviation"] for r in eval_rows], "o-", label="max |response ratio - 1|")
        axes[1].plot(steps, [r["max_resolution_deviation"] for r in eval_rows], "s-", label="max |resolution ratio - 1|")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("generator step")
        axes[1].legend()
        for key, label, marker in (("classifier_auc", "classifier AUC (low-level)", "o-"), ("recall", "recall", "s-"), ("coverage", "coverage", "^-")):
            points = [(r["step"], r[key]) for r in eval_rows if r.get(key) is not None]  # runs logged before the AUC have none
            if points:
                axes[2].plot(*zip(*points), marker, label=label)
        axes[2].axhline(0.5, color="grey", lw=0.8, ls=":")
        axes[2].set_ylim(0.0, 1.02)
        axes[2].set_xlabel("generator step")
        axes[2].legend()
        fig.tight_layout()
        fig.savefig(run_dir / "monitor.png", dpi=80)
        plt.close(fig)
