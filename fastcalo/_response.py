"""The end of generation on the CPU, as one numba kernel per shower: the generator's stochastic
output layer, the softmax, the scaling to the energy model's total and the detector response.

:meth:`fastcalo.model.ShowerModel.cells` does the same with torch on dense standard normals, one
per cell for the layer and one for the response: the form training needs (differentiable) and the
reference of what generation is. On the CPU the engine runs the networks' matrix products with
torch and calls :func:`generate` on their outputs instead, which gives the same distribution of
showers for a fraction of the cost: every pass over a shower's 576 cells runs in cache, where
torch makes a pass over the whole block's memory for each operation.

- **counter-based random numbers** (:mod:`fastcalo._random`): each cell's numbers are a pure
  function of the block's key, the row and the cell, so the kernel draws only what it needs and
  the showers stay independent of the batch size and the number of threads. One 64-bit hash per
  cell gives two 32-bit numbers: the stochastic layer's normal (``ModelConfig.generator_noise =
  "cells"``; :func:`layer_normals` gives the same numbers) and the response's.
- **noise hits drawn sparsely.** Most cells of a shower hold almost nothing; such a cell reads
  above the threshold only when its noise is large (a cell of pure noise crosses 5 MeV with
  probability 0.6 %). A cell whose deposit d is below ``dim`` (a tenth of the threshold) crosses
  only if its standard normal g is above ``edge`` = (threshold - dim) / sigma(dim) (sigma grows
  with d and the threshold gap shrinks, so ``edge`` bounds every dim cell's own edge from below).
  So each dim cell takes its number as a uniform u: if u < Phi(edge), g is below ``edge`` and the
  cell reads zero (no normal is drawn); otherwise g is drawn from the normal's tail above
  ``edge``, which is g's exact conditional distribution. Cells at or above ``dim`` draw a full
  normal.
- **passes that vectorise.** Each normal is taken from the ziggurat's first proposal, branch-free
  (:func:`fastcalo._random.ziggurat32_first`); the 1.2 % of cells it does not settle (a proposal
  in a wedge or the tail, a dim cell that crosses) are finished in a second, rare pass
  (:func:`fastcalo._random.counter_normal32`). The softmax's exponentials are plain float32
  arithmetic (:func:`_exp32`, within 2 ulp, as torch's).
- **the checks of a broken model**: a shower whose outputs or total are not finite comes out all
  NaN, as from ``ShowerModel.cells``.

The showers differ from ``ShowerModel.cells`` on the same network outputs only through which
random numbers are drawn (and float32 rounding); ``tests/test_response.py`` checks that the layer
gives torch's deposits on the kernel's own normals and that the response agrees in distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from numpy.typing import NDArray

from ._random import counter_bits, counter_normal32, counter_tail_normal, ziggurat32_first

if TYPE_CHECKING:
    from .model import ShowerModel

__all__ = ("ResponseKernel", "generate", "layer_normals")

_U64 = nb.uint64
_U32 = nb.uint32
# counters: (row * 2048 + cell) * 64 + attempt: attempt 0 the cell's hash (the layer's normal, the
# response's number), 1-31 to finish the layer's normal, 32-63 the response's (_random.COUNTER_ATTEMPTS = 32)
_CELL_BITS = 11


@dataclass(frozen=True)
class ResponseKernel:
    """The constants of :func:`generate` for one model.

    Arguments:
        threshold: zero suppression, GeV (cells read >= threshold or 0).
        noise: electronic noise per cell, GeV (0 with ``cell_noise`` off).
        photoelectrons_per_gev: the photo-statistics' yield (0: no photo-statistics).
        cell_noise: whether a response (noise, photo-statistics) is applied at all; without it
            the kernel thresholds and rescales only.
        dim_fraction: deposits below this fraction of the threshold draw their noise sparsely
            (0: every cell draws a full normal, the dense form the tests compare with).
        stochastic: whether the generator ends in the stochastic output layer
            (``ModelConfig.generator_noise = "cells"``): :func:`generate` then takes the logits'
            location and scale (exp of the network's log scale, :meth:`fastcalo.model.ShowerModel.outputs`) and
            draws their standard normals.
        noise_max: the bound of the stochastic layer's noise term sigma g
            (``ModelConfig.generator_noise_max``; inf: unbounded).
    """

    threshold: float
    noise: float
    photoelectrons_per_gev: float
    cell_noise: bool
    dim_fraction: float = 0.1
    stochastic: bool = False
    noise_max: float = math.inf

    @classmethod
    def of(cls, model: ShowerModel) -> ResponseKernel:
        """The constants of a model (as :meth:`fastcalo.model.ShowerModel.cells` applies them)."""
        response, config = model.detector.response, model.config
        return cls(
            threshold=model.preprocessing.threshold,
            noise=response.noise if config.cell_noise else 0.0,
            photoelectrons_per_gev=response.photoelectrons_per_gev if config.cell_noise and config.photostatistics else 0.0,
            cell_noise=config.cell_noise,
            stochastic=config.generator_noise == "cells",
            noise_max=math.inf if config.generator_noise_max is None else config.generator_noise_max,
        )

    def sigma(self, deposit: float) -> float:
        """The response's standard deviation (GeV) for a deposit (GeV)."""
        photo = max(deposit, 0.0) / self.photoelectrons_per_gev if self.photoelectrons_per_gev > 0 else 0.0
        return math.sqrt(photo + self.noise**2)

    @property
    def dim(self) -> float:
        """Deposits below this (GeV) are dim: their noise is drawn sparsely (0 when the threshold
        is too low for that to pay: a dim cell must cross with probability below 5 %)."""
        dim = self.dim_fraction * self.threshold
        return dim if self.cell_noise and self.edge_of(dim) > 1.645 else 0.0

    def edge_of(self, deposit: float) -> float:
        """The smallest standard normal that lifts ``deposit`` to the threshold."""
        sigma = self.sigma(deposit)
        return math.inf if sigma == 0 else (self.threshold - deposit) / sigma


def _constants(kernel: ResponseKernel) -> tuple[bool, float, float, float, float, bool, float, float, np.uint64]:
    """The model's constants as the numba kernel takes them."""
    dim = kernel.dim
    edge = kernel.edge_of(dim) if dim > 0 else math.inf
    crossing = 0.5 * math.erfc(edge / math.sqrt(2.0)) if dim > 0 else 0.0  # 1 - Phi(edge)
    # a dim cell crosses iff its 32 random bits are >= below: probability 1 - below / 2**32
    below = np.uint64(min(round((1.0 - crossing) * 2.0**32), 2**32))
    inverse_yield = 1.0 / kernel.photoelectrons_per_gev if kernel.photoelectrons_per_gev > 0 else 0.0
    return (kernel.stochastic, float(np.float32(kernel.noise_max)), float(np.float32(kernel.threshold)), kernel.noise**2, inverse_yield, kernel.cell_noise, dim, edge, below)


def generate(
    outputs: NDArray[np.float32],
    total: NDArray[np.float32],
    out: NDArray[np.float32],
    rows: range,
    key: int,
    kernel: ResponseKernel,
    *,
    response: bool = True,
) -> None:
    """Showers from the generator's outputs: the stochastic output layer, the softmax, the
    scaling to the energy model's total and (with ``response``) the detector response, threshold
    and rescaling of rows ``rows``, written to ``out``.

    Arguments:
        outputs: (B, n) logits, or with ``kernel.stochastic`` (B, 2 n): the logits' location mu
            and scale sigma side by side (:meth:`fastcalo.model.ShowerModel.outputs`); float32,
            C-contiguous. A shower whose outputs hold a NaN or +inf, or whose logits are all
            -inf, comes out all NaN (a broken model), as from ``ShowerModel.cells``.
        total: (B,) the energy model's deposited energy, GeV (not finite: all NaN).
        out: (len(rows), n) float32, C-contiguous: the showers (without ``response``: the
            deposits softmax(mu + sigma g) * total), GeV.
        rows: the rows of ``outputs`` to process (their index in the block keys their random
            numbers).
        key: the block's 63-bit random key.
        kernel: the model's constants.
        response: apply the detector response (False: the deposits, for tests and diagnostics).

    The kernel runs without the GIL: the engine calls it from its block threads.
    """
    _generate(outputs, total, out, rows.start, rows.stop, rows.start, np.uint64(key), response, *_constants(kernel))


@nb.njit(cache=True)
def layer_normals(key: np.uint64, rows: int, n: int) -> NDArray[np.float32]:
    """The standard normals g (rows, n) float32 of the stochastic output layer that
    :func:`generate` draws for rows 0 .. rows - 1 of a block of key ``key``: the same numbers,
    for tests."""
    g = np.empty((rows, n), dtype=np.float32)
    for row in range(rows):
        for j in range(n):
            counter = _cell_counter(row, j)
            g[row, j] = np.float32(counter_normal32(_U32(counter_bits(key, counter) & _LOW32), key, counter + _U64(1)))
    return g


@nb.njit(cache=True, inline="always")
def _cell_counter(row: int, cell: int) -> np.uint64:
    """The first of a cell's 64 counters: (row * 2048 + cell) * 64."""
    counter: np.uint64 = ((_U64(row) << _U64(_CELL_BITS)) | _U64(cell)) << _U64(6)
    return counter


def _bitcast_float32(typingctx: Any, bits: Any) -> Any:
    """The typing and code of :func:`_float32_from_bits` (a numba intrinsic)."""
    width: int = getattr(bits, "bitwidth", 0)
    if not isinstance(bits, types.Integer) or width < 32:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        value = args[0] if width == 32 else builder.trunc(args[0], ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


#: The float32 whose bit pattern is the low 32 bits of an integer (a bitcast, as C's memcpy).
_float32_from_bits: Any = intrinsic(_bitcast_float32)


_F32 = np.float32


@nb.njit(cache=True, inline="always", error_model="numpy")
def _exp32(x: np.float32) -> np.float32:
    """exp(x) for x <= 0 in float32 within 2 ulp, in plain arithmetic that vectorises (numba's exp
    is a call per value without Intel's SVML): exp(x) = 2**k exp(r), k = round(x / ln 2),
    r = x - k ln 2 (ln 2 in two parts, Cody and Waite) in [-ln 2 / 2, ln 2 / 2], exp(r) by its
    Taylor polynomial to r**7 (truncation error below 2e-8), 2**k built in the exponent bits.
    Below -87 the result is exp(-87) (1.6e-38 of the largest cell: nothing the threshold keeps)."""
    x = max(x, _F32(-87.0))
    k = np.int32(x * _F32(1.4426950408889634) + _F32(128.5)) - np.int32(128)  # floor (the argument is > 0): round(x / ln 2)
    kf = _F32(k)
    r = x - kf * _F32(0.693359375) + kf * _F32(2.12194440e-4)
    p = _F32(1.0) + r * (_F32(1.0) + r * (_F32(0.5) + r * (_F32(1.0 / 6.0) + r * (_F32(1.0 / 24.0) + r * (_F32(1.0 / 120.0) + r * (_F32(1.0 / 720.0) + r * _F32(1.0 / 5040.0)))))))
    two_k: np.float32 = _float32_from_bits((k + np.int32(127)) << np.int32(23))
    return p * two_k


_LANES = 8
_LOW32 = _U64(0xFFFFFFFF)


@nb.njit(cache=True, nogil=True, inline="always")
def _total(cells: NDArray[np.float32], lanes: NDArray[np.float64]) -> float:
    """The sum of a row in float64, in ``_LANES`` interleaved partial sums (they vectorise, where one
    running sum waits on each addition)."""
    lanes[:] = 0.0
    n = cells.shape[0]
    whole = n - n % _LANES
    for j in range(0, whole, _LANES):
        for k in range(_LANES):
            lanes[k] += float(cells[j + k])
    total = 0.0
    for k in range(_LANES):
        total += lanes[k]
    for j in range(whole, n):
        total += float(cells[j])
    return total


@nb.njit(cache=True, nogil=True, inline="always")
def _flagged(flags: NDArray[np.uint8], words: NDArray[np.uint64], count: int, found: NDArray[np.int64]) -> int:
    """Write the indices of the non-zero ``flags`` (``count`` of them) to the start of ``found``
    and return how many, skipping zero 64-bit ``words`` (the same memory): a byte-by-byte scan
    with a branch per cell costs more than the fix-ups. ``found`` is allocated once per kernel
    call, not per row."""
    m = 0
    for w in range(words.shape[0] if count > 0 else 0):
        if words[w] != 0:
            for j in range(8 * w, 8 * w + 8):
                if flags[j]:
                    found[m] = j
                    m += 1
    return m


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _generate(
    outputs: NDArray[np.float32],
    total: NDArray[np.float32],
    out: NDArray[np.float32],
    start: int,
    stop: int,
    first: int,
    key: np.uint64,
    response: bool,
    stochastic: bool,
    noise_max: float,
    threshold: float,
    noise2: float,
    inverse_yield: float,
    cell_noise: bool,
    dim: float,
    edge: float,
    below: np.uint64,
) -> None:
    # Every pass but the two rare fix-ups is a plain loop over the row's cells, without
    # short-circuits or early exits, so that LLVM vectorises it (the 64-bit hashes, the
    # ziggurat's table lookups, the exponentials, the square roots); sums and maxima run in
    # _LANES interleaved partial results for the same reason.
    n = out.shape[1]
    thr = np.float32(threshold)
    bound = np.float32(noise_max)
    logit = np.empty(n, dtype=np.float32)
    high = np.empty(n, dtype=np.uint32)  # each cell's second 32 random bits: its response
    slow = np.zeros(-(-n // 8) * 8, dtype=np.uint8)  # whole 64-bit words, read 8 flags at a time
    words = slow.view(np.uint64)
    lanes = np.empty(_LANES)
    found = np.empty(slow.shape[0], dtype=np.int64)  # the indices of the flagged cells
    tops = np.empty(_LANES, dtype=np.float32)
    whole = n - n % _LANES
    for row in range(start, stop):
        e_tot = np.float64(total[row])
        o = outputs[row]
        dst = out[row - first]
        # pass 1: one 64-bit hash per cell; its low 32 bits the stochastic layer's normal
        # (ziggurat32_first: nearly always settled at once), its high 32 bits the response's
        broken = not math.isfinite(e_tot)
        unsettled = 0
        if stochastic:
            for j in range(n):
                h = counter_bits(key, _cell_counter(row, j))
                high[j] = _U32(h >> _U64(32))
                g = ziggurat32_first(_U32(h & _LOW32))
                settled = math.isfinite(g)
                slow[j] = not settled
                unsettled += not settled
                logit[j] = o[j] + min(o[n + j] * _F32(g if settled else 0.0), bound)
            for i in range(_flagged(slow, words, unsettled, found)):
                j = found[i]
                counter = _cell_counter(row, j)
                g = counter_normal32(_U32(counter_bits(key, counter) & _LOW32), key, counter + _U64(1))
                logit[j] = o[j] + min(o[n + j] * _F32(g), bound)
        else:
            for j in range(n):
                high[j] = _U32(counter_bits(key, _cell_counter(row, j)) >> _U64(32))
                logit[j] = o[j]
        # the largest logit (+inf, or all -inf: a broken model, as a NaN or +inf among the outputs)
        tops[:] = logit[0]
        for j in range(0, whole, _LANES):
            for k in range(_LANES):
                tops[k] = max(tops[k], logit[j + k])
        top = tops[0]
        for k in range(1, _LANES):
            top = max(top, tops[k])
        for j in range(whole, n):
            top = max(top, logit[j])
        bad = 0  # NaN or +inf among the outputs (a NaN logit comes from one)
        for j in range(o.shape[0]):
            bad += not o[j] < np.inf
        if broken or bad > 0 or not math.isfinite(top):
            dst[:] = np.nan
            continue
        # pass 2: the softmax's exponentials and their sum
        for j in range(n):
            logit[j] = _exp32(logit[j] - top)
        scale = e_tot / _total(logit, lanes)  # the largest term is 1: the sum is >= 1
        if not response:
            for j in range(n):
                dst[j] = _F32(logit[j] * scale)
            continue
        # pass 3, branch-free: the deposits and their response, every cell as if its first
        # random number settled it: a dim cell as not crossing, the rest by the ziggurat's first
        # proposal; ``slow`` marks where that guess is wrong (a dim cell that crosses, a proposal
        # in a wedge or the tail)
        unsettled = 0
        if cell_noise:
            for j in range(n):
                dep = _F32(logit[j] * scale)
                logit[j] = dep
                d = float(dep)
                b = high[j]
                g = ziggurat32_first(b)
                dimmed = d < dim
                settled = math.isfinite(g)
                wrong = (dimmed & (_U64(b) >= below)) | ((not dimmed) & (not settled))
                slow[j] = wrong
                unsettled += wrong
                g = g if settled else 0.0
                v = np.float32(max(d + math.sqrt(max(d, 0.0) * inverse_yield + noise2) * g, 0.0))
                dst[j] = np.float32(0.0) if dimmed | (v < thr) else v
            # pass 4: those cells, drawn in full
            for i in range(_flagged(slow, words, unsettled, found)):
                j = found[i]
                d = float(logit[j])
                counter = _cell_counter(row, j) + _U64(32)
                g = counter_tail_normal(key, counter, edge) if d < dim else counter_normal32(high[j], key, counter)
                v = np.float32(max(d + math.sqrt(max(d, 0.0) * inverse_yield + noise2) * g, 0.0))
                dst[j] = np.float32(0.0) if v < thr else v
        else:
            for j in range(n):
                v = _F32(logit[j] * scale)
                dst[j] = np.float32(0.0) if v < thr else v
        # pass 5: the rescaling to the energy model's total, and the second threshold
        rescale = e_tot / max(_total(dst, lanes), 1e-12)
        if cell_noise:
            for j in range(n):
                v = np.float32(dst[j] * rescale)
                dst[j] = np.float32(0.0) if v < thr else v
        else:
            for j in range(n):
                dst[j] = np.float32(dst[j] * rescale)
