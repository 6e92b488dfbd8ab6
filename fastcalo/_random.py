"""Random numbers for numba kernels, keyed so that results do not depend on how work is split.

Two kinds:

- streams (the reference MC): xoshiro256** seeded by splitmix64; each shower gets its own stream
  from (seed, global shower index, stream id) and draws from it in sequence
  (:func:`new_state`, :func:`uniform`, :func:`normal`, ...);
- counter-based draws (generation on the CPU): a value is a pure function of a 64-bit key and a
  counter, the splitmix64 output at that position (:func:`counter_uniform`,
  :func:`counter_normal32`, :func:`counter_tail_normal`), so a kernel draws only the numbers it
  needs, in any order, on any thread.

References:
    D. Blackman and S. Vigna, "Scrambled linear pseudorandom number generators",
    ACM TOMS 47 (2021) 36, arXiv:1805.01407 (xoshiro256** and splitmix64).
    G. L. Steele, D. Lea and C. H. Flood, "Fast splittable pseudorandom number generators",
    OOPSLA 2014, doi:10.1145/2660193.2660195 (splitmix64 as a counter-based generator).
    G. Marsaglia and W. W. Tsang, "The ziggurat method for generating random variables",
    J. Stat. Softw. 5 (2000) 8, doi:10.18637/jss.v005.i08.
    G. Marsaglia, "Generating a variable from the tail of the normal distribution",
    Technometrics 6 (1964) 101.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numpy.typing import NDArray

__all__ = (
    "COUNTER_ATTEMPTS",
    "counter_bits",
    "counter_normal32",
    "counter_tail_normal",
    "counter_uniform",
    "ziggurat32_first",
    "exponential",
    "new_state",
    "normal",
    "normal_pair",
    "poisson",
    "uniform",
)

_U64 = nb.uint64
_U32 = nb.uint32
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


# -- counter-based draws ---------------------------------------------------------------------------
#
# A draw is splitmix64's output number ``counter + 1`` of the stream seeded by ``key``:
# mix(key + (counter + 1) * golden). Callers build counters from the indices of what they draw
# for (row, cell, purpose) and leave the low 5 bits free: a draw that needs more than one number
# (a rejection sampler) takes them from ``counter + 1, counter + 2, ...``, at most
# COUNTER_ATTEMPTS of them.

#: Numbers a single counter-based draw may consume (the low bits of its counter).
COUNTER_ATTEMPTS = 32

_I64 = nb.int64
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


def _ziggurat(layers: int = 256) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Tables of the ziggurat for the standard normal (Marsaglia and Tsang 2000), ``layers``
    layers of equal area v under f(x) = exp(-x^2 / 2): the base (a rectangle of width v / f(r)
    whose part beyond r stands for the tail) and rectangles [0, x_(k-1)] x [f(x_(k-1)), f(x_k)].
    r is solved for here (the top layer must close at f = 1): 3.6542... for 256 layers.

    Returns:
        width[k] (a proposal is x = u * width[k]), inner[k] (below it x is accepted at once),
        x[k] and f(x[k]) (the layer edges, for the wedge test).
    """

    def f(x: float) -> float:
        return math.exp(-0.5 * x * x)

    def tail(r: float) -> float:
        return math.sqrt(math.pi / 2.0) * math.erfc(r / math.sqrt(2.0))

    def top(r: float) -> float:  # > 0 when r is too small (the layers overshoot f = 1)
        v, x = r * f(r) + tail(r), r
        for _ in range(1, layers - 1):
            y = f(x) + v / x
            if y >= 1.0:
                return 1.0
            x = math.sqrt(-2.0 * math.log(y))
        return f(x) + v / x - 1.0

    low, high = 2.0, 5.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if top(mid) > 0 else (low, mid)
    r = 0.5 * (low + high)
    v = r * f(r) + tail(r)
    x = np.empty(layers)
    x[0] = r
    for k in range(1, layers - 1):
        x[k] = math.sqrt(-2.0 * math.log(f(x[k - 1]) + v / x[k - 1]))
    x[-1] = 0.0
    width = np.concatenate([[v / f(r)], x[:-1]])
    inner = x.copy()
    return width, inner, x, np.exp(-0.5 * x * x)


