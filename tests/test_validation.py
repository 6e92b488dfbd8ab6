from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fastcalo import datasets as ds
from fastcalo import mc
from fastcalo.cli import validate_main
from fastcalo.validation import compare, observables, separation_power


@pytest.fixture(scope="module")
def samples() -> tuple[ds.ShowerData, ds.ShowerData]:
    cond = mc.sample_conditions(150, points=[2.0, 20.0], eta=(-0.5, 0.5), seed=1)

    def run(seed: int) -> ds.ShowerData:
        return mc.simulate(cond["energy"], cond["eta"], 22, impact_x=cond["impact_x"], impact_y=cond["impact_y"], seed=seed).showers

    return run(1), run(2)


def test_features_by_hand() -> None:
    image = np.zeros((1, 24, 24), dtype=np.float32)
    image[0, 12, 12] = 3.0  # x centre 5 mm
    image[0, 13, 12] = 1.0  # x centre 15 mm
    data = ds.ShowerData.from_arrays(energy=[5.0], eta=[0], phi=[0], pdgid=[22], impact_x=[5], impact_y=[5], images=image)
    f = observables.features(data)
    assert f["response"][0] == pytest.approx(0.8)
    assert f["n_cells"][0] == 2
    assert f["centroid_x"][0] == pytest.approx(7.5)
    assert f["centroid_y"][0] == pytest.approx(5.0)
    assert f["width_x"][0] == pytest.approx(np.sqrt(0.75 * 2.5**2 + 0.25 * 7.5**2))
    assert f["width_y"][0] == pytest.approx(0.0, abs=1e-6)
    assert f["brightest_fraction"][0] == pytest.approx(0.75)
    assert f["second_to_first"][0] == pytest.approx(1 / 3)
    assert f["containment_3x3"][0] == pytest.approx(1.0)


def test_separation_power_limits() -> None:
    import hist

    a = hist.Hist(hist.axis.Regular(4, 0, 4))
    b = hist.Hist(hist.axis.Regular(4, 0, 4))
    a.fill([0.5, 1.5])
    b.fill([2.5, 3.5])
    assert separation_power(a, a) == 0.0
    assert separation_power(a, b) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-empty"):
        separation_power(a, hist.Hist(hist.axis.Regular(4, 0, 4)))


def test_mc_against_itself_is_close(samples) -> None:
    report = compare(*samples)
    # statistical floor for 300 vs 300 showers in 50 bins: about 0.5 * bins / N ~ 0.08
    assert max(report.separation_power.values()) < 0.15
    for r_ref, r_gen in zip(*report.response):
        assert r_gen.mean == pytest.approx(r_ref.mean, abs=4 * np.hypot(r_ref.mean_error, r_gen.mean_error))


def test_energy_scale_shift_is_flagged(samples) -> None:
    ref, other = samples
    scaled = dataclasses.replace(other, images=other.images * np.float32(1.03))
    same = compare(ref, other).separation_power["response"]
    shifted = compare(ref, scaled).separation_power["response"]
    assert shifted > 3 * same and shifted > 0.1
    rows = compare(ref, scaled).response
    for r_ref, r_gen in zip(*rows):
        assert r_gen.mean / r_ref.mean == pytest.approx(1.03, abs=0.01)


def test_broadened_shower_is_flagged(samples) -> None:
    ref, other = samples
    # spread half of every cell's energy over its 4 neighbours
    img = other.images
    blurred = 0.5 * img
    for axis in (1, 2):
        for shift in (-1, 1):
            blurred = blurred + 0.125 * np.roll(img, shift, axis=axis)
    same = compare(ref, other).separation_power
    report = compare(ref, dataclasses.replace(other, images=blurred.astype(np.float32)))
    # width_x is diluted by the spread of eta (the x elongation), so width_y is the sharp probe
    for name in ("width_y", "brightest_fraction", "n_cells", "cell_spectrum"):
        assert report.separation_power[name] > max(0.25, 3 * same[name])


