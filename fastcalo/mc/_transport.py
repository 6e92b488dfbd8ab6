"""Numba kernels of the reference Monte Carlo: cascade transport and detector response.

Lengths inside the kernels are in mm, energies in GeV (kinetic for e+-). Particle codes:
0 photon, 1 electron, 2 positron. See ``docs/reference-mc.md`` for the physics.
"""

from __future__ import annotations

import math
import time

import numba as nb
import numpy as np
from numpy.typing import NDArray

from ..detector import ELECTRON_MASS
from ._physics import brems_shape, pair_shape
from .._random import exponential, new_state, normal, normal_pair, poisson, uniform

__all__ = ("apply_response", "transport")

PHOTON, ELECTRON, POSITRON = 0, 1, 2
_STACK = 4096
_MAX_TRIES = 1000  # rejection-sampling attempts before a process is declared closed
_M = ELECTRON_MASS
#: Seconds one call of the transport kernel should take: Python acts on a signal (Ctrl-C, SIGTERM)
#: only between calls, as a compiled kernel cannot be interrupted. Shorter slices react faster but
#: cost MC speed at every slice's end (interleaved runs on 2 cores, noisy: 0.25 s slices split
#: statically 0.79-0.91 of unsliced; 1 s slices, one shower at a time per thread, 0.74-0.99, mostly ~0.9).
_SLICE_SECONDS = 1.0
#: The kernels' arrays of lengths (mm), energies (GeV) and tables: float64.
_Floats = NDArray[np.float64]


@nb.njit(cache=True, inline="always")
def _locate(log_e0: float, dlog: float, n: int, energy: float) -> tuple[int, float]:
    """Grid index and fraction of ``energy`` in a table uniform in log(E), clamped to its ends."""
    pos = (math.log(energy) - log_e0) / dlog
    if pos <= 0.0:
        return 0, 0.0
    i = int(pos)
    if i >= n - 1:
        return n - 2, 1.0
    return i, pos - i


@nb.njit(cache=True, inline="always")
def _at(table: _Floats, i: int, f: float) -> float:
    return float(table[i] * (1.0 - f) + table[i + 1] * f)


@nb.njit(cache=True)
def _rotate(ux: float, uy: float, uz: float, cost: float, phi: float) -> tuple[float, float, float]:
    """Direction at polar angle acos(cost) and azimuth phi around (ux, uy, uz)."""
    sint = math.sqrt(max(0.0, 1.0 - cost * cost))
    cphi, sphi = math.cos(phi), math.sin(phi)
    perp = math.sqrt(max(0.0, 1.0 - uz * uz))
    if perp > 1e-8:
        nx = ux * cost + sint * (ux * uz * cphi - uy * sphi) / perp
        ny = uy * cost + sint * (uy * uz * cphi + ux * sphi) / perp
        nz = uz * cost - sint * cphi * perp
    else:
        nx, ny, nz = sint * cphi, sint * sphi, math.copysign(cost, uz)
    norm = math.sqrt(nx * nx + ny * ny + nz * nz)
    return nx / norm, ny / norm, nz / norm


@nb.njit(cache=True, inline="always")
def _inside(x: float, y: float, z: float, geo: _Floats) -> bool:
    return bool(0.0 <= z <= geo[2] and -geo[1] <= x < geo[1] and -geo[1] <= y < geo[1])


@nb.njit(cache=True)
def _deposit(
    e: float, x: float, y: float, z: float, geo: _Floats, axis: _Floats,
    image: _Floats, longitudinal: _Floats, radial: _Floats,
) -> float:
    """Score energy e at (x, y, z); return it back if the point is outside the block (leakage)."""
    hw = geo[1]
    if not _inside(x, y, z, geo):
        return e
    n = image.shape[0]
    ix = min(int((x + hw) / geo[3]), n - 1)
    iy = min(int((y + hw) / geo[3]), n - 1)
    image[ix, iy] += e
    if longitudinal.size > 1 or radial.size > 1:
        dx, dy, dz = x - axis[0], y - axis[1], z - axis[2]
        t = dx * axis[3] + dy * axis[4] + dz * axis[5]
        il = int(t / geo[4])
        if 0 <= il < longitudinal.size:
            longitudinal[il] += e
        r2 = max(0.0, dx * dx + dy * dy + dz * dz - t * t)
        ir = int(math.sqrt(r2) / geo[5])
        if 0 <= ir < radial.size:
            radial[ir] += e
    return 0.0


