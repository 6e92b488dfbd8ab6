"""Cross sections and stopping powers of the reference Monte Carlo, tabulated in numpy.

All rates are per radiation length of path and energies in GeV. The transport kernels
(:mod:`fastcalo.mc._transport`) interpolate these tables in log(energy).

References:
    Y.-S. Tsai, Rev. Mod. Phys. 46 (1974) 815: bremsstrahlung and pair production with screening,
    normalised so that the complete-screening limit is the PDG's
    dsigma/dk = A/(X0 N_A k) (4/3 - 4/3 y + y^2) and dsigma/dx = A/(X0 N_A) (1 - 4/3 x(1-x)).
    J.C. Butcher and H. Messel, Nucl. Phys. 20 (1960) 15: the screening functions phi1, phi2
    as functions of delta = 136 m_e Z^(-1/3) k / (E E').
    PDG Review, "Passage of particles through matter", eq. 34.27 (Coulomb correction f(Z)),
    eq. 34.15 (Highland multiple scattering), section 34.4 (Rossi's critical energy).
    O. Klein and Y. Nishina, Z. Phys. 52 (1929) 853: Compton scattering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..detector import ELECTRON_MASS, Material

__all__ = ("PhysicsTables", "brems_shape", "build_tables", "pair_shape")

_ALPHA = 1.0 / 137.035999
_CLASSICAL_ELECTRON_RADIUS_MM = 2.8179403262e-12  # mm
#: Logarithmic rise of the electron collision stopping power per decade of kinetic energy,
#: relative to its value at the critical energy (Bethe formula for electrons in PbWO4 rises by
#: about 11 % per decade between 1 and 100 MeV: ESTAR, https://physics.nist.gov/PhysRefData/Star/Text/ESTAR.html).
IONISATION_LOG_SLOPE = 0.048


def coulomb_correction(z: float) -> float:
    """f(Z) of the PDG Review, eq. 34.27."""
    a2 = (_ALPHA * z) ** 2
    return a2 * (1.0 / (1.0 + a2) + 0.20206 - 0.0369 * a2 + 0.0083 * a2**2 - 0.002 * a2**3)


@dataclass(frozen=True)
class PhysicsTables:
    """Tabulated rates (per X0) on a grid uniform in log(energy / GeV).

    ``log_e0`` and ``dlog`` define the grid; arrays are indexed by grid point.
    ``screening`` holds the constants the shape functions need, see :func:`screening_constants`.
    """

    log_e0: float
    dlog: float
    brem_rate: NDArray[np.float64]  # discrete brems with k > gamma_cut, per X0, vs electron kinetic energy
    dedx: NDArray[np.float64]  # continuous loss (ionisation + soft brems), GeV per X0, vs kinetic energy
    photon_rate: NDArray[np.float64]  # pair + Compton + photo-absorption, per X0, vs photon energy
    pair_fraction: NDArray[np.float64]  # pair / total
    photo_fraction: NDArray[np.float64]  # photo-absorption / total
    screening: NDArray[np.float64]  # see screening_constants()


@nb.njit(cache=True)
def _phi(delta: float) -> tuple[float, float]:
    """Butcher-Messel screening functions phi1(delta), phi2(delta)."""
    if delta <= 1.0:
        return 20.867 - 3.242 * delta + 0.625 * delta * delta, 20.209 - 1.930 * delta - 0.086 * delta * delta
    value = 21.12 - 4.184 * math.log(delta + 0.952)
    return value, value


#: Energy (GeV) above which the Coulomb correction f(Z) is applied, as in EGS4 (SLAC-265) and
#: Geant4's Bethe-Heitler models: it is a high-energy correction and would wrongly suppress
#: pair production and bremsstrahlung near threshold.
COULOMB_CORRECTION_ABOVE = 0.05


@nb.njit(cache=True, inline="always")
def _constant(energy: float, scr: NDArray[np.float64]) -> float:
    return float(scr[1] + (scr[2] if energy > COULOMB_CORRECTION_ABOVE else 0.0))


@nb.njit(cache=True)
def brems_shape(y: float, e_total: float, scr: NDArray[np.float64]) -> float:
    """Tsai's bremsstrahlung bracket over its complete-screening value (>= 0, < 1.5), y = k / E.

    The rate per X0 is brems_shape / k dk; it is 4/3 - 4/3 y + y^2 with complete screening at
    high energy. ``scr`` is :func:`screening_constants`.
    """
    c136, f0 = float(scr[0]), float(scr[3])
    cst = _constant(e_total, scr)
    phi1, phi2 = _phi(c136 / e_total * y / (1.0 - y))
    value = (1.0 + (1.0 - y) ** 2) * (phi1 / 4.0 - cst) - 2.0 / 3.0 * (1.0 - y) * (phi2 / 4.0 - cst)
    return max(value / f0, 0.0)


@nb.njit(cache=True)
def pair_shape(x: float, k: float, scr: NDArray[np.float64]) -> float:
    """Tsai's pair-production bracket over its complete-screening value (>= 0, <= 1), x = E+ / k.

    The rate per X0 is pair_shape dx; it is 1 - 4/3 x (1 - x) with complete screening.
    """
    c136, f0 = float(scr[0]), float(scr[3])
    cst = _constant(k, scr)
    phi1, phi2 = _phi(c136 / (k * x * (1.0 - x)))
    value = (x * x + (1.0 - x) ** 2) * (phi1 / 4.0 - cst) + 2.0 / 3.0 * x * (1.0 - x) * (phi2 / 4.0 - cst)
    return max(value / f0, 0.0)


def screening_constants(z: float) -> NDArray[np.float64]:
    """(136 m_e Z^(-1/3), ln(Z)/3, f(Z), phi1(0)/4 - ln(Z)/3 - f(Z)) for the shape functions.

    The last is the normalisation: the complete-screening, Coulomb-corrected limit (1/X0).
    """
    fc = coulomb_correction(z)
    return np.array([136.0 * ELECTRON_MASS * z ** (-1.0 / 3.0), math.log(z) / 3.0, fc, 20.867 / 4.0 - math.log(z) / 3.0 - fc])


@nb.njit(cache=True)
def _integrate_tables(
    energies: NDArray[np.float64], gamma_cut: float, scr: NDArray[np.float64], n_quad: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Discrete brems rate, soft-brems loss (GeV/X0) and pair rate per X0 (midpoint rule)."""
    n = energies.size
    brem = np.zeros(n)
    soft = np.zeros(n)
    pair = np.zeros(n)
    for i in range(n):
        t = energies[i]
        e_total = t + ELECTRON_MASS
        if t > gamma_cut:
            width = math.log(t / gamma_cut)
            acc = 0.0
            for j in range(n_quad):
                y = gamma_cut * math.exp((j + 0.5) / n_quad * width) / e_total
                acc += brems_shape(y, e_total, scr)
            brem[i] = acc / n_quad * width
        k_soft = min(gamma_cut, t)
        acc = 0.0
        for j in range(n_quad):
            acc += brems_shape((j + 0.5) / n_quad * k_soft / e_total, e_total, scr)
        soft[i] = acc / n_quad * k_soft
        if t > 2.0 * ELECTRON_MASS:  # here t is the photon energy
            x_lo = ELECTRON_MASS / t
            acc = 0.0
            for j in range(n_quad):
                acc += pair_shape(x_lo + (j + 0.5) / n_quad * (1.0 - 2.0 * x_lo), t, scr)
            pair[i] = acc / n_quad * (1.0 - 2.0 * x_lo)
    return brem, soft, pair