@nb.njit(cache=True, inline="always")
def counter_bits(key: np.uint64, counter: np.uint64) -> np.uint64:
    """64 random bits, a pure function of ``key`` and ``counter``."""
    bits: np.uint64 = _splitmix(key + counter * _U64(0x9E3779B97F4A7C15))
    return bits


@nb.njit(cache=True, inline="always")
def counter_uniform(key: np.uint64, counter: np.uint64) -> float:
    """Uniform in (0, 1) (never 0 or 1), a pure function of ``key`` and ``counter``."""
    u: float = (_I64(counter_bits(key, counter) >> _U64(11)) + 0.5) * _TO_UNIT
    return u


# The ziggurat of the 32-bit draws: 256 layers (with 128, 2.8 % of first proposals do not settle the
# draw; with 256, 1.5 %), the layer in the low 8 bits, the sign in bit 8, a 23-bit uniform above.
_W32, _I32, _X32, _Y32 = _ziggurat()
_R32 = float(_X32[0])
_TO_UNIT23 = 1.0 / 8388608.0  # 2**-23


@nb.njit(cache=True, inline="always")
def ziggurat32_first(b: np.uint32) -> float:
    """A standard normal from 32 random bits ``b`` when its first ziggurat proposal settles it
    (the proposal inside its layer's rectangle: 98.5 % of draws), else inf (then
    :func:`counter_normal32` finishes the draw). Branch-free: it vectorises."""
    k = _I64(b & _U32(255))
    x: float = _I64(b >> _U32(9)) * _TO_UNIT23 * _W32[k]
    signed = -x if (b >> _U32(8)) & _U32(1) else x
    return signed if x < _I32[k] else math.inf


@nb.njit(cache=True, inline="always")
def counter_normal32(b: np.uint32, key: np.uint64, counter: np.uint64) -> float:
    """The standard normal whose first ziggurat proposal is the 32 random bits ``b``
    (:func:`ziggurat32_first`), finished where that does not settle it with numbers from
    ``counter .. counter + COUNTER_ATTEMPTS - 2`` (the wedge test, the tail, new proposals: the
    low 32 bits of each); 0.0 in the ~1e-50 case that they do not suffice. So a kernel can draw
    two numbers from one 64-bit hash and finish the rare unsettled ones apart."""
    a = _U64(0)
    while a < _U64(COUNTER_ATTEMPTS - 2):
        k = _I64(b & _U32(255))
        x: float = _I64(b >> _U32(9)) * _TO_UNIT23 * _W32[k]
        negative = (b >> _U32(8)) & _U32(1)
        if x < _I32[k]:
            return -x if negative else x
        if k == 0:  # beyond r: the tail, by Marsaglia's method
            while a < _U64(COUNTER_ATTEMPTS - 2):
                xt = -math.log(counter_uniform(key, counter + a)) / _R32
                accept = -2.0 * math.log(counter_uniform(key, counter + a + _U64(1))) > xt * xt
                a += _U64(2)
                if accept:
                    return -(_R32 + xt) if negative else _R32 + xt
            return 0.0
        # the wedge between the layer's inner edge and the curve
        y = _Y32[k - 1] + counter_uniform(key, counter + a) * (_Y32[k] - _Y32[k - 1])
        a += _U64(1)
        if y < math.exp(-0.5 * x * x):
            return -x if negative else x
        b = _U32(counter_bits(key, counter + a) & _U64(0xFFFFFFFF))
        a += _U64(1)
    return 0.0


@nb.njit(cache=True, inline="always")
def counter_tail_normal(key: np.uint64, counter: np.uint64, edge: float) -> float:
    """A standard normal conditioned on being >= ``edge`` (> 0), by Marsaglia's tail method
    (x = sqrt(edge^2 - 2 ln u1), kept if u2 x <= edge), from counters ``counter ..
    counter + COUNTER_ATTEMPTS - 1`` (``edge`` if they do not suffice)."""
    a = _U64(0)
    while a < _U64(COUNTER_ATTEMPTS - 1):
        x = math.sqrt(edge * edge - 2.0 * math.log(counter_uniform(key, counter + a)))
        keep = counter_uniform(key, counter + a + _U64(1)) * x <= edge
        a += _U64(2)
        if keep:
            return x
    return edge
