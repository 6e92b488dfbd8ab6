"""The detector response on generated deposits, as one numba kernel per shower (the CPU path).

:meth:`fastcalo.model.ShowerModel.cells` applies the response with torch on dense standard
normals, one per cell: the form training needs (differentiable) and the reference of what the
response is. On the CPU the engine calls :func:`respond` instead, which gives the same
distribution of showers for a fraction of the cost:

- **noise hits drawn sparsely.** Most cells of a shower hold almost nothing; such a cell reads
  above the threshold only when its noise is large (a cell of pure noise crosses 5 MeV with
  probability 0.6 %). A cell whose deposit d is below ``dim`` (a tenth of the threshold) crosses
  only if its standard normal g is above ``edge`` = (threshold - dim) / sigma(dim) (sigma grows
  with d and the threshold gap shrinks, so ``edge`` bounds every dim cell's own edge from below).
  So each dim cell draws one uniform u: if u < Phi(edge), g is below ``edge`` and the cell reads
  zero (no normal is drawn); otherwise g is drawn from the normal's tail above ``edge``, which is
  g's exact conditional distribution. Cells at or above ``dim`` draw a full normal.
- **counter-based random numbers** (:mod:`fastcalo._random`): each cell's numbers are a pure
  function of the block's key, the row and the cell, so a kernel draws only what it needs and
  the showers stay independent of the batch size and the number of threads.
- **one kernel per shower**, its 576 cells in cache: response, threshold, the rescaling to
  the energy model's total, the second threshold, and the check for a broken model (a shower
  whose deposit or total is not finite comes out all NaN, as in ``ShowerModel.cells``). A first,
  branch-free pass (it vectorises) takes every cell's first random number as settling it
  (:func:`fastcalo._random.ziggurat_first`); a second redraws in full the 1.5 % for which it
  does not (a dim cell that crosses, a ziggurat proposal in a wedge or the tail), with the numbers
  a one-pass draw would use, so the two passes give the one-pass kernel's showers bit for bit.

The showers differ from ``ShowerModel.cells`` on the same deposits only through which random
numbers are drawn; ``tests/test_response.py`` checks that the two agree in distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba as nb
import numpy as np
from numpy.typing import NDArray

from ._random import counter_bits, counter_normal, counter_tail_normal, ziggurat_first

if TYPE_CHECKING:
    from .model import ShowerModel

__all__ = ("ResponseKernel", "respond")

_U64 = nb.uint64
# counters: ((row * 2048 + cell) * 2 + purpose) * 32 + attempt (_random.COUNTER_ATTEMPTS = 32),
# purpose 0 for a cell's uniform or full normal, 1 for its tail normal
_CELL_BITS = 11


@dataclass(frozen=True)
class ResponseKernel:
    """The constants of :func:`respond` for one model.

    Arguments:
        threshold: zero suppression, GeV (cells read >= threshold or 0).
        noise: electronic noise per cell, GeV (0 with ``cell_noise`` off).
        photoelectrons_per_gev: the photo-statistics' yield (0: no photo-statistics).
        cell_noise: whether a response (noise, photo-statistics) is applied at all; without it
            the kernel thresholds and rescales only.
        dim_fraction: deposits below this fraction of the threshold draw their noise sparsely
            (0: every cell draws a full normal, the dense form the tests compare with).
    """

    threshold: float
    noise: float
    photoelectrons_per_gev: float
    cell_noise: bool
    dim_fraction: float = 0.1

    @classmethod
    def of(cls, model: ShowerModel) -> ResponseKernel:
        """The constants of a model (as :meth:`fastcalo.model.ShowerModel.cells` applies them)."""
        response, config = model.detector.response, model.config
        return cls(
            threshold=model.preprocessing.threshold,
            noise=response.noise if config.cell_noise else 0.0,
            photoelectrons_per_gev=response.photoelectrons_per_gev if config.cell_noise and config.photostatistics else 0.0,
            cell_noise=config.cell_noise,
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


def respond(
    deposit: NDArray[np.float32],
    total: NDArray[np.float32],
    out: NDArray[np.float32],
    rows: range,
    key: int,
    kernel: ResponseKernel,
) -> None:
    """The response, threshold and rescaling of rows ``rows`` of ``deposit``, written to ``out``.

    Arguments:
        deposit: (B, n) deposits before the response, GeV (one block of the engine).
        total: (B,) the energy model's deposited energy, GeV: each shower is rescaled to it.
        out: (len(rows), n) float32, C-contiguous: the showers, GeV.
        rows: the rows of ``deposit`` to process (their index in the block keys their random
            numbers).
        key: the block's 63-bit random key.
        kernel: the model's constants.

    The kernel runs without the GIL: the engine calls it from its block threads.
    """
    dim = kernel.dim
    edge = kernel.edge_of(dim) if dim > 0 else math.inf
    crossing = 0.5 * math.erfc(edge / math.sqrt(2.0)) if dim > 0 else 0.0  # 1 - Phi(edge)
    # a dim cell crosses iff its 53 random bits are >= below: probability 1 - below / 2**53
    below = np.uint64(min(round((1.0 - crossing) * 2.0**53), 2**53))
    inverse_yield = 1.0 / kernel.photoelectrons_per_gev if kernel.photoelectrons_per_gev > 0 else 0.0
    constants = (np.uint64(key), float(np.float32(kernel.threshold)), kernel.noise**2, inverse_yield, kernel.cell_noise, dim, edge, below)
    _respond(deposit, total, out, rows.start, rows.stop, rows.start, *constants)


_LANES = 8


@nb.njit(cache=True, nogil=True, inline="always")
def _total(cells: NDArray[np.float32], lanes: NDArray[np.float64]) -> float:
    """The sum of a row in float64, in ``_LANES`` interleaved partial sums (they vectorise, where one
    running sum waits on each addition). A sum of float32 values within a factor 2**20 of each
    other (the kept cells: from the threshold up) is exact in float64 in any order."""
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


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _respond(
    deposit: NDArray[np.float32],
    total: NDArray[np.float32],
    out: NDArray[np.float32],
    start: int,
    stop: int,
    first: int,
    key: np.uint64,
    threshold: float,
    noise2: float,
    inverse_yield: float,
    cell_noise: bool,
    dim: float,
    edge: float,
    below: np.uint64,
) -> None:
    # Each pass is a simple loop over the row's cells without short-circuits or early exits, so
    # that LLVM vectorises it (the 64-bit hashes, the ziggurat's table lookups, the square roots):
    # on an AVX-512 core this takes the kernel from about 7.8 to 4.8 us a shower, same showers.
    n = deposit.shape[1]
    thr = np.float32(threshold)
    slow = np.empty(n, dtype=np.uint8)
    lanes = np.empty(_LANES)
    for row in range(start, stop):
        src = deposit[row]
        dst = out[row - first]
        base = _U64(row) << _U64(_CELL_BITS)
        # pass 1, branch-free: every cell as if its first random number settled it, a dim cell as
        # not crossing, the rest by the ziggurat's first proposal; ``slow`` marks where that guess
        # is wrong: a dim cell that crosses, a proposal in a wedge or the tail
        if cell_noise:
            for j in range(n):
                d = float(src[j])
                h = counter_bits(key, ((base | _U64(j)) << _U64(1)) << _U64(5))  # purpose 0
                g = ziggurat_first(h)
                dimmed = d < dim
                settled = math.isfinite(g)
                slow[j] = (dimmed & (h >> _U64(11) >= below)) | ((not dimmed) & (not settled))
                g = g if settled else 0.0
                v = np.float32(max(d + math.sqrt(max(d, 0.0) * inverse_yield + noise2) * g, 0.0))
                dst[j] = np.float32(0.0) if dimmed | (v < thr) else v
        else:
            for j in range(n):
                v = src[j]
                dst[j] = np.float32(0.0) if v < thr else v
        # a shower whose deposit or total is not finite comes out all NaN (a broken model)
        finite = math.isfinite(np.float64(total[row]))
        for j in range(n):
            finite &= math.isfinite(src[j])
        if not finite:
            dst[:] = np.nan
            continue
        # pass 2: the cells pass 1 did not settle, drawn in full (the numbers of a one-pass draw)
        if cell_noise:
            for j in range(n):
                if slow[j]:
                    d = float(src[j])
                    counter = ((base | _U64(j)) << _U64(1)) << _U64(5)
                    g = counter_tail_normal(key, counter | _U64(32), edge) if d < dim else counter_normal(key, counter)
                    v = np.float32(max(d + math.sqrt(max(d, 0.0) * inverse_yield + noise2) * g, 0.0))
                    dst[j] = np.float32(0.0) if v < thr else v
        kept = _total(dst, lanes)
        scale = np.float64(total[row]) / max(kept, 1e-12)
        if cell_noise:
            for j in range(n):
                v = np.float32(dst[j] * scale)
                dst[j] = np.float32(0.0) if v < thr else v
        else:
            for j in range(n):
                dst[j] = np.float32(dst[j] * scale)
