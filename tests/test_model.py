"""The shower model: shapes, physics constraints of the output, gradients, energy model, save/load."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fastcalo.detector import Detector, Response
from fastcalo.model import Conditions, ModelConfig, ModelFileError, Preprocessing, ShowerModel, load, save
from fastcalo.train import cosine_lr

CONFIGS = {
    "mlp": ModelConfig(latent_dim=8, generator_hidden=(32, 64), critic_hidden=(64, 32), energy_hidden=(16,), n_quantiles=20),
    "conv": ModelConfig(kind="conv", latent_dim=8, conv_channels=8, critic_hidden=(16,), energy_hidden=(16,), n_quantiles=20),
    "mlp-cell-noise": ModelConfig(latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), n_quantiles=20, cell_noise=True),
    "mlp-critic-features": ModelConfig(latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), n_quantiles=20, critic_features=True),
    "mlp-critic-profiles": ModelConfig(
        latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), n_quantiles=20,
        cell_noise=True, photostatistics=True, generator_noise="cells", critic_profiles=True,
    ),  # fmt: skip
    "mlp-energy-loss": ModelConfig(latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), energy="loss"),
    "mlp-hidden-noise": ModelConfig(
        latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), n_quantiles=20,
        cell_noise=True, photostatistics=True, generator_noise="hidden", critic_minibatch_std=5,
    ),  # fmt: skip
    "mlp-sectors": ModelConfig(
        latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), n_quantiles=20,
        generator_noise="cells", critic_minibatch_std=5, critic_minibatch_regions="sectors",
    ),  # fmt: skip
    "mlp-critic-conv": ModelConfig(
        latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), n_quantiles=20,
        generator_noise="cells", critic_minibatch_std=5, critic_conv=3,
    ),  # fmt: skip
    "mlp-cell-sigma": ModelConfig(
        latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), n_quantiles=20, generator_noise="cells"
    ),
    "mlp-cell-sigma-bounded": ModelConfig(
        latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), energy_hidden=(16,), n_quantiles=20,
        cell_noise=True, photostatistics=True, generator_noise="cells", generator_noise_max=0.02,
    ),  # fmt: skip
}
PARTICLES = {
    "energy": [1.0, 3.0, 10.0, 50.0, 100.0],
    "eta": [0.0, -1.2, 0.4, 1.4, 0.9],
    "pdgid": [22, 11, -11, 22, 11],
    "impact_x": [0.5, 5.0, 9.5, 2.0, 7.0],
    "impact_y": [5.0, 1.0, 8.0, 9.9, 0.1],
}


@pytest.fixture(params=sorted(CONFIGS))
def model(request: pytest.FixtureRequest) -> ShowerModel:
    return ShowerModel(CONFIGS[request.param])


def test_sample_shapes_and_physics(model: ShowerModel) -> None:
    images = model.sample(**PARTICLES, seed=3)
    assert images.shape == (5, 24, 24) and images.dtype == np.float32
    assert np.all(images >= 0)
    nonzero = images[images > 0]
    assert nonzero.min() >= model.preprocessing.threshold  # zero suppression: no cell below threshold
    # the cells sum to the energy model's E_dep = r E_inc (rescaled after suppression)
    c = model.conditions.encode(**PARTICLES)
    g = torch.Generator().manual_seed(3)
    z, u = torch.randn((5, model.generator.n_inputs), generator=g), torch.rand(5, generator=g)
    noise = torch.randn((5, model.detector.n_total_cells), generator=g) if model.config.cell_noise else None
    model.eval()
    cells = model.generate(c, torch.tensor(PARTICLES["energy"], dtype=torch.float32), z, u, noise)
    r = model.preprocessing.decode_r(model.energy.sample(c, u)).clamp_min(0)
    sums = cells.sum(dim=1).numpy()
    expected = (r * torch.tensor(PARTICLES["energy"])).detach().numpy()
    populated = sums > 0
    # exact without cell noise; with it, cells rescaled below threshold are dropped (a few MeV)
    np.testing.assert_allclose(sums[populated], expected[populated], rtol=1e-2 if model.config.cell_noise else 1e-4)


def test_same_seed_same_showers_other_seed_different(model: ShowerModel) -> None:
    a, b, c = (model.sample(**PARTICLES, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_every_parameter_gets_a_gradient(model: ShowerModel) -> None:
    model.train()
    c = model.conditions.encode(**PARTICLES)
    e = torch.tensor(PARTICLES["energy"])
    if model.config.energy == "model":  # the energy model trains on its own loss; the GAN sees real r
        r_code = torch.randn(5)
        energy_loss = model.energy.loss(c, r_code)
    else:  # the learned total: trained through the critic with the generator
        r_code = model.energy.sample(c, torch.rand(5))
        energy_loss = torch.zeros(())
    z = torch.randn(5, model.generator.n_inputs)
    noise = torch.randn(5, 576) if model.config.cell_noise else None
    fake = model.preprocessing.to_network(model.cells(z, c, r_code, e, threshold="soft", noise=noise))
    loss = model.critic(fake, c, r_code).sum() + energy_loss
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_straight_through_threshold_gives_generation_cells_with_a_gradient_at_the_threshold(model: ShowerModel) -> None:
    """The critic sees in training, with ``train.threshold = "straight-through"``, the cells that
    generation makes (a soft threshold gives other values), and the generator still gets the soft
    step's gradient, also from cells that the hard step zeroes."""
    c = model.conditions.encode(**PARTICLES)
    e = torch.tensor(PARTICLES["energy"])
    g = torch.Generator().manual_seed(5)
    z, r_code = torch.randn((5, model.generator.n_inputs), generator=g), torch.randn(5, generator=g)
    noise = torch.randn((5, model.detector.n_total_cells), generator=g) if model.config.cell_noise else None
    with torch.no_grad():
        hard = model.cells(z, c, r_code, e, threshold="hard", noise=noise)
        soft = model.cells(z, c, r_code, e, threshold="soft", noise=noise)
    model.zero_grad()
    through = model.cells(z, c, r_code, e, threshold="straight-through", noise=noise)
    torch.testing.assert_close(through.detach(), hard, rtol=1e-6, atol=0.0)
    threshold = model.preprocessing.threshold
    assert bool(((hard == 0) | (hard >= threshold)).all())
    assert bool(((soft > 0) & (soft < threshold)).any())  # the soft step's values no real shower has
    (through * torch.rand(through.shape, generator=g)).sum().backward()  # (the plain sum is E_dep: no gradient to the shape)
    assert all(p.grad is not None and bool(torch.any(p.grad != 0)) for p in model.generator.parameters())
    with pytest.raises(ValueError, match=r"threshold must be one of \('hard', 'soft', 'straight-through'\), got 'sharp'"):
        model.preprocessing.zero_suppress(hard, threshold="sharp")


