from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fastcalo import datasets as ds
from fastcalo import mc
from fastcalo.cli import validate_main
from fastcalo.validation import Thresholds, compare, observables, separation_power


def fast_compare(*args, **kwargs):
    """compare() without the classifier (tested on its own) and without progress bars."""
    return compare(*args, classifier=False, progress=False, **kwargs)


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
    report = fast_compare(*samples)
    # statistical floor for 300 vs 300 showers in 50 bins: about 0.5 * bins / N ~ 0.08
    assert max(report.separation_power.values()) < 0.15
    for r_ref, r_gen in zip(*report.response):
        assert r_gen.mean == pytest.approx(r_ref.mean, abs=4 * np.hypot(r_ref.mean_error, r_gen.mean_error))


def test_energy_scale_shift_is_flagged(samples) -> None:
    ref, other = samples
    scaled = dataclasses.replace(other, images=other.images * np.float32(1.03))
    same = fast_compare(ref, other).separation_power["response"]
    shifted = fast_compare(ref, scaled).separation_power["response"]
    assert shifted > 3 * same and shifted > 0.1
    rows = fast_compare(ref, scaled).response
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
    same = fast_compare(ref, other).separation_power
    report = fast_compare(ref, dataclasses.replace(other, images=blurred.astype(np.float32)))
    # width_x is diluted by the spread of eta (the x elongation), so width_y is the sharp probe
    for name in ("width_y", "brightest_fraction", "n_cells", "cell_spectrum"):
        assert report.separation_power[name] > max(0.25, 3 * same[name])


def test_showers_moved_off_their_impact_point_are_counted_and_drawn(tmp_path: Path, samples) -> None:
    ref, other = samples
    d = observables.displacement(ref)
    # the reference MC's centroids follow the impact point along y: none is most of a cell away
    assert np.median(d) < 1.5 and int((d > observables.DISPLACED_MM).sum()) == 0
    # ten generated showers moved by one cell (10 mm) along y (the image's second axis)
    images = other.images.copy()
    images[:10] = np.roll(images[:10], 1, axis=2)
    images[10:13] = np.roll(images[10:13], 10, axis=2)  # and three by ten cells: far out on the plot's axis
    moved = dataclasses.replace(other, images=images)
    moved_by = observables.displacement(moved)
    assert np.all(moved_by[:10] > 7.0) and np.all(moved_by[10:13] > 80.0) and int((moved_by > observables.DISPLACED_MM).sum()) == 13
    report = fast_compare(ref, moved, diagnosis=False)
    assert report.displaced == [(0, 300), (13, 300)]
    assert report.displacement[1][hist_bin(report.displacement[1], 10.0)].value >= 1
    assert [h.sum().value for h in report.displacement] == [300, 300]  # every shower on the axis, none in the overflow
    metrics = report.metrics()["displaced"]
    assert metrics["radius_mm"] == observables.DISPLACED_MM
    assert metrics["generated"] == {"count": 13, "n": 300, "per_10000": pytest.approx(1e4 * 13 / 300)}
    out = report.write(tmp_path / "report")
    assert (out / "displacement.png").stat().st_size > 1000
    page = (out / "index.html").read_text()
    assert "Showers far off the impact point" in page and "<td>13</td><td>300</td>" in page


def hist_bin(h, value: float) -> int:
    return int(h.axes[0].index(value))


