"""WGAN-GP training: the run config, the training data it generates, the loop, checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .datasets import ShowerData
from .detector import DEFAULT_DETECTOR, Detector
from .model import ShowerModel
from .runconfig import DataConfig, MonitorConfig, RunConfig, TrainConfig, dataset_path, ensure_dataset, load_config, make_dataset

__all__ = (
    "DataConfig",
    "MonitorConfig",
    "RunConfig",
    "TrainConfig",
    "cosine_lr",
    "dataset_path",
    "evaluate",
    "gradient_penalty",
    "load_config",
    "make_dataset",
    "summed_energy_mmd",
    "train",
)


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


def gradient_penalty(critic: Any, real: torch.Tensor, fake: torch.Tensor, *args: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = eps real + (1 - eps) fake,
    eps ~ U(0, 1) per sample (arXiv:1704.00028, Algorithm 1). ``args`` are passed to the critic.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(3, 1, bias=False)
        >>> _ = lin.weight.data.copy_(torch.tensor([[0.0, 3.0, 4.0]]))   # |grad| = 5 everywhere
        >>> gradient_penalty(lambda x: lin(x)[:, 0], torch.zeros(4, 3), torch.ones(4, 3)).item()
        16.0
    """
    eps = torch.rand((real.shape[0], 1), generator=generator, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    score = critic(mixed, *args)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return ((grad.norm(2, dim=1) - 1.0) ** 2).mean()


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
    conditions*, its width included, not only the pooled one. Returns the unbiased estimate of
    MMD^2 (pairs of a shower with itself left out, so it can come out slightly negative): its
    gradient is the unbiased estimate of the full MMD^2's.

    Example:
        >>> import torch
        >>> c = torch.zeros((512, 7)); c[:, 2] = 1.0                # one condition, photons
        >>> g = torch.Generator().manual_seed(0)
        >>> real = torch.randn(512, generator=g)
        >>> same = summed_energy_mmd(c, real, torch.randn(512, generator=g))
        >>> narrow = summed_energy_mmd(c, real, 0.5 * torch.randn(512, generator=g))
        >>> bool(narrow > 3 * same)
        True
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


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A run's stored config with the keys it lacks (fields added to the config since that run was
    made, whose defaults keep the old behaviour) at their defaults."""
    defaults = RunConfig().to_dict()
    return {key: {**defaults[key], **value} if isinstance(value, dict) and isinstance(defaults.get(key), dict) else value for key, value in stored.items()}


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


def _only_longer(stored: dict[str, Any], wanted: dict[str, Any], run_dir: Path) -> bool:
    """Whether ``wanted`` differs from the run's ``stored`` config only by more generator steps (and
    weight-averaging settings that start after the steps done), so that the run can go on: nothing
    in a step depends on the total (the GAN's learning rate is constant) and the average never
    feeds back into training, so a run extended from its checkpoint is the longer run."""
    checkpoint = run_dir / "checkpoint.json"
    done = json.loads(checkpoint.read_text())["step"] if checkpoint.is_file() else 0
    free = ["steps"]
    if all(c["train"]["ema_decay"] == 0 or c["train"]["ema_start"] >= done for c in (stored, wanted)):
        free += ["ema_decay", "ema_start"]  # no averaging has begun in either
    if {**stored, "train": {**stored["train"], **{k: wanted["train"][k] for k in free}}} != wanted:
        return False
    if wanted["train"]["steps"] < done:
        msg = f"{run_dir} has already trained {done} steps; train.steps = {wanted['train']['steps']} cannot shorten it"
        raise ValueError(msg)
    return True


def _generate(
    model: ShowerModel, data: _Batchable, z: torch.Tensor, u: torch.Tensor, noise: torch.Tensor | None, batch: int = 8192
) -> np.ndarray:
    out = [
        model.generate(data.c[s : s + batch], data.e[s : s + batch], z[s : s + batch], u[s : s + batch], None if noise is None else noise[s : s + batch])
        for s in range(0, len(data), batch)
    ]
    return torch.cat(out).cpu().numpy()


def evaluate(reference: ShowerData, generated: ShowerData) -> dict[str, Any]:
    """The monitor's physics metrics of ``generated`` against held-out ``reference`` showers with the
    same conditions, per energy point: response and resolution ratios (generated / reference) and
    the separation power of every high-level feature, and precision / recall / density / coverage
    of the feature vectors (:func:`fastcalo.validation.metrics.diversity`, so that mode collapse
    shows); ``score`` is the mean separation power over features and points (lower is better; it
    picks the kept checkpoint). The diversity numbers are averaged over the points.
    ``classifier_auc`` is the low-level classifier test of :func:`fastcalo.validation.classifier_auc`
    (the validation report's, one seed) on all the monitor's showers: the target metric, watched
    during training (on the monitor's few thousand showers the classifier has less to learn from
    than in a validation report, so its AUC comes out lower than the report's on more showers)."""
    from .validation.classifier import classifier_auc
    from .validation.metrics import diversity, separation_power
    from .validation.observables import energy_groups, feature_histograms, features, response_table

    groups = energy_groups(reference.energy)
    ref_resp, gen_resp = response_table(reference, groups), response_table(generated, groups)
    points: list[dict[str, Any]] = []
    for (low, high), a, b in zip(groups, ref_resp, gen_resp):
        keep = (reference.energy >= low) & (reference.energy <= high if low == high else reference.energy < high)
        fr, fg = features(reference[keep]), features(generated[keep])
        hr, hg = feature_histograms(fr, fg)
        # a feature the generator never produces (e.g. all its showers empty) is as far as can be: 1
        sp = {name: separation_power(hr[name], hg[name]) if hg[name].sum().value > 0 else 1.0 for name in hr}
        points.append(
            {
                "energy": [low, high],
                "response_ratio": b.mean / a.mean,
                "resolution_ratio": b.resolution / a.resolution,
                "separation_power": sp,
                **diversity(np.column_stack(list(fr.values())), np.column_stack(list(fg.values())), max_samples=2000),
            }
        )
    names = list(points[0]["separation_power"])
    mean_sp = {n: float(np.mean([p["separation_power"][n] for p in points])) for n in names}
    return {
        "score": float(np.mean(list(mean_sp.values()))),
        "separation_power": mean_sp,
        "max_response_deviation": float(max(abs(p["response_ratio"] - 1) for p in points)),
        "max_resolution_deviation": float(max(abs(p["resolution_ratio"] - 1) for p in points)),
        **{k: float(np.mean([p[k] for p in points])) for k in ("precision", "recall", "density", "coverage")},
        "classifier_auc": classifier_auc(reference, generated, inputs="low", seeds=(0,)).auc,
        "points": points,
    }


def cosine_lr(base: float, step: int, steps: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at ``steps`` (a pure function of the step).

    Example:
        >>> cosine_lr(1e-3, 0, 100), cosine_lr(1e-3, 50, 100), cosine_lr(1e-3, 100, 100)
        (0.001, 0.0005, 0.0)
    """
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        msg = f"train.device is {name!r} but no CUDA device is available"
        raise ValueError(msg)
    return torch.device(name)


def _setup_processes(device_name: str) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether this call started the process group); joins the
    process group when launched by torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, _device(device_name), False
    device = _device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device, started


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _broadcast_parameters(model: torch.nn.Module, world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)


def _average_gradients(module: torch.nn.Module, world: int) -> None:
    """All-reduce and average the gradients of ``module`` over the processes (data parallelism)."""
    if world == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _gather_rng(rng: torch.Generator, world: int) -> list[torch.Tensor]:
    state = rng.get_state()
    if world == 1:
        return [state]
    import torch.distributed as dist

    states = [torch.empty_like(state) for _ in range(world)]
    dist.all_gather(states, state)
    return states


def _check_in_sync(model: torch.nn.Module, run_dir: Path, lead: bool) -> None:
    """Process 0 records whether every process ended with the same weights (they must)."""
    import torch.distributed as dist

    flat = torch.cat([t.detach().float().reshape(-1).cpu() for t in model.state_dict().values()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if lead:
        spread = max(float((g - gathered[0]).abs().max()) for g in gathered)
        (run_dir / "processes.json").write_text(json.dumps({"processes": len(gathered), "max_weight_difference": spread}) + "\n")


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


def _save_checkpoint(
    run_dir: Path,
    model: ShowerModel,
    optimizers: dict[str, torch.optim.Optimizer],
    rng_states: list[torch.Tensor],
    info: dict[str, Any],
    ema: list[torch.Tensor] | None = None,
) -> None:
    """``checkpoint.safetensors`` (weights, optimizer moments, RNG state, averaged weights) +
    ``checkpoint.json``, atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{i}": t.detach().cpu().contiguous() for i, t in enumerate(ema or [])})
    groups = {}
    for prefix, opt in optimizers.items():
        extra, groups[prefix] = _optimizer_tensors(prefix, opt)
        tensors.update({f"opt.{k}": v for k, v in extra.items()})
    for rank, state in enumerate(rng_states):
        tensors[f"rng.{rank}"] = state.cpu()
    tmp = run_dir / ".checkpoint.tmp.safetensors"
    save_file(tensors, str(tmp))
    meta = dict(info, param_groups=groups)
    (run_dir / ".checkpoint.tmp.json").write_text(json.dumps(meta))
    os.replace(tmp, run_dir / "checkpoint.safetensors")
    os.replace(run_dir / ".checkpoint.tmp.json", run_dir / "checkpoint.json")


def _load_checkpoint(
    run_dir: Path, model: ShowerModel, optimizers: dict[str, torch.optim.Optimizer], rng: torch.Generator, *, rank: int = 0
) -> dict[str, Any]:
    from safetensors.torch import load_file

    tensors = load_file(str(run_dir / "checkpoint.safetensors"))
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for prefix, opt in optimizers.items():
        _restore_optimizer(prefix, opt, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, meta["param_groups"][prefix])
    if f"rng.{rank}" not in tensors:
        msg = f"{run_dir}: the checkpoint holds no random state for process {rank} (was it made with fewer processes?)"
        raise ValueError(msg)
    rng.set_state(tensors[f"rng.{rank}"])
    ema = [tensors[f"ema.{i}"] for i in range(sum(k.startswith("ema.") for k in tensors))]
    return dict(meta, ema=ema or None)


def train(
    config: RunConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    progress: bool = True,
    detector: Detector = DEFAULT_DETECTOR,
    until: int | None = None,
) -> Path:
    """Train a model as ``config`` says; the run directory shows its own health.

    ``run_dir`` receives ``config.json``, ``metrics.jsonl`` (losses every 50 steps, the monitor's
    metrics at every evaluation), ``losses.png``, ``monitor.png``, ``grids/step_*.png`` (showers
    from fixed noise and conditions beside MC ones), ``checkpoint.*`` (resumable), ``best/`` (the
    model with the lowest monitor score) and ``final/``. An existing run with the same config is
    resumed from its checkpoint (``resume=False`` refuses to touch it). ``until`` stops after that
    many generator steps (checkpointed, to be resumed by a later call).

    Data-parallel training: launched with ``torchrun --nproc_per_node N``, every process trains on
    its own batches (its own random stream), gradients are averaged over the processes after every
    backward pass (gloo on CPU, NCCL on GPUs), so the effective batch is N x ``batch_size``; process
    0 generates the MC data, evaluates, logs and writes the run directory.

    Returns the directory of the kept (best) model.
    """
    from tqdm.auto import tqdm

    from . import datasets
    from .model import Preprocessing, save

    tc = config.train
    rank, world, device, owns_group = _setup_processes(tc.device)
    lead = rank == 0
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    wanted = config.to_dict()
    if config_path.is_file():
        if not resume:
            msg = f"{run_dir} already holds a run (pass resume=True to continue it, or choose another directory)"
            raise FileExistsError(msg)
        stored = _with_defaults(json.loads(config_path.read_text()))
        if stored != wanted and _only_longer(stored, wanted, run_dir):
            if lead:
                print(f"extending {run_dir} from {stored['train']['steps']} to {tc.steps} generator steps")
        elif stored != wanted:
            msg = f"{run_dir} holds a run with a different config ({', '.join(_differences(stored, wanted))}); choose another directory (only train.steps may grow, and the weight averaging change if it starts after the steps done)"
            raise ValueError(msg)
    _barrier(world)  # every process has checked the directory before process 0 writes to it
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "grids").mkdir(exist_ok=True)
        config_path.write_text(json.dumps(wanted, indent=2) + "\n")
        for spec in (config.data, config.monitor):
            ensure_dataset(spec, config.data_dir, detector=detector, progress=progress)
    _barrier(world)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    train_data = datasets.read(ensure_dataset(config.data, config.data_dir, detector=detector, progress=progress), detector=detector)
    monitor_data = datasets.read(ensure_dataset(config.monitor, config.data_dir, detector=detector, progress=progress), detector=detector)
    progress = progress and lead

    r = train_data.images.sum(axis=(1, 2), dtype=np.float64) / train_data.energy
    preprocessing = Preprocessing.for_detector(detector, r_mean=float(r.mean()), r_std=float(r.std()))
    torch.manual_seed(tc.seed)
    model = ShowerModel(config.model, preprocessing=preprocessing, detector=detector).to(device)
    real = _Batchable.build(model, train_data, device)
    if config.model.kind == "mlp":  # start from the average shape: output bias = log of the mean cell fraction
        mean_shape = (train_data.images / train_data.images.sum(axis=(1, 2), keepdims=True)).mean(axis=0).reshape(-1)
        with torch.no_grad():
            model.generator.net[-1].bias.copy_(torch.as_tensor(np.log(mean_shape + 1e-7), dtype=torch.float32))
    held = _Batchable.build(model, monitor_data, device)
    del train_data
    _broadcast_parameters(model, world)
    rng = torch.Generator(device=device).manual_seed(tc.seed + 1 + 1000 * rank)
    fixed = torch.Generator(device=device).manual_seed(tc.seed + 2)
    z_fixed = torch.randn((len(held), config.model.latent_dim), generator=fixed, device=device)
    u_fixed = torch.rand((len(held),), generator=fixed, device=device)
    cells_fixed = torch.randn((len(held), detector.n_total_cells), generator=fixed, device=device) if config.model.cell_noise else None

    learned_energy = config.model.energy == "loss"  # the total is trained with the generator
    # what each optimizer steps: with energy = "loss" the generator's optimizer owns the energy network too
    owners: dict[str, list[torch.nn.Module]] = {"generator": [model.generator], "critic": [model.critic]}
    if learned_energy:
        owners["generator"].append(model.energy)
    else:
        owners["energy"] = [model.energy]
    optimizers = {
        name: torch.optim.Adam(
            # each network at its own learning rate: the energy network at energy_lr, also when it trains with the generator
            [{"params": list(m.parameters()), "lr": tc.energy_lr if m is model.energy else tc.lr} for m in modules],
            betas=(0.9, 0.999) if name == "energy" else tc.betas,
        )
        for name, modules in owners.items()
    }
    info: dict[str, Any] = {"step": 0, "energy_done": False, "best_score": None, "best_step": None, "last_score": None, "seconds": 0.0}
    log_path = run_dir / "metrics.jsonl"
    # what the EMA averages: parameters and floating-point buffers (BatchNorm running statistics)
    averaged = [p for m in owners["generator"] for p in (*m.parameters(), *m.buffers()) if p.is_floating_point()]
    ema: list[torch.Tensor] | None = None  # the averaged weights, from step ema_start on
    if (run_dir / "checkpoint.safetensors").is_file():
        info = _load_checkpoint(run_dir, model, optimizers, rng, rank=rank)
        info.pop("param_groups", None)
        ema = info.pop("ema")
        if ema is not None:
            ema = [t.to(device) for t in ema]
        if tc.ema_decay > 0 and info["step"] > tc.ema_start and (ema is None or len(ema) != len(averaged)):
            msg = f"{run_dir}: the checkpoint (step {info['step']}) holds no averaged weights for ema_start = {tc.ema_start}"
            raise ValueError(msg)
        if lead:
            kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= info["step"]] if log_path.is_file() else []
            log_path.write_text("".join(line + "\n" for line in kept))
    elif log_path.exists() and lead:
        log_path.unlink()
    _barrier(world)

    import time

    started = time.perf_counter() - info["seconds"]

    def log(record: dict[str, Any]) -> None:
        if lead:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint() -> None:
        states = _gather_rng(rng, world)
        if lead:
            _save_checkpoint(run_dir, model, optimizers, states, info, ema)
        _barrier(world)

    def update_ema(done: int) -> None:
        nonlocal ema
        if tc.ema_decay <= 0 or done <= tc.ema_start:
            return
        with torch.no_grad():
            if ema is None:
                ema = [p.detach().clone() for p in averaged]
            else:
                for a, p in zip(ema, averaged):
                    a.lerp_(p.detach(), 1.0 - tc.ema_decay)

    @contextlib.contextmanager
    def averaged_weights() -> Any:
        """The generator with the averaged weights inside the block (if there are any)."""
        if ema is None:
            yield
            return
        raw = [p.detach().clone() for p in averaged]
        with torch.no_grad():
            for p, a in zip(averaged, ema):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(averaged, raw):
                    p.copy_(r)

    def step_with(name: str, loss: torch.Tensor) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        for module in owners[name]:
            _average_gradients(module, world)
        optimizers[name].step()

    def batch(n: int) -> tuple[torch.Tensor, ...]:
        return real.take(torch.randint(len(real), (n,), generator=rng, device=device))

    def cell_noise(n: int) -> torch.Tensor | None:
        if not config.model.cell_noise:
            return None
        return torch.randn((n, detector.n_total_cells), generator=rng, device=device)

    def run_eval(done: int) -> None:
        if not lead:
            return
        model.eval()
        with averaged_weights():
            generated = _generate(model, held, z_fixed, u_fixed, cells_fixed)
        gen_data = dataclasses.replace(monitor_data, images=generated.reshape(-1, detector.n_cells, detector.n_cells))
        metrics = evaluate(monitor_data, gen_data)
        log({"step": done, "kind": "eval", **metrics, "seconds": time.perf_counter() - started})
        info["last_score"] = metrics["score"]
        # with weight averaging the kept model is an averaged one: raw evaluations before ema_start
        # are logged but not kept, and the first averaged one replaces a raw best (of a run extended
        # with averaging), as in a run that had it from the start
        candidate = tc.ema_decay == 0 or ema is not None
        if candidate and tc.ema_decay > 0 and not info.get("best_averaged"):
            info["best_score"], info["best_averaged"] = None, True
        if candidate and (info["best_score"] is None or metrics["score"] < info["best_score"]):
            info["best_score"], info["best_step"] = metrics["score"], done
            with averaged_weights():
                save(model, run_dir / "best", training=dict(wanted, step=done, score=metrics["score"], averaged=ema is not None), overwrite=True)
        _plot_grid(monitor_data, gen_data, run_dir / "grids" / f"step_{done:07d}.png", title=f"step {done}")
        _plot_history(log_path, run_dir)

    if not info["energy_done"] and not learned_energy:
        # its own random stream: the energy model's settings do not change the GAN's batches
        energy_rng = torch.Generator(device=device).manual_seed(tc.seed + 3 + 1000 * rank)
        model.energy.start_from(real.r_code[torch.randperm(len(real), generator=energy_rng, device=device)[:200_000]])
        for step in tqdm(range(tc.energy_steps), desc="energy model", disable=not progress):
            optimizers["energy"].param_groups[0]["lr"] = cosine_lr(tc.energy_lr, step, tc.energy_steps)
            c, _, r_code, _ = real.take(torch.randint(len(real), (tc.energy_batch,), generator=energy_rng, device=device))
            loss = model.energy.loss(c, r_code)
            step_with("energy", loss)
            if (step + 1) % 500 == 0:
                log({"step": 0, "kind": "energy", "energy_step": step + 1, "pinball": loss.item()})
        info["energy_done"] = True
    if not learned_energy:
        for p in model.energy.parameters():
            p.requires_grad_(False)
    if info["step"] == 0:  # the starting point, so that improvement is measured, not assumed
        run_eval(0)
        checkpoint()

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    latent = config.model.latent_dim
    bar = tqdm(total=tc.steps, initial=info["step"], desc=f"{tc.loss} training", unit="step", disable=not progress)
    sums: dict[str, float] = {}
    for step in range(info["step"], tc.steps):
        model.train()
        for _ in range(tc.n_critic):
            c, e, r_code, x = batch(tc.batch_size)
            z = torch.randn((tc.batch_size, latent), generator=rng, device=device)
            with torch.no_grad():
                r_fake = model.energy.sample(c, torch.rand((tc.batch_size,), generator=rng, device=device)) if learned_energy else r_code
                fake = model.preprocessing.to_network(model.cells(z, c, r_fake, e, soft=True, noise=cell_noise(tc.batch_size)))
            d_real, d_fake = model.critic(x, c, r_code), model.critic(fake, c, r_fake)
            if tc.loss == "wgan-gp":
                if learned_energy:  # r is a critic input the generator makes: penalise its gradient too
                    gp = gradient_penalty(
                        lambda xr, c_: model.critic(xr[:, :-1], c_, xr[:, -1]),
                        torch.cat([x, r_code[:, None]], dim=1),
                        torch.cat([fake, r_fake[:, None]], dim=1),
                        c,
                        generator=rng,
                    )
                else:
                    gp = gradient_penalty(model.critic, x, fake, c, r_code, generator=rng)
                loss_c = d_fake.mean() - d_real.mean() + tc.gp_lambda * gp
                sums["gp"] = sums.get("gp", 0.0) + gp.item() / tc.n_critic
            else:
                loss_c = bce(d_real, torch.full_like(d_real, 1.0 - tc.label_smoothing)) + bce(d_fake, torch.zeros_like(d_fake))
            step_with("critic", loss_c)
        sums["wasserstein"] = sums.get("wasserstein", 0.0) + (d_real.mean() - d_fake.mean()).item()
        sums["critic_loss"] = sums.get("critic_loss", 0.0) + loss_c.item()

        c, e, r_code, _ = batch(tc.batch_size)
        z = torch.randn((tc.batch_size, latent), generator=rng, device=device)
        r_fake = model.energy.sample(c, torch.rand((tc.batch_size,), generator=rng, device=device)) if learned_energy else r_code
        fake = model.cells(z, c, r_fake, e, soft=True, noise=cell_noise(tc.batch_size))
        d_gen = model.critic(model.preprocessing.to_network(fake), c, r_fake)
        loss_g = -d_gen.mean() if tc.loss == "wgan-gp" else bce(d_gen, torch.ones_like(d_gen))
        if learned_energy:
            mmd = summed_energy_mmd(c, r_code, r_fake)
            loss_g = loss_g + tc.energy_loss_weight * mmd
            sums["energy_mmd"] = sums.get("energy_mmd", 0.0) + mmd.item()
        step_with("generator", loss_g)
        update_ema(step + 1)
        sums["generator_loss"] = sums.get("generator_loss", 0.0) + loss_g.item()
        sums["n"] = sums.get("n", 0.0) + 1
        bar.update(1)

        done = step + 1
        if done % 50 == 0 or done == tc.steps:
            n_avg = sums.pop("n")
            record = {k: v / n_avg for k, v in sums.items()}
            log({"step": done, "kind": "train", **record, "seconds": time.perf_counter() - started})
            bar.set_postfix(W=f"{record['wasserstein']:.3f}")
            sums = {}
        stop = until is not None and done >= until
        if done % tc.eval_every == 0 or done == tc.steps:
            run_eval(done)
            if lead:
                bar.set_postfix(score=f"{info['last_score']:.4f}", best=info["best_step"])
        if done % tc.eval_every == 0 or done == tc.steps or stop:
            info["step"], info["seconds"] = done, time.perf_counter() - started
            checkpoint()
        if stop:
            break
    bar.close()
    if info["step"] >= tc.steps and lead:
        with averaged_weights():
            save(model, run_dir / "final", training=dict(wanted, step=tc.steps, processes=world, averaged=ema is not None), overwrite=True)
    if world > 1:
        _check_in_sync(model, run_dir, lead)
        if owns_group:  # leave no communication threads behind at interpreter exit
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
    return run_dir / "best"


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