def test_report_files_and_cli(tmp_path: Path, samples) -> None:
    ref, other = samples
    ds.write(ref, tmp_path / "ref.h5")
    ds.write(other, tmp_path / "gen.root")
    out = tmp_path / "report"
    assert validate_main(["--reference", str(tmp_path / "ref.h5"), "--generated", str(tmp_path / "gen.root"), "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["ref.h5", "gen.root"]
    assert metrics["n_showers"] == [300, 300]
    assert set(metrics["separation_power"]) >= set(observables.FEATURES)
    assert set(metrics["classifier_auc"]) == {"low", "high"}
    assert set(metrics["physics_distances"]) == {"fpd", "kpd"}
    for auc in metrics["classifier_auc"].values():
        assert 0.3 < auc["auc"] < 0.7 and len(auc["aucs"]) == 3  # 300 vs 300 MC showers
    for name in ["response_vs_energy.png", "mean_image.png", "cell_spectrum.png", "feature_width_x.png", "index.html"]:
        assert (out / name).stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # a single dataset: plots without comparison
    assert validate_main(["--reference", str(tmp_path / "ref.h5"), "-o", str(tmp_path / "alone")]) == 0
    alone = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    assert alone["separation_power"] == {} and alone["classifier_auc"] == {}
    args = ["--reference", str(tmp_path / "ref.h5"), "--generated", str(tmp_path / "gen.root"), "-o", str(tmp_path / "fast")]
    assert validate_main([*args, "--no-classifier"]) == 0
    assert json.loads((tmp_path / "fast" / "metrics.json").read_text())["classifier_auc"] == {}


def test_validate_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        validate_main(["--reference", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "r")])
    assert info.value.code == 2
    assert "no shower file at" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_wasserstein_1_against_scipy_and_by_hand() -> None:
    from scipy.stats import wasserstein_distance

    from fastcalo.validation import wasserstein_1

    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 1000), rng.exponential(1.0, 700)
    assert wasserstein_1(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    assert wasserstein_1(a, a + 0.25) == pytest.approx(0.25, rel=1e-12)  # a shift moves every quantile
    assert wasserstein_1(np.array([1.0, np.nan]), np.array([1.0])) == 0.0
    with pytest.raises(ValueError, match="two non-empty samples, got 0 and 1"):
        wasserstein_1(np.array([np.nan]), np.array([1.0]))


def test_wasserstein_sees_the_energy_scale(samples) -> None:
    ref, other = samples
    scaled = dataclasses.replace(other, images=other.images * np.float32(1.03))
    same = compare(ref, other).wasserstein["response"]
    shifted = compare(ref, scaled).wasserstein["response"]
    # the response is ~0.97: a 3 % scale moves it by ~0.029
    assert shifted == pytest.approx(0.03 * 0.97, abs=0.005)
    assert same < 0.005


def test_fpd_kpd_tell_a_shifted_sample() -> None:
    from fastcalo.validation import fpd, kpd

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(3000, 4)), rng.normal(size=(3000, 4))
    value, error = fpd(x, y)
    assert abs(value) < 0.02 and error < 0.02
    assert abs(kpd(x, y)[0]) < 0.01
    shifted = y + np.array([0.3, 0, 0, 0])  # a 0.3 sigma shift of one feature: FD = (mean difference)^2
    expected = (shifted[:, 0].mean() - x[:, 0].mean()) ** 2  # 0.3 shift plus this sample's fluctuation
    assert fpd(x, shifted)[0] == pytest.approx(expected, abs=0.02)  # the 1/N extrapolation moves it by ~0.01
    assert kpd(x, shifted)[0] > 0.02
    with pytest.raises(ValueError, match="at least 100 showers per sample, got 50"):
        fpd(x[:50], y)


def test_report_physics_distances(samples) -> None:
    ref, other = samples
    scaled = dataclasses.replace(other, images=other.images * np.float32(1.03))
    same = compare(ref, other, classifier=False).physics_distances
    shifted = compare(ref, scaled, classifier=False).physics_distances
    assert shifted["fpd"][0] > 0.5 > abs(same["fpd"][0]) + 3 * same["fpd"][1]
    assert shifted["kpd"][0] > 0.2 > same["kpd"][0]


def test_frechet_distance_matches_the_matrix_root_formula() -> None:
    from scipy.linalg import sqrtm

    from fastcalo.validation.metrics import frechet_distance

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 5))
    y = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5)) + 1.0
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    diff = x.mean(0) - y.mean(0)
    expected = diff @ diff + np.trace(cx + cy - 2 * np.real(sqrtm(cx @ cy)))
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    constant = np.column_stack([x, np.ones(len(x))])  # a constant feature (one energy point) is fine
    assert frechet_distance(constant, constant) == pytest.approx(0.0, abs=1e-9)