def test_report_files_and_cli(tmp_path: Path, samples, capsys: pytest.CaptureFixture[str]) -> None:
    ref, other = samples
    ds.write(ref, tmp_path / "ref.h5")
    ds.write(other, tmp_path / "gen.root")
    out = tmp_path / "report"
    assert validate_main(["--reference", str(tmp_path / "ref.h5"), "--generated", str(tmp_path / "gen.root"), "-o", str(out)]) == 0
    assert "classifier (low-level)" in capsys.readouterr().err  # progress bars by default
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
    capsys.readouterr()
    assert validate_main([*args, "--no-classifier", "--no-progress"]) == 0
    assert json.loads((tmp_path / "fast" / "metrics.json").read_text())["classifier_auc"] == {}
    assert "%|" not in capsys.readouterr().err  # no bars
    # thresholds from a TOML file reach metrics.json and the verdicts
    (tmp_path / "strict.toml").write_text("fpd_max = -1.0\nn_sigma = 0\n")
    assert validate_main([*args, "--no-classifier", "--no-progress", "--thresholds", str(tmp_path / "strict.toml"), "--overwrite"]) == 0
    strict = json.loads((tmp_path / "fast" / "metrics.json").read_text())
    assert strict["thresholds"]["fpd_max"] == -1.0 and strict["thresholds"]["auc_low_max"] == 0.6
    assert [c["passed"] for c in strict["summary"] if c["name"] == "fpd"] == [False]
    # --strict: a failed check is exit status 1 (a gate for CI), the report written all the same
    assert validate_main([*args, "--no-classifier", "--no-progress", "--thresholds", str(tmp_path / "strict.toml"), "--overwrite", "--strict"]) == 1
    assert json.loads((tmp_path / "fast" / "metrics.json").read_text())["failed"] >= 1
    (tmp_path / "loose.toml").write_text("separation_power_max = 0.2\nwasserstein_max = 0.3\n")  # MC against MC, 300 showers
    assert validate_main([*args, "--no-classifier", "--no-progress", "--thresholds", str(tmp_path / "loose.toml"), "--overwrite", "--strict"]) == 0
    assert json.loads((tmp_path / "fast" / "metrics.json").read_text())["failed"] == 0
    (tmp_path / "bad.toml").write_text("fdp_max = 0.1\n")
    with pytest.raises(SystemExit) as info:
        validate_main([*args, "--thresholds", str(tmp_path / "bad.toml"), "--overwrite"])
    assert info.value.code == 2
    assert "bad.toml: unknown key(s) ['fdp_max'] (did you mean 'fpd_max'?); valid keys are" in capsys.readouterr().err


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
    same = fast_compare(ref, other).wasserstein["response"]
    shifted = fast_compare(ref, scaled).wasserstein["response"]
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
    # samples smaller than two batches: the batches are half of them, so they differ and have a spread
    small, error = kpd(x[:800], shifted[:800])
    assert small > 0.02 and 0.001 < error < small
    with pytest.raises(ValueError, match="KPD needs at least 20 showers per sample, got 19"):
        kpd(x[:19], y)


def test_report_physics_distances(samples) -> None:
    ref, other = samples
    scaled = dataclasses.replace(other, images=other.images * np.float32(1.03))
    same = fast_compare(ref, other).physics_distances
    shifted = fast_compare(ref, scaled).physics_distances
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


def _brute_force_prdc(x: np.ndarray, y: np.ndarray, k: int) -> dict[str, float]:
    """The four definitions written out with full distance matrices (arXiv:2002.09797, eqs. 1-4)."""
    from scipy.spatial.distance import cdist

    r = np.sort(cdist(x, x), axis=1)[:, k]  # column 0 is the point itself
    s = np.sort(cdist(y, y), axis=1)[:, k]
    d = cdist(x, y)  # (N real, M fake)
    return {
        "precision": float(np.mean((d <= r[:, None]).any(axis=0))),
        "recall": float(np.mean((d <= s[None, :]).any(axis=1))),
        "density": float((d <= r[:, None]).sum() / (k * len(y))),
        "coverage": float(np.mean(d.min(axis=1) <= r)),
    }


def test_diversity_matches_the_definitions() -> None:
    from fastcalo.validation import diversity

    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 4)) * [1.0, 2.0, 0.5, 3.0] + 1.0
    y = rng.normal(size=(300, 4)) * [1.2, 2.0, 0.4, 3.0] + 1.3
    mean, std = x.mean(axis=0), x.std(axis=0)
    expected = _brute_force_prdc((x - mean) / std, (y - mean) / std, k=3)
    assert diversity(x, y, k=3) == pytest.approx(expected, abs=1e-12)
    # the cap subsamples each side with a fixed seed: reproducible, and close to the full value
    capped = diversity(x, y, k=3, max_samples=200)
    assert capped == diversity(x, y, k=3, max_samples=200)
    assert capped["coverage"] == pytest.approx(expected["coverage"], abs=0.15)
    with pytest.raises(ValueError, match="more than 5 showers per sample, got 400 and 5"):
        diversity(x, y[:5])
    with pytest.raises(ValueError, match="the same d"):
        diversity(x, y[:, :3])


