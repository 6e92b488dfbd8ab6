"""The CPU response kernel (fastcalo._response) and its counter-based random numbers
(fastcalo._random): the same distribution of showers as ShowerModel.cells on dense normals."""

from __future__ import annotations

import dataclasses
import math

import numba as nb
import numpy as np
import pytest
import torch
from scipy import special, stats

from fastcalo._random import counter_normal, counter_tail_normal
from fastcalo._response import ResponseKernel, respond
from fastcalo.model import DEFAULT_MODEL, ModelConfig, ShowerModel, load

N_DRAWS = 1_000_000


@nb.njit(cache=False)
def _normals(key: np.uint64, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        out[i] = counter_normal(key, np.uint64(i) << np.uint64(5))
    return out


@nb.njit(cache=False)
def _tail_normals(key: np.uint64, n: int, edge: float) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        out[i] = counter_tail_normal(key, np.uint64(i) << np.uint64(5), edge)
    return out


def test_counter_normals_are_standard_normal() -> None:
    x = _normals(np.uint64(20261130), N_DRAWS)
    limit = 1.95 / math.sqrt(N_DRAWS)  # Kolmogorov-Smirnov at the 0.1 % level
    assert stats.kstest(x, "norm").statistic < limit
    assert abs(x.mean()) < 5 / math.sqrt(N_DRAWS)
    assert abs(x.var() - 1) < 5 * math.sqrt(2 / N_DRAWS)
    # beyond the ziggurat's base (r = 3.44): the tail method; P(|x| > 3.5) = 4.65e-4
    p = 2 * stats.norm.sf(3.5)
    assert abs((np.abs(x) > 3.5).mean() - p) < 5 * math.sqrt(p / N_DRAWS)
    # a pure function of (key, counter), and other keys give other numbers
    assert np.array_equal(x[:1000], _normals(np.uint64(20261130), 1000))
    assert abs(np.corrcoef(x[:100_000], _normals(np.uint64(1), 100_000))[0, 1]) < 0.02


def test_counter_tail_normals_follow_the_normal_beyond_the_edge() -> None:
    edge = 2.18
    x = _tail_normals(np.uint64(7), 200_000, edge)
    assert x.min() >= edge

    def cdf(v: np.ndarray) -> np.ndarray:
        return 1 - stats.norm.sf(v) / stats.norm.sf(edge)

    assert stats.kstest(x, cdf).statistic < 1.95 / math.sqrt(len(x))


@pytest.fixture(scope="module")
def deposits() -> tuple[ShowerModel, np.ndarray, np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1024 deposits of the shipped model (15 GeV photons, eta 0.4), with their inputs."""
    model = load(DEFAULT_MODEL).eval()
    n = 1024
    rng = np.random.default_rng(3)
    c = model.conditions.encode(
        energy=np.full(n, 15.0), eta=np.full(n, 0.4), pdgid=np.full(n, 22),
        impact_x=rng.uniform(0, 10, n), impact_y=rng.uniform(0, 10, n),
    )  # fmt: skip
    e = torch.full((n,), 15.0)
    gen = torch.Generator().manual_seed(5)
    z = torch.randn((n, model.generator.n_inputs), generator=gen)
    u = torch.rand((n,), generator=gen)
    deposit, total = model.deposit(c, e, z, u)
    return model, deposit.numpy().copy(), total.numpy().copy(), c, e, z, u


def _kernel_showers(model: ShowerModel, deposit: np.ndarray, total: np.ndarray, keys: range, kernel: ResponseKernel | None = None) -> np.ndarray:
    kernel = kernel or ResponseKernel.of(model)
    out = np.empty((len(keys), *deposit.shape), dtype=np.float32)
    for i, key in enumerate(keys):
        respond(deposit, total, out[i], range(len(deposit)), key, kernel)
    return out


def _torch_showers(model: ShowerModel, c: torch.Tensor, e: torch.Tensor, z: torch.Tensor, u: torch.Tensor, repeats: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(11)
    noise = [torch.randn((len(c), model.detector.n_total_cells), generator=gen) for _ in range(repeats)]
    return np.stack([model.generate(c, e, z, u, x).numpy() for x in noise])


@pytest.mark.parametrize("dim_fraction", [0.1, 0.0], ids=["sparse", "dense"])
def test_kernel_gives_the_response_of_shower_model_cells(deposits, dim_fraction: float) -> None:  # type: ignore[no-untyped-def]
    """Same deposits, 10 response draws each: the kernel (noise hits drawn sparsely, or every
    cell's normal with dim_fraction 0) against ShowerModel.generate on dense torch normals: the
    probability that a cell reads above threshold and the mean and spread of what it reads, in
    bins of its deposit, and the showers' totals."""
    model, deposit, total, c, e, z, u = deposits
    kernel = dataclasses.replace(ResponseKernel.of(model), dim_fraction=dim_fraction)
    fast = _kernel_showers(model, deposit, total, range(100, 110), kernel)
    slow = _torch_showers(model, c, e, z, u, 10)
    threshold = model.preprocessing.threshold
    # every shower sums to the energy model's total, less the cells that the rescaling pushed
    # below the threshold (the second cut: a few threshold-sized cells at most), alike in both
    lost_fast, lost_slow = total - fast.sum(axis=2), total - slow.sum(axis=2)
    for lost in (lost_fast, lost_slow):
        assert lost.min() > -1e-5 * total.max() and lost.max() < 10 * threshold
    error = math.sqrt((lost_fast.var() + lost_slow.var()) / lost_fast.size)
    assert abs(lost_fast.mean() - lost_slow.mean()) < 5 * error + 1e-6
    cells = np.broadcast_to(deposit, fast.shape)
    edges = [0.0, 2e-4, 5e-4, 2e-3, 4e-3, 6e-3, 2e-2, 1e3]  # GeV
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        where = (cells >= low) & (cells < high)
        count = int(where.sum())
        hits_fast, hits_slow = fast[where] > 0, slow[where] > 0
        p = 0.5 * (hits_fast.mean() + hits_slow.mean())
        sigma = math.sqrt(max(p * (1 - p), 1e-12) * 2 / count)
        assert abs(hits_fast.mean() - hits_slow.mean()) < 5 * sigma + 1e-6, (low, high, hits_fast.mean(), hits_slow.mean())
        if hits_fast.sum() > 100:
            a, b = fast[where][hits_fast], slow[where][hits_slow]
            assert abs(a.mean() - b.mean()) < 5 * math.sqrt((a.var() / len(a) + b.var() / len(b))) + 1e-4 * high
            assert a.min() >= np.float32(threshold) and b.min() >= np.float32(threshold)
            assert abs(a.std() / b.std() - 1) < 0.05
    n_fast, n_slow = (fast > 0).sum(axis=2).mean(), (slow > 0).sum(axis=2).mean()
    assert abs(n_fast - n_slow) < 0.01 * n_slow


def test_kernel_without_noise_is_shower_model_cells(deposits) -> None:  # type: ignore[no-untyped-def]
    """No cell noise: threshold and rescaling only, the torch path's numbers to float rounding."""
    model = ShowerModel(ModelConfig(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,))).eval()
    _, _, _, c, e, _, u = deposits
    z = torch.randn((len(c), model.generator.n_inputs), generator=torch.Generator().manual_seed(1))
    deposit, total = model.deposit(c, e, z, u)
    fast = _kernel_showers(model, deposit.numpy(), total.numpy(), range(1))[0]
    slow = model.generate(c, e, z, u).numpy()
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-7)


def test_kernel_rows_do_not_depend_on_what_else_is_processed(deposits) -> None:  # type: ignore[no-untyped-def]
    model, deposit, total, *_ = deposits
    kernel = ResponseKernel.of(model)
    whole = np.empty_like(deposit)
    respond(deposit, total, whole, range(len(deposit)), 42, kernel)
    part = np.empty((10, deposit.shape[1]), dtype=np.float32)
    respond(deposit, total, part, range(500, 510), 42, kernel)
    assert np.array_equal(part, whole[500:510])
    other = np.empty_like(part)
    respond(deposit, total, other, range(500, 510), 43, kernel)
    assert not np.array_equal(other, part)


def test_kernel_marks_broken_showers_as_nan(deposits) -> None:  # type: ignore[no-untyped-def]
    model, deposit, total, *_ = deposits
    broken = deposit[:3].copy()
    broken[0, 7] = np.nan
    totals = total[:3].copy()
    totals[1] = np.inf
    out = np.empty_like(broken)
    respond(broken, totals, out, range(3), 1, ResponseKernel.of(model))
    assert np.isnan(out[0]).all() and np.isnan(out[1]).all()
    assert np.isfinite(out[2]).all() and out[2].sum() == pytest.approx(float(totals[2]), rel=1e-5)


def test_dim_cells_cross_with_the_probability_of_the_normal_tail() -> None:
    """The sparse draw's bound: a cell of deposit d < dim crosses with probability
    P(g >= (threshold - d) / sigma(d)); on a block of cells of one dim deposit, the hit rate is that."""
    model = ShowerModel(ModelConfig(cell_noise=True, photostatistics=True))
    kernel = ResponseKernel.of(model)
    assert 0 < kernel.dim < kernel.threshold
    d = 0.5 * kernel.dim
    deposit = np.full((2000, 576), d, dtype=np.float32)
    deposit[:, 0] = 10.0  # one bright cell, so that every shower has a total to rescale to
    out = np.empty_like(deposit)
    respond(deposit, np.full(2000, 20.0, dtype=np.float32), out, range(2000), 9, kernel)  # scale > 1: no second cut
    hits = (out[:, 1:] > 0).mean()
    p = 0.5 * special.erfc(kernel.edge_of(d) / math.sqrt(2))
    assert abs(hits - p) < 5 * math.sqrt(p / (2000 * 575))