@nb.njit(cache=True)
def _shower(
    kind0: int, e0: float, start: _Floats, geo: _Floats, cuts: _Floats, tab_e: _Floats,
    brem_rate: _Floats, dedx: _Floats, photon_rate: _Floats, pair_fraction: _Floats,
    photo_fraction: _Floats, scr: _Floats, rng: NDArray[np.uint64], image: _Floats, longitudinal: _Floats, radial: _Floats,
) -> float:
    """Transport one incident particle; return the energy that left the block."""
    x0 = geo[0]
    gamma_cut, electron_cut, max_step, max_loss, max_theta = cuts[0], cuts[1], cuts[2], cuts[3], cuts[4]
    log_e0, dlog = tab_e[0], tab_e[1]
    kinds = np.empty(_STACK, dtype=np.int8)
    stack = np.empty((_STACK, 7))
    kinds[0] = kind0
    stack[0, 0] = e0
    stack[0, 1:] = start
    n = 1
    leak = 0.0
    while n > 0:
        n -= 1
        kind = kinds[n]
        e, x, y, z, ux, uy, uz = stack[n, 0], stack[n, 1], stack[n, 2], stack[n, 3], stack[n, 4], stack[n, 5], stack[n, 6]
        if kind == PHOTON:
            while True:
                if e < gamma_cut:  # photo-absorption on the spot
                    leak += _deposit(e, x, y, z, geo, start, image, longitudinal, radial)
                    break
                i, f = _locate(log_e0, dlog, photon_rate.size, e)
                s = exponential(rng) / _at(photon_rate, i, f) * x0
                x += s * ux
                y += s * uy
                z += s * uz
                if not _inside(x, y, z, geo):
                    leak += e
                    break
                r = uniform(rng)
                f_pair = _at(pair_fraction, i, f)
                if r >= f_pair and r < f_pair + _at(photo_fraction, i, f):
                    leak += _deposit(e, x, y, z, geo, start, image, longitudinal, radial)  # photo-absorption
                    break
                frac = -1.0
                if r < f_pair:
                    x_lo = _M / e
                    for _ in range(_MAX_TRIES):  # energy sharing, rejection on the screened Bethe-Heitler shape
                        trial = x_lo + uniform(rng) * (1.0 - 2.0 * x_lo)
                        if uniform(rng) <= pair_shape(trial, e, scr):
                            frac = trial
                            break
                # frac < 0: no pair (the tabulated rate is interpolated across the threshold, where
                # the shape can vanish at every x): the photon Compton-scatters instead.
                if frac > 0.0:
                    if n + 2 > _STACK:
                        raise RuntimeError("fastcalo.mc: particle stack overflow")
                    for member in range(2):  # the electron, then the positron
                        total = frac * e if member == 0 else (1.0 - frac) * e
                        # pair angle ~ m_e / E (the EGS4 default), around the photon direction
                        vx, vy, vz = _rotate(ux, uy, uz, math.cos(_M / total), 2.0 * math.pi * uniform(rng))
                        kinds[n] = ELECTRON if member == 0 else POSITRON
                        stack[n, 0] = total - _M
                        stack[n, 1], stack[n, 2], stack[n, 3] = x, y, z
                        stack[n, 4], stack[n, 5], stack[n, 6] = vx, vy, vz
                        n += 1
                    break
                # Compton scattering: Klein-Nishina by Butcher and Messel's sampling
                kappa = e / _M
                eps0 = 1.0 / (1.0 + 2.0 * kappa)
                a1 = -math.log(eps0)
                a2 = 0.5 * (1.0 - eps0 * eps0)
                while True:
                    if uniform(rng) * (a1 + a2) < a1:
                        eps = math.exp(-uniform(rng) * a1)
                    else:
                        eps = math.sqrt(eps0 * eps0 + (1.0 - eps0 * eps0) * uniform(rng))
                    t = (1.0 - eps) / (kappa * eps)
                    sin2 = max(0.0, t * (2.0 - t))
                    if uniform(rng) <= 1.0 - eps * sin2 / (1.0 + eps * eps):
                        break
                cost = 1.0 - t
                phi = 2.0 * math.pi * uniform(rng)
                vx, vy, vz = _rotate(ux, uy, uz, cost, phi)
                t_e = e * (1.0 - eps)
                if t_e > electron_cut:
                    px, py, pz = e * ux - e * eps * vx, e * uy - e * eps * vy, e * uz - e * eps * vz
                    p = math.sqrt(px * px + py * py + pz * pz)
                    if n + 1 > _STACK:
                        raise RuntimeError("fastcalo.mc: particle stack overflow")
                    kinds[n] = ELECTRON
                    stack[n, 0] = t_e
                    stack[n, 1], stack[n, 2], stack[n, 3] = x, y, z
                    stack[n, 4], stack[n, 5], stack[n, 6] = px / p, py / p, pz / p
                    n += 1
                else:
                    leak += _deposit(t_e, x, y, z, geo, start, image, longitudinal, radial)
                e *= eps
                ux, uy, uz = vx, vy, vz
            continue

        # electron or positron
        while True:
            if e <= electron_cut:
                leak += _deposit(e, x, y, z, geo, start, image, longitudinal, radial)
                break
            i, f = _locate(log_e0, dlog, dedx.size, e)
            loss = _at(dedx, i, f)  # GeV per X0
            p = math.sqrt(e * (e + 2.0 * _M))
            beta = p / (e + _M)
            s_brem = exponential(rng) / _at(brem_rate, i, f)
            # Highland: theta0 = 13.6 MeV / (beta p) sqrt(s) (1 + 0.038 ln(L / beta^2)), s in X0, with
            # L the electron's residual range rather than the step: the formula is not additive in
            # the variance, and evaluating its logarithm on the step would make the scattering
            # (and the lateral shape) depend on the step size.
            s_theta = (max_theta * beta * p / 0.0136) ** 2
            s = min(s_brem, max_loss * e / loss, max_step, s_theta)
            brem = s == s_brem
            d_e = loss * s
            if d_e >= e - 0.5 * electron_cut:  # stops inside this step: range-out
                s = e / loss
                d_e = e
                brem = False
            e_mid = e - 0.5 * d_e
            p_mid = math.sqrt(e_mid * (e_mid + 2.0 * _M))
            beta_mid = p_mid / (e_mid + _M)
            residual = min(max(e / loss, 1e-3), 10.0)  # X0, continuous-slowing-down estimate
            theta0 = 0.0136 / (beta_mid * p_mid) * math.sqrt(s) * max(0.0, 1.0 + 0.038 * math.log(residual / beta_mid**2))
            # multiple scattering in two projected planes with the correlated lateral shift (PDG eq. 34.20)
            if abs(uz) < 0.9:
                ax, ay, az = -uy, ux, 0.0
            else:
                ax, ay, az = 0.0, -uz, uy
            norm = math.sqrt(ax * ax + ay * ay + az * az)
            ax, ay, az = ax / norm, ay / norm, az / norm
            bx, by, bz = uy * az - uz * ay, uz * ax - ux * az, ux * ay - uy * ax
            z1a, z2a = normal_pair(rng)
            z1b, z2b = normal_pair(rng)
            sl = s * x0
            da = sl * theta0 * (z1a / math.sqrt(12.0) + 0.5 * z2a)
            db = sl * theta0 * (z1b / math.sqrt(12.0) + 0.5 * z2b)
            xm = x + 0.5 * sl * ux + 0.5 * (da * ax + db * bx)
            ym = y + 0.5 * sl * uy + 0.5 * (da * ay + db * by)
            zm = z + 0.5 * sl * uz + 0.5 * (da * az + db * bz)
            leak += _deposit(d_e, xm, ym, zm, geo, start, image, longitudinal, radial)
            x += sl * ux + da * ax + db * bx
            y += sl * uy + da * ay + db * by
            z += sl * uz + da * az + db * bz
            e -= d_e
            ta, tb = z2a * theta0, z2b * theta0
            theta = math.sqrt(ta * ta + tb * tb)
            if theta > 0.0:
                ca, cb = ta / theta, tb / theta
                ct, st = math.cos(theta), math.sin(theta)
                ux = ct * ux + st * (ca * ax + cb * bx)
                uy = ct * uy + st * (ca * ay + cb * by)
                uz = ct * uz + st * (ca * az + cb * bz)
                norm = math.sqrt(ux * ux + uy * uy + uz * uz)
                ux, uy, uz = ux / norm, uy / norm, uz / norm
            if not _inside(x, y, z, geo):
                leak += e + (2.0 * _M if kind == POSITRON else 0.0)
                e = 0.0
                kind = ELECTRON  # nothing left to annihilate inside
                break
            k = 0.0
            if brem and e > gamma_cut:
                e_total = e + _M
                log_range = math.log(e / gamma_cut)
                for _ in range(_MAX_TRIES):  # photon energy: 1/k envelope, rejection on the screened shape (<= 1.5)
                    trial = gamma_cut * math.exp(uniform(rng) * log_range)
                    if 1.5 * uniform(rng) <= brems_shape(trial / e_total, e_total, scr):
                        k = trial
                        break
            if k > 0.0:  # (k == 0: the shape vanished over the whole range, as for pairs above)
                if n + 1 > _STACK:
                    raise RuntimeError("fastcalo.mc: particle stack overflow")
                vx, vy, vz = _rotate(ux, uy, uz, math.cos(_M / e_total), 2.0 * math.pi * uniform(rng))
                kinds[n] = PHOTON
                stack[n, 0] = k
                stack[n, 1], stack[n, 2], stack[n, 3] = x, y, z
                stack[n, 4], stack[n, 5], stack[n, 6] = vx, vy, vz
                n += 1
                e -= k
        if kind == POSITRON:  # annihilation at rest: two back-to-back photons of m_e
            if n + 2 > _STACK:
                raise RuntimeError("fastcalo.mc: particle stack overflow")
            cost = 2.0 * uniform(rng) - 1.0
            vx, vy, vz = _rotate(0.0, 0.0, 1.0, cost, 2.0 * math.pi * uniform(rng))
            for sign in (1.0, -1.0):
                kinds[n] = PHOTON
                stack[n, 0] = _M
                stack[n, 1], stack[n, 2], stack[n, 3] = x, y, z
                stack[n, 4], stack[n, 5], stack[n, 6] = sign * vx, sign * vy, sign * vz
                n += 1
    return leak


