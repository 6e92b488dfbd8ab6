"""The reference Monte Carlo against PDG shower phenomenology (PDG Review, "Passage of particles
through matter", section 34.5). Every expectation here is a published number, not one read off
the Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastcalo import mc
from fastcalo.detector import DEFAULT_DETECTOR

X0 = DEFAULT_DETECTOR.material.radiation_length
EC = DEFAULT_DETECTOR.material.critical_energy
RM = DEFAULT_DETECTOR.material.moliere_radius
CFG = mc.MCConfig()


def _profiles(energy: float, particle: str, n: int, seed: int = 11) -> mc.MCResult:
    return mc.simulate(np.full(n, energy), 0.0, particle, seed=seed, profiles=True, response=False)


@pytest.mark.parametrize(
    ("particle", "c_j"), [("electron", -0.5), ("photon", +0.5)]
)
@pytest.mark.parametrize(("energy", "n"), [(1.0, 2000), (10.0, 300), (100.0, 60)])
def test_longitudinal_maximum(particle: str, c_j: float, energy: float, n: int) -> None:
    """t_max = ln(E/Ec) + Cj, Cj = -0.5 (e) / +0.5 (gamma) [PDG eq. 34.36], within 10 %."""
    result = _profiles(energy, particle, n)
    profile = result.longitudinal.mean(axis=0)
    t_max = mc.shower_maximum(profile, CFG.longitudinal_bin / X0)
    expected = math.log(energy / EC) + c_j
    assert t_max == pytest.approx(expected, rel=0.10)
    # the gamma-function fit (PDG eq. 34.35) describes the same profile with a maximum nearby
    assert mc.longitudinal_fit(profile, CFG.longitudinal_bin / X0)[2] == pytest.approx(t_max, rel=0.08)


def test_photons_peak_later_than_electrons() -> None:
    e = _profiles(10.0, "electron", 200)
    g = _profiles(10.0, "photon", 200)
    t_e = mc.shower_maximum(e.longitudinal.mean(0), CFG.longitudinal_bin / X0)
    t_g = mc.shower_maximum(g.longitudinal.mean(0), CFG.longitudinal_bin / X0)
    assert 0.5 < t_g - t_e < 1.5  # PDG: C_gamma - C_e = 1


@pytest.mark.parametrize("energy", [10.0, 50.0])
def test_moliere_containment(energy: float) -> None:
    """About 90 % of the deposit within one Moliere radius of the axis (PDG 34.5)."""
    result = _profiles(energy, "electron", 100)
    radial = result.radial.mean(axis=0)
    edges = np.arange(radial.size + 1) * CFG.radial_bin
    inside = radial[edges[1:] <= RM].sum()  # the bins wholly inside R_M (19 of 1 mm)
    fraction = inside / result.true_images.sum(axis=(1, 2)).mean()
    assert 0.85 < fraction < 0.95
    # and ~95 % inside two Moliere radii, ~99 % inside 3.5 (PDG 34.5)
    assert radial[edges[1:] <= 2 * RM].sum() / radial.sum() > 0.93


@pytest.mark.parametrize("particle", ["photon", "electron", "positron"])
def test_energy_conservation(particle: str) -> None:
    energies = np.array([1.0, 3.0, 10.0, 30.0, 80.0])
    result = mc.simulate(energies, [0.0, 0.4, -0.8, 1.2, 1.5], particle, seed=5, response=False)
    deposit = result.true_images.sum(axis=(1, 2))
    np.testing.assert_allclose(deposit + result.leakage, result.available, rtol=1e-12, atol=0)
    assert np.all(result.leakage >= 0)


def test_containment_at_10_gev() -> None:
    result = mc.simulate(np.full(200, 10.0), 0.0, "photon", seed=6, response=False)
    deposit = result.true_images.sum(axis=(1, 2))
    assert deposit.mean() / 10.0 > 0.95


def test_stochastic_resolution_term() -> None:
    """sigma/E = a/sqrt(E) (+) b: a homogeneous crystal calorimeter has a of a few per cent
    (PDG Review, "Calorimetry", section 35.9: 2-3 %/sqrt(E) for CMS PbWO4 before all effects)."""
    energies = [2.0, 10.0, 50.0]
    n = {2.0: 600, 10.0: 300, 50.0: 120}
    sigma = []
    for energy in energies:
        result = mc.simulate(np.full(n[energy], energy), 0.0, "electron", seed=7)
        measured = result.showers.images.sum(axis=(1, 2))
        sigma.append(measured.std() / measured.mean())
    # least squares for (sigma/E)^2 = a^2 / E + b^2
    design = np.column_stack([1.0 / np.array(energies), np.ones(3)])
    (a2, b2), *_ = np.linalg.lstsq(design, np.square(sigma), rcond=None)
    a = math.sqrt(max(a2, 0.0))
    assert 0.01 < a < 0.06
    assert sigma[0] > sigma[1] > sigma[2]


def test_eta_elongates_the_shower() -> None:
    images = {}
    for eta in (0.0, 1.0):
        result = mc.simulate(np.full(100, 20.0), eta, "photon", seed=8, response=False)
        images[eta] = result.true_images.mean(axis=0)
    centres = DEFAULT_DETECTOR.cell_edges[:-1] + 5.0

    def widths(image: np.ndarray) -> tuple[float, float]:
        px, py = image.sum(1), image.sum(0)
        mx, my = (px * centres).sum() / px.sum(), (py * centres).sum() / py.sum()
        return math.sqrt((px * (centres - mx) ** 2).sum() / px.sum()), math.sqrt((py * (centres - my) ** 2).sum() / py.sum())

    wx0, wy0 = widths(images[0.0])
    wx1, wy1 = widths(images[1.0])
    assert wx0 == pytest.approx(wy0, rel=0.1)  # round at normal incidence
    assert wx1 > 1.5 * wy1  # elongated along x (the eta direction) at eta = 1
    assert wy1 == pytest.approx(wy0, rel=0.15)


def test_halved_cuts_do_not_change_the_images() -> None:
    """Halving the photon and electron cuts leaves the mean image unchanged within statistics."""
    n = 300
    nominal = mc.simulate(np.full(n, 10.0), 0.0, "photon", seed=9, response=False)
    halved = mc.simulate(np.full(n, 10.0), 0.0, "photon", seed=10, response=False, config=CFG.halved())
    a, b = nominal.true_images, halved.true_images
    mean_a, mean_b = a.mean(0), b.mean(0)
    err2 = a.var(0) / n + b.var(0) / n
    used = mean_a > 1e-3 * mean_a.max()
    chi2 = ((mean_a - mean_b)[used] ** 2 / err2[used]).sum()
    ndf = int(used.sum())
    assert chi2 / ndf < 1.5
    assert b.sum((1, 2)).mean() == pytest.approx(a.sum((1, 2)).mean(), rel=0.005)


def test_response_zero_suppression_and_noise() -> None:
    result = mc.simulate(np.full(50, 5.0), 0.0, "photon", seed=12)
    images = result.showers.images
    threshold = DEFAULT_DETECTOR.response.threshold
    assert np.all((images == 0) | (images >= threshold - 1e-7))
    # zero suppression removes the small deposits (a few per cent at 5 GeV); noise and
    # photo-statistics move each cell but keep about the sum of the cells above threshold
    true = result.true_images
    ratio = images.sum((1, 2)).mean() / true.sum((1, 2)).mean()
    assert 0.9 < ratio < 0.99
    above = np.where(true >= threshold, true, 0.0).sum((1, 2)).mean()
    assert images.sum((1, 2)).mean() == pytest.approx(above, rel=0.03)  # noise lifts cells over the threshold
    assert not np.allclose(images[result.true_images > threshold], result.true_images[result.true_images > threshold])


def test_photostatistics_variance() -> None:
    """A single large deposit smeared by Poisson photo-statistics: var = E / pe_per_GeV (+ noise^2)."""
    from fastcalo.mc._transport import apply_response

    true = np.zeros((4000, 2, 2))
    true[:, 0, 0] = 1.0
    out = np.empty_like(true)
    apply_response(true, np.uint64(3), np.uint64(0), 2000.0, 0.0, 0.0, out)
    assert out[:, 0, 0].mean() == pytest.approx(1.0, abs=3 * math.sqrt(1 / 2000 / 4000))
    assert out[:, 0, 0].var() == pytest.approx(1.0 / 2000.0, rel=0.1)
    assert np.all(out[:, 1:, :] == 0)
