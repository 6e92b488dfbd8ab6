"""The classifier test tells identical samples (AUC 0.50 +- 0.03) from distorted ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastcalo import datasets as ds
from fastcalo import mc
from fastcalo.detector import Detector, Response
from fastcalo.validation import classifier_auc

COND = mc.sample_conditions(1500, points=[2.0, 5.0], eta=(-0.5, 0.5), seed=1)


def _run(seed: int, detector: Detector | None = None) -> ds.ShowerData:
    extra = {} if detector is None else {"detector": detector}
    return mc.simulate(
        COND["energy"], COND["eta"], 22, impact_x=COND["impact_x"], impact_y=COND["impact_y"], seed=seed, **extra
    ).showers


@pytest.fixture(scope="module")
def pair() -> tuple[ds.ShowerData, ds.ShowerData]:
    return _run(1), _run(2)


@pytest.mark.parametrize("inputs", ["low", "high"])
def test_mc_against_mc_is_half(pair, inputs: str) -> None:
    result = classifier_auc(*pair, inputs=inputs, hidden=(128, 128))
    assert result.auc == pytest.approx(0.5, abs=0.03)
    assert len(result.aucs) == 3 and result.auc_std < 0.03
    assert result.n_reference == result.n_generated == 3000


def test_energy_scale_is_caught_by_high_level(pair) -> None:
    ref, other = pair
    scaled = dataclasses.replace(other, images=other.images * np.float32(1.03))
    assert classifier_auc(ref, scaled, inputs="high", hidden=(128, 128)).auc > 0.75


@pytest.mark.parametrize("inputs", ["low", "high"])
def test_missing_noise_is_caught(pair, inputs: str) -> None:
    quiet = _run(2, Detector(response=Response(noise=0.0)))
    assert classifier_auc(pair[0], quiet, inputs=inputs, hidden=(128, 128)).auc > 0.75


def test_bad_arguments(pair) -> None:
    with pytest.raises(ValueError, match="inputs must be 'low' or 'high', got 'mid'"):
        classifier_auc(*pair, inputs="mid")
    with pytest.raises(ValueError, match="at least 50 showers per sample, got 10"):
        classifier_auc(pair[0], pair[1][:10])
