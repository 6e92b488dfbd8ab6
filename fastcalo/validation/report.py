"""The validation report: histograms, response tables and metrics of one or two shower datasets,
written as PNG plots, ``metrics.json`` and a one-page ``index.html``.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from fastcalo import mc
    >>> from fastcalo.validation import compare
    >>> ref = mc.simulate(np.full(1000, 1.0), 0.0, "photon", seed=1).showers
    >>> other = mc.simulate(np.full(1000, 1.0), 0.0, "photon", seed=2).showers
    >>> report = compare(ref, other, classifier=False, progress=False)
    >>> report.separation_power["response"] < 0.1  # statistical floor ~ 0.5 * 50 bins / 1000
    True
    >>> path = report.write(pathlib.Path(tempfile.mkdtemp()) / "report")
    >>> (path / "metrics.json").is_file()
    True
    >>> [c.name for c in report.summary()][:3]
    ['fpd', 'kpd', 'precision']
"""


from __future__ import annotations

import contextlib
import html
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hist
import numpy as np

from ..datasets import ShowerData
from ..detector import DEFAULT_DETECTOR, PARTICLES, Detector
from . import _inputs
from . import observables as obs
from .classifier import ClassifierResult, classifier_auc
from .diagnosis import VIEWS, TOLD_APART, Diagnosis, diagnose
from .metrics import FPD_MIN_SHOWERS, diversity, fpd, kpd, separation_power, wasserstein_1
from .thresholds import Check, Thresholds

__all__ = ("REPORT_FORMAT", "EnergyPointMetrics", "Report", "check_report_directory", "compare", "per_energy", "report_directory_problem")


@dataclass(frozen=True)
class EnergyPointMetrics:
    """Separation power and Wasserstein-1 distance of every feature in one energy point or bin
    (:func:`per_energy`); NaN where a sample has no finite value of the feature there."""

    energy_low: float
    energy_high: float
    n_reference: int
    n_generated: int
    separation_power: dict[str, float]
    wasserstein: dict[str, float]
    #: expected separation power of two samples of these sizes from one distribution:
    #: B (1/n_reference + 1/n_generated) / 4 for B filled bins (flow bins included).
    separation_floor: dict[str, float] = field(default_factory=dict)

    @property
    def energy(self) -> str:
        """The point or bin as text, in GeV."""
        if self.energy_low == self.energy_high:
            return f"{self.energy_low:g}"
        return f"{self.energy_low:.3g}–{self.energy_high:.3g}"


