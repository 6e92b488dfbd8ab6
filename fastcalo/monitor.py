"""The training monitor: held-out MC showers, generated again at every evaluation through the one
sampling path with the same seed, and compared with the validation package's physics metrics.

The monitor never feeds back into training; its score only chooses which evaluation is kept as
``best/``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .datasets import ShowerData
from .engine import Engine, Particles
from .model import ShowerModel

__all__ = ("Monitor", "evaluate")


class Monitor:
    """The held-out showers a run is evaluated on. Their generated twins come from the one
    sampling path (:class:`fastcalo.engine.Engine`, as ``fastcalo.Simulator`` draws them) with
    a fixed seed, so every evaluation sees the same random numbers: a change of the score is the
    model's, not sampling noise.

    Arguments:
        data: the held-out MC showers.
        seed: the seed of the generated twins.
    """

    def __init__(self, data: ShowerData, *, seed: int) -> None:
        self.data = data
        self.seed = seed
        self.particles = Particles(data.energy, data.eta, data.phi, data.pdgid, data.impact_x, data.impact_y)

    def showers(self, model: ShowerModel) -> ShowerData:
        """The generated twins of the held-out showers: same particles, the fixed seed (``model``
        in the mode the caller chose: ``model.eval()`` for an evaluation)."""
        generated = Engine(model, seed=self.seed).simulate(self.particles)
        return dataclasses.replace(self.data, images=generated.images)

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
