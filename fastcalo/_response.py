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
    n = deposit.shape[1]
    thr = np.float32(threshold)
    slow = np.empty(n, dtype=np.bool_)
    for row in range(start, stop):
        src = deposit[row]
        dst = out[row - first]
        base = _U64(row) << _U64(_CELL_BITS)
        # pass 1, branch-free (it vectorises): every cell as if its first random number settled
        # it, a dim cell as not crossing, the rest by the ziggurat's first proposal; ``slow``
        # marks where that guess is wrong: a dim cell that crosses, a proposal in a wedge or the tail
        for j in range(n):
            d = float(src[j])
            h = counter_bits(key, ((base | _U64(j)) << _U64(1)) << _U64(5))  # purpose 0
            g = ziggurat_first(h)
            dimmed = d < dim
            slow[j] = (dimmed and h >> _U64(11) >= below) or (not dimmed and not math.isfinite(g))
            if not math.isfinite(g):
                g = 0.0
            v = np.float32(max(d + math.sqrt(max(d, 0.0) * inverse_yield + noise2) * g, 0.0)) if cell_noise else np.float32(d)
            dst[j] = np.float32(0.0) if (cell_noise and dimmed) or v < thr else v
        # pass 2: those cells, drawn in full (the same numbers as a one-pass draw), and the sums
        check = 0.0
        kept = 0.0
        for j in range(n):
            d = float(src[j])
            check += d
            if cell_noise and slow[j]:
                counter = ((base | _U64(j)) << _U64(1)) << _U64(5)
                g = counter_tail_normal(key, counter | _U64(32), edge) if d < dim else counter_normal(key, counter)
                v = np.float32(max(d + math.sqrt(max(d, 0.0) * inverse_yield + noise2) * g, 0.0))
                dst[j] = np.float32(0.0) if v < thr else v
            kept += float(dst[j])
        e_tot = np.float64(total[row])
        if not (math.isfinite(check) and math.isfinite(e_tot)):
            dst[:] = np.nan
            continue
        scale = e_tot / max(kept, 1e-12)
        for j in range(n):
            v = np.float32(dst[j] * scale)
            dst[j] = np.float32(0.0) if cell_noise and v < thr else v