def transport(
    kinds: NDArray[np.int64], energies: _Floats, starts: _Floats, seed: np.uint64, first_index: np.uint64,
    geo: _Floats, cuts: _Floats, tab_e: _Floats, brem_rate: _Floats, dedx: _Floats,
    photon_rate: _Floats, pair_fraction: _Floats, photo_fraction: _Floats, scr: _Floats,
    images: _Floats, longitudinal: _Floats, radial: _Floats, leakage: _Floats,
) -> None:
    """Transport showers i = 0..N-1 with random streams (seed, first_index + i, 0), in parallel.

    ``starts[i]`` is (x, y, z, ux, uy, uz) at the front face. ``images`` (N, n, n) float64 GeV.
    ``longitudinal`` and ``radial`` are (N, bins) or (N, 1) to skip profile scoring.

    The kernel runs on slices of about ``_SLICE_SECONDS`` (the time per GeV measured on the
    previous slice), so that a signal stops the program within about that time. The results do
    not depend on the slicing: shower i keeps its stream.
    """
    n = kinds.size
    cumulative = np.cumsum(energies)
    least = 2 * nb.get_num_threads()  # showers per slice: some for every thread
    start, seconds_per_gev = 0, 0.0
    while start < n:
        stop = start + least
        if seconds_per_gev > 0:
            done = cumulative[start - 1] if start else 0.0
            stop = max(stop, int(np.searchsorted(cumulative, done + _SLICE_SECONDS / seconds_per_gev, side="right")))
        stop = min(stop, n)
        part = slice(start, stop)
        began = time.perf_counter()
        # one shower at a time to whichever thread is free: showers differ in cost by 100x, and a
        # static split of a short slice would leave a thread idle at its end
        with nb.parallel_chunksize(1):
            _transport_slice(
                kinds[part], energies[part], starts[part], seed, np.uint64(int(first_index) + start), geo, cuts, tab_e,
                brem_rate, dedx, photon_rate, pair_fraction, photo_fraction, scr,
                images[part], longitudinal[part], radial[part], leakage[part],
            )  # fmt: skip
        seconds_per_gev = (time.perf_counter() - began) / max(float(energies[part].sum()), 1e-9)
        start = stop


