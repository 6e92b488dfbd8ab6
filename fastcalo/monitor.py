"""The training monitor: held-out MC showers, generated again at every evaluation from the same
noise, and compared with the validation package's physics metrics.

The monitor never feeds back into training; its score only chooses which evaluation is kept as
``best/``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from .datasets import ShowerData
from .model import ShowerModel

__all__ = ("Monitor", "evaluate", "generate_showers")


def generate_showers(
    model: ShowerModel,
    c: torch.Tensor,
    e: torch.Tensor,
    z: torch.Tensor,
    u: torch.Tensor,
    noise: torch.Tensor | None,
    *,
    batch: int = 8192,
) -> np.ndarray:
    """Showers of ``model`` from given noise, in batches of ``batch``.

    Arguments:
        model: the model (in the mode the caller chose: ``model.eval()`` for an evaluation).
        c: encoded conditions, (N, width); e: incident energies, (N,) GeV.
        z: latent noise, (N, latent_dim); u: the energy model's uniform variates, (N,).
        noise: the cell noise, (N, cells), or None without ``cell_noise``.

    Returns:
        (N, cells) float32, GeV.
    """
    out = [
        model.generate(c[s : s + batch], e[s : s + batch], z[s : s + batch], u[s : s + batch], None if noise is None else noise[s : s + batch])
        for s in range(0, len(c), batch)
    ]
    return torch.cat(out).cpu().numpy()


class Monitor:
    """The held-out showers a run is evaluated on, and the fixed noise their generated twins come
    from (so that a change of the score is the model's, not sampling noise).

    Arguments:
        data: the held-out MC showers.
        model: the model being trained (for the condition encoding and the noise shapes).
        seed: seeds the fixed noise.
        device: where the noise and the conditions live.
    """

    def __init__(self, data: ShowerData, model: ShowerModel, *, seed: int, device: torch.device) -> None:
        self.data = data
        encoded = model.conditions.encode(energy=data.energy, eta=data.eta, pdgid=data.pdgid, impact_x=data.impact_x, impact_y=data.impact_y)
        self.c = encoded.to(device)
        self.e = torch.as_tensor(data.energy, dtype=torch.float32).to(device)
        fixed = torch.Generator(device=device).manual_seed(seed)
        n = len(data)
        self.z = torch.randn((n, model.config.latent_dim), generator=fixed, device=device)
        self.u = torch.rand((n,), generator=fixed, device=device)
        self.noise = torch.randn((n, model.detector.n_total_cells), generator=fixed, device=device) if model.config.cell_noise else None

    def showers(self, model: ShowerModel) -> ShowerData:
        """The generated twins of the held-out showers: same conditions, the fixed noise."""
        images = generate_showers(model, self.c, self.e, self.z, self.u, self.noise)
        side = model.detector.n_cells
        return dataclasses.replace(self.data, images=images.reshape(-1, side, side))

    def evaluate(self, generated: ShowerData) -> dict[str, Any]:
        """:func:`evaluate` of ``generated`` against the held-out showers."""
        return evaluate(self.data, generated)


def evaluate(reference: ShowerData, generated: ShowerData) -> dict[str, Any]:
    """The monitor's physics metrics of ``generated`` against held-out ``reference`` showers with
    the same conditions.

    Per energy point (:func:`fastcalo.validation.observables.energy_groups`, the showers that
    :func:`~fastcalo.validation.observables.in_group` selects): the response and resolution
    ratios (generated / reference), the separation power of every high-level feature as the
    validation report computes it (:func:`fastcalo.validation.report.per_energy`: common axes,
    flow bins counted, NaN where a sample has no finite value of the feature), and precision /
    recall / density / coverage of the feature vectors
    (:func:`fastcalo.validation.metrics.diversity`, so that mode collapse shows).
    ``classifier_auc`` is the report's low-level classifier test
    (:func:`fastcalo.validation.classifier_auc`, one seed) on all the monitor's showers: the
    target metric, watched during training (on the monitor's few thousand showers the classifier
    has less to learn from than in a validation report, so its AUC comes out lower).

    Arguments:
        reference: the held-out MC showers.
        generated: showers generated for the same conditions, in the same order.

    Returns:
        ``score``: the mean separation power over features and points (lower is better; it picks
        the kept checkpoint), where a separation power that cannot be computed (NaN, e.g. every
        generated shower at a point empty) counts as 1, the largest there is, so that such a model
        scores worst and the score stays finite; ``separation_power``: the mean of each feature
        over the points (the same penalty); ``max_response_deviation``,
        ``max_resolution_deviation``: the largest |ratio - 1| over the points (NaN if a ratio
        cannot be computed); ``precision``, ``recall``, ``density``, ``coverage``: averaged over
        the points; ``classifier_auc``; ``points``: the per-point values (separation powers as
        computed, NaN included).
    """
    from .validation.classifier import classifier_auc
    from .validation.metrics import diversity
    from .validation.observables import energy_groups, features, in_group, response_table
    from .validation.report import per_energy

    groups = energy_groups(reference.energy)
    fr, fg = features(reference), features(generated)
    ref_resp = {(r.energy_low, r.energy_high): r for r in response_table(reference, groups)}
    gen_resp = {(r.energy_low, r.energy_high): r for r in response_table(generated, groups)}
    points: list[dict[str, Any]] = []
    for point in per_energy(fr, fg, reference.energy, generated.energy, groups):
        low, high = point.energy_low, point.energy_high
        a, b = ref_resp[low, high], gen_resp[low, high]
        keep_r, keep_g = in_group(reference.energy, low, high), in_group(generated.energy, low, high)
        points.append(
            {
                "energy": [low, high],
                "response_ratio": b.mean / a.mean,
                "resolution_ratio": b.resolution / a.resolution,
                "separation_power": point.separation_power,
                **diversity(
                    np.column_stack([v[keep_r] for v in fr.values()]), np.column_stack([v[keep_g] for v in fg.values()]), max_samples=2000
                ),
            }
        )
    names = list(points[0]["separation_power"])
    mean_sp = {n: float(np.mean([_penalised(p["separation_power"][n]) for p in points])) for n in names}
    return {
        "score": float(np.mean(list(mean_sp.values()))),
        "separation_power": mean_sp,
        "max_response_deviation": _largest([abs(p["response_ratio"] - 1) for p in points]),
        "max_resolution_deviation": _largest([abs(p["resolution_ratio"] - 1) for p in points]),
        **{k: float(np.mean([p[k] for p in points])) for k in ("precision", "recall", "density", "coverage")},
        "classifier_auc": classifier_auc(reference, generated, inputs="low", seeds=(0,)).auc,
        "points": points,
    }


def _penalised(separation: float) -> float:
    """A separation power for the score: NaN (not computable) counts as 1, the largest."""
    return 1.0 if math.isnan(separation) else separation


def _largest(values: list[float]) -> float:
    """The largest value; NaN if any is NaN (Python's max would depend on where it stands)."""
    return float("nan") if any(math.isnan(v) for v in values) else float(max(values))