def test_conditions_encoding_and_unknown_particle() -> None:
    enc = Conditions()
    row = enc.encode(energy=[10.0], eta=[-0.75], pdgid=[11], impact_x=[2.5], impact_y=[7.5])[0].tolist()
    assert row[0] == pytest.approx(2 * np.log(10) / np.log(100) - 1)
    assert row[1:] == pytest.approx([-0.5, 0.0, 1.0, 0.0, -0.5, 0.5])
    with pytest.raises(ValueError, match=r"pdgid\(s\) \[211\] not among the model's particles"):
        enc.encode(energy=[10.0], eta=[0.0], pdgid=[211], impact_x=[5.0], impact_y=[5.0])


def test_preprocessing_is_invertible() -> None:
    pre = Preprocessing.for_detector(Detector())
    cells = torch.tensor([0.0, 0.005, 0.1, 3.0, 100.0])
    x = pre.to_network(cells)
    assert x[0] == 0 and x[-1] == pytest.approx(1.0)
    torch.testing.assert_close(pre.from_network(x), cells, rtol=1e-5, atol=1e-7)
    r = torch.tensor([0.9, 0.95, 1.0])
    torch.testing.assert_close(pre.decode_r(pre.encode_r(r)), r)


def test_energy_model_learns_a_conditional_spread() -> None:
    """Pinball-loss quantiles reproduce the mean and the width of a skewed conditional r."""
    torch.manual_seed(0)
    model = ShowerModel(ModelConfig(energy_hidden=(32,), n_quantiles=20))
    g = torch.Generator().manual_seed(5)

    def draw(code: torch.Tensor) -> torch.Tensor:  # wider at low energy, skewed to low r like leakage
        width = 0.5 + 0.5 * (1 - code)
        return -width * (torch.distributions.Gamma(4.0, 1.0).sample(code.shape) - 4.0) / 2.0

    n = 20_000
    c = torch.zeros(n, model.conditions.width)
    c[:, 0] = torch.rand(n, generator=g) * 2 - 1  # the log-energy column
    r_code = draw(c[:, 0])
    model.energy.start_from(r_code)
    opt = torch.optim.Adam(model.energy.parameters(), lr=3e-3)
    for step in range(1500):
        opt.param_groups[0]["lr"] = cosine_lr(3e-3, step, 1500)
        index = torch.randint(n, (1024,), generator=g)
        loss = model.energy.loss(c[index], r_code[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for code in (-0.8, 0.8):
            cond = torch.zeros(40_000, model.conditions.width)
            cond[:, 0] = code
            drawn = model.energy.sample(cond, torch.rand(40_000, generator=g))
            truth = draw(torch.full((200_000,), code))
            assert float(drawn.mean()) == pytest.approx(float(truth.mean()), abs=0.08 * float(truth.std()))
            assert float(drawn.std()) == pytest.approx(float(truth.std()), rel=0.08)


def test_save_replaces_only_a_model_directory_of_fastcalo(tmp_path: Path) -> None:
    model = ShowerModel(ModelConfig(latent_dim=4, generator_hidden=(8,), critic_hidden=(8,), energy_hidden=(4,), n_quantiles=9))
    saved = save(model, tmp_path / "m")
    assert save(model, saved, overwrite=True) == saved  # its own model: replaced
    (tmp_path / "empty").mkdir()
    save(model, tmp_path / "empty", overwrite=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.json").write_text('{"format": "something else"}')
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "link").symlink_to(saved)
    refused = {
        mine: 'it has no model.json of "format": "fastcalo.model"',
        tmp_path: "it holds [",
        tmp_path / "notes.txt": "it is not a directory",
        tmp_path / "link": "it is a symbolic link",
    }
    for target, why in refused.items():
        with pytest.raises(FileExistsError, match=re.escape(f"{target} already exists and is not a model directory of fastcalo ({why}")):
            save(model, target, overwrite=True)
    assert (mine / "model.json").read_text() == '{"format": "something else"}' and (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in saved.iterdir()) == ["model.json", "model.safetensors"] and (tmp_path / "link").is_symlink()


def test_save_load_reproduces_outputs_exactly(model: ShowerModel, tmp_path) -> None:
    path = save(model, tmp_path / "m", training={"note": "test"})
    again = load(path)
    np.testing.assert_array_equal(model.sample(**PARTICLES, seed=9), again.sample(**PARTICLES, seed=9))
    meta = json.loads((path / "model.json").read_text())
    assert meta["config"]["kind"] == model.config.kind and meta["training"] == {"note": "test"}
    assert len(meta["weights_sha256"]) == 64 and meta["fastcalo_version"]
    with pytest.raises(FileExistsError, match="already exists"):
        save(model, path)


def test_corrupted_or_mismatched_model_files(tmp_path) -> None:
    model = ShowerModel(CONFIGS["mlp"])
    path = save(model, tmp_path / "m")
    weights = path / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-10] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="sha256 .* does not match"):
        load(path)

    path = save(model, tmp_path / "m2")
    with pytest.raises(ModelFileError, match="different detector"):
        load(path, detector=Detector(response=Response(threshold=0.01)))

    meta = json.loads((path / "model.json").read_text())
    meta["config"]["generator_hidden"] = [16, 64]
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="do not match the architecture"):
        load(path)

    meta["config"]["bogus"] = 1
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"unknown key\(s\) \['bogus'\]"):
        load(path)

    (path / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load(path)

    with pytest.raises(ModelFileError, match="needs model.json and model.safetensors; found no such directory"):
        load(tmp_path / "nowhere")


def test_bad_model_config() -> None:
    with pytest.raises(ValueError, match="kind must be 'mlp' or 'conv', got 'gru'"):
        ModelConfig(kind="gru")
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1, got 0"):
        ModelConfig(latent_dim=0)


@pytest.mark.parametrize("tail", [0.0, 1e-3])
def test_energy_sampling_from_exact_quantiles_reproduces_the_distribution(tail: float) -> None:
    """Given the exact quantiles of a skewed distribution, interpolation plus exponential tails
    reproduce its mean and standard deviation (for uniform and for logit-spaced levels)."""
    from scipy import stats

    energy = ShowerModel(ModelConfig(n_quantiles=50, quantile_tail=tail)).energy
    gamma = stats.gamma(4.0)
    exact = -(gamma.ppf(1.0 - energy.levels.double().numpy()) - 4.0) / 2.0  # r = -(G - 4) / 2: a low tail
    # the quantiles as offset + slope * shape: offset 0, slope 1, shape the exact quantiles
    energy._affine = lambda c: (  # type: ignore[method-assign]
        torch.zeros((c.shape[0], 1)),
        torch.ones((c.shape[0], 1)),
        torch.as_tensor(exact, dtype=torch.float32).expand(c.shape[0], -1),
    )
    drawn = energy.sample(torch.zeros(400_000, 7), torch.rand(400_000, generator=torch.Generator().manual_seed(2)))
    assert float(drawn.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(drawn.std()) == pytest.approx(1.0, rel=0.02)  # Gamma(4) has sigma 2, halved
    assert float(drawn.min()) < -(gamma.ppf(1 - 1e-4) - 4.0) / 2.0 * 0.95  # the tail reaches beyond the outer level


def test_quantile_levels() -> None:
    uniform = ShowerModel(ModelConfig(n_quantiles=4)).energy.levels.tolist()
    assert uniform == [0.125, 0.375, 0.625, 0.875]
    logit = ShowerModel(ModelConfig(n_quantiles=5, quantile_tail=1e-3)).energy.levels
    assert float(logit[0]) == pytest.approx(1e-3) and float(logit[-1]) == pytest.approx(1 - 1e-3)
    assert float(logit[2]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"quantile_tail must be in \[0, 0.5 / n_quantiles\)"):
        ModelConfig(n_quantiles=100, quantile_tail=0.01)


def test_cell_noise_makes_isolated_hits_at_the_rate_the_detector_implies() -> None:
    """With cell_noise, cells far from any shower fire when the 2 MeV Gaussian noise passes the
    5 MeV threshold: probability 1 - Phi(2.5) = 0.0062 per cell."""
    from scipy import stats

    model = ShowerModel(CONFIGS["mlp-cell-noise"])
    with torch.no_grad():  # a narrow shower in the central cells, nothing beyond
        model.generator.net[-1].bias.fill_(-30.0)
        model.generator.net[-1].bias.view(24, 24)[11:13, 11:13] = 10.0
    n = 3000
    images = model.sample(energy=np.full(n, 5.0), eta=np.zeros(n), pdgid=np.full(n, 22), impact_x=np.full(n, 5.0), impact_y=np.full(n, 5.0), seed=4)
    far = np.ones((24, 24), dtype=bool)
    far[6:18, 6:18] = False
    rate = np.count_nonzero(images[:, far]) / (n * far.sum())
    expected = stats.norm.sf(model.detector.response.threshold / model.detector.response.noise)
    assert rate == pytest.approx(expected, rel=0.1)
    assert images[images > 0].min() >= model.detector.response.threshold
    with pytest.raises(ValueError, match="pass noise"):
        model.generate(torch.zeros(1, 7), torch.ones(1), torch.zeros(1, 8), torch.full((1,), 0.5))


def test_the_shipped_default_model_loads_and_gets_the_response_right() -> None:
    """The packaged model passes its own checks (sha256, detector, architecture) and its mean
    response for 10 GeV photons is the MC's (0.973, validation/default) within 1 %."""
    from fastcalo.model import DEFAULT_MODEL

    model = load(DEFAULT_MODEL)
    assert model.metadata["training"]["train"]["loss"] == "wgan-gp"  # type: ignore[attr-defined]
    n = 4000
    images = model.sample(energy=np.full(n, 10.0), eta=np.random.uniform(-1.5, 1.5, n), pdgid=np.full(n, 22),
                          impact_x=np.random.uniform(0, 10, n), impact_y=np.random.uniform(0, 10, n), seed=5)
    assert images.sum(axis=(1, 2)).mean() / 10.0 == pytest.approx(0.9733, rel=0.01)


def test_critic_features_are_the_validation_features() -> None:
    """The critic's shower features (critic_features) equal fastcalo.validation's for MC showers:
    centroids and widths (in cells here, mm there) and the brightest cell's fraction."""
    from fastcalo import mc
    from fastcalo.validation.observables import features

    model = ShowerModel(ModelConfig(latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), critic_features=True))
    showers = mc.simulate(np.array([2.0, 20.0, 50.0]), np.array([0.0, 0.7, -1.2]), "photon", seed=4).showers
    x = model.preprocessing.to_network(torch.as_tensor(showers.images.reshape(3, -1), dtype=torch.float32))
    got = model.critic.shower_features(x).double().numpy()
    ref = features(showers)
    size, centre = model.detector.cell_size, 0.5 * (model.detector.cell_edges[0] + model.detector.cell_edges[-1])
    np.testing.assert_allclose(got[:, 0], (ref["centroid_x"] - centre) / size, atol=2e-3)
    np.testing.assert_allclose(got[:, 1], (ref["centroid_y"] - centre) / size, atol=2e-3)
    np.testing.assert_allclose(got[:, 2], ref["width_x"] / size, rtol=2e-3)
    np.testing.assert_allclose(got[:, 3], ref["width_y"] / size, rtol=2e-3)
    np.testing.assert_allclose(got[:, 4], showers.images.reshape(3, -1).max(1) / showers.images.sum(axis=(1, 2)), rtol=2e-3)


def test_critic_profiles_are_the_showers_profiles_rings_and_hits() -> None:
    """The critic's per-shower statistics (critic_profiles) computed by hand from MC showers:
    the lateral profiles, each ring's fraction of the total and its fraction of cells above
    threshold (a sigmoid step, so 0 or 1 for the MC's cells to within 1 %)."""
    from fastcalo import mc

    model = ShowerModel(ModelConfig(latent_dim=8, generator_hidden=(32,), critic_hidden=(32,), critic_profiles=True))
    showers = mc.simulate(np.array([2.0, 20.0, 50.0]), np.array([0.0, 0.7, -1.2]), "photon", seed=4).showers
    images = showers.images.astype(np.float64)
    x = model.preprocessing.to_network(torch.as_tensor(images.reshape(3, -1), dtype=torch.float32))
    got = model.critic.profiles(x).double().numpy()
    side = model.detector.n_cells
    assert got.shape == (3, 2 * side + 2 * (side // 2 + 1))
    total = images.sum(axis=(1, 2))
    np.testing.assert_allclose(got[:, :side] ** 2 - 1e-4, images.sum(axis=2) / total[:, None], atol=2e-5)
    np.testing.assert_allclose(got[:, side : 2 * side] ** 2 - 1e-4, images.sum(axis=1) / total[:, None], atol=2e-5)
    index = np.arange(side) - side // 2
    distance = np.maximum(np.abs(index)[:, None], np.abs(index)[None, :])
    rings = got[:, 2 * side :]
    n_rings = side // 2 + 1
    for ring in range(n_rings):
        inside = distance == ring
        fraction = images[:, inside].sum(axis=1) / total
        np.testing.assert_allclose(rings[:, ring], (np.log10(fraction + 1e-4) + 4) / 4, atol=1e-5)
        np.testing.assert_allclose(rings[:, n_rings + ring], (images[:, inside] > 0).mean(axis=1), atol=0.01)
    # the halo of a 50 GeV shower has hits, and fewer of its outer cells than of its inner ones
    assert 0 < rings[2, n_rings + 10] < rings[2, n_rings + 4] <= 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_in_place_zero_suppression_equals_the_plain_one(dtype: torch.dtype) -> None:
    """Generation's one-pass threshold keeps exactly the cells the plain comparison keeps (at the
    threshold and one step either side, in any precision) and zeroes NaN as it does."""
    for threshold in (0.001, 0.005, 0.0123):
        pre = Preprocessing(threshold=threshold)
        at = torch.tensor(threshold, dtype=dtype)
        values = torch.stack([at, torch.nextafter(at, torch.tensor(0.0, dtype=dtype)), torch.nextafter(at, torch.tensor(1.0, dtype=dtype))])
        cells = torch.cat([values, torch.tensor([float("nan"), -1.0, 0.0, 2.0], dtype=dtype)])
        expected = pre.zero_suppress(cells.clone())
        got = pre.zero_suppress_(cells.clone())
        assert torch.equal(got, expected), (threshold, dtype, got, expected)


# -- nothing silent: a model that cannot give sound showers does not load (reliability)


def _edit_json(path, edit) -> None:  # type: ignore[no-untyped-def]
    meta = json.loads((path / "model.json").read_text())
    edit(meta)
    (path / "model.json").write_text(json.dumps(meta))


def test_non_finite_weights_are_refused_at_load_even_with_a_matching_sha256(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    from fastcalo.datasets import file_sha256

    path = save(ShowerModel(CONFIGS["mlp-cell-noise"]), tmp_path / "m")
    for name in ("generator.net.0.weight", "energy.net.0.bias"):
        state = load_file(str(path / "model.safetensors"))
        key = next(k for k in state if k.startswith(name.rsplit(".", 2)[0]) and k.endswith(name.rsplit(".", 1)[1]))
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float("nan") if "weight" in name else float("inf")
        save_file(state, str(path / "model.safetensors"))  # a new header: no physics digest
        _edit_json(path, lambda meta: meta.update(weights_sha256=file_sha256(path / "model.safetensors")))
        with pytest.raises(ModelFileError, match=rf"tensor '{key}' holds 1 non-finite value"):
            load(path)
        path = save(ShowerModel(CONFIGS["mlp-cell-noise"]), tmp_path / "m", overwrite=True)
    model = ShowerModel(CONFIGS["mlp"])
    with torch.no_grad():
        next(model.generator.parameters())[0, 0] = float("nan")
    with pytest.raises(ValueError, match="cannot save the model .* non-finite"):
        save(model, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("r_std", float("nan"), r"preprocessing.r_std must be a finite number > 0, got nan"),
        ("r_std", 0.0, r"preprocessing.r_std must be a finite number > 0, got 0.0"),
        ("r_mean", float("inf"), r"preprocessing.r_mean must be a finite number, got inf"),
        ("e0", -0.005, r"preprocessing.e0 must be a finite number > 0"),
        ("threshold", -1.0, r"preprocessing.threshold must be a finite number >= 0, got -1.0"),
        ("threshold", 0.001, r"threshold must equal the detector's response.threshold \(0.005 GeV\), got 0.001"),
        ("threshold", "0.005", r"preprocessing.threshold must be a finite number >= 0, got '0.005'"),
    ],
)
def test_bad_preprocessing_in_model_json_is_refused(tmp_path, key: str, value: object, match: str) -> None:
    import shutil

    from fastcalo.model import DEFAULT_MODEL

    for path in (save(ShowerModel(CONFIGS["mlp"]), tmp_path / "saved"), tmp_path / "shipped"):
        if path.name == "shipped":
            shutil.copytree(DEFAULT_MODEL, path)
        _edit_json(path, lambda meta: meta["preprocessing"].update({key: value}))
        with pytest.raises(ModelFileError, match=match):
            load(path)


def test_hand_edited_condition_ranges_are_refused(tmp_path) -> None:
    """model.json is not covered by the weights' sha256: its physics content is bound to the weights
    by physics_sha256 (in the weights' header; for the shipped model, known to the package)."""
    import shutil

    from fastcalo.model import DEFAULT_MODEL, physics_sha256

    saved = save(ShowerModel(CONFIGS["mlp"]), tmp_path / "saved")
    shipped = tmp_path / "shipped"
    shutil.copytree(DEFAULT_MODEL, shipped)
    for path in (saved, shipped):
        load(path)  # as saved (or shipped): loads
        original = (path / "model.json").read_text()
        # only the top-level copy: it must equal the detector's ranges
        _edit_json(path, lambda meta: meta["conditions"].update(energy=[0.001, 1e6]))
        with pytest.raises(ModelFileError, match=r"conditions .* differ from the detector's condition ranges"):
            load(path)
        # both copies: what the weights were saved with no longer matches
        _edit_json(path, lambda meta: meta["detector"]["conditions"].update(energy=[0.001, 1e6]))
        with pytest.raises(ModelFileError, match="not those the weights were saved with .* edited after saving"):
            load(path)
        # the digest in model.json updated too: the weights' header (or the shipped table) still says no
        _edit_json(path, lambda meta: meta.update(physics_sha256=physics_sha256(meta)))
        with pytest.raises(ModelFileError, match="the weights file records"):
            load(path)
        (path / "model.json").write_text(original)
        # a non-physics edit (the training record) is fine
        _edit_json(path, lambda meta: meta["training"].update(note="edited"))
        assert load(path).metadata["training"]["note"] == "edited"


@pytest.mark.parametrize("text", ["[1, 2, 3]", '"model"', "42"])
def test_model_json_that_is_not_an_object(tmp_path, text: str) -> None:
    path = save(ShowerModel(CONFIGS["mlp"]), tmp_path / "m")
    (path / "model.json").write_text(text)
    with pytest.raises(ModelFileError, match=r"expected a JSON object \(format 'fastcalo.model'\), found a JSON (list|str|int)"):
        load(path)


@pytest.fixture(scope="module")
def mc_deposits() -> tuple[np.ndarray, np.ndarray]:
    """300 reference-MC photons at 10 GeV: deposits before the response and the MC's measured cells."""
    from fastcalo import mc

    result = mc.simulate(np.full(300, 10.0), eta=0.3, seed=11)
    return result.true_images.reshape(300, -1), result.showers.images.reshape(300, -1).astype(np.float64)


@pytest.mark.parametrize("photostatistics", [True, False])
def test_response_layer_reproduces_the_mc_response(mc_deposits: tuple[np.ndarray, np.ndarray], photostatistics: bool) -> None:
    """On the MC's own deposits, the model's response layer gives the MC's response: the hit rate of
    pure-noise cells and, for deposits of every size, the mean and variance of the measured minus
    the deposited energy (with photo-statistics; without it, the variance misses the Poisson term)."""
    deposit, measured = mc_deposits
    model = ShowerModel(ModelConfig(cell_noise=True, photostatistics=photostatistics))
    g = torch.Generator().manual_seed(4)
    ours = model.respond(torch.as_tensor(deposit, dtype=torch.float32), torch.randn(deposit.shape, generator=g)).double().numpy()
    empty = deposit == 0
    rates = [float(np.mean(x[empty] > 0)) for x in (measured, ours)]
    tail = 1 - 0.5 * (1 + math.erf(2.5 / math.sqrt(2)))  # a 5 MeV threshold is 2.5 sigma of 2 MeV noise
    error = math.sqrt(tail / empty.sum())
    assert rates[0] == pytest.approx(tail, abs=5 * error) and rates[1] == pytest.approx(rates[0], abs=5 * error)
    for low, high in [(0.02, 0.1), (0.1, 1.0), (1.0, 10.0)]:
        inside = (deposit >= low) & (deposit < high)
        d = deposit[inside]
        shifts = [x[inside] - d for x in (measured, ours)]
        expected = d / model.detector.response.photoelectrons_per_gev + model.detector.response.noise**2
        mc_var, our_var = (float(np.mean(s**2) / np.mean(expected)) for s in shifts)  # 1 for the MC's response
        n = int(inside.sum())
        assert n > 300
        assert mc_var == pytest.approx(1.0, abs=6 * math.sqrt(2 / n))
        means = [float(np.mean(s) / math.sqrt(np.mean(expected) / n)) for s in shifts]  # in standard errors
        assert abs(means[0]) < 5 and abs(means[1]) < 5
        if photostatistics:
            assert our_var == pytest.approx(1.0, abs=6 * math.sqrt(2 / n))
        else:  # electronic noise alone: too narrow wherever the Poisson term matters
            noise_only = model.detector.response.noise**2 / float(np.mean(expected))
            assert our_var == pytest.approx(noise_only, abs=6 * math.sqrt(2 / n) + 0.05 * noise_only)


def test_the_minibatch_std_by_sectors_sees_a_halo_that_spreads_along_y_only() -> None:
    """Cells 6-11 above the impact cell (along y) that differ between showers: the sectors' region
    "outside, along y" holds their spread whole, "outside, along x" none of it; the rings dilute
    it over the whole outside ring."""
    from fastcalo.model import Critic

    config = dict(critic_hidden=(8,), critic_minibatch_std=4)
    rings, sectors = (Critic(ModelConfig(**config, critic_minibatch_regions=r), 3, 24) for r in ("rings", "sectors"))  # type: ignore[arg-type]
    assert (rings.n_regions, sectors.n_regions) == (4, 6)
    assert torch.allclose(sectors.regions.sum(dim=1), torch.ones(6))  # averages
    # the x and y halves of each split ring cover it, and share only its diagonals
    offset = torch.arange(24) - 12
    diagonal = (offset.abs()[:, None] == offset.abs()[None, :]).reshape(-1)
    inside = sectors.regions > 0
    for ring, (x_half, y_half) in ((2, (2, 4)), (3, (3, 5))):
        assert torch.equal(inside[x_half] | inside[y_half], rings.regions[ring] > 0)
        assert torch.equal(inside[x_half] & inside[y_half], diagonal & (rings.regions[ring] > 0))
    images = torch.zeros(8, 24, 24)
    images[:, 12, 18:] = torch.rand((8, 6), generator=torch.Generator().manual_seed(0))
    x = images.reshape(8, -1)
    by_ring, by_sector = rings.minibatch_std(x), sectors.minibatch_std(x)
    assert by_sector.shape == (8, 6) and torch.equal(by_sector[0], by_sector[3])  # one value per group of 4
    assert torch.allclose(by_sector[:, :4], torch.full((8, 4), 1e-4)) and by_sector[:, 5].min() > 0.004  # 0.0052
    # the outside ring's average is about twice as dilute (527 cells against the y half's 264)
    assert torch.allclose(by_sector[:, 5] - 1e-4, 2 * (by_ring[:, 3] - 1e-4), rtol=0.02)
    with pytest.raises(ValueError, match="critic_minibatch_regions must be 'rings' or 'sectors', got 'ring'"):
        ModelConfig(critic_minibatch_regions="ring")


def test_the_critics_convolutional_branch_is_local_and_saved(tmp_path) -> None:
    """critic_conv: 3 x 6 x 6 features more for the critic's head; a change in one cell moves only
    the features whose 7 x 7 window holds it, every score is the same after save and load, and
    the gradient penalty's double backward runs through the branch."""
    from fastcalo.train import gradient_penalty

    model = ShowerModel(CONFIGS["mlp-critic-conv"])
    critic = model.critic
    assert critic.local is not None
    g = torch.Generator().manual_seed(1)
    x = torch.rand((10, 576), generator=g) * (torch.rand((10, 576), generator=g) < 0.3)
    features = critic.local(x)
    assert features.shape == (10, 3 * 6 * 6)
    moved = x.clone()
    moved[:, 12 * 24 + 20] += 0.5  # the cell at x = 12, y = 20
    changed = (critic.local(moved) != features).any(dim=0).reshape(3, 6, 6).any(dim=0)
    # an output at (i, j) sees cells 4i - 3 .. 4i + 3 along each axis
    expected = torch.zeros((6, 6), dtype=torch.bool)
    for i in range(6):
        for j in range(6):
            expected[i, j] = abs(12 - 4 * i) <= 3 and abs(20 - 4 * j) <= 3
    assert torch.equal(changed, expected) and 1 <= int(expected.sum()) <= 4
    c, r = torch.rand((10, model.conditions.width), generator=g), torch.rand(10, generator=g)
    again = load(save(model, tmp_path / "m"))
    torch.testing.assert_close(again.critic(x, c, r), critic(x, c, r), rtol=0, atol=0)
    fake = torch.rand((10, 576), generator=g)
    penalty = gradient_penalty(critic, x, fake, c, r, generator=g)
    penalty.backward()
    assert critic.local[1].weight.grad is not None and float(critic.local[1].weight.grad.abs().sum()) > 0
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="critic_conv must be 0 .off. or a number of channels >= 1"):
            ModelConfig(critic_conv=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="critic_conv needs the MLP critic"):
        ModelConfig(kind="conv", critic_conv=4)


def test_a_model_saved_without_its_critic_generates_the_same_showers(tmp_path) -> None:
    """save(critic=False): the critic's tensors are left out (a smaller file), the showers are the
    same to the bit, the loaded critic refuses to run, and saving it again keeps it critic-less
    (an untrained critic is never written as if trained)."""
    model = ShowerModel(CONFIGS["mlp-critic-conv"])
    full, light = save(model, tmp_path / "full"), save(model, tmp_path / "light", critic=False)
    from safetensors import safe_open

    with safe_open(str(light / "model.safetensors"), "pt") as handle:
        names = set(handle.keys())
    assert names == {k for k in model.state_dict() if not k.startswith("critic.")} and names
    assert (light / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size
    loaded = load(light)
    assert loaded.has_critic is False and load(full).has_critic is True
    np.testing.assert_array_equal(loaded.sample(**PARTICLES, seed=4), model.sample(**PARTICLES, seed=4))
    x, c, r = torch.rand((2, 576)), torch.rand((2, model.conditions.width)), torch.rand(2)
    with pytest.raises(RuntimeError, match="saved without its critic"):
        loaded.critic(x, c, r)
    by_hand = ShowerModel(CONFIGS["mlp-critic-conv"])
    by_hand.has_critic = False  # as scripts/bound_model_noise.py marks a copy: refuses the same way
    with pytest.raises(RuntimeError, match="saved without its critic"):
        by_hand.critic(x, c, r)
    again = save(loaded, tmp_path / "again")  # critic=True asked, none to write
    assert json.loads((again / "model.json").read_text())["critic"] is False
    assert (again / "model.safetensors").read_bytes() == (light / "model.safetensors").read_bytes()

    meta = json.loads((light / "model.json").read_text())
    meta["critic"] = True  # claims a critic the weights do not hold
    (light / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="do not match the architecture .*critic"):
        load(light)
    meta["critic"] = "no"
    (light / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match='"critic" must be true or false'):
        load(light)
