"""The conditional shower model: condition encoding, energy model, Generator, Critic, save/load.

A shower is generated in two factors, p(image | c) = p(r | c) · p(shape | r, c):

- the **energy model** draws the deposited fraction r = E_dep / E_inc from its conditional
  quantile function (a small MLP trained with the pinball loss), so the total-energy distribution,
  the classic failure of calorimeter GANs, is learned directly, spread and tails included;
- the **generator** (trained as a WGAN-GP against the **critic**) turns latent noise, the
  conditions and r into a 24x24 shape: softmax over the cells, times r · E_inc, then the detector's
  zero-suppression threshold (soft while training, hard when generating).

The alternative for the total (``ModelConfig.energy = "loss"``): an :class:`EnergyGenerator`
trained with the generator, through the critic and an extra loss on the summed energy
(:func:`fastcalo.train.summed_energy_mmd`); validation/energy-mechanism/ compares the two.

Conditions c: log incident energy, eta, particle type (one-hot) and the impact point inside the
central cell, each scaled to about [-1, 1] by :class:`Conditions` from the detector's ranges.

Preprocessing (stored with the model, invertible): cell energies E [GeV] are shown to the critic
as x = log1p(E / e0) / log1p(E_max / e0) with e0 the zero-suppression threshold (x = 0 for an
empty cell, about 1 for the highest energy in range); r is standardised with the training mean
and standard deviation.

Example:
    >>> import torch
    >>> from fastcalo.model import ModelConfig, ShowerModel
    >>> model = ShowerModel(ModelConfig(latent_dim=8, generator_hidden=(32,), critic_hidden=(32,)))
    >>> images = model.sample(energy=[10.0, 50.0], eta=[0.1, -0.4], pdgid=[22, 11],
    ...                       impact_x=[5.0, 5.0], impact_y=[5.0, 5.0], seed=1)
    >>> images.shape, images.dtype, bool((images >= 0).all())
    ((2, 24, 24), dtype('float32'), True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .datasets import OutputExistsError, file_sha256
from .detector import DEFAULT_DETECTOR, PARTICLES, ConditionRanges, Detector

__all__ = (
    "DEFAULT_MODEL",
    "PHYSICS_KEYS",
    "Conditions",
    "Critic",
    "EnergyGenerator",
    "EnergyModel",
    "Generator",
    "ModelConfig",
    "ModelFileError",
    "Preprocessing",
    "ShowerModel",
    "THRESHOLDS",
    "check_model",
    "config_from_dict",
    "load",
    "physics_sha256",
    "save",
)

#: The shipped default model's directory (model.safetensors, model.json and its train.toml).
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default"

#: The zero suppressions of :meth:`Preprocessing.zero_suppress`: generation's, and training's two.
THRESHOLDS = ("hard", "soft", "straight-through")

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Config = TypeVar("_Config", bound="DataclassInstance")

_FORMAT = "fastcalo.model"
_FORMAT_VERSION = 1

#: The keys of model.json that hold what the weights were trained with (the physics content):
#: :func:`save` binds them to the weights by :func:`physics_sha256`, written into the weights
#: file's header (so the weights' sha256 covers it) and into model.json.
PHYSICS_KEYS = ("conditions", "config", "detector", "preprocessing")
_PHYSICS_HEADER = "fastcalo.physics_sha256"
# Models shipped before the digest went into the weights' header: weights sha256 -> the
# physics_sha256 of the model.json they were shipped with (fastcalo/models/default).
_SHIPPED_PHYSICS = {
    "40af8ce768b6f95250dd92ad0aa26575a9592421df02e95b0150683a975abc77": "4592e53c91bff6e7bf7de1b01ae179e1b657672d39fd4f900f8d8b4769814a16",
}


class ModelFileError(ValueError):
    """A model directory that is missing, corrupted or does not match this package or detector."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The architecture (everything needed to rebuild the networks).

    Arguments:
        kind: ``"mlp"`` (the CPU default) or ``"conv"`` (DCGAN-style, for a GPU).
        latent_dim: size of the generator's noise vector.
        generator_hidden: widths of the MLP generator's hidden layers.
        critic_hidden: widths of the MLP critic's hidden layers.
        conv_channels: channels of the convolutional generator's widest layer (``kind="conv"``).
        energy_hidden: widths of the energy model's hidden layers.
        n_quantiles: quantile levels of the energy model: (k + 0.5) / n_quantiles, or, if
            ``quantile_tail`` > 0, spaced uniformly in logit(tau) from ``quantile_tail`` to
            1 - ``quantile_tail`` (denser in the tails, where the resolution's outliers live).
        cell_noise: add the detector's Gaussian electronic noise (``Response.noise`` per cell) to
            the generated deposit before zero suppression, as the MC does: the generator learns the
            deposit, the known noise makes the isolated hits beyond the shower.
        photostatistics: with ``cell_noise``, the response layer also smears each cell by its
            photo-statistics, as the MC does (``Response.photoelectrons_per_gev``), in the Gaussian
            approximation of the Poisson term: a cell of deposit E reads
            E + sqrt(noise^2 + E / yield) g with one standard normal g per cell (the same draw as
            the noise: no extra random numbers), differentiable in training. The generator then
            learns the deposit before the response.
        generator_noise: per-unit stochasticity inside the MLP generator, beyond the latent z.
            ``"none"``; ``"hidden"``: standard normals added to the last hidden layer with a
            learned scale per unit, zero at the start (the noise inputs of StyleGAN,
            arXiv:1812.04948, in an MLP); ``"cells"``: a stochastic output layer, the logits
            mu + sigma g per cell with mu and log sigma both outputs of the network (the
            reparameterisation of arXiv:1312.6114), sigma starting near zero. The extra standard
            normals are drawn with z (:attr:`Generator.n_inputs`).
        generator_noise_max: with ``generator_noise="cells"``, the largest value of a cell's noise
            term sigma g (None: unbounded): a cell's share of the shower rises at most a factor
            e**max above its median. A halo cell has a wide log-normal (sigma of 2-6 in the
            fifth default), whose upper tail, unbounded, now and then lifts one far cell above
            the core's logit: the softmax then moves the shower's energy a cell or more away
            from the impact point, which the Monte Carlo never does
            (:func:`fastcalo.validation.observables.displacement`). Applied in training and
            generation alike (the gradient stops where the bound holds); a model trained
            without it may set it afterwards (``scripts/bound_model_noise.py``), validated on
            held-out Monte Carlo.
        critic_minibatch_std: group size of the critic's minibatch standard deviation
            (arXiv:1710.10196), 0 for none: within groups of this many showers of a batch, the
            standard deviation of every cell (network units), averaged over four regions around
            the central cell (the cell itself, the rest of the 3x3, the rest of the 7x7, the
            outside), four inputs more for every shower of the group: the critic sees the spread
            of the cells, not only each shower alone. Batches must be multiples of the group size.
        critic_minibatch_regions: the regions the minibatch standard deviation is averaged over.
            ``"rings"``: the four above; ``"sectors"``: six, the rest of the 7x7 and the outside
            each split in two, the cells farther from the central one along x (the eta
            direction) and those farther along y (phi), the diagonals shared half and half: a
            halo that fluctuates too much in one direction only is then one input, not diluted
            in the average of the ring.
        energy: how the total (deposited fraction r) is learned. ``"model"``: a dedicated energy
            model (:class:`EnergyModel`, conditional quantiles, pinball loss) trained before the
            GAN. ``"loss"``: an :class:`EnergyGenerator` trained with the generator, by the
            critic (which sees r) and an extra loss on the summed energy
            (:func:`fastcalo.train.summed_energy_mmd`).
        critic_features: give the critic, beside the cells, five shower features computed from
            them (energy-weighted centroid and width along x and y in cell units, the brightest
            cell's fraction of the total): the lateral shape, which an MLP on 576 log energies
            reads only indirectly, becomes one input each.
        critic_profiles: give the critic, beside the cells, the per-shower statistics a
            classifier tells the showers apart by (:meth:`Critic.profiles`): the lateral
            profiles along x and y (each row's and column's fraction of the total), and for
            every ring of cells around the central one (Chebyshev distance 0-12) its fraction
            of the total and the fraction of its cells above threshold. In network units a
            halo cell just above threshold differs little from an empty one, and a ring's
            energy is a sum of linear energies the MLP sees as logarithms; both become inputs.
        critic_conv: channels of a small convolutional branch of the MLP critic, 0 for none:
            two 3x3 convolutions of stride 2 over the image in network units, whose
            ``critic_conv`` x 6 x 6 local features (each seeing 7 x 7 cells) enter the critic
            beside the cells. A filter sees a cell with its neighbours, the same everywhere on
            the image: an isolated hit, the texture of the halo and the correlation of
            neighbouring cells are one feature each, where the MLP's first layer would have to
            learn them at every position apart. With 8 channels a critic step (batch 256, gradient
            penalty included) cost 1.9 times the plain critic's on one CPU thread.
        negative_slope: of the LeakyReLU activations.
    """

    kind: str = "mlp"
    latent_dim: int = 32
    generator_hidden: tuple[int, ...] = (128, 256, 512)
    critic_hidden: tuple[int, ...] = (512, 256, 128)
    conv_channels: int = 64
    energy_hidden: tuple[int, ...] = (64, 64)
    n_quantiles: int = 100
    quantile_tail: float = 0.0
    cell_noise: bool = False
    photostatistics: bool = False
    generator_noise: str = "none"
    generator_noise_max: float | None = None
    critic_minibatch_std: int = 0
    critic_minibatch_regions: str = "rings"
    energy: str = "model"
    critic_features: bool = False
    critic_profiles: bool = False
    critic_conv: int = 0
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "conv"):
            msg = f"ModelConfig.kind must be 'mlp' or 'conv', got {self.kind!r}"
            raise ValueError(msg)
        if self.generator_noise not in ("none", "hidden", "cells"):
            msg = f"ModelConfig.generator_noise must be 'none', 'hidden' or 'cells', got {self.generator_noise!r}"
            raise ValueError(msg)
        if self.generator_noise != "none" and self.kind != "mlp":
            msg = f"ModelConfig.generator_noise={self.generator_noise!r} needs the MLP generator (kind='mlp'), got kind={self.kind!r}"
            raise ValueError(msg)
        if self.generator_noise_max is not None:
            bound = self.generator_noise_max
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not (math.isfinite(bound) and bound > 0):
                msg = f"ModelConfig.generator_noise_max must be a number > 0 (or None: unbounded), got {bound!r}"
                raise ValueError(msg)
            if self.generator_noise != "cells":
                msg = f"ModelConfig.generator_noise_max bounds the stochastic output layer: it needs generator_noise='cells', got {self.generator_noise!r}"
                raise ValueError(msg)
            object.__setattr__(self, "generator_noise_max", float(bound))
        if self.photostatistics and not self.cell_noise:
            msg = "ModelConfig.photostatistics needs cell_noise = true (the smearing uses the cell-noise draws)"
            raise ValueError(msg)
        if not isinstance(self.critic_minibatch_std, int) or isinstance(self.critic_minibatch_std, bool) or not (self.critic_minibatch_std == 0 or self.critic_minibatch_std >= 2):
            msg = f"ModelConfig.critic_minibatch_std must be 0 (off) or a group size >= 2, got {self.critic_minibatch_std!r}"
            raise ValueError(msg)
        if self.critic_minibatch_regions not in ("rings", "sectors"):
            msg = f"ModelConfig.critic_minibatch_regions must be 'rings' or 'sectors', got {self.critic_minibatch_regions!r}"
            raise ValueError(msg)
        if self.energy not in ("model", "loss"):
            msg = f"ModelConfig.energy must be 'model' or 'loss', got {self.energy!r}"
            raise ValueError(msg)
        if not isinstance(self.critic_conv, int) or isinstance(self.critic_conv, bool) or self.critic_conv < 0:
            msg = f"ModelConfig.critic_conv must be 0 (off) or a number of channels >= 1, got {self.critic_conv!r}"
            raise ValueError(msg)
        if self.critic_conv and self.kind != "mlp":
            msg = f"ModelConfig.critic_conv needs the MLP critic (kind='mlp'; the conv critic is convolutional already), got kind={self.kind!r}"
            raise ValueError(msg)
        for name, low in (("latent_dim", 1), ("conv_channels", 2), ("n_quantiles", 3)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                msg = f"ModelConfig.{name} must be an integer >= {low}, got {value!r}"
                raise ValueError(msg)
        for name in ("generator_hidden", "critic_hidden", "energy_hidden"):
            value = tuple(getattr(self, name))
            if not all(isinstance(v, int) and v > 0 for v in value):
                msg = f"ModelConfig.{name} must be positive integers, got {value!r}"
                raise ValueError(msg)
            object.__setattr__(self, name, value)
        if not 0.0 <= self.quantile_tail < 0.5 / self.n_quantiles:
            msg = f"ModelConfig.quantile_tail must be in [0, 0.5 / n_quantiles), got {self.quantile_tail!r}"
            raise ValueError(msg)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a dict (a TOML table or model.json), rejecting unknown keys."""
        return config_from_dict(cls, values, "model")


def config_from_dict(cls: type[_Config], values: Mapping[str, Any], where: str) -> _Config:
    """Build the config dataclass ``cls`` from a dict (a TOML table, or a table of model.json),
    lists turned into tuples.

    Arguments:
        cls: a dataclass (``ModelConfig``, ``Preprocessing``, the run config's tables).
        values: its fields by name; those left out take their defaults.
        where: the table's name, for the error message.

    Returns:
        ``cls(**values)``.

    Raises:
        ValueError naming the unknown keys and the valid ones (and whatever ``cls`` raises for a
        bad value).

    Example:
        >>> config_from_dict(ModelConfig, {"latent_dim": 8, "generator_hidden": [16]}, "model").generator_hidden
        (16,)
        >>> config_from_dict(ModelConfig, {"latentdim": 8}, "model")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown key(s) ['latentdim'] in [model]; valid keys are [...]
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        msg = f"unknown key(s) {unknown} in [{where}]; valid keys are {sorted(names)}"
        raise ValueError(msg)
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The invertible transforms between physics units and network units (stored with the model).

    Arguments:
        e0: cell-energy scale of the log transform in GeV (the zero-suppression threshold).
        e_max: cell energy mapped to 1 (GeV), the top of the incident-energy range.
        threshold: zero-suppression threshold applied to generated cells, GeV.
        r_mean, r_std: mean and standard deviation of E_dep / E_inc in the training data.
        soft_width: width (GeV) of the differentiable threshold used while training.
    """

    e0: float = 0.005
    e_max: float = 100.0
    threshold: float = 0.005
    r_mean: float = 0.95
    r_std: float = 0.05
    soft_width: float = 0.001

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            lowest = "finite" if field.name == "r_mean" else ">= 0" if field.name == "threshold" else "> 0"
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (lowest == "finite" or (value >= 0 if lowest == ">= 0" else value > 0))
            if not ok:
                msg = f"preprocessing.{field.name} must be a finite number{'' if lowest == 'finite' else ' ' + lowest}, got {value!r}"
                raise ValueError(msg)

    @classmethod
    def for_detector(cls, detector: Detector, **values: float) -> Preprocessing:
        """Scales from the detector: its threshold and the top of its energy range."""
        thr = detector.response.threshold
        return cls(e0=thr, e_max=detector.conditions.energy[1], threshold=thr, **values)

    def to_network(self, cells: torch.Tensor) -> torch.Tensor:
        """Cell energies (GeV) -> critic inputs in [0, ~1]."""
        return torch.log1p(cells.clamp_min(0.0) / self.e0) / math.log1p(self.e_max / self.e0)

    def from_network(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_network`."""
        return self.e0 * torch.expm1(x * math.log1p(self.e_max / self.e0))

    def encode_r(self, r: torch.Tensor) -> torch.Tensor:
        return (r - self.r_mean) / self.r_std

    def decode_r(self, code: torch.Tensor) -> torch.Tensor:
        return code * self.r_std + self.r_mean

    def zero_suppress(self, cells: torch.Tensor, *, threshold: str = "hard") -> torch.Tensor:
        """Cells below the threshold set to 0.

        ``threshold`` (:data:`THRESHOLDS`): ``"hard"``, the step of generation; ``"soft"``, a
        sigmoid step of ``soft_width``, differentiable (a cell reading 5.5 MeV at a 5 MeV threshold
        comes out 3.4 MeV, a value that a hard threshold never gives); ``"straight-through"``, the
        hard step forward with the soft step's gradient backward (the straight-through estimator,
        arXiv:1308.3432): the values are those of generation, the gradient still reaches cells
        just below the threshold.

        Example:
            >>> pre = Preprocessing()   # 5 MeV threshold, 1 MeV soft width
            >>> cells = torch.tensor([0.004, 0.0055, 0.02], requires_grad=True)
            >>> [[round(v, 4) for v in pre.zero_suppress(cells, threshold=t).tolist()] for t in ("hard", "soft")]
            [[0.0, 0.0055, 0.02], [0.0011, 0.0034, 0.02]]
            >>> out = pre.zero_suppress(cells, threshold="straight-through")
            >>> out.sum().backward()
            >>> [round(v, 4) for v in out.tolist()], [round(g, 2) for g in cells.grad.tolist()]
            ([0.0, 0.0055, 0.02], [1.06, 1.91, 1.0])
        """
        if threshold not in THRESHOLDS:
            msg = f"threshold must be one of {THRESHOLDS}, got {threshold!r}"
            raise ValueError(msg)
        hard = torch.where(cells >= self.threshold, cells, torch.zeros((), dtype=cells.dtype, device=cells.device))
        if threshold == "hard":
            return hard
        soft = cells * torch.sigmoid((cells - self.threshold) / self.soft_width)
        if threshold == "soft":
            return soft
        return hard.detach() + (soft - soft.detach())

    def zero_suppress_(self, cells: torch.Tensor) -> torch.Tensor:
        """:meth:`zero_suppress` (hard) in place. For float32 in one pass: ``threshold_`` keeps x > t,
        so t is the float32 just below the threshold (exactly ``x >= threshold``); other dtypes
        compare as :meth:`zero_suppress` does. NaN cells are zeroed, as there."""
        if cells.dtype == torch.float32:
            below = float(np.nextafter(np.float32(self.threshold), np.float32(-np.inf)))
            torch.threshold_(cells, below, 0.0)
            if cells.isnan().any():  # threshold_ lets NaN through (x <= t is false for NaN)
                cells.nan_to_num_(0.0, 0.0, 0.0)
            return cells
        return cells.masked_fill_(~(cells >= self.threshold), 0.0)


class Conditions:
    """Encode particle conditions into the network's condition vector (width :attr:`width`).

    Columns: log E scaled to [-1, 1] over the energy range, eta / max|eta|, one-hot particle type,
    impact point offset from the central cell's centre scaled to [-1, 1].

    Example:
        >>> enc = Conditions()
        >>> enc.encode(energy=[1.0, 100.0], eta=[0.0, 1.5], pdgid=[22, -11],
        ...            impact_x=[0.0, 10.0], impact_y=[5.0, 5.0]).tolist()
        [[-1.0, 0.0, 1.0, 0.0, 0.0, -1.0, 0.0], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]]
    """

    def __init__(self, detector: Detector = DEFAULT_DETECTOR) -> None:
        self.ranges: ConditionRanges = detector.conditions
        self.pdgids = [PARTICLES[p] for p in self.ranges.particles]
        cell_low, cell_high = detector.central_cell
        self._centre = 0.5 * (cell_low + cell_high)
        self._half = 0.5 * (cell_high - cell_low)
        self._log_low, self._log_high = (math.log(e) for e in self.ranges.energy)
        self._eta_max = max(abs(e) for e in self.ranges.eta)
        self.width = 2 + len(self.pdgids) + 2

    def encode(
        self,
        *,
        energy: npt.ArrayLike,
        eta: npt.ArrayLike,
        pdgid: npt.ArrayLike,
        impact_x: npt.ArrayLike,
        impact_y: npt.ArrayLike,
    ) -> torch.Tensor:
        """(N, width) float32 tensor; inputs are array-likes of shape (N,) (GeV, mm)."""
        e = torch.as_tensor(np.asarray(energy, dtype=np.float64))
        log_e = (2.0 * (torch.log(e) - self._log_low) / (self._log_high - self._log_low)) - 1.0
        pid = np.asarray(pdgid).astype(np.int64)
        onehot = torch.zeros((pid.size, len(self.pdgids)), dtype=torch.float64)
        for k, code in enumerate(self.pdgids):
            onehot[:, k] = torch.as_tensor(pid == code, dtype=torch.float64)
        unknown = onehot.sum(1) == 0
        if bool(unknown.any()):
            bad = sorted({int(v) for v in pid[unknown.numpy()]})
            msg = f"pdgid(s) {bad} not among the model's particles {list(self.ranges.particles)} ({self.pdgids})"
            raise ValueError(msg)
        columns = [
            log_e[:, None],
            torch.as_tensor(np.asarray(eta, dtype=np.float64))[:, None] / self._eta_max,
            onehot,
            (torch.as_tensor(np.asarray(impact_x, dtype=np.float64))[:, None] - self._centre) / self._half,
            (torch.as_tensor(np.asarray(impact_y, dtype=np.float64))[:, None] - self._centre) / self._half,
        ]
        return torch.cat(columns, dim=1).to(torch.float32)


def _last_linear(net: nn.Sequential) -> nn.Linear:
    """The output layer of an :func:`_mlp`."""
    last = net[-1]
    if not isinstance(last, nn.Linear):
        msg = f"expected a network ending in a Linear layer, found {type(last).__name__}"
        raise TypeError(msg)
    return last


def _mlp(sizes: list[int], slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class EnergyModel(nn.Module):
    """Conditional quantile function of the standardised deposited fraction r.

    The network outputs a location, a log scale and ``n_quantiles - 1`` shape parameters; the
    quantiles at levels tau_k = (k + 0.5) / n are loc + scale * s_k with s_k a monotone sequence
    (cumulative softplus steps) standardised to zero mean and unit spread over k, so that a change of
    width with the conditions is one output, not a hundred. Sampling interpolates the quantiles
    linearly in tau and continues beyond the outer levels with exponential tails matched to the
    outer slopes.
    """

    levels: torch.Tensor  # (n_quantiles,) the quantile levels, a buffer

    def __init__(self, config: ModelConfig, n_conditions: int) -> None:
        super().__init__()
        self.n = config.n_quantiles
        self.net = _mlp([n_conditions, *config.energy_hidden, self.n + 1], config.negative_slope)
        if config.quantile_tail > 0:  # logit-spaced: dense in the tails, down to quantile_tail
            edge = math.log(config.quantile_tail / (1 - config.quantile_tail))
            levels = torch.sigmoid(torch.linspace(edge, -edge, self.n, dtype=torch.float64)).float()
        else:
            levels = (torch.arange(self.n, dtype=torch.float32) + 0.5) / self.n
        self.register_buffer("levels", levels)

    @torch.no_grad()
    def start_from(self, r_code: torch.Tensor) -> None:
        """Set the output layer so that the quantiles start as those of ``r_code`` (all conditions
        pooled); training then learns how they move with the conditions."""
        q = torch.quantile(r_code.float(), self.levels.to(r_code.device)).cpu()
        last = _last_linear(self.net)
        last.weight.mul_(0.1)
        last.bias[0] = q.mean()
        last.bias[1] = torch.log(q.std().clamp_min(1e-6))
        steps = (q[1:] - q[:-1]).clamp_min(1e-6) / q.std().clamp_min(1e-6) * (self.n - 1) / 4.0
        last.bias[2:] = steps + torch.log(-torch.expm1(-steps))  # inverse softplus

    def _affine(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The quantiles as ``offset + slope * shape``: the raw monotone shape (N, n_quantiles) and
        the per-row offset and slope (N, 1) that standardise it and apply location and scale."""
        out = self.net(c)
        steps = nn.functional.softplus(out[:, 2:]) * (4.0 / (self.n - 1))
        shape = torch.cat([torch.zeros_like(out[:, :1]), torch.cumsum(steps, dim=1)], dim=1)
        mean = shape.mean(1, keepdim=True)
        # the sample standard deviation (n - 1), as a mean of squares: torch.std is slow on CPU rows
        std = ((shape - mean).square().sum(1, keepdim=True) / (self.n - 1)).sqrt().clamp_min(1e-6)
        slope = torch.exp(out[:, 1:2]) / std
        return out[:, :1] - slope * mean, slope, shape

    def quantiles(self, c: torch.Tensor) -> torch.Tensor:
        """(N, n_quantiles) quantiles of the standardised r, increasing."""
        offset, slope, shape = self._affine(c)
        return offset + slope * shape

    def loss(self, c: torch.Tensor, r_code: torch.Tensor) -> torch.Tensor:
        """Pinball (quantile) loss of the standardised fractions ``r_code`` (N,)."""
        diff = r_code[:, None] - self.quantiles(c)
        tau = self.levels[None, :]
        return torch.mean(torch.maximum(tau * diff, (tau - 1.0) * diff))

    def sample(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Standardised r at uniform variates ``u`` (N,) in (0, 1)."""
        offset, slope, shape = self._affine(c)
        levels = self.levels
        k = (torch.searchsorted(levels, u.contiguous(), right=True) - 1).clamp(0, self.n - 2)
        t0, t1 = levels[k], levels[k + 1]
        frac = ((u - t0) / (t1 - t0)).clamp(0.0, 1.0)
        # only the quantiles used: the pair around u and the outer two at each end
        columns = torch.stack([k, k + 1, torch.zeros_like(k), torch.ones_like(k), torch.full_like(k, self.n - 2), torch.full_like(k, self.n - 1)], 1)
        q = offset + slope * torch.gather(shape, 1, columns)
        inner = q[:, 0] * (1 - frac) + q[:, 1] * frac
        q = q[:, 2:]  # quantiles 0, 1, n - 2, n - 1
        tau_low, tau_high = levels[0], 1.0 - levels[-1]
        slope_low = (q[:, 1] - q[:, 0]) / (levels[1] - levels[0])
        slope_high = (q[:, -1] - q[:, -2]) / (levels[-1] - levels[-2])
        uc = u.clamp(1e-7, 1 - 1e-7)
        low = q[:, 0] + slope_low * tau_low * torch.log(uc / tau_low)
        high = q[:, -1] - slope_high * tau_high * torch.log((1 - uc) / tau_high)
        return torch.where(u < levels[0], low, torch.where(u > levels[-1], high, inner))


class EnergyGenerator(nn.Module):
    """The alternative to :class:`EnergyModel` (``ModelConfig.energy = "loss"``): the standardised
    fraction r as a learned function of the conditions and a standard-normal variate Phi^-1(u),
    trained with the generator, adversarially (the critic sees r) and by the summed-energy loss.
    Same interface as the energy model: :meth:`sample` maps uniform variates ``u`` to r.

    r = g + net(c, g) with g = Phi^-1(u), the network's last layer scaled down at the start: r
    starts as a standard normal, the pooled distribution of the standardised training r to two
    moments (as the energy model starts from the pooled quantiles), and learns how it moves with c."""

    def __init__(self, config: ModelConfig, n_conditions: int) -> None:
        super().__init__()
        self.net = _mlp([n_conditions + 1, *config.energy_hidden, 1], config.negative_slope)
        with torch.no_grad():
            _last_linear(self.net).weight.mul_(0.1)
            _last_linear(self.net).bias.zero_()

    def sample(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Standardised r at uniform variates ``u`` (N,) in (0, 1)."""
        g = math.sqrt(2.0) * torch.erfinv(2.0 * u.clamp(1e-7, 1 - 1e-7) - 1.0)
        shift: torch.Tensor = self.net(torch.cat([c, g[:, None]], dim=1))
        return g + shift[:, 0]


class Generator(nn.Module):
    """Standard normals (N, :attr:`n_inputs`), conditions (N, n_c) and standardised r (N,) -> cell
    logits (N, 576). The normals are the latent z (``latent_dim``) followed by the per-unit noise
    of ``config.generator_noise``."""

    def __init__(self, config: ModelConfig, n_conditions: int, n_cells: int) -> None:
        super().__init__()
        self.config = config
        self.side = n_cells
        n_in = config.latent_dim + n_conditions + 1
        #: the standard normals a shower needs: z, then the per-unit noise
        self.n_inputs = config.latent_dim
        if config.kind == "mlp":
            n_out = n_cells * n_cells * (2 if config.generator_noise == "cells" else 1)
            self.net = _mlp([n_in, *config.generator_hidden, n_out], config.negative_slope)
            if config.generator_noise == "hidden":
                self.n_inputs += config.generator_hidden[-1]
                # the learned scale of the noise of each unit of the last hidden layer, 0 at the start
                self.noise_scale = nn.Parameter(torch.zeros(config.generator_hidden[-1]))
            elif config.generator_noise == "cells":
                self.n_inputs += n_cells * n_cells
                with torch.no_grad():  # log sigma starts at -4 for every cell (sigma ~ 0.02)
                    last = _last_linear(self.net)
                    last.weight[n_cells * n_cells :].zero_()
                    last.bias[n_cells * n_cells :].fill_(-4.0)
        else:
            if n_cells % 4:
                msg = f"the conv generator needs a side divisible by 4, got {n_cells}"
                raise ValueError(msg)
            ch = config.conv_channels
            quarter = n_cells // 4
            slope = config.negative_slope
            self.net = nn.Sequential(
                nn.Linear(n_in, 2 * ch * quarter * quarter),
                nn.LeakyReLU(slope),
                nn.Unflatten(1, (2 * ch, quarter, quarter)),
                nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1),
                nn.BatchNorm2d(ch),
                nn.LeakyReLU(slope),
                nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1),
                nn.BatchNorm2d(ch // 2),
                nn.LeakyReLU(slope),
                nn.Conv2d(ch // 2, 1, 3, padding=1),
                nn.Flatten(),
            )

    @torch.no_grad()
    def start_from(self, mean_fractions: npt.NDArray[np.floating[Any]]) -> None:
        """Start from the average shape (MLP generator): the output bias is the log of the mean
        fraction of the shower in each cell, ``mean_fractions`` (n_cells * n_cells,).

        Raises:
            ValueError: for the convolutional generator, which has no per-cell output bias.
        """
        if self.config.kind != "mlp":
            msg = f"only the MLP generator starts from the average shape, not {self.config.kind!r}"
            raise ValueError(msg)
        n = self.side * self.side
        _last_linear(self.net).bias[:n].copy_(torch.as_tensor(np.log(mean_fractions + 1e-7), dtype=torch.float32))

    def forward(self, z: torch.Tensor, c: torch.Tensor, r_code: torch.Tensor) -> torch.Tensor:
        out = self.outputs(z, c, r_code)
        if self.config.generator_noise != "cells":
            return out
        n, latent = self.side * self.side, self.config.latent_dim
        noise = torch.exp(out[:, n:]) * z[:, latent:]
        if self.config.generator_noise_max is not None:
            noise = noise.clamp_max(self.config.generator_noise_max)
        return out[:, :n] + noise

    def outputs(self, z: torch.Tensor, c: torch.Tensor, r_code: torch.Tensor) -> torch.Tensor:
        """The network's outputs before the stochastic output layer: the logits (N, 576), or with
        ``generator_noise="cells"`` the logits' location mu and log scale side by side (N, 1152),
        which :meth:`forward` turns into mu + exp(log scale) g with the normals g of z's columns
        after the latent ones (here z needs only the latent columns)."""
        latent = self.config.latent_dim
        x = torch.cat([z[:, :latent], c, r_code[:, None]], dim=1)
        if self.config.generator_noise != "hidden":
            out: torch.Tensor = self.net(x)
            return out
        hidden = self.net[:-1](x) + self.noise_scale * z[:, latent:]
        last: torch.Tensor = self.net[-1](hidden)
        return last


class Critic(nn.Module):
    """Critic inputs (N, 576) in network units, conditions and standardised r -> scores (N,)."""

    #: number of shower features added to the critic's inputs with ``config.critic_features``
    N_FEATURES = 5
    coords: torch.Tensor  # (n_cells,) cell centres in cell units (a buffer, with critic_features)
    regions: torch.Tensor  # (n_regions, n_cells^2) averaging weights (a buffer, with critic_minibatch_std)
    rings: torch.Tensor  # (n_rings, n_cells^2) 0/1 membership of the rings (a buffer, with critic_profiles)

    def __init__(self, config: ModelConfig, n_conditions: int, n_cells: int, preprocessing: Preprocessing | None = None) -> None:
        super().__init__()
        self.side = n_cells
        #: False for the critic of a model saved without it (``save(..., critic=False)``): its
        #: weights are untrained, so it refuses to run and is never saved as if trained
        self.trained = True
        n_extra = n_conditions + 1
        self.preprocessing = preprocessing or Preprocessing()
        self.with_features = config.critic_features
        if self.with_features:
            n_extra += self.N_FEATURES
            # cell centres in cell units, centred (not saved: derived from the detector's size)
            self.register_buffer("coords", torch.arange(n_cells, dtype=torch.float32) - (n_cells - 1) / 2, persistent=False)
        # Chebyshev distance of every cell from the central one (the cell of the impact point)
        index = torch.arange(n_cells) - n_cells // 2
        distance = torch.maximum(index[:, None].abs(), index[None, :].abs()).reshape(-1)
        self.with_profiles = config.critic_profiles
        if self.with_profiles:
            n_rings = int(distance.max()) + 1
            n_extra += 2 * n_cells + 2 * n_rings
            rings = torch.nn.functional.one_hot(distance, n_rings).T.float()
            self.register_buffer("rings", rings, persistent=False)
        self.group = config.critic_minibatch_std
        if self.group:
            # regions of the Chebyshev distance: 0 | 1 | 2-3 | >= 4
            region = torch.bucketize(distance, torch.tensor([0, 1, 3]), right=False)
            weights = torch.nn.functional.one_hot(region, 4).T.float()
            if config.critic_minibatch_regions == "sectors":
                # 2-3 and >= 4 each split by direction: 1 where |dx| > |dy|, 1/2 on the diagonals
                dx, dy = index.abs()[:, None].expand(n_cells, n_cells).reshape(-1), index.abs()[None, :].expand(n_cells, n_cells).reshape(-1)
                along_x = (dx > dy).float() + 0.5 * (dx == dy).float()
                weights = torch.cat([weights[:2], weights[2:] * along_x, weights[2:] * (1 - along_x)])
            #: number of regions of the minibatch standard deviation (``config.critic_minibatch_regions``)
            self.n_regions = len(weights)
            n_extra += self.n_regions
            self.register_buffer("regions", weights / weights.sum(dim=1, keepdim=True), persistent=False)
        slope = config.negative_slope
        #: the local convolutional branch (``config.critic_conv``), or None
        self.local: nn.Module | None = None
        if config.critic_conv:
            ch = config.critic_conv
            self.local = nn.Sequential(
                nn.Unflatten(1, (1, n_cells, n_cells)),
                nn.Conv2d(1, ch, 3, stride=2, padding=1),
                nn.LeakyReLU(slope),
                nn.Conv2d(ch, ch, 3, stride=2, padding=1),
                nn.LeakyReLU(slope),
                nn.Flatten(),
            )
            n_extra += ch * ((n_cells + 3) // 4) ** 2
        if config.kind == "mlp":
            self.body: nn.Module = nn.Identity()
            n_features = n_cells * n_cells
            self.head = _mlp([n_features + n_extra, *config.critic_hidden, 1], slope)
        else:
            ch = config.conv_channels
            self.body = nn.Sequential(
                nn.Unflatten(1, (1, n_cells, n_cells)),
                nn.Conv2d(1, ch // 2, 4, stride=2, padding=1),
                nn.LeakyReLU(slope),
                nn.Conv2d(ch // 2, ch, 4, stride=2, padding=1),
                nn.LeakyReLU(slope),
                nn.Flatten(),
            )
            n_features = ch * (n_cells // 4) ** 2
            self.head = _mlp([n_features + n_extra, *config.critic_hidden, 1], slope)

    def shower_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 5) features of critic inputs ``x`` (network units), differentiable: centroid x, y and
        width x, y (energy-weighted, in cells; x is the first image axis) and the brightest cell's
        fraction of the total."""
        cells = self.preprocessing.from_network(x).clamp_min(0.0).reshape(-1, self.side, self.side)
        total = cells.sum(dim=(1, 2)).clamp_min(1e-6)
        px, py = cells.sum(dim=2) / total[:, None], cells.sum(dim=1) / total[:, None]
        cx, cy = px @ self.coords, py @ self.coords
        wx = (px @ self.coords.square() - cx.square()).clamp_min(1e-4).sqrt()
        wy = (py @ self.coords.square() - cy.square()).clamp_min(1e-4).sqrt()
        brightest = cells.reshape(len(cells), -1).amax(dim=1) / total
        return torch.stack([cx, cy, wx, wy, brightest], dim=1)

    def profiles(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2 n + 2 n_rings) per-shower statistics of critic inputs ``x`` (network units),
        differentiable, each about in [0, 1]: sqrt(f + 1e-4) of the lateral profiles along x then
        y (f: each of the n rows' and columns' fraction of the total; the root lifts the tails),
        then for every ring of cells at Chebyshev distance 0, 1, ... from the central cell
        (:attr:`rings`) its fraction of the total, as (log10(f + 1e-4) + 4) / 4, and the
        fraction of its cells above threshold.

        A cell counts as above threshold through a sigmoid centred on half the threshold, a
        tenth of the threshold wide: the MC's cells (zero or at least the threshold) count 0 or
        1 to within 0.7 %, and a generated cell softly suppressed in training
        (:meth:`Preprocessing.zero_suppress` with ``soft``) crosses 0.5 where its deposit crosses
        the threshold."""
        cells = self.preprocessing.from_network(x).clamp_min(0.0)
        total = cells.sum(dim=1, keepdim=True).clamp_min(1e-6)
        square = cells.reshape(-1, self.side, self.side)
        px = square.sum(dim=2) / total
        py = square.sum(dim=1) / total
        ring_fraction = (cells @ self.rings.T) / total
        threshold = self.preprocessing.threshold
        hits = torch.sigmoid((cells - threshold / 2) / (threshold / 10))
        hit_fraction = (hits @ self.rings.T) / self.rings.sum(dim=1)
        # the floors (1e-4 of the total, about a threshold-sized cell at 50 GeV) bound the
        # gradients near empty rows and rings, which the gradient penalty sees
        logs = (torch.log10(ring_fraction + 1e-4) + 4.0) / 4.0
        return torch.cat([(px + 1e-4).sqrt(), (py + 1e-4).sqrt(), logs, hit_fraction], dim=1)

    def minibatch_std(self, x: torch.Tensor) -> torch.Tensor:
        """(N, :attr:`n_regions`): within consecutive groups of ``config.critic_minibatch_std``
        rows of ``x`` (network units), the standard deviation of every cell averaged over each
        region (``config.critic_minibatch_regions``), the same for every row of a group
        (arXiv:1710.10196, section 3)."""
        n = x.shape[0]
        if n % self.group:
            msg = f"the critic's minibatch standard deviation needs batches of a multiple of {self.group} showers, got {n}"
            raise ValueError(msg)
        grouped = x.reshape(n // self.group, self.group, -1)
        std = (grouped.var(dim=1, unbiased=False) + 1e-8).sqrt()
        return (std @ self.regions.T).repeat_interleave(self.group, dim=0)

    def forward(self, x: torch.Tensor, c: torch.Tensor, r_code: torch.Tensor) -> torch.Tensor:
        if not self.trained:
            msg = "this model was saved without its critic (save(..., critic=False)): it generates showers, but its critic has no trained weights to run"
            raise RuntimeError(msg)
        extra = [c, r_code[:, None]] + ([self.shower_features(x)] if self.with_features else [])
        if self.with_profiles:
            extra.append(self.profiles(x))
        if self.group:
            extra.append(self.minibatch_std(x))
        if self.local is not None:
            extra.append(self.local(x))
        score: torch.Tensor = self.head(torch.cat([self.body(x), *extra], dim=1))
        return score[:, 0]


class ShowerModel(nn.Module):
    """Energy model, generator and critic with their condition encoding and preprocessing.

    Arguments:
        config: the architecture.
        preprocessing: the stored transforms (from the detector if not given).
        detector: the calorimeter the model simulates.
    """

    def __init__(
        self,
        config: ModelConfig = ModelConfig(),
        *,
        preprocessing: Preprocessing | None = None,
        detector: Detector = DEFAULT_DETECTOR,
    ) -> None:
        super().__init__()
        self.config = config
        self.detector = detector
        self.preprocessing = preprocessing or Preprocessing.for_detector(detector)
        #: model.json's contents for a loaded model (training config, version...); {} otherwise
        self.metadata: dict[str, Any] = {}
        self.conditions = Conditions(detector)
        n_c = self.conditions.width
        self.energy: EnergyModel | EnergyGenerator = EnergyModel(config, n_c) if config.energy == "model" else EnergyGenerator(config, n_c)
        self.generator = Generator(config, n_c, detector.n_cells)
        self.critic = Critic(config, n_c, detector.n_cells, self.preprocessing)

    @property
    def has_critic(self) -> bool:
        """False for a model loaded from a directory saved without its critic
        (``save(..., critic=False)``), or marked so by hand: its critic has no trained weights,
        refuses to run, and :func:`save` leaves it out."""
        return self.critic.trained

    @has_critic.setter
    def has_critic(self, value: bool) -> None:
        self.critic.trained = bool(value)

    def cells(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        r_code: torch.Tensor,
        e_inc: torch.Tensor,
        *,
        threshold: str,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generated cell energies (N, 576) in GeV: the softmax shape times E_dep = r E_inc (plus the
        electronic noise, standard normals ``noise`` (N, 576) times ``Response.noise``, if
        ``config.cell_noise``, with the photo-statistics in quadrature if ``config.photostatistics``), zero suppressed (``threshold``: ``"hard"`` when generating, ``"soft"`` or
        ``"straight-through"`` in training, :meth:`Preprocessing.zero_suppress`), then rescaled so that the cells sum
        to E_dep exactly (the energy model owns the total; without cell noise the scale factor is
        >= 1, so no kept cell drops below threshold; with it, cells pushed below are suppressed
        again, which loses at most a few threshold-sized cells; not with the soft threshold). When generating (hard, no
        gradient), a shower whose deposit or total is not finite (a broken model) comes out all
        NaN, never zero-suppressed into an empty image."""
        deposit, total = self._deposit(z, c, r_code, e_inc)
        total = total[:, None]
        if self.config.cell_noise and noise is None:
            msg = "this model adds cell noise (config.cell_noise): pass noise, standard normals of shape (N, n_cells)"
            raise ValueError(msg)
        noise = None if noise is None else noise.float()
        if threshold == "hard" and not torch.is_grad_enabled():  # generation: the same steps, in place (fewer passes over memory)
            if noise is not None and self.config.cell_noise:
                # rounded as the training path rounds it
                deposit.add_(self._spread(deposit).mul_(noise) if self.config.photostatistics else noise * self.detector.response.noise)
            # a NaN or inf (a broken model) must not become an empty shower by zero suppression:
            # such rows come out all NaN, which the engine refuses, naming the particle
            broken = ~torch.isfinite(deposit.sum(dim=1)) | ~torch.isfinite(total[:, 0])
            self.preprocessing.zero_suppress_(deposit)  # negatives too: the threshold is positive
            deposit.mul_(total / deposit.sum(dim=1, keepdim=True).clamp_min(1e-12))
            if self.config.cell_noise:
                self.preprocessing.zero_suppress_(deposit)
            if bool(broken.any()):
                deposit[broken] = float("nan")
            return deposit
        kept = self.respond(deposit, noise, threshold=threshold) if noise is not None and self.config.cell_noise else self.preprocessing.zero_suppress(deposit, threshold=threshold)
        scaled = kept * (total / kept.sum(dim=1, keepdim=True).clamp_min(1e-12))
        if self.config.cell_noise and threshold != "soft":  # noise can make the factor < 1: re-apply the threshold
            scaled = self.preprocessing.zero_suppress(scaled, threshold=threshold)
        return scaled

    def _deposit(self, z: torch.Tensor, c: torch.Tensor, r_code: torch.Tensor, e_inc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The deposit before the response (N, 576) and its total r E_inc (N,), GeV, float32."""
        # the network in its own precision (half precision in a Simulator that asks for it), the
        # energies from its logits on (total, noise, threshold, rescaling) in float32
        shape = torch.softmax(self.generator(z, c, r_code.to(c.dtype)).float(), dim=1)
        total = self.preprocessing.decode_r(r_code.float()).clamp_min(0.0) * e_inc.float()
        if torch.is_grad_enabled():
            return shape * total[:, None], total
        return shape.mul_(total[:, None]), total  # softmax's output is not needed for a gradient

    @torch.no_grad()
    def deposit(self, c: torch.Tensor, e_inc: torch.Tensor, z: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`generate` makes before the detector response: the deposits (N, 576) and the
        energy model's totals E_dep (N,), GeV, float32; the inputs as for :meth:`generate`."""
        precision = next(self.energy.parameters()).dtype  # float32 also in a half-precision Simulator
        r_code = self.energy.sample(c.to(precision), u.to(precision))
        return self._deposit(z, c, r_code, e_inc)

    @torch.no_grad()
    def outputs(self, c: torch.Tensor, e_inc: torch.Tensor, z: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the engine's CPU path hands over to its numba kernel
        (:func:`fastcalo._response.generate`): the generator's outputs before its stochastic layer
        (:meth:`Generator.outputs`, float32; with ``generator_noise="cells"`` the logits'
        location and scale, exp(log scale), side by side) and the energy model's totals E_dep
        (N,), GeV, float32; the inputs as for :meth:`generate` (z may stop after the latent
        columns)."""
        precision = next(self.energy.parameters()).dtype  # float32 also in a half-precision Simulator
        r_code = self.energy.sample(c.to(precision), u.to(precision))
        out = self.generator.outputs(z, c, r_code.to(c.dtype)).float()
        if self.config.generator_noise == "cells":
            out[:, out.shape[1] // 2 :].exp_()
        total = self.preprocessing.decode_r(r_code.float()).clamp_min(0.0) * e_inc.float()
        return out, total

    def respond(self, deposit: torch.Tensor, noise: torch.Tensor, *, threshold: str = "hard") -> torch.Tensor:
        """The detector response of the reference MC on deposits: cells (N, 576) in GeV read
        ``deposit + sigma * noise`` (negatives clipped to 0), then zero suppressed (``threshold``).

        ``sigma`` is the electronic noise (``Response.noise``) and, with
        ``config.photostatistics``, the photo-statistics of the deposit in quadrature: the
        Gaussian with the mean and variance of the MC's Poisson term (``Response``), so that it is
        differentiable in training; for the few-photo-electron cells at the threshold (5 MeV,
        about 10 photo-electrons) its shape differs from the Poisson's by its skewness only.

        Arguments:
            deposit: energies before the response, (N, 576) GeV.
            noise: standard normals, one per cell, (N, 576).
            threshold: ``"hard"`` (generation), or the differentiable ``"soft"`` or
                ``"straight-through"`` of training (:meth:`Preprocessing.zero_suppress`).

        Example:
            >>> model = ShowerModel(ModelConfig(cell_noise=True, photostatistics=True))
            >>> cells = model.respond(torch.tensor([[0.0, 0.004, 1.0]]), torch.tensor([[0.0, 1.0, 1.0]]))
            >>> [round(v, 4) for v in cells[0].tolist()]   # 4 MeV + 2.4 MeV; 1 GeV + 22 MeV
            [0.0, 0.0064, 1.0224]
        """
        spread = self._spread(deposit) if self.config.photostatistics else self.detector.response.noise
        return self.preprocessing.zero_suppress((deposit + spread * noise).clamp_min(0.0), threshold=threshold)

    def _spread(self, deposit: torch.Tensor) -> torch.Tensor:
        """The response's standard deviation per cell in GeV (a new tensor) with
        ``config.photostatistics``: the photo-statistics of the deposit (the Gaussian
        approximation of the Poisson term) and the electronic noise in quadrature."""
        response = self.detector.response
        return (deposit.clamp_min(0.0) / response.photoelectrons_per_gev + response.noise**2).sqrt()

    @torch.no_grad()
    def generate(
        self, c: torch.Tensor, e_inc: torch.Tensor, z: torch.Tensor, u: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Showers (N, 576) in GeV from encoded conditions, incident energies (GeV), latent noise,
        uniform variates ``u`` (N,) for the energy model and (if ``config.cell_noise``) standard
        normal cell noise (N, 576); deterministic given its inputs."""
        precision = next(self.energy.parameters()).dtype  # float32 also in a half-precision Simulator
        r_code = self.energy.sample(c.to(precision), u.to(precision))
        return self.cells(z, c, r_code, e_inc, threshold="hard", noise=noise)

    def sample(
        self,
        *,
        energy: npt.ArrayLike,
        eta: npt.ArrayLike,
        pdgid: npt.ArrayLike,
        impact_x: npt.ArrayLike,
        impact_y: npt.ArrayLike,
        seed: int = 0,
    ) -> npt.NDArray[np.float32]:
        """Showers (N, 24, 24) float32 numpy, GeV, for the given particles, through the one
        sampling path (:class:`fastcalo.engine.Engine`, as ``fastcalo.Simulator(model, seed=seed)``
        draws them), on the model's device, in eval mode.

        Example:
            >>> model = ShowerModel(ModelConfig(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,)))
            >>> model.sample(energy=[5.0], eta=[0.0], pdgid=[22], impact_x=[5.0], impact_y=[5.0]).shape
            (1, 24, 24)
        """
        from .engine import Engine, Particles

        table = Particles.of(energy=energy, eta=eta, pdgid=pdgid, impact_x=impact_x, impact_y=impact_y)
        was_training = self.training
        self.eval()
        try:
            return Engine(self, seed=seed).simulate(table).images
        finally:
            self.train(was_training)


def physics_sha256(meta: Mapping[str, Any]) -> str:
    """The sha256 (hex) of the physics content of a model.json (:data:`PHYSICS_KEYS`), as canonical
    JSON: what :func:`save` binds to the weights and :func:`load` checks.

    Example:
        >>> a = {"conditions": {"energy": [1.0, 100.0]}, "training": {"step": 1}}
        >>> physics_sha256(a) == physics_sha256({**a, "training": {"step": 2}})
        True
    """
    content = {k: meta[k] for k in PHYSICS_KEYS if k in meta}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_model(model: ShowerModel) -> None:
    """Check what :func:`save` writes and :func:`load` reads: finite weights and a preprocessing
    that matches the detector (the zero-suppression threshold is the detector response's).

    Raises:
        ValueError: naming the first tensor with non-finite values, or the mismatch.
    """
    detector_threshold = model.detector.response.threshold
    if model.preprocessing.threshold != detector_threshold:
        msg = (
            f"preprocessing.threshold must equal the detector's response.threshold ({detector_threshold} GeV), "
            f"got {model.preprocessing.threshold} GeV"
        )
        raise ValueError(msg)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            msg = f"tensor {name!r} holds {bad} non-finite value(s) (NaN or inf) of {tensor.numel()}"
            raise ValueError(msg)


def save(
    model: ShowerModel,
    directory: str | os.PathLike[str],
    *,
    training: dict[str, Any] | None = None,
    overwrite: bool = False,
    critic: bool = True,
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (created atomically).

    The JSON holds the architecture, preprocessing, condition ranges, detector, the training
    config (``training``), the package version, the sha256 of the weights file and
    ``physics_sha256`` (:func:`physics_sha256` of the architecture, preprocessing, condition ranges
    and detector), which the weights file's header holds too: a model.json edited after saving
    no longer loads.

    With ``overwrite`` an existing ``directory`` is replaced only if it is empty or a model
    directory that fastcalo wrote (model.json of this format, model.safetensors, train.toml and
    nothing else); anything else is left as it is.

    With ``critic=False`` the critic's weights are left out: the model generates exactly as
    before, in a smaller file (the critic serves only training), and the loaded model's critic
    refuses to run. A model loaded without its critic is saved without it, whatever ``critic`` says.

        >>> import tempfile
        >>> model = ShowerModel(ModelConfig(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,)))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     light = load(save(model, Path(tmp) / "m", critic=False))
        >>> light.has_critic, light.metadata["critic"]
        (False, False)

    Raises:
        FileExistsError: ``directory`` exists and ``overwrite`` is False, or it is not a model
            directory of fastcalo (saying why).
        ValueError: a model :func:`load` would refuse (:func:`check_model`: non-finite weights, a
            threshold other than the detector's).
    """
    import shutil
    import tempfile

    from safetensors.torch import save_file

    from . import __version__

    target = Path(directory)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputExistsError(target)
        _check_replaceable(target)
    try:
        check_model(model)
    except ValueError as err:
        msg = f"cannot save the model to {target}: {err}"
        raise ValueError(msg) from None
    physics = {
        "config": dataclasses.asdict(model.config),
        "preprocessing": dataclasses.asdict(model.preprocessing),
        "conditions": dataclasses.asdict(model.detector.conditions),
        "detector": model.detector.to_dict(),
    }
    physics = json.loads(json.dumps(physics))  # as load will read it back (lists, not tuples)
    digest = physics_sha256(physics)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model directory is as shareable as any other
    try:
        weights = tmp / "model.safetensors"
        with_critic = critic and model.has_critic
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if with_critic or not k.startswith(_CRITIC)}
        save_file(state, str(weights), metadata={_PHYSICS_HEADER: digest})
        weights.chmod(0o666 & ~umask)
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "fastcalo_version": __version__,
            **physics,
            "physics_sha256": digest,
            "critic": with_critic,
            "training": training or {},
            "weights_sha256": file_sha256(weights),
        }
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


#: The prefix of the critic's tensors in a model's state dict (left out by ``save(..., critic=False)``).
_CRITIC = "critic."


#: What a model directory of fastcalo holds: the weights, their JSON record and, for an exported
#: training, its run config (``fastcalo train --export``).
_MODEL_FILES = ("model.json", "model.safetensors", "train.toml")


def _check_replaceable(target: Path) -> None:
    """Refuse to replace ``target`` unless it is an empty directory or a model directory of
    fastcalo: model.json of this format, model.safetensors and train.toml, nothing else."""
    if target.is_symlink() or not target.is_dir():
        problem = "it is a symbolic link" if target.is_symlink() else "it is not a directory"
    else:
        names = sorted(p.name for p in target.iterdir())
        others = [n for n in names if n not in _MODEL_FILES]
        problem = f"it holds {others[:5]}" if others else ""
        if names and not problem:
            try:
                found = json.loads((target / "model.json").read_text()).get("format")
            except (OSError, ValueError, AttributeError):
                found = None
            problem = "" if found == _FORMAT else f'it has no model.json of "format": "{_FORMAT}"'
    if problem:
        msg = f"{target} already exists and is not a model directory of fastcalo ({problem}); refusing to replace it: choose another directory"
        raise FileExistsError(msg)


def load(directory: str | os.PathLike[str], *, detector: Detector | None = None) -> ShowerModel:
    """Rebuild a model saved by :func:`save`, checking the weights' sha256, format and detector.

    ``detector``, if given, must equal the one the model was trained for.

    Checks, beyond the format and the weights' sha256: every weight is finite; every
    preprocessing value is a finite number (scales > 0, threshold >= 0) and the threshold is the
    detector response's; the condition ranges (``conditions``) equal the detector's; and the
    physics content of model.json (:data:`PHYSICS_KEYS`) is what the weights were saved with (its
    :func:`physics_sha256` equals the digest in the weights file's header, or, for the shipped
    model saved before that header existed, the digest this package knows for those weights).
    Other models saved before fastcalo wrote that header have no digest to check against: they
    get every other check (save them again to bind their model.json to their weights). A model
    saved without its critic (model.json's ``"critic": false``) loads with ``has_critic`` False.

    Raises :class:`ModelFileError` with what was expected and what was found.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(directory)
    meta_path, weights = path / "model.json", path / "model.safetensors"
    for f in (meta_path, weights):
        if not f.is_file():
            found = sorted(p.name for p in path.iterdir()) if path.is_dir() else "no such directory"
            msg = f"{path}: a model directory needs model.json and model.safetensors; found {found}"
            raise ModelFileError(msg)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        msg = f"{meta_path}: not valid JSON ({err})"
        raise ModelFileError(msg) from err
    if not isinstance(meta, dict):
        msg = f"{meta_path}: expected a JSON object (format {_FORMAT!r}), found a JSON {type(meta).__name__}"
        raise ModelFileError(msg)
    if meta.get("format") != _FORMAT or meta.get("format_version") != _FORMAT_VERSION:
        msg = f"{meta_path}: expected format {_FORMAT!r} version {_FORMAT_VERSION}, found {meta.get('format')!r} version {meta.get('format_version')!r}"
        raise ModelFileError(msg)
    missing = [k for k in ("config", "preprocessing", "detector", "weights_sha256") if k not in meta]
    if missing:
        msg = f"{meta_path}: missing key(s) {missing}"
        raise ModelFileError(msg)
    digest = file_sha256(weights)
    if digest != meta["weights_sha256"]:
        msg = f"{weights}: sha256 {digest} does not match model.json ({meta['weights_sha256']}): corrupted or replaced weights"
        raise ModelFileError(msg)
    try:
        stored_detector = Detector.from_dict(meta["detector"])
        config = ModelConfig.from_dict(meta["config"])
        preprocessing = config_from_dict(Preprocessing, meta["preprocessing"], "preprocessing")
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        msg = f"{meta_path}: cannot rebuild the model ({err})"
        raise ModelFileError(msg) from err
    if "conditions" in meta and meta["conditions"] != json.loads(json.dumps(dataclasses.asdict(stored_detector.conditions))):
        msg = (
            f"{meta_path}: conditions {meta['conditions']} differ from the detector's condition ranges "
            f"{dataclasses.asdict(stored_detector.conditions)} (the ranges the model was trained on)"
        )
        raise ModelFileError(msg)
    if detector is not None and detector != stored_detector:
        msg = f"{path}: the model was trained for a different detector ({stored_detector}) than the one given ({detector})"
        raise ModelFileError(msg)
    model = ShowerModel(config, preprocessing=preprocessing, detector=stored_detector)
    try:
        state = load_file(str(weights))
        with safe_open(str(weights), "pt") as handle:
            header = handle.metadata() or {}
    except SafetensorError as err:
        msg = f"{weights}: not a readable safetensors file ({err})"
        raise ModelFileError(msg) from err
    with_critic = meta.get("critic", True)
    if not isinstance(with_critic, bool):
        msg = f'{meta_path}: "critic" must be true or false (whether the weights hold the critic), found {with_critic!r}'
        raise ModelFileError(msg)
    expected = {k: v for k, v in model.state_dict().items() if with_critic or not k.startswith(_CRITIC)}
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        diff = sorted(set(state) ^ set(expected)) or [k for k in expected if state[k].shape != expected[k].shape]
        msg = f"{weights}: tensors do not match the architecture in model.json (differences: {diff[:5]})"
        raise ModelFileError(msg)
    model.load_state_dict(state, strict=with_critic)
    if not with_critic:
        model.has_critic = False
    try:
        check_model(model)
    except ValueError as err:
        msg = f"{path}: {err}"
        raise ModelFileError(msg) from None
    found = physics_sha256(meta)
    records = {
        "the weights file": header.get(_PHYSICS_HEADER) or _SHIPPED_PHYSICS.get(digest),
        "model.json's physics_sha256": meta.get("physics_sha256"),
    }
    for where, bound in records.items():
        if bound is not None and bound != found:
            msg = (
                f"{meta_path}: its {', '.join(PHYSICS_KEYS)} are not those the weights were saved with "
                f"(their sha256 is {found}, {where} records {bound}): model.json was edited after saving; "
                "a model's ranges, preprocessing and detector are those it was trained with"
            )
            raise ModelFileError(msg)
    model.eval()
    model.metadata = meta
    return model