def test_diversity_sees_mode_collapse(samples) -> None:
    ref, other = samples
    # a collapsed generator: the right conditions, but one shower per energy point, repeated
    first = {e: np.flatnonzero(other.energy == e)[0] for e in np.unique(other.energy)}
    collapsed = dataclasses.replace(other, images=other.images[[first[e] for e in other.energy]])
    good, bad = fast_compare(ref, other).diversity, fast_compare(ref, collapsed).diversity
    # independent MC: density ~ 1, coverage ~ 1 - 2^-5 = 0.97, precision and recall high
    assert good["density"] == pytest.approx(1.0, abs=0.2)
    assert good["coverage"] > 0.85 and good["precision"] > 0.8 and good["recall"] > 0.8
    assert bad["recall"] < 0.05 and bad["coverage"] < 0.1  # only reference showers next to the two repeated ones
    # all showers from one of the two energies: half of the reference is never produced
    feats = [observables.features(s) for s in (ref, other)]
    matrices = [np.column_stack([f[n] for n in observables.FEATURES] + [np.log10(s.energy)]) for f, s in zip(feats, (ref, other))]
    from fastcalo.validation import diversity

    one_energy = diversity(matrices[0], matrices[1][other.energy == 2.0])
    assert one_energy["coverage"] < 0.6 and one_energy["recall"] < 0.6


def test_per_energy_metrics(samples) -> None:
    ref, other = samples
    scaled = dataclasses.replace(other, images=other.images * np.float32(1.03))
    same, shifted = fast_compare(ref, other), fast_compare(ref, scaled)
    assert [(p.energy_low, p.n_reference, p.n_generated) for p in same.per_energy] == [(2.0, 150, 150), (20.0, 150, 150)]
    for p_same, p_shift in zip(same.per_energy, shifted.per_energy):
        assert set(p_same.separation_power) == set(p_same.wasserstein) == set(observables.FEATURES)
        # the resolution at each point is ~1-3 %: a 3 % scale separates the response histograms
        assert p_shift.separation_power["response"] > max(0.3, 3 * p_same.separation_power["response"])
        assert p_shift.wasserstein["response"] == pytest.approx(0.03 * 0.97, abs=0.005)
        assert p_shift.separation_power["width_y"] == p_same.separation_power["width_y"]  # shapes untouched
        # two samples of one distribution sit at the statistical floor, on average over the features
        assert 0.5 < np.mean([p_same.separation_power[n] / p_same.separation_floor[n] for n in observables.FEATURES]) < 2.0


def test_summary_verdicts_and_report(tmp_path: Path, samples) -> None:
    ref, other = samples
    scaled = dataclasses.replace(other, images=other.images * np.float32(1.03))
    loose = Thresholds(separation_power_max=0.2, wasserstein_max=0.3)  # 300 showers: larger statistical floors
    same = {c.name: c for c in fast_compare(ref, other, thresholds=loose).summary()}
    shifted_report = fast_compare(ref, scaled, thresholds=loose)
    shifted = {c.name: c for c in shifted_report.summary()}
    names = ["fpd", "kpd", "precision", "recall", "density", "coverage", "separation_power", "wasserstein", "response_mean", "resolution"]
    assert list(same) == list(shifted) == names
    assert all(c.passed for c in same.values()), [c for c in same.values() if not c.passed]
    for name in ("fpd", "kpd", "separation_power", "wasserstein", "response_mean"):
        assert not shifted[name].passed, shifted[name]
    assert shifted["separation_power"].detail == "response"
    assert shifted["response_mean"].value == pytest.approx(0.03, abs=0.005)
    assert shifted["resolution"].passed  # a scale keeps sigma / mu
    # the report: metrics.json records thresholds and verdicts, index.html opens with the summary
    out = shifted_report.write(tmp_path / "report")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["thresholds"] == dataclasses.asdict(loose)
    assert metrics["failed"] == sum(not c.passed for c in shifted.values()) and metrics["passed"] + metrics["failed"] == 10
    assert [c["name"] for c in metrics["summary"]] == names
    assert metrics["summary"][names.index("response_mean")]["passed"] is False
    assert set(metrics["diversity"]) == {"precision", "recall", "density", "coverage"}
    assert [p["energy_low"] for p in metrics["per_energy"]] == [2.0, 20.0]
    page = (out / "index.html").read_text()
    assert page.index("Summary: ") < page.index("Energy response") < page.index("Per energy point")
    assert page.count("class='fail'>FAIL") == metrics["failed"] and page.count("class='pass'>PASS") == metrics["passed"]


def test_response_checks_fail_where_the_generated_showers_are_empty(samples) -> None:
    ref, other = samples
    images = other.images.copy()
    images[other.energy == 20.0] = 0.0  # a model that makes nothing at 20 GeV
    summary = {c.name: c for c in fast_compare(ref, dataclasses.replace(other, images=images)).summary()}
    for name in ("response_mean", "resolution"):  # the dead point is not left out: it fails, and is the one named
        assert not summary[name].passed and summary[name].detail == "E = 20 GeV", summary[name]
    assert summary["response_mean"].value == pytest.approx(1.0)


