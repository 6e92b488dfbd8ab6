"""The training monitor: the validation report's per-energy definition, and a score that stays
finite when a model makes empty showers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fastcalo import mc
from fastcalo.datasets import ShowerData
from fastcalo.monitor import evaluate
from fastcalo.validation import observables
from fastcalo.validation.report import per_energy


@pytest.fixture(scope="module")
def reference() -> ShowerData:
    cond = mc.sample_conditions(60, points=[2.0, 20.0], eta=(-0.5, 0.5), seed=1)
    return mc.simulate(cond["energy"], cond["eta"], 22, impact_x=cond["impact_x"], impact_y=cond["impact_y"], seed=1).showers


def test_the_monitor_reports_the_per_energy_separation_power_of_the_validation_report(reference: ShowerData) -> None:
    cond = {k: getattr(reference, k) for k in ("energy", "eta", "impact_x", "impact_y")}
    other = mc.simulate(cond["energy"], cond["eta"], 22, impact_x=cond["impact_x"], impact_y=cond["impact_y"], seed=2).showers
    metrics = evaluate(reference, other)
    points = per_energy(observables.features(reference), observables.features(other), reference.energy, other.energy)
    assert [p["energy"] for p in metrics["points"]] == [[2.0, 2.0], [20.0, 20.0]]
    assert [p["separation_power"] for p in metrics["points"]] == [p.separation_power for p in points]
    assert metrics["score"] == pytest.approx(np.mean([np.mean(list(p.separation_power.values())) for p in points]))
    assert 0.0 < metrics["score"] < 0.5 and metrics["max_response_deviation"] < 0.05


def test_empty_showers_score_worst_but_finite(reference: ShowerData) -> None:
    """Every generated shower empty (an untrained generator's low-energy showers can be): the ratios
    of empty showers are NaN, their separation power is NaN as in the report, and the score counts
    it as 1, the largest."""
    empty = dataclasses.replace(reference, images=np.zeros_like(reference.images))
    metrics = evaluate(reference, empty)
    ratios = [name for name in observables.FEATURES if name not in ("response", "n_cells")]
    assert all(math.isnan(p["separation_power"][name]) for p in metrics["points"] for name in ratios)
    assert all(metrics["separation_power"][name] == 1.0 for name in ratios)
    assert math.isfinite(metrics["score"]) and metrics["score"] > 0.9
    assert metrics["max_response_deviation"] == 1.0  # nothing deposited
    assert math.isnan(metrics["max_resolution_deviation"])  # no resolution of empty showers


def test_an_energy_point_is_one_definition_to_1e_9(reference: ShowerData) -> None:
    """Energies that went through a unit conversion still belong to their point."""
    feats = observables.features(reference)
    nudged = np.nextafter(reference.energy, np.inf)
    assert not np.any(nudged == reference.energy)
    points = per_energy(feats, feats, reference.energy, nudged)
    assert [(p.energy_low, p.n_reference, p.n_generated) for p in points] == [(2.0, 60, 60), (20.0, 60, 60)]
    assert all(v == 0.0 for p in points for v in p.separation_power.values())


def test_the_monitor_draws_what_the_simulator_draws(reference: ShowerData) -> None:
    """One sampling path: the monitor's generated twins are the showers a Simulator with the
    monitor's seed gives the same particles."""
    import torch

    from fastcalo import Simulator
    from fastcalo.model import ModelConfig, ShowerModel
    from fastcalo.monitor import Monitor

    torch.manual_seed(0)
    model = ShowerModel(ModelConfig(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,), energy_hidden=(8,), cell_noise=True)).eval()
    twins = Monitor(reference, seed=4).showers(model)
    assert np.array_equal(twins.energy, reference.energy) and np.array_equal(twins.impact_x, reference.impact_x)
    direct = Simulator(model, seed=4, device="cpu").sample(
        energy=reference.energy, eta=reference.eta, phi=reference.phi, particle=reference.pdgid,
        impact_x=reference.impact_x, impact_y=reference.impact_y,
    )  # fmt: skip
    np.testing.assert_array_equal(twins.images, direct)
    assert twins.images.sum() > 0