@dataclass
class Report:
    """Histograms and numbers of a validation; ``summary`` checks them against ``thresholds``,
    ``write`` turns them into a report directory."""

    labels: list[str]
    histograms: list[dict[str, obs.WeightHist]]
    cell_spectra: list[obs.WeightHist]
    mean_images: list[np.ndarray]
    response: list[list[obs.ResponsePoint]]
    separation_power: dict[str, float] = field(default_factory=dict)
    wasserstein: dict[str, float] = field(default_factory=dict)
    #: Wasserstein-1 of every feature divided by the reference's standard deviation of it.
    wasserstein_scaled: dict[str, float] = field(default_factory=dict)
    classifier: list[ClassifierResult] = field(default_factory=list)
    physics_distances: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: precision, recall, density, coverage (:func:`fastcalo.validation.metrics.diversity`).
    diversity: dict[str, float] = field(default_factory=dict)
    per_energy: list[EnergyPointMetrics] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    detector: Detector = DEFAULT_DETECTOR
    #: the files compared, when compare() read them.
    sources: list[str] = field(default_factory=list)
    #: what each sample holds, in words: particles, incident energies, number of showers.
    descriptions: list[str] = field(default_factory=list)
    #: wall time of each step of compare(), seconds.
    timings: dict[str, float] = field(default_factory=dict)
    #: where the samples differ (:func:`fastcalo.validation.diagnosis.diagnose`), with the classifier.
    diagnosis: Diagnosis | None = None
    #: per sample, the distance along y of the centroid from the impact point, mm
    #: (:func:`fastcalo.validation.observables.displacement`), histogrammed in 1 mm bins out to the image's edge (130 mm: every shower).
    displacement: list[obs.WeightHist] = field(default_factory=list)
    #: per sample, (showers displaced by more than ``obs.DISPLACED_MM``, showers with a centroid).
    displaced: list[tuple[int, int]] = field(default_factory=list)

    def summary(self) -> list[Check]:
        """Every thresholded metric of a comparison against its bound (empty for one sample)."""
        t = self.thresholds
        ns = t.n_sigma
        checks = []
        for r in self.classifier:
            bound = t.auc_low_max if r.inputs == "low" else t.auc_high_max
            description = f"classifier AUC, {r.inputs}-level inputs ({len(r.aucs)} seeds)"
            checks.append(Check(f"auc_{r.inputs}", description, r.auc, high=bound, error=r.auc_std, n_sigma=ns))
        if self.physics_distances:
            value, error = self.physics_distances["fpd"]
            checks.append(Check("fpd", "FPD, high-level features", value, high=t.fpd_max, error=error, n_sigma=ns))
            value, error = self.physics_distances["kpd"]
            checks.append(Check("kpd", "KPD, high-level features", value, high=t.kpd_max, error=error, n_sigma=ns))
        if self.diversity:
            d = self.diversity
            checks += [
                Check("precision", "precision (k-NN manifold)", d["precision"], low=t.precision_min),
                Check("recall", "recall (k-NN manifold)", d["recall"], low=t.recall_min),
                Check("density", "density", d["density"], low=t.density_min, high=t.density_max),
                Check("coverage", "coverage", d["coverage"], low=t.coverage_min),
            ]
        if self.separation_power:
            worst = _worst(self.separation_power)
            description = f"largest separation power of {len(self.separation_power)} histograms"
            checks.append(Check("separation_power", description, self.separation_power[worst], high=t.separation_power_max, detail=worst))
        if self.wasserstein_scaled:
            worst = _worst(self.wasserstein_scaled)
            description = "largest Wasserstein-1 / σ_ref (features, cell spectrum)"
            checks.append(Check("wasserstein", description, self.wasserstein_scaled[worst], high=t.wasserstein_max, detail=worst))
        pairs = _matched_response(*self.response) if len(self.response) == 2 else []
        for name, description, bound, of in (
            ("response_mean", "|mean response ratio − 1| at the worst energy point (in errors)", t.response_mean_max, ("mean", "mean_error")),
            ("resolution", "|core resolution ratio − 1| at the worst energy point (in errors)", t.resolution_max, ("core_resolution", "core_resolution_error")),
        ):
            rows = []
            for ref, gen in pairs:
                a, ea = getattr(ref, of[0]), getattr(ref, of[1])
                b, eb = (getattr(gen, of[0]), getattr(gen, of[1])) if gen is not None else (math.nan, math.nan)
                if not a > 0:  # the reference's own value is unusable: nothing to compare with
                    continue
                # a generated value of 0 (every shower empty) is a ratio of 0; NaN (too few showers
                # with energy for a core) stays NaN: both fail, neither is left out
                ratio = b / a if b >= 0 else math.nan
                error = ratio * float(np.hypot(ea / a, eb / b)) if b > 0 else 0.0
                rows.append((abs(ratio - 1), error if math.isfinite(error) else 0.0, ref))
            if rows:  # the point furthest beyond the bound, in errors (one that cannot be compared first)
                value, error, row = max(rows, key=lambda item: item[0] - ns * item[1] if math.isfinite(item[0]) else math.inf)
                checks.append(Check(name, description, value, high=bound, error=error, n_sigma=ns, detail=f"E = {_energy_text(row)} GeV"))
        return checks

    def roles(self) -> list[str]:
        """The labels with the part each sample plays: "reference: heldout.h5", "generated: showers.root"."""
        return [f"{role}: {label}" for role, label in zip(("reference", "generated"), self.labels)]

    def conclusion(self) -> str:
        """One sentence from the summary: how many checks pass, which fail, and what the classifier
        says (the strongest single test), e.g. "The generated showers pass 5 of 12 checks (failing:
        ...); the classifier separates them from the reference (AUC 0.95 > 0.6): not yet
        indistinguishable."
        """
        if len(self.labels) == 1:
            return f"One sample ({self.roles()[0]}): its distributions and energy response, no comparison."
        checks = self.summary()
        failed = [c.name for c in checks if not c.passed]
        if not failed:
            first = f"The generated showers pass all {len(checks)} checks"
        else:
            first = f"The generated showers pass {len(checks) - len(failed)} of {len(checks)} checks (failing: {', '.join(failed)})"
        aucs = [c for c in checks if c.name.startswith("auc_")]
        if not aucs:
            return f"{first}; no classifier was trained (--no-classifier), so the most sensitive test is missing."
        worst = max(aucs, key=lambda c: c.value if np.isfinite(c.value) else np.inf)
        inputs = worst.name.removeprefix("auc_")
        if not all(c.passed for c in aucs):
            return (
                f"{first}; the classifier separates them from the reference (AUC {_number(worst.value, '.2f')} on "
                f"{inputs}-level inputs, threshold {worst.high:g}): not yet indistinguishable."
            )
        auc = _number(worst.value, ".2f")
        if failed:
            return f"{first}; the classifier does not tell them from the reference (AUC {auc}), but the failing checks show differences."
        return f"{first}; the classifier does not tell them from the reference (AUC {auc}): compatible with the reference at these sample sizes."

    def metrics(self) -> dict[str, object]:
        """Everything numeric, JSON-ready."""
        checks = self.summary()
        return {
            "labels": self.labels,
            "files": self.sources,
            "samples": self.descriptions,
            "conclusion": self.conclusion(),
            "n_showers": [int(h["response"].sum(flow=True).value) for h in self.histograms],
            "summary": [c.to_dict() for c in checks],
            "passed": sum(c.passed for c in checks),
            "failed": sum(not c.passed for c in checks),
            "thresholds": self.thresholds.to_dict(),
            "response": {label: [asdict(r) for r in rows] for label, rows in zip(self.labels, self.response)},
            "separation_power": self.separation_power,
            "wasserstein_1": self.wasserstein,
            "wasserstein_1_scaled": self.wasserstein_scaled,
            "physics_distances": {k: {"value": v, "error": e} for k, (v, e) in self.physics_distances.items()},
            "diversity": self.diversity,
            "classifier_auc": {
                r.inputs: {"auc": r.auc, "auc_std": r.auc_std, "aucs": list(r.aucs), "n": [r.n_reference, r.n_generated]}
                for r in self.classifier
            },
            "per_energy": [asdict(p) for p in self.per_energy],
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_dict(),
            "displaced": {
                "radius_mm": obs.DISPLACED_MM,
                **{label: {"count": count, "n": n, "per_10000": _per_10000(count, n)} for label, (count, n) in zip(self.labels, self.displaced)},
            },
            "timings_s": self.timings,
        }

    def write(
        self,
        directory: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        keep: Sequence[str | os.PathLike[str]] = (),
        progress: bool = False,
    ) -> Path:
        """Write PNGs, ``metrics.json`` and ``index.html`` into a new ``directory``.

        The report is written into a temporary directory beside ``directory`` and renamed into
        place, so a reader never sees half a report; the directory and its files get the modes
        the umask allows (``0o777 & ~umask``, ``0o666 & ~umask``). An existing ``directory`` is
        refused unless ``overwrite`` is true, and even then it is replaced only if it is a
        fastcalo report (:func:`report_directory_problem`: its ``metrics.json`` says so and it
        holds nothing a report does not write), and never if it is or contains the current
        directory, an input of the report (:attr:`sources`) or a path in ``keep``.

        Arguments:
            directory: the report directory.
            overwrite: replace an existing report there (else FileExistsError).
            keep: more paths that must survive (the CLI passes its thresholds file).
            progress: a progress bar over the plots.

        Returns:
            The directory.

        Raises:
            FileExistsError: ``directory`` exists and may not be replaced; the message says why.
        """
        import matplotlib.pyplot as plt
        from tqdm.auto import tqdm

        from . import plots

        target = Path(directory)
        check_report_directory(target, overwrite=overwrite, keep=[*self.sources, *keep])
        parent = target.parent if str(target.parent) else Path(".")
        parent.mkdir(parents=True, exist_ok=True)
        umask = os.umask(0)
        os.umask(umask)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
        try:
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a report is as shareable as any directory
            figures: list[tuple[str, str]] = []
            fluctuations = None if self.diagnosis is None else self.diagnosis.fluctuations
            bar = tqdm(total=3 + len(obs.FEATURES) + bool(self.displacement) + 2 * (fluctuations is not None), desc="plots", unit="plot", disable=not progress)

            def save(fig: object, name: str, caption: str) -> None:
                fig.savefig(tmp / name)  # type: ignore[attr-defined]
                plt.close(fig)  # type: ignore[arg-type]
                figures.append((name, caption))
                bar.update()

            labels = self.roles()
            with bar:
                save(plots.draw_response(self.response, labels), "response_vs_energy.png", "Energy response and resolution")
                save(plots.draw_mean_image(self.mean_images, labels, self.detector.cell_edges), "mean_image.png", "Mean image")
                save(plots.draw_overlay(self.cell_spectra, labels, log_y=True), "cell_spectrum.png", self._caption("cell_spectrum", "Cell energy spectrum"))
                for name in obs.FEATURES:
                    save(plots.draw_overlay([h[name] for h in self.histograms], labels), f"feature_{name}.png", self._caption(name, name))
                if self.displacement:
                    counts = ", ".join(f"{label} {count} of {n}" for label, (count, n) in zip(self.labels, self.displaced))
                    save(plots.draw_overlay(self.displacement, labels, log_y=True), "displacement.png",
                         f"Centroid distance from the impact point along y (beyond {obs.DISPLACED_MM:g} mm: {counts})")  # fmt: skip
                if self.diagnosis is not None and self.diagnosis.views_at is not None and fluctuations is not None:
                    at = self.diagnosis.views_at
                    where = f"{at.particle}, {at.energy} GeV"
                    edges = self.detector.cell_edges
                    save(plots.draw_std_ratio(fluctuations, labels, edges, title=where), "diagnosis_std_ratio.png",
                         f"Cell standard deviation, generated / reference ({where})")  # fmt: skip
                    save(plots.draw_correlations(fluctuations, labels, edges, title=where), "diagnosis_correlations.png",
                         f"Neighbour-cell correlations ({where})")  # fmt: skip
            files = [name for name, _ in figures] + ["metrics.json", "index.html"]
            metrics = {"format": REPORT_FORMAT, "report_files": files, **self.metrics()}
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
            (tmp / "index.html").write_text(self._html(figures))
            for name in files:
                (tmp / name).chmod(0o666 & ~umask)
            _replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return target

    def _caption(self, name: str, title: str) -> str:
        if name not in self.separation_power:
            return title
        unit = " GeV" if name == "cell_spectrum" else ""
        return (
            f"{title} (separation power {_number(self.separation_power[name], '.4f')}, "
            f"Wasserstein-1 {_number(self.wasserstein.get(name, float('nan')), '.3g')}{unit})"
        )

    def _summary_html(self) -> str:
        checks = self.summary()
        if not checks:
            return ""
        rows = []
        for c in checks:
            value = _number(c.value, ".4g") + (f" ± {c.error:.2g}" if c.error is not None and np.isfinite(c.error) else "")
            verdict = "<td class='pass'>PASS</td>" if c.passed else "<td class='fail'>FAIL</td>"
            rows.append(
                f"<tr><td>{html.escape(c.description)}</td><td>{value}</td><td>{html.escape(c.bound)}</td>{verdict}"
                f"<td>{html.escape(c.detail)}</td></tr>"
            )
        n_pass = sum(c.passed for c in checks)
        return (
            f"<h2>Summary: {n_pass} of {len(checks)} checks pass</h2><table><tr><th>metric</th><th>value</th>"
            "<th>threshold</th><th>verdict</th><th>where</th></tr>" + "".join(rows) + "</table>"
            "<p class='note'>Thresholds are in metrics.json; change them with <code>--thresholds FILE.toml</code> "
            "(docs/validation.md). For scale (arXiv:2410.21611): Geant4 against itself has AUC 0.50, the best "
            "CaloChallenge models 0.63, GANs 0.93.</p>"
        )

    def _per_energy_html(self) -> str:
        if not self.per_energy:
            return ""
        names = list(self.per_energy[0].separation_power)
        head = "<tr><th>E [GeV]</th><th>N</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"

        def table(values: str) -> str:
            rows = []
            for p in self.per_energy:
                cells = []
                for name in names:
                    value = getattr(p, values)[name]
                    limit = max(self.thresholds.separation_power_max, 3 * p.separation_floor.get(name, 0.0))
                    flag = " class='fail'" if values == "separation_power" and not value <= limit else ""
                    cells.append(f"<td{flag}>{_number(value, '.3g')}</td>")
                rows.append(f"<tr><td>{p.energy}</td><td>{p.n_reference} / {p.n_generated}</td>{''.join(cells)}</tr>")
            return f"<table>{head}{''.join(rows)}</table>"

        smallest = max(self.per_energy, key=lambda p: 1 / p.n_reference + 1 / p.n_generated)
        example = 50 * (1 / smallest.n_reference + 1 / smallest.n_generated) / 4
        return (
            "<h2>Per energy point: separation power</h2><p class='note'>The statistical floor at a point is about "
            "B (1/N<sub>ref</sub> + 1/N<sub>gen</sub>) / 4 for B filled bins: here, for 50 bins at the point with the "
            f"fewest showers (E = {smallest.energy} GeV, {smallest.n_reference} reference and {smallest.n_generated} "
            f"generated showers), {example:.2g}. Values above both the separation-power threshold and three times "
            "their floor are marked; n/a: a sample has no finite value of the feature there.</p>"
            + table("separation_power")
            + "<h2>Per energy point: Wasserstein-1 (units of the feature)</h2>"
            + table("wasserstein")
        )

    def _displaced_html(self) -> str:
        if not self.displaced:
            return ""
        rows = "".join(
            f"<tr><td>{html.escape(role)}</td><td>{count}</td><td>{n}</td><td>{_number(_per_10000(count, n), '.1f')} ± {_number(_per_10000(count, n, error=True), '.1f')}</td></tr>"
            for role, (count, n) in zip(self.roles(), self.displaced)
        )
        return (
            f"<h2>Showers far off the impact point</h2><table><tr><th>sample</th><th>centroid beyond {obs.DISPLACED_MM:g} mm along y</th>"
            f"<th>showers</th><th>per 10 000 (Poisson error)</th></tr>{rows}</table>"
            "<p class='note'>The distance along y (the azimuthal direction, where the calorimeter is symmetric about the "
            "impact point; along x the incidence angle moves the centroid) of a shower's energy-weighted centroid from "
            "its impact point. The reference Monte Carlo's centroids follow the impact point within a few mm; a shower "
            "whose energy sits most of a cell away is broken, and rare enough to hide in the binned features and the "
            "classifier (displacement.png shows the whole distribution).</p>"
        )

    def _diagnosis_html(self, figures: list[tuple[str, str]]) -> str:
        d = self.diagnosis
        if d is None:
            return ""
        rows = "".join(
            f"<tr><td>{html.escape(p.particle)}</td><td>{p.energy}</td><td>{p.n_reference} / {p.n_generated} ({p.n_used})</td>"
            f"<td>{html.escape(', '.join(p.conditions) or '–')}</td>"
            f"<td{_apart(p.auc)}>{_number(p.auc, '.3f')}</td>"
            f"<td>{_number(p.response_ratio, '.4f')} ± {_number(p.response_ratio_error, '.4f')}</td>"
            f"<td>{_number(p.resolution_ratio, '.3f')} ± {_number(p.resolution_ratio_error, '.3f')}</td></tr>"
            for p in d.points
        )
        views = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(VIEWS[name][0])}</td>"
            f"<td{_apart(auc)}>{_number(auc, '.3f')}</td></tr>"
            for name, auc in d.views.items()
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in d.notes)
        images = "".join(
            f'<figure><img src="{name}" width="{1000 if "correlations" in name else 560}"><figcaption>{html.escape(caption)}</figcaption></figure>'
            for name, caption in figures
        )
        at = d.views_at
        return (
            f"<h2>Where it fails</h2><p><b>{html.escape(d.reading())}</b></p>"
            "<p class='note'>A gradient-boosted classifier (scikit-learn HistGradientBoostingClassifier, "
            f"{d.iterations} iterations, 64 bins per input, fixed seed) tells reference from generated showers at each particle and energy "
            "point (or log bin about a factor 1.5 wide) on the cells / E<sub>inc</sub>, with the conditions that vary "
            "within the group appended; split 70/30 (stratified), AUC on the 30 %, at most "
            f"{d.max_showers} showers of each sample per group, groups with fewer than {d.min_showers} showers in a "
            "sample left out (bins merged with a neighbour first). Responses: mean and core resolution (half the "
            "16–84 % width over the median) of E<sub>dep</sub>/E<sub>inc</sub>, generated / reference, over all "
            "showers of the group. For scale: reference Monte Carlo against itself gives about 0.5, against a copy "
            "whose cell fluctuations are 10 % smaller at the same totals about 0.9.</p>"
            + (
                "<table><tr><th>particle</th><th>E [GeV]</th><th>N ref / gen (used)</th><th>conditions added</th>"
                "<th>AUC</th><th>response ratio</th><th>core resolution ratio</th></tr>" + rows + "</table>"
                if rows
                else ""
            )
            + (f"<ul class='note'>{notes}</ul>" if notes else "")
            + (
                f"<h3>Views at {html.escape(at.particle)} {at.energy} GeV: which part of the shower gives it away</h3>"
                "<table><tr><th>view</th><th>inputs (and the conditions added above)</th><th>AUC</th></tr>" + views + "</table>"
                if at is not None and views
                else ""
            )
            + images
        )

    def _html(self, figures: list[tuple[str, str]]) -> str:
        diagnosis_figures = [f for f in figures if f[0].startswith("diagnosis_")]
        figures = [f for f in figures if not f[0].startswith("diagnosis_")]
        rows = []
        for label, table in zip(self.roles(), self.response):
            for r in table:
                rows.append(
                    f"<tr><td>{html.escape(label)}</td><td>{_energy_text(r)}</td><td>{r.n}</td>"
                    f"<td>{_number(r.mean, '.4f')} ± {r.mean_error:.4f}</td>"
                    f"<td>{_number(r.resolution, '.4f')} ± {r.resolution_error:.4f}</td></tr>"
                )
        sep = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_number(v, '.4f')}</td><td>{_number(self.wasserstein.get(k, float('nan')), '.4g')}</td>"
            f"<td>{_number(self.wasserstein_scaled.get(k, float('nan')), '.3g')}</td></tr>"
            for k, v in self.separation_power.items()
        )
        auc = "".join(
            f"<tr><td>{k.upper()} (high-level features)</td><td>{_number(v, '.4g')} ± {_number(e, '.2g')}</td><td></td></tr>"
            for k, (v, e) in self.physics_distances.items()
        ) + "".join(
            f"<tr><td>{html.escape(r.inputs)}-level</td><td>{r.auc:.3f} ± {r.auc_std:.3f}</td><td>{len(r.aucs)}</td></tr>"
            for r in self.classifier
        ) + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_number(v, '.3f')}</td><td></td></tr>" for k, v in self.diversity.items()
        )
        images = "".join(
            f'<figure><img src="{name}" width="{1000 if name == "mean_image.png" else 480}"><figcaption>{html.escape(caption)}</figcaption></figure>'
            + ("<br>" if name == "mean_image.png" else "")
            for name, caption in figures
        )
        files = "".join(
            f"<li><b>{html.escape(role)}</b>" + (f" ({html.escape(src)})" if src and not role.endswith(f": {src}") else "") + (f": {html.escape(about)}" if about else "") + "</li>"
            for role, src, about in itertools.zip_longest(self.roles(), self.sources, self.descriptions, fillvalue="")
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>fastcalo validation</title>"
            "<style>body{font-family:sans-serif} figure{display:inline-block;margin:6px} img{max-width:100%;height:auto} "
            ".conclusion{font-size:120%;font-weight:bold} "
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd} .pass{background:#c8f0c8;font-weight:bold} "
            ".fail{background:#f6c0c0;font-weight:bold} .note{color:#555;font-size:90%}</style></head><body>"
            f"<h1>fastcalo validation: {' against '.join(html.escape(x) for x in reversed(self.roles()))}</h1>"
            f"<p class='conclusion'>{html.escape(self.conclusion())}</p>"
            + (f"<ul>{files}</ul>" if files else "")
            + self._summary_html()
            + "<h2>Energy response</h2><table><tr><th>sample</th><th>E [GeV]</th><th>N</th>"
            "<th>mean E<sub>dep</sub>/E<sub>inc</sub></th><th>σ/μ</th></tr>" + "".join(rows) + "</table>"
            + (
                "<h2>Distances</h2><table><tr><th>observable</th><th>separation power</th>"
                f"<th>Wasserstein-1 (units of the observable; GeV for the cell spectrum)</th><th>Wasserstein-1 / σ<sub>ref</sub></th></tr>{sep}</table>"
                "<p class='note'>n/a: not computable (a sample has no finite value).</p>"
                if sep
                else ""
            )
            + (
                "<h2>FPD, KPD (0: ideal), classifier AUC (0.5: indistinguishable), diversity</h2><table><tr><th>metric</th>"
                f"<th>value</th><th>seeds</th></tr>{auc}</table>"
                if auc
                else ""
            )
            + self._displaced_html()
            + self._diagnosis_html(diagnosis_figures)
            + self._per_energy_html()
            + f"<h2>Plots</h2>{images}</body></html>"
        )