def test_a_sample_too_small_for_fpd_still_gets_its_report(tmp_path: Path, samples) -> None:
    ref, other = (dataclasses.replace(s, **{c: getattr(s, c)[::5] for c in ("energy", "eta", "phi", "pdgid", "impact_x", "impact_y", "images")}) for s in samples)
    report = fast_compare(ref, other, diagnosis=False)  # 60 showers each: FPD extrapolates from 100 or more
    summary = {c.name: c for c in report.summary()}
    assert not summary["fpd"].passed and not summary["kpd"].passed and np.isnan(summary["fpd"].value)
    assert summary["response_mean"].passed and set(observables.FEATURES) < set(report.separation_power)  # and the cell spectrum
    out = report.write(tmp_path / "report")
    assert np.isnan(json.loads((out / "metrics.json").read_text())["physics_distances"]["fpd"]["value"])
    assert "<td>FPD (high-level features)</td><td>n/a ± n/a</td>" in (out / "index.html").read_text()


def test_check_verdict_with_errors() -> None:
    from fastcalo.validation import Check

    assert Check("a", "", 0.62, high=0.6).passed is False
    assert Check("a", "", 0.62, high=0.6, error=0.02, n_sigma=2).passed  # within 2 errors of the bound
    assert Check("a", "", 0.7, high=0.6, error=0.02, n_sigma=2).passed is False
    assert Check("d", "", 1.3, low=0.8, high=1.2).passed is False and Check("d", "", 0.9, low=0.8, high=1.2).passed
    assert Check("a", "", float("nan"), high=1.0).passed is False
    assert Check("d", "", 1.0, low=0.8, high=1.2).bound == "0.8 – 1.2"


def test_thresholds_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("auc_low_max = 0.55\ncoverage_min = 0.8\n")
    t = Thresholds.from_toml(path)
    assert (t.auc_low_max, t.coverage_min, t.auc_high_max) == (0.55, 0.8, Thresholds().auc_high_max)
    path.write_text("auc_low = 0.55\n")
    with pytest.raises(ValueError, match=r"t.toml: unknown key\(s\) \['auc_low'\] \(did you mean 'auc_low_max'\?\); valid keys are \['auc_low_max', "):
        Thresholds.from_toml(path)
    path.write_text('fpd_max = "small"\n')
    with pytest.raises(ValueError, match="t.toml: fpd_max must be a finite number, got 'small'"):
        Thresholds.from_toml(path)
    path.write_text("fpd_max = \n")
    with pytest.raises(ValueError, match="t.toml: not valid TOML"):
        Thresholds.from_toml(path)


def test_progress_bars(samples, capsys: pytest.CaptureFixture[str]) -> None:
    from fastcalo.validation import classifier_auc

    ref, other = samples
    classifier_auc(ref, other, inputs="high", hidden=(8,), progress=True)
    assert "classifier (high-level)" in capsys.readouterr().err
    classifier_auc(ref, other, inputs="high", hidden=(8,))
    fast_compare(ref, other)
    assert capsys.readouterr().err == ""


