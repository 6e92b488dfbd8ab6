"""Numba kernel of the parametrised peer (:mod:`fastcalo.gflash`): spots along a tilted shower axis.

Lengths inside the kernel are in mm unless named in X0 (``t``) or Moliere radii (``r``), energies
in GeV. Particle codes: 0 photon, 1 electron, 2 positron (as in :mod:`fastcalo.mc`). The layout of
the parameter vector is fixed by the ``P_*`` indices below and filled by
:meth:`fastcalo.gflash.GFlashParameters.vector`.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numpy.typing import NDArray

from ._random import exponential, new_state, normal_pair, uniform

__all__ = ("N_PARAMETERS", "impact_uniforms", "longitudinal_parameters", "radial_parameters", "showers")

_Floats = NDArray[np.float64]

# indices into the parameter vector
P_EC, P_T_OFFSET, P_A0, P_A_SLOPE = 0, 1, 2, 3
P_ST0, P_ST1, P_SA0, P_SA1, P_RHO0, P_RHO1, P_FLUCT = 4, 5, 6, 7, 8, 9, 10
P_Z1_0, P_Z1_1, P_Z2, P_K1, P_K2, P_K3, P_K4_0, P_K4_1 = 11, 12, 13, 14, 15, 16, 17, 18
P_P1, P_P2, P_P3_0, P_P3_1, P_CORE, P_TAIL = 19, 20, 21, 22, 23, 24
P_SPOT_N, P_SPOT_POWER, P_SPOT_T, P_SPOT_A, P_CONVERSION = 25, 26, 27, 28, 29
P_VIS0, P_VIS1, P_MOLIERE = 30, 31, 32
N_PARAMETERS = 33

_MIN_ALPHA = 1.05  # a gamma profile needs alpha > 1 for a maximum at T = (alpha - 1) / beta > 0
#: Step along the shower axis (X0) and steps per shower: the profiles are evaluated per step, as
#: Geant4's GFlash does (0.1 X0); the profiles are cut at N_STEPS x STEP = 40 X0, farther than
#: any path through the block (the share beyond, below 1e-6 at 100 GeV, is laid before the cut).
STEP = 0.1
N_STEPS = 400


@nb.njit(cache=True)
def longitudinal_parameters(p: _Floats, energy: float, z1: float, z2: float) -> tuple[float, float]:
    """A shower's depth of maximum T (X0) and gamma shape alpha, from two independent standard
    normals: ln T and ln alpha are normal, correlated (hep-ex/0001020, eqs. for homogeneous media)."""
    ln_y = math.log(energy / p[P_EC])
    mean_ln_t = math.log(max(ln_y - p[P_T_OFFSET], 0.1))
    mean_ln_a = math.log(max(p[P_A0] + p[P_A_SLOPE] * ln_y, _MIN_ALPHA))
    sigma_t = p[P_FLUCT] / max(p[P_ST0] + p[P_ST1] * ln_y, 1.0)
    sigma_a = p[P_FLUCT] / max(p[P_SA0] + p[P_SA1] * ln_y, 1.0)
    rho = min(max(p[P_RHO0] + p[P_RHO1] * ln_y, -1.0), 1.0)
    plus, minus = math.sqrt(0.5 * (1.0 + rho)), math.sqrt(0.5 * (1.0 - rho))
    t_max = math.exp(mean_ln_t + sigma_t * (plus * z1 + minus * z2))
    alpha = max(math.exp(mean_ln_a + sigma_a * (plus * z1 - minus * z2)), _MIN_ALPHA)
    return t_max, alpha


@nb.njit(cache=True)
def radial_parameters(p: _Floats, energy: float, tau: float) -> tuple[float, float, float]:
    """Core radius, tail radius (Moliere radii) and core probability at depth tau = t / T."""
    ln_e = math.log(energy)
    core = p[P_CORE] * (p[P_Z1_0] + p[P_Z1_1] * ln_e + p[P_Z2] * tau)
    k4 = p[P_K4_0] + p[P_K4_1] * ln_e
    tail = p[P_TAIL] * p[P_K1] * (math.exp(p[P_K3] * (tau - p[P_K2])) + math.exp(k4 * (tau - p[P_K2])))
    arg = (p[P_P2] - tau) / (p[P_P3_0] + p[P_P3_1] * ln_e)
    frac = min(max(p[P_P1] * math.exp(arg - math.exp(arg)), 0.0), 1.0)
    return core, tail, frac


@nb.njit(cache=True)
def _shower(
    kind: int, energy: float, start: _Floats, p: _Floats, geo: _Floats,
    rng: NDArray[np.uint64], image: _Floats, longitudinal: _Floats,
) -> float:
    """Deposit one shower into ``image`` (n, n); return the energy that did not reach the block."""
    x0, hw, depth, cell = geo[0], geo[1], geo[2], geo[3]
    # where the cascade starts: a photon converts first, at an exponential depth (X0)
    t_start = p[P_CONVERSION] * exponential(rng) if kind == 0 else 0.0
    z1, z2 = normal_pair(rng)
    t_max, alpha = longitudinal_parameters(p, energy, z1, z2)
    beta = (alpha - 1.0) / t_max
    # the spots' depth profile (shorter than the energy's), and their number
    alpha_s = max(alpha * p[P_SPOT_A], _MIN_ALPHA)
    beta_s = (alpha_s - 1.0) / (t_max * p[P_SPOT_T])
    n_spots = max(1, int(p[P_SPOT_N] * energy ** p[P_SPOT_POWER] + 0.5))
    # steps of STEP X0 along the axis, as Geant4's GFlash: in each, the spot profile's share
    # (cumulative, to draw a spot's step), the energy per spot (f_E / f_S) and the radial profile
    ln_e = math.log(energy)
    cdf = np.empty(N_STEPS)
    weight = np.empty(N_STEPS)
    core = np.empty(N_STEPS)
    tail = np.empty(N_STEPS)
    frac = np.empty(N_STEPS)
    peak_s = (alpha_s - 1.0) * math.log(max(alpha_s - 1.0, 1e-12)) - (alpha_s - 1.0)  # log f_S at its maximum
    running = 0.0
    for b in range(N_STEPS):
        t = (b + 0.5) * STEP
        log_s = (alpha_s - 1.0) * math.log(beta_s * t) - beta_s * t
        running += math.exp(log_s - peak_s)
        cdf[b] = running
        weight[b] = math.exp((alpha - 1.0) * math.log(beta * t) - beta * t - log_s)
        core[b], tail[b], frac[b] = radial_parameters(p, energy, t / t_max)
    # draw the spots' steps first (their energies are the weights normalised over the spots)
    steps = np.empty(n_spots, dtype=np.int64)
    total = 0.0
    for k in range(n_spots):
        target = uniform(rng) * running
        lo, hi = 0, N_STEPS - 1  # the first step whose cumulative share reaches the target
        while lo < hi:
            mid = (lo + hi) >> 1
            if cdf[mid] < target:
                lo = mid + 1
            else:
                hi = mid
        b = lo
        steps[k] = b
        total += weight[b]
    scale = energy * (p[P_VIS0] + p[P_VIS1] * ln_e) / total
    rm = p[P_MOLIERE]
    # the shower axis (ux, uy, uz) and two unit vectors across it: (uz, 0, -ux) and (0, 1, 0)
    ux, uy, uz = start[3], start[4], start[5]
    n = image.shape[0]
    deposited = 0.0
    for k in range(n_spots):
        b = steps[k]
        e = scale * weight[b]
        radius = core[b] if uniform(rng) < frac[b] else tail[b]
        u = uniform(rng)
        r = rm * radius * math.sqrt(u / (1.0 - u))
        while True:  # a uniform direction across the axis: (c, s) from a point in the unit disc
            a1, a2 = 2.0 * uniform(rng) - 1.0, 2.0 * uniform(rng) - 1.0
            d2 = a1 * a1 + a2 * a2
            if 0.0 < d2 <= 1.0:
                break
        dx, dy = r * (a1 * a1 - a2 * a2) / d2, r * 2.0 * a1 * a2 / d2
        along = (t_start + (b + uniform(rng)) * STEP) * x0
        x = start[0] + along * ux + dx * uz
        y = start[1] + along * uy + dy
        z = start[2] + along * uz - dx * ux
        if not (0.0 <= z <= depth and -hw <= x < hw and -hw <= y < hw):
            continue
        image[min(int((x + hw) / cell), n - 1), min(int((y + hw) / cell), n - 1)] += e
        deposited += e
        if longitudinal.size > 1:
            il = int(along / geo[4])
            if 0 <= il < longitudinal.size:
                longitudinal[il] += e
    return energy - deposited


@nb.njit(cache=True, parallel=True)
def showers(
    kinds: NDArray[np.int64], energies: _Floats, starts: _Floats, key: np.uint64, first_index: np.uint64,
    parameters: _Floats, geo: _Floats, images: _Floats, longitudinal: _Floats, leakage: _Floats,
) -> None:
    """Showers i = 0..N-1, each from its random stream (key, first_index + i, 0).

    ``starts[i]``: (x, y, z, ux, uy, uz) at the front face (:func:`fastcalo.mc.line_of_flight`).
    ``geo``: (X0, half width, depth, cell size, longitudinal bin), mm. ``images`` (N, n, n)
    float64 GeV, zeroed by the caller; ``longitudinal`` (N, bins) or (N, 1) to skip the profile;
    ``leakage`` (N,) the energy that did not reach the block's cells, GeV.
    """
    for i in nb.prange(kinds.size):
        rng = new_state(key, first_index + nb.uint64(i), nb.uint64(0))
        leakage[i] = _shower(kinds[i], energies[i], starts[i], parameters, geo, rng, images[i], longitudinal[i])


@nb.njit(cache=True)
def impact_uniforms(key: np.uint64, first_index: np.uint64, n: int) -> _Floats:
    """(n, 2) uniforms for the impact points, from the streams (key, first_index + i, 2)."""
    out = np.empty((n, 2))
    for i in range(n):
        rng = new_state(key, first_index + nb.uint64(i), nb.uint64(2))
        out[i, 0] = uniform(rng)
        out[i, 1] = uniform(rng)
    return out
