"""The CPU generation kernel (fastcalo._response: stochastic output layer, softmax, response) and
its counter-based random numbers (fastcalo._random): the same showers as ShowerModel.cells, in
distribution (the response) and to float rounding on the kernel's own normals (the layer)."""

from __future__ import annotations

import dataclasses
import math

import numba as nb
import numpy as np
import pytest
import torch
from scipy import special, stats

from fastcalo._random import counter_bits, counter_normal32, counter_tail_normal
from fastcalo._response import ResponseKernel, generate, layer_normals
from fastcalo.model import DEFAULT_MODEL, ModelConfig, ShowerModel, load

N_DRAWS = 1_000_000


@nb.njit(cache=False)
def _normals(key: np.uint64, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        counter = np.uint64(i) << np.uint64(6)
        first = np.uint32(counter_bits(key, counter) & np.uint64(0xFFFFFFFF))
        out[i] = counter_normal32(first, key, counter + np.uint64(1))
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
    # beyond the ziggurat's base (r = 3.65): the tail method; P(|x| > 3.8) = 1.45e-4
    p = 2 * stats.norm.sf(3.8)
    assert abs((np.abs(x) > 3.8).mean() - p) < 5 * math.sqrt(p / N_DRAWS)
    # a wedge of the ziggurat (between the layers' inner edges and the curve) holds the right mass
    for low, high in ((0.3, 0.5), (1.2, 1.4), (2.5, 2.7)):
        p = stats.norm.cdf(high) - stats.norm.cdf(low)
        assert abs(((x > low) & (x < high)).mean() - p) < 5 * math.sqrt(p / N_DRAWS)
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


def respond(deposit: np.ndarray, total: np.ndarray, out: np.ndarray, rows: range, key: int, kernel: ResponseKernel) -> None:
    """The kernel's response on given deposits (N, 576), GeV: logits log(deposit) without the
    stochastic layer, so that the softmax times the total gives the deposits back."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logits = np.log(deposit).astype(np.float32)  # -inf for an empty cell
    generate(logits, total, out, rows, key, dataclasses.replace(kernel, stochastic=False))


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
    """No stochastic layer, no cell noise: softmax, threshold and rescaling only, the torch path's
    numbers to float rounding."""
    model = ShowerModel(ModelConfig(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,))).eval()
    _, _, _, c, e, _, u = deposits
    z = torch.randn((len(c), model.generator.n_inputs), generator=torch.Generator().manual_seed(1))
    outputs, total = model.outputs(c, e, z, u)
    fast = np.empty((len(c), model.detector.n_total_cells), dtype=np.float32)
    generate(outputs.numpy(), total.numpy(), fast, range(len(c)), 0, ResponseKernel.of(model))
    slow = model.generate(c, e, z, u).numpy()
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-7)


def test_stochastic_layer_gives_torchs_deposits_on_its_own_normals(deposits) -> None:  # type: ignore[no-untyped-def]
    """The kernel's stochastic output layer and softmax (response=False) against
    ShowerModel.deposit, torch's form, fed the normals the kernel drew (layer_normals): the same
    deposits to float rounding; and those normals are standard normal, cell by cell."""
    model, _, _, c, e, z, u = deposits
    latent = model.config.latent_dim
    outputs, total = model.outputs(c, e, z[:, :latent], u)
    n, cells = len(c), model.detector.n_total_cells
    fast = np.empty((n, cells), dtype=np.float32)
    generate(outputs.numpy(), total.numpy(), fast, range(n), 2026, ResponseKernel.of(model), response=False)
    g = layer_normals(np.uint64(2026), n, cells)
    slow, slow_total = model.deposit(c, e, torch.cat([z[:, :latent], torch.from_numpy(g)], dim=1), u)
    np.testing.assert_allclose(fast, slow.numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(fast.sum(axis=1), slow_total.numpy(), rtol=1e-5)
    assert abs(g.mean()) < 5 / math.sqrt(g.size) and abs(g.var() - 1) < 5 * math.sqrt(2 / g.size)
    assert stats.kstest(g.ravel(), "norm").statistic < 1.95 / math.sqrt(g.size)
    assert abs(np.corrcoef(g[:, 0], g[:, 1])[0, 1]) < 5 / math.sqrt(n)  # neighbouring cells independent
    other = np.empty_like(fast)
    generate(outputs.numpy(), total.numpy(), other, range(n), 2027, ResponseKernel.of(model), response=False)
    assert not np.array_equal(other, fast)  # another block key, other normals


def _bounded(model: ShowerModel, bound: float | None) -> ShowerModel:
    """The model with ``generator_noise_max = bound``, the same weights."""
    config = dataclasses.replace(model.config, generator_noise_max=bound)
    other = ShowerModel(config, preprocessing=model.preprocessing, detector=model.detector)
    other.load_state_dict(model.state_dict())
    return other.eval()


def test_the_bound_on_the_layers_noise_holds_in_the_kernel_and_in_torch(deposits) -> None:  # type: ignore[no-untyped-def]
    """generator_noise_max: the kernel and torch's form bound sigma g alike, on the same normals;
    the bound changes the cells whose noise term exceeds it and no others."""
    model, _, _, c, e, z, u = deposits
    latent, cells, n = model.config.latent_dim, model.detector.n_total_cells, len(c)
    g = layer_normals(np.uint64(2026), n, cells)
    outputs, total = model.outputs(c, e, z[:, :latent], u)
    sigma_g = outputs[:, cells:].numpy() * g
    bound = float(np.quantile(sigma_g, 0.999))  # binds on 0.1 % of the cells: about half the showers
    shapes = {}
    for value in (None, bound):
        bounded = _bounded(model, value)
        fast = np.empty((n, cells), dtype=np.float32)
        generate(outputs.numpy(), total.numpy(), fast, range(n), 2026, ResponseKernel.of(bounded), response=False)
        slow, _ = bounded.deposit(c, e, torch.cat([z[:, :latent], torch.from_numpy(g)], dim=1), u)
        np.testing.assert_allclose(fast, slow.numpy(), rtol=1e-5, atol=1e-8)
        shapes[value] = fast / fast.sum(axis=1, keepdims=True)
    # a bound cell's share falls against the rest of its shower by exp(sigma g - bound)
    hit = (sigma_g > bound).any(axis=1)
    assert 0.2 < hit.mean() < 0.8
    np.testing.assert_allclose(shapes[bound][~hit], shapes[None][~hit], rtol=1e-5, atol=1e-12)
    row = int(np.flatnonzero(hit)[0])
    over = sigma_g[row] > bound
    ratio = (shapes[bound][row] / shapes[None][row])
    expected = np.exp(bound - sigma_g[row][over]) * ratio[~over].mean()
    np.testing.assert_allclose(ratio[over], expected, rtol=1e-4)
    with pytest.raises(ValueError, match="generator_noise_max must be a number > 0"):
        dataclasses.replace(model.config, generator_noise_max=0.0)


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
    """A NaN or +inf among the outputs (location or scale), logits all -inf, or a total that is
    not finite: that shower all NaN, as ShowerModel.cells makes it; the others untouched."""
    model, deposit, total, c, e, z, u = deposits
    broken = deposit[:3].copy()
    broken[0, 7] = np.nan
    totals = total[:3].copy()
    totals[1] = np.inf
    out = np.empty_like(broken)
    respond(broken, totals, out, range(3), 1, ResponseKernel.of(model))
    assert np.isnan(out[0]).all() and np.isnan(out[1]).all()
    assert np.isfinite(out[2]).all() and out[2].sum() == pytest.approx(float(totals[2]), rel=1e-5)
    outputs, total = model.outputs(c[:6], e[:6], z[:6, : model.config.latent_dim], u[:6])
    outputs = outputs.numpy().copy()
    cells = model.detector.n_total_cells
    outputs[0, 5] = np.nan  # a location
    outputs[1, cells + 5] = np.nan  # a scale
    outputs[2, 9] = np.inf
    outputs[3, :cells] = -np.inf
    outputs[4, cells + 9] = np.inf  # an infinite scale: an infinite logit (or a NaN one, for g = 0)
    out = np.empty((6, cells), dtype=np.float32)
    generate(outputs, total.numpy(), out, range(6), 1, ResponseKernel.of(model))
    assert np.isnan(out[:5]).all(axis=1).all()
    assert np.isfinite(out[5]).all() and out[5].sum() == pytest.approx(float(total[5]), rel=1e-5)


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
    d *= 20.0 / float(deposit[0].astype(np.float64).sum())  # the softmax scales the deposits to the total
    assert d < kernel.dim
    p = 0.5 * special.erfc(kernel.edge_of(d) / math.sqrt(2))
    assert abs(hits - p) < 5 * math.sqrt(p / (2000 * 575))