def test_the_report_page_says_what_it_compares(tmp_path: Path, samples) -> None:
    import re

    from fastcalo.validation.classifier import ClassifierResult

    ref, other = samples
    paths = ds.write(ref, tmp_path / "heldout.h5"), ds.write(other, tmp_path / "showers.root")
    report = fast_compare(*paths, thresholds=Thresholds(separation_power_max=0.2, wasserstein_max=0.3))
    # the cell spectrum's Wasserstein-1 is computed (it was nan: never computed), in GeV
    assert 0 <= report.wasserstein["cell_spectrum"] < 0.05 and np.isfinite(report.wasserstein_scaled["cell_spectrum"])
    out = report.write(tmp_path / "report")
    page = (out / "index.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    # which sample is which, with its particles and energies
    assert "<h1>fastcalo validation: generated: showers.root against reference: heldout.h5</h1>" in page
    assert metrics["samples"] == ["photon, 2 and 20 GeV (2 energy points), 300 showers"] * 2
    assert f"<b>reference: heldout.h5</b> ({paths[0]}): photon, 2 and 20 GeV (2 energy points), 300 showers" in page
    # one sentence at the top, from the summary's numbers
    n, passed = len(report.summary()), sum(c.passed for c in report.summary())
    assert metrics["conclusion"] == report.conclusion()
    assert report.conclusion().startswith(f"The generated showers pass {'all ' + str(n) if passed == n else f'{passed} of {n}'} checks")
    assert "no classifier was trained" in report.conclusion()
    assert page.index(html_escape(report.conclusion())) < page.index("Summary: ")
    # the per-energy note quotes this comparison's numbers, not a fixed example
    assert "(E = 2 GeV, 150 reference and 150 generated showers), 0.17" in page and "350" not in page
    # nothing prints as nan; the mean image is shown wide
    assert not re.search(r"\bnan\b", page)
    assert '<img src="mean_image.png" width="1000">' in page
    report.wasserstein["width_x"] = float("nan")  # a metric that cannot be computed says so
    assert "<td>width_x</td><td>" in (page := (report.write(tmp_path / "nan") / "index.html").read_text())
    assert re.search(r"<td>width_x</td><td>[0-9.]+</td><td>n/a</td>", page)
    # the classifier's verdict in the sentence
    report.classifier = [ClassifierResult("low", (0.95, 0.94, 0.96), 300, 300)]
    assert report.conclusion().endswith(
        "the classifier separates them from the reference (AUC 0.95 on low-level inputs, threshold 0.6): not yet indistinguishable."
    )
    report.classifier = [ClassifierResult("low", (0.50, 0.51, 0.49), 300, 300)]
    report.wasserstein["width_x"] = 0.0
    assert "the classifier does not tell them from the reference (AUC 0.50)" in report.conclusion()


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_containment_axes_keep_the_lower_tail(samples) -> None:
    ref, other = samples
    # showers at 2 GeV leak: some hold less than half their energy in 3x3 cells (below the old axis)
    feats = [observables.features(s) for s in samples]
    assert min(np.nanmin(f["containment_3x3"]) for f in feats) < 0.5
    hists = observables.feature_histograms(*feats)
    for name in ("containment_3x3", "containment_5x5", "containment_7x7"):
        axis = hists[0][name].axes[0]
        bins, low, high = FIXED[name]
        assert axis.edges[-1] == high == 1.0 and axis.edges[0] <= low and axis.widths[0] == pytest.approx((high - low) / bins)
        for h in (hists[0][name], hists[1][name]):
            assert h.values(flow=True)[0] == 0  # no underflow: every shower is on the axis


FIXED = {name: binning for name, (_, binning) in observables.FEATURES.items() if binning is not None}


def _responses(r: np.ndarray, energy: float = 50.0) -> ds.ShowerData:
    """Showers of E_dep / E_inc = ``r``, all the energy in the central cell."""
    n = r.size
    images = np.zeros((n, 24, 24), dtype=np.float32)
    images[:, 12, 12] = r * energy
    zeros = np.zeros(n)
    return ds.ShowerData.from_arrays(energy=np.full(n, energy), eta=zeros, phi=zeros, pdgid=np.full(n, 22), impact_x=zeros + 5.0, impact_y=zeros + 5.0, images=images)


@pytest.mark.parametrize("tail", [0.0, 0.003])
def test_resolution_errors_hold_for_leakage_tails(tail: float) -> None:
    """The errors of sigma / mu and of the core resolution against their spread over 200
    independent samples, for a Gaussian and for a Gaussian core with a leakage tail (a fraction
    ``tail`` of the showers lose an exponential 5 % on average, kurtosis about 100 as the MC's at
    50 GeV): the Gaussian error of sigma, sigma / sqrt(2 (n - 1)), is several times too small there."""
    rng = np.random.default_rng(3)
    n = 10_000

    def draw() -> np.ndarray:
        r = 0.98 * (1 + 0.006 * rng.standard_normal(n))
        leak = rng.random(n) < tail
        return r - leak * rng.exponential(0.05, n)

    rows = [observables.response_table(_responses(draw()))[0] for _ in range(200)]
    for value, error in (("resolution", "resolution_error"), ("core_resolution", "core_resolution_error")):
        spread = np.std([getattr(row, value) for row in rows])
        quoted = np.mean([getattr(row, error) for row in rows])
        assert quoted == pytest.approx(spread, rel=0.2), (value, quoted, spread)
    gaussian = np.median([row.resolution / np.sqrt(2 * (n - 1)) for row in rows])
    spread = np.std([row.resolution for row in rows])
    assert (gaussian < spread / 3) == (tail > 0), (gaussian, spread)