#: ``metrics.json``'s ``"format"``: what marks a directory as a report that ``overwrite`` may replace.
REPORT_FORMAT = "fastcalo-validation-report"
#: What a report writes (reports from before the ``"report_files"`` list are checked against these).
_REPORT_FILES = frozenset(
    {"index.html", "metrics.json", "response_vs_energy.png", "mean_image.png", "cell_spectrum.png"}
    | {f"feature_{name}.png" for name in obs.FEATURES}
)


def report_directory_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a fastcalo report that may be replaced, or None if it is one.

    A report is a real directory (not a symbolic link) whose ``metrics.json`` is a JSON object
    with ``"format": "fastcalo-validation-report"`` (or, from reports written before that key,
    with ``"labels"``, ``"summary"`` and ``"thresholds"``), and which holds only plain files that
    the report wrote (its ``"report_files"``, or the fixed names of older reports). An empty
    directory holds nothing to lose and counts as one.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> report_directory_problem(d) is None  # empty
        True
        >>> _ = (d / "notes.txt").write_text("mine")
        >>> report_directory_problem(d)
        'it has no metrics.json'
    """
    path = Path(path)
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.is_dir():
        return "it is not a directory"
    entries = sorted(path.iterdir())
    if not entries:
        return None
    meta_path = path / "metrics.json"
    if not meta_path.is_file():
        return "it has no metrics.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its metrics.json is not valid JSON"
    if not isinstance(meta, dict):
        return "its metrics.json is not a fastcalo report's"
    if meta.get("format") == REPORT_FORMAT:
        listed = meta.get("report_files")
        written = frozenset(str(x) for x in listed) if isinstance(listed, list) else _REPORT_FILES
    elif "format" not in meta and {"labels", "summary", "thresholds"} <= set(meta):
        written = _REPORT_FILES
    else:
        return f"its metrics.json has no \"format\": \"{REPORT_FORMAT}\""
    foreign = [p.name + ("/" if p.is_dir() else "") for p in entries if p.name not in written or p.is_symlink() or not p.is_file()]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        return f"it holds what a report does not write: {shown}"
    return None


def check_report_directory(
    directory: str | os.PathLike[str], *, overwrite: bool = False, keep: Sequence[str | os.PathLike[str]] = ()
) -> None:
    """Raise FileExistsError if :meth:`Report.write` may not write ``directory``: it exists and is
    (or contains) the current directory, is or holds a path of ``keep`` (the inputs), is not a
    fastcalo report (:func:`report_directory_problem`), or is one but ``overwrite`` is false.
    The CLI calls it before reading anything, so that a refusal comes first, not after the work.
    """
    target = Path(directory)
    if not (target.exists() or target.is_symlink()):
        return
    here = target.resolve()
    cwd = Path.cwd().resolve()
    if here == cwd or here in cwd.parents:
        msg = f"{target}: refusing to replace the current directory or one that contains it; choose a new directory (e.g. {target / 'report'})"
        raise FileExistsError(msg)
    for item in keep:
        for candidate in {Path(os.path.abspath(item)), Path(item).resolve()}:
            if candidate == here or here in candidate.parents:
                what = "is" if candidate == here else "holds"
                msg = f"{target} {what} an input of this report ({item}); refusing to replace it: choose another output directory"
                raise FileExistsError(msg)
    problem = report_directory_problem(target)
    if problem is not None:
        msg = f"{target} already exists and is not a fastcalo report ({problem}); refusing to replace it: choose another output directory"
        raise FileExistsError(msg)
    if not overwrite:
        msg = f"{target} already exists (a fastcalo report); pass --overwrite (overwrite=True) to replace it"
        raise FileExistsError(msg)


def _replace(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` (checked by :func:`check_report_directory`) is
    first renamed aside and removed only once ``new`` is in place, and restored on failure."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.replace(target, old)  # onto the empty directory mkdtemp made
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old)


def _number(value: float, spec: str) -> str:
    """``value`` formatted, or "n/a" when it is not a finite number (a metric that could not be computed)."""
    return format(value, spec) if np.isfinite(value) else "n/a"


def _per_10000(count: int, n: int, *, error: bool = False) -> float:
    """A count per 10 000 showers (or its Poisson error); NaN for no showers."""
    if n == 0:
        return float("nan")
    return 1e4 * (math.sqrt(count) if error else count) / n


def _apart(auc: float) -> str:
    """The class of a table cell whose AUC tells the samples apart (marked as failing), else nothing."""
    return " class='fail'" if not auc <= TOLD_APART else ""


def _describe(data: ShowerData) -> str:
    """A sample in words: "photon, 2 and 20 GeV (2 energy points), 800 showers"."""
    names = {pdgid: name for name, pdgid in PARTICLES.items()}
    particles = ", ".join(names.get(int(p), f"pdgid {int(p)}") for p in np.unique(data.pdgid))
    points = np.unique(data.energy)
    if points.size <= 4:
        energies = " and ".join(f"{e:g}" for e in points) + " GeV" + (f" ({points.size} energy points)" if points.size > 1 else "")
    elif points.size <= 20:
        energies = f"{points.min():g}–{points.max():g} GeV ({points.size} energy points)"
    else:
        energies = f"{points.min():.3g}–{points.max():.3g} GeV (continuous)"
    return f"{particles}, {energies}, {len(data)} showers"


def _worst(values: dict[str, float]) -> str:
    """The key of the largest value; a NaN (not computable) counts as the worst."""
    return next((k for k, v in values.items() if np.isnan(v)), None) or max(values, key=values.__getitem__)


def _energy_text(row: obs.ResponsePoint) -> str:
    if row.energy_low == row.energy_high:
        return f"{row.energy_low:g}"
    return f"{row.energy_low:.3g}–{row.energy_high:.3g}"


def _matched_response(
    reference: list[obs.ResponsePoint], generated: list[obs.ResponsePoint]
) -> list[tuple[obs.ResponsePoint, obs.ResponsePoint | None]]:
    """Each row of the reference's response table with the generated row of the same energy group
    (None where the generated sample has too few showers there for a row)."""
    by_group = {(r.energy_low, r.energy_high): r for r in generated}
    return [(r, by_group.get((r.energy_low, r.energy_high))) for r in reference]


def per_energy(
    reference: Mapping[str, np.ndarray],
    generated: Mapping[str, np.ndarray],
    reference_energy: np.ndarray,
    generated_energy: np.ndarray,
    groups: Sequence[tuple[float, float]] | None = None,
    *,
    progress: bool = False,
) -> list[EnergyPointMetrics]:
    """Separation power and Wasserstein-1 distance of every feature, energy point by energy point:
    the one per-energy comparison, of the validation report and of the training monitor.

    A group of :func:`~fastcalo.validation.observables.energy_groups` holds the showers that
    :func:`~fastcalo.validation.observables.in_group` selects (a point to 1e-9 relative, or a bin
    [low, high)); groups with fewer than 2 showers in either sample are left out. Histograms are
    on axes common to the two samples in the group, with the flow bins counted (a value off the
    axis is a difference, not ignored). A distance that cannot be computed, because a sample has
    no finite value of the feature in the group (e.g. every shower empty, so its ratios are NaN),
    is NaN: the report marks it as failing; the training monitor's score counts it as 1, the
    largest separation power (:func:`fastcalo.monitor.evaluate`).

    Arguments:
        reference, generated: :func:`~fastcalo.validation.observables.features` of each sample,
            arrays of shape (N,) and (M,).
        reference_energy, generated_energy: the incident energies of the showers, GeV, (N,) and (M,).
        groups: the energy groups (default: ``energy_groups(reference_energy)``).
        progress: show a progress bar.

    Returns:
        One :class:`EnergyPointMetrics` per group, in the order of ``groups``.

    Example:
        >>> import numpy as np
        >>> energy = np.repeat([2.0, 20.0], 100)
        >>> ref = {name: np.random.default_rng(1).normal(size=200) for name in obs.FEATURES}
        >>> gen = {name: ref[name] + np.where(energy > 10, 3.0, 0.0) for name in obs.FEATURES}
        >>> gen["width_x"] = np.where(energy > 10, np.nan, ref["width_x"])  # no finite value at 20 GeV
        >>> points = per_energy(ref, gen, energy, energy)
        >>> [(p.energy, p.n_reference, round(p.separation_power["response"], 2), p.separation_power["width_x"]) for p in points]
        [('2', 100, 0.0, 0.0), ('20', 100, 0.84, nan)]
    """
    from tqdm.auto import tqdm

    energies = (reference_energy, generated_energy)
    out = []
    for low, high in tqdm(groups or obs.energy_groups(reference_energy), desc="per-energy metrics", unit="point", disable=not progress):
        masks = [obs.in_group(e, low, high) for e in energies]
        if min(int(m.sum()) for m in masks) < 2:
            continue
        subsets = [{name: f[name][m] for name in obs.FEATURES} for f, m in zip((reference, generated), masks)]
        hists = obs.feature_histograms(*subsets)
        n_ref, n_gen = int(masks[0].sum()), int(masks[1].sum())
        sp, w1, floor = {}, {}, {}
        for name in obs.FEATURES:
            sp[name] = _separation(hists[0][name], hists[1][name])
            w1[name] = _wasserstein(subsets[0][name], subsets[1][name])
            filled = np.count_nonzero(hists[0][name].values(flow=True) + hists[1][name].values(flow=True))
            floor[name] = float(filled * (1 / n_ref + 1 / n_gen) / 4)
        out.append(EnergyPointMetrics(low, high, n_ref, n_gen, sp, w1, floor))
    return out


def _separation(a: obs.WeightHist, b: obs.WeightHist) -> float:
    """Separation power with the flow bins (values off the axis count); NaN if a sample has no
    finite value at all (e.g. ratios of empty showers)."""
    if a.values(flow=True).sum() <= 0 or b.values(flow=True).sum() <= 0:
        return float("nan")
    return separation_power(a, b, flow=True)


def _wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1, NaN if a sample has no finite value."""
    if not (np.isfinite(a).any() and np.isfinite(b).any()):
        return float("nan")
    return wasserstein_1(a, b)


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def compare(
    reference: ShowerData | str | os.PathLike[str],
    generated: ShowerData | str | os.PathLike[str] | None = None,
    *,
    labels: tuple[str, str] | None = None,
    detector: Detector = DEFAULT_DETECTOR,
    classifier: bool = True,
    diagnosis: bool | None = None,
    thresholds: Thresholds | None = None,
    max_showers: int | None = None,
    k: int = 5,
    progress: bool = True,
) -> Report:
    """Compute the validation of ``reference`` alone, or of ``generated`` against it.

    Arguments:
        reference, generated: datasets in memory, or shower files (.root, .h5) to read. Files must
            describe the same detector (their metadata); both samples must be non-empty, finite,
            for the same particles and incident energies, with deposits in the unit of the
            incident energy. Any violation raises ValueError naming the file (or label).
        labels: names in plots and tables (default: the file names, or "reference"/"generated").
        detector: the geometry of the images.
        classifier: also train the low- and high-level classifiers
            (:func:`fastcalo.validation.classifier.classifier_auc`, three seeds each), the slowest step.
        diagnosis: also say where the samples differ (:func:`fastcalo.validation.diagnosis.diagnose`:
            gradient-boosted classifiers at fixed conditions and on views of the image, and the cell
            fluctuations); default: as ``classifier``.
        thresholds: bounds for the summary (default :class:`Thresholds`()).
        max_showers: read at most this many showers from each file.
        k: the neighbour of the diversity metrics.
        progress: progress bars on the long steps (reading, per-energy metrics, classifier seeds).

    Returns:
        A :class:`Report`.
    """
    timings: dict[str, float] = {}
    inputs = [reference] if generated is None else [reference, generated]
    names = [Path(x).name if isinstance(x, (str, os.PathLike)) else default for x, default in zip(inputs, ("reference", "generated"))]
    if labels is not None:
        names = list(labels[: len(inputs)])
    sources = [str(x) for x in inputs if isinstance(x, (str, os.PathLike))]
    paths = [Path(x) for x in inputs if isinstance(x, (str, os.PathLike))]
    if len(paths) == 2:
        _inputs.check_distinct_files(paths[0], paths[1])
    if paths:
        from ..datasets import metadata

        with _timed(timings, "read"):
            described = [(str(p), metadata(p).get("detector")) for p in paths]
            # the files against each other, and against the detector used here (if a file declares one)
            _inputs.check_detectors([*described, ("the detector given to compare()", detector.to_dict())])
    samples: list[ShowerData] = []
    with _timed(timings, "read"):
        for x, name in zip(inputs, names):
            if isinstance(x, ShowerData):
                samples.append(x)
            else:
                samples.append(_inputs.read(x, max_showers=max_showers, detector=detector, progress=progress))
    for sample, x, name in zip(samples, inputs, names):
        _inputs.check_sample(sample, str(x) if isinstance(x, (str, os.PathLike)) else name, detector)
    where = [str(x) if isinstance(x, (str, os.PathLike)) else name for x, name in zip(inputs, names)]
    if len(samples) == 2:
        _inputs.check_distinct_samples(samples[0], samples[1], (where[0], where[1]))
        _inputs.check_conditions(samples[0], samples[1], (where[0], where[1]))

    with _timed(timings, "features"):
        feats = [obs.features(s, detector) for s in samples]
    with _timed(timings, "histograms"):
        histograms = obs.feature_histograms(*feats)
        groups = obs.energy_groups(samples[0].energy)
        report = Report(
            labels=names,
            histograms=histograms,
            cell_spectra=[obs.cell_spectrum(s) for s in samples],
            mean_images=[s.images.mean(axis=0, dtype=np.float64) for s in samples],
            response=[obs.response_table(s, groups) for s in samples],
            thresholds=thresholds or Thresholds(),
            detector=detector,
            sources=sources,
            descriptions=[_describe(s) for s in samples],
            timings=timings,
        )
        distances = [obs.displacement(s, detector, feats=f) for s, f in zip(samples, feats)]
        # to the farthest a centroid can be from the impact point (the image's edge): every shower drawn
        reach = (detector.n_cells // 2 + 1) * detector.cell_size
        axis = hist.axis.Regular(int(round(reach)), 0.0, reach, label="|centroid y - impact y| [mm]")
        report.displacement = [hist.Hist(axis, storage=hist.storage.Weight()).fill(d[np.isfinite(d)]) for d in distances]
        report.displaced = [(int((d > obs.DISPLACED_MM).sum()), int(np.isfinite(d).sum())) for d in distances]
    if len(samples) == 1:
        return report
    with _timed(timings, "separation_power_wasserstein"):
        report.separation_power = {name: _separation(histograms[0][name], histograms[1][name]) for name in obs.FEATURES}
        report.separation_power["cell_spectrum"] = _separation(report.cell_spectra[0], report.cell_spectra[1])
        report.wasserstein = {name: _wasserstein(feats[0][name], feats[1][name]) for name in obs.FEATURES}
        cells = [s.images[s.images > 0].astype(np.float64) for s in samples]  # the values the cell spectrum shows
        report.wasserstein["cell_spectrum"] = _wasserstein(*cells)
        spreads = {name: float(np.nanstd(feats[0][name])) for name in obs.FEATURES}
        spreads["cell_spectrum"] = float(np.std(cells[0])) if cells[0].size else float("nan")
        for name, value in report.wasserstein.items():
            spread = spreads[name]
            if not (np.isfinite(value) and np.isfinite(spread)):
                report.wasserstein_scaled[name] = float("nan")  # not computable: the summary fails it, the page says n/a
            else:
                report.wasserstein_scaled[name] = value / spread if spread > 0 else (0.0 if value == 0 else float("inf"))
    with _timed(timings, "per_energy"):
        report.per_energy = per_energy(feats[0], feats[1], samples[0].energy, samples[1].energy, groups, progress=progress)
    matrices = [np.column_stack([f[name] for name in obs.FEATURES] + [np.log10(s.energy)]) for f, s in zip(feats, samples)]
    with _timed(timings, "fpd_kpd"):
        if min(len(m) for m in matrices) >= FPD_MIN_SHOWERS:
            report.physics_distances = {"fpd": fpd(*matrices), "kpd": kpd(*matrices)}
        else:  # too few to extrapolate: n/a on the page, and the summary fails them; the rest of the report stands
            report.physics_distances = {"fpd": (math.nan, math.nan), "kpd": (math.nan, math.nan)}
    with _timed(timings, "diversity"):
        report.diversity = diversity(*matrices, k=k)
    if classifier:
        for level in ("low", "high"):
            with _timed(timings, f"classifier_{level}"):
                report.classifier.append(
                    classifier_auc(samples[0], samples[1], inputs=level, detector=detector, progress=progress)
                )
    if classifier if diagnosis is None else diagnosis:
        with _timed(timings, "diagnosis"):
            report.diagnosis = diagnose(samples[0], samples[1], detector=detector, progress=progress)
    return report