@nb.njit(cache=True, parallel=True)
def _transport_slice(
    kinds: NDArray[np.int64], energies: _Floats, starts: _Floats, seed: np.uint64, first_index: np.uint64,
    geo: _Floats, cuts: _Floats, tab_e: _Floats, brem_rate: _Floats, dedx: _Floats,
    photon_rate: _Floats, pair_fraction: _Floats, photo_fraction: _Floats, scr: _Floats,
    images: _Floats, longitudinal: _Floats, radial: _Floats, leakage: _Floats,
) -> None:
    for i in nb.prange(kinds.size):
        rng = new_state(seed, first_index + nb.uint64(i), nb.uint64(0))
        leakage[i] = _shower(
            kinds[i], energies[i], starts[i], geo, cuts, tab_e, brem_rate, dedx, photon_rate,
            pair_fraction, photo_fraction, scr, rng, images[i], longitudinal[i], radial[i],
        )


@nb.njit(cache=True, parallel=True)
def apply_response(
    true_images: _Floats, seed: np.uint64, first_index: np.uint64,
    pe_per_gev: float, noise: float, threshold: float, out: _Floats,
) -> None:
    """Photo-statistics, Gaussian noise and zero suppression, cell by cell (random stream 1)."""
    n_cells = true_images.shape[1] * true_images.shape[2]
    for i in nb.prange(true_images.shape[0]):
        rng = new_state(seed, first_index + nb.uint64(i), nb.uint64(1))
        flat_in = true_images[i].reshape(n_cells)
        flat_out = out[i].reshape(n_cells)
        for c in range(n_cells):
            e = flat_in[c]
            if pe_per_gev > 0.0 and e > 0.0:
                e = poisson(rng, e * pe_per_gev) / pe_per_gev
            if noise > 0.0:
                e += noise * normal(rng)
            flat_out[c] = e if e >= threshold else 0.0
