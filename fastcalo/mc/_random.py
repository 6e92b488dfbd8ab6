"""A counter-seeded random stream for numba kernels: xoshiro256** seeded by splitmix64.

Each shower gets its own stream from (seed, global shower index, stream id), so results do not
depend on how showers are split across threads, chunks or processes.

References:
    D. Blackman and S. Vigna, "Scrambled linear pseudorandom number generators",
    ACM TOMS 47 (2021) 36, arXiv:1805.01407 (xoshiro256** and splitmix64).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numpy.typing import NDArray

__all__ = ("exponential", "new_state", "normal", "normal_pair", "poisson", "uniform")

_U64 = nb.uint64
# The annotated locals below (``mixed: np.uint64 = ...``) change nothing in the compiled code (Python
# does not evaluate the annotations of local variables); they keep the scalar types for mypy, to
# which numpy's scalar operators are untyped when it checks as Python 3.10 (numpy >= 2.3 stubs).


@nb.njit(cache=True, inline="always")
def _rotl(x: np.uint64, k: np.uint64) -> np.uint64:
    rotated: np.uint64 = (x << k) | (x >> (_U64(64) - k))
    return rotated


@nb.njit(cache=True)
def _splitmix(x: np.uint64) -> np.uint64:
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    mixed: np.uint64 = z ^ (z >> _U64(31))
    return mixed


@nb.njit(cache=True)
def new_state(seed: np.uint64, index: np.uint64, stream: np.uint64) -> NDArray[np.uint64]:
    """Independent xoshiro256** state for (seed, index, stream)."""
    state = np.empty(4, dtype=np.uint64)
    x = _splitmix(_splitmix(_splitmix(seed) ^ index) ^ (stream * _U64(0xD1B54A32D192ED03)))
    for i in range(4):
        x = _splitmix(x + _U64(i))
        state[i] = x
    return state


@nb.njit(cache=True, inline="always")
def _next(s: NDArray[np.uint64]) -> np.uint64:
    result: np.uint64 = _rotl(s[1] * _U64(5), _U64(7)) * _U64(9)
    t = s[1] << _U64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], _U64(45))
    return result


@nb.njit(cache=True, inline="always")
def uniform(s: NDArray[np.uint64]) -> float:
    """Uniform in (0, 1): never exactly 0, so log(uniform) is finite."""
    u: float = ((_next(s) >> _U64(11)) + 0.5) * (1.0 / 9007199254740992.0)
    return u


@nb.njit(cache=True)
def exponential(s: NDArray[np.uint64]) -> float:
    """Exponential with mean 1 (inverse transform of :func:`uniform`)."""
    return -math.log(uniform(s))


@nb.njit(cache=True)
def normal(s: NDArray[np.uint64]) -> float:
    """Standard normal (Box-Muller; one value per call)."""
    return math.sqrt(-2.0 * math.log(uniform(s))) * math.cos(2.0 * math.pi * uniform(s))


@nb.njit(cache=True)
def normal_pair(s: NDArray[np.uint64]) -> tuple[float, float]:
    """Two independent standard normals (both Box-Muller outputs)."""
    r = math.sqrt(-2.0 * math.log(uniform(s)))
    phi = 2.0 * math.pi * uniform(s)
    return r * math.cos(phi), r * math.sin(phi)


@nb.njit(cache=True)
def poisson(s: NDArray[np.uint64], lam: float) -> float:
    """Poisson variate: multiplication method below mean 10, Hormann's PTRS above.

    References:
        W. Hormann, "The transformed rejection method for generating Poisson random variables",
        Insurance: Mathematics and Economics 12 (1993) 39.
    """
    if lam <= 0.0:
        return 0.0
    if lam < 10.0:
        limit = math.exp(-lam)
        k = 0
        prod = uniform(s)
        while prod > limit:
            k += 1
            prod *= uniform(s)
        return float(k)
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        u = uniform(s) - 0.5
        v = uniform(s)
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= v_r:
            return k
        if k < 0.0 or (us < 0.013 and v > us):
            continue
        lhs = math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b)
        if lhs <= -lam + k * loglam - math.lgamma(k + 1.0):
            return k