def klein_nishina(k: ArrayLike) -> NDArray[np.float64]:
    """Klein-Nishina total cross section per electron in mm^2, for photon energy k in GeV."""
    kap = np.asarray(k, dtype=np.float64) / ELECTRON_MASS
    l2k = np.log1p(2.0 * kap)
    term = (1.0 + kap) / kap**2 * (2.0 * (1.0 + kap) / (1.0 + 2.0 * kap) - l2k / kap)
    term += l2k / (2.0 * kap) - (1.0 + 3.0 * kap) / (1.0 + 2.0 * kap) ** 2
    return 2.0 * math.pi * _CLASSICAL_ELECTRON_RADIUS_MM**2 * term


def ionisation_loss(kinetic: ArrayLike, material: Material) -> NDArray[np.float64]:
    """Collision stopping power in GeV per X0: equal to E_c at T = E_c (Rossi), rising logarithmically."""
    ec = material.critical_energy
    return ec * (1.0 + IONISATION_LOG_SLOPE * np.log(np.asarray(kinetic, dtype=np.float64) / ec))


def build_tables(
    material: Material,
    gamma_cut: float,
    *,
    e_min: float = 1e-4,
    e_max: float = 2e3,
    n_points: int = 600,
    n_quad: int = 1000,
) -> PhysicsTables:
    """Tabulate the rates for a material and a photon production / absorption cut (GeV).

    Arguments:
        material: the absorber.
        gamma_cut: bremsstrahlung photons below this energy are part of the continuous loss,
            and photons below it are photo-absorbed on the spot.
        e_min, e_max: range of the tables in GeV.
        n_points: grid points, uniform in log(E).
        n_quad: quadrature points per integral.

    Returns:
        The tables, on a grid uniform in log(E) from ``e_min`` to ``e_max``.
    """
    log_grid = np.linspace(math.log(e_min), math.log(e_max), n_points)
    energies = np.exp(log_grid)
    scr = screening_constants(material.effective_z)
    brem, soft, pair = _integrate_tables(energies, gamma_cut, scr, n_quad)
    x0 = material.radiation_length
    compton = klein_nishina(energies) * material.electron_density * x0
    photo = material.photoelectric_attenuation(energies) * x0
    photon = pair + compton + photo
    return PhysicsTables(
        log_e0=float(log_grid[0]),
        dlog=float(log_grid[1] - log_grid[0]),
        brem_rate=brem,
        dedx=ionisation_loss(energies, material) + soft,
        photon_rate=photon,
        pair_fraction=pair / photon,
        photo_fraction=photo / photon,
        screening=scr,
    )
