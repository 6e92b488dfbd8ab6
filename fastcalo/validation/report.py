"""The validation report: histograms, response tables and metrics of one or two shower datasets,
written as PNG plots, ``metrics.json`` and a one-page ``index.html``.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from fastcalo import mc
    >>> from fastcalo.validation import compare
    >>> ref = mc.simulate(np.full(1000, 1.0), 0.0, "photon", seed=1).showers
    >>> other = mc.simulate(np.full(1000, 1.0), 0.0, "photon", seed=2).showers
    >>> report = compare(ref, other)
    >>> report.separation_power["response"] < 0.1  # statistical floor ~ 0.5 * 50 bins / 1000
    True
    >>> path = report.write(pathlib.Path(tempfile.mkdtemp()) / "report")
    >>> (path / "metrics.json").is_file()
    True
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hist
import numpy as np

from ..datasets import ShowerData
from ..detector import DEFAULT_DETECTOR, Detector
from . import observables as obs
from .classifier import ClassifierResult, classifier_auc
from .metrics import fpd, kpd, separation_power, wasserstein_1

__all__ = ("Report", "compare")


@dataclass
class Report:
    """Histograms and numbers of a validation; ``write`` turns them into a report directory."""

    labels: list[str]
    histograms: list[dict[str, hist.Hist]]
    cell_spectra: list[hist.Hist]
    mean_images: list[np.ndarray]
    response: list[list[obs.ResponsePoint]]
    separation_power: dict[str, float] = field(default_factory=dict)
    wasserstein: dict[str, float] = field(default_factory=dict)
    classifier: list[ClassifierResult] = field(default_factory=list)
    physics_distances: dict[str, tuple[float, float]] = field(default_factory=dict)
    detector: Detector = DEFAULT_DETECTOR

    def metrics(self) -> dict[str, object]:
        """Everything numeric, JSON-ready."""
        return {
            "labels": self.labels,
            "n_showers": [int(h["response"].sum(flow=True).value) for h in self.histograms],
            "response": {label: [asdict(r) for r in rows] for label, rows in zip(self.labels, self.response)},
            "separation_power": self.separation_power,
            "wasserstein_1": self.wasserstein,
            "physics_distances": {k: {"value": v, "error": e} for k, (v, e) in self.physics_distances.items()},
            "classifier_auc": {
                r.inputs: {"auc": r.auc, "auc_std": r.auc_std, "aucs": list(r.aucs), "n": [r.n_reference, r.n_generated]}
                for r in self.classifier
            },
        }

    def write(self, directory: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Write PNGs, ``metrics.json`` and ``index.html`` into ``directory`` (replaced as a whole)."""
        import matplotlib.pyplot as plt

        from . import plots

        target = Path(directory)
        if target.exists() and not overwrite:
            msg = f"{target} already exists (pass overwrite=True)"
            raise FileExistsError(msg)
        parent = target.parent if str(target.parent) else Path(".")
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
        try:
            figures: list[tuple[str, str]] = []

            def save(fig: object, name: str, caption: str) -> None:
                fig.savefig(tmp / name)  # type: ignore[attr-defined]
                plt.close(fig)  # type: ignore[arg-type]
                figures.append((name, caption))

            save(plots.draw_response(self.response, self.labels), "response_vs_energy.png", "Energy response and resolution")
            save(plots.draw_mean_image(self.mean_images, self.labels, self.detector.cell_edges), "mean_image.png", "Mean image")
            save(plots.draw_overlay(self.cell_spectra, self.labels, log_y=True), "cell_spectrum.png", "Cell energy spectrum")
            for name in obs.FEATURES:
                caption = name + (f" (separation power {self.separation_power[name]:.4f})" if name in self.separation_power else "")
                save(plots.draw_overlay([h[name] for h in self.histograms], self.labels), f"feature_{name}.png", caption)
            (tmp / "metrics.json").write_text(json.dumps(self.metrics(), indent=2))
            (tmp / "index.html").write_text(self._html(figures))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return target

    def _html(self, figures: list[tuple[str, str]]) -> str:
        rows = []
        for label, table in zip(self.labels, self.response):
            for r in table:
                energy = f"{r.energy_low:g}" if r.energy_low == r.energy_high else f"{r.energy_low:.3g}–{r.energy_high:.3g}"
                rows.append(
                    f"<tr><td>{html.escape(label)}</td><td>{energy}</td><td>{r.n}</td>"
                    f"<td>{r.mean:.4f} ± {r.mean_error:.4f}</td><td>{r.resolution:.4f} ± {r.resolution_error:.4f}</td></tr>"
                )
        sep = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td><td>{self.wasserstein.get(k, float('nan')):.4g}</td></tr>"
            for k, v in self.separation_power.items()
        )
        auc = "".join(
            f"<tr><td>{k.upper()} (high-level features)</td><td>{v:.4g} ± {e:.2g}</td><td></td></tr>"
            for k, (v, e) in self.physics_distances.items()
        ) + "".join(
            f"<tr><td>{html.escape(r.inputs)}-level</td><td>{r.auc:.3f} ± {r.auc_std:.3f}</td><td>{len(r.aucs)}</td></tr>"
            for r in self.classifier
        )
        images = "".join(
            f'<figure><img src="{name}" width="480"><figcaption>{html.escape(caption)}</figcaption></figure>'
            for name, caption in figures
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>fastcalo validation</title>"
            "<style>body{font-family:sans-serif} figure{display:inline-block;margin:6px} "
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head><body>"
            f"<h1>fastcalo validation: {' vs '.join(html.escape(x) for x in self.labels)}</h1>"
            "<h2>Energy response</h2><table><tr><th>sample</th><th>E [GeV]</th><th>N</th>"
            "<th>mean E<sub>dep</sub>/E<sub>inc</sub></th><th>σ/μ</th></tr>" + "".join(rows) + "</table>"
            + (
                "<h2>Distances</h2><table><tr><th>observable</th><th>separation power</th>"
                f"<th>Wasserstein-1 (units of the observable)</th></tr>{sep}</table>"
                if sep
                else ""
            )
            + (
                "<h2>FPD, KPD (0: ideal) and classifier AUC (0.5: indistinguishable)</h2><table><tr><th>metric</th><th>value</th>"
                f"<th>seeds</th></tr>{auc}</table>"
                if auc
                else ""
            )
            + f"<h2>Plots</h2>{images}</body></html>"
        )


def compare(
    reference: ShowerData,
    generated: ShowerData | None = None,
    *,
    labels: tuple[str, str] = ("reference", "generated"),
    detector: Detector = DEFAULT_DETECTOR,
    classifier: bool = True,
) -> Report:
    """Compute the validation of ``reference`` alone, or of ``generated`` against it.

    With two samples and ``classifier``, also train the low- and high-level classifiers
    (:func:`fastcalo.validation.classifier.classifier_auc`, three seeds each).
    """
    samples = [reference] if generated is None else [reference, generated]
    for sample, label in zip(samples, labels):
        if len(sample) == 0:
            msg = f"{label}: the dataset is empty"
            raise ValueError(msg)
        if sample.images.shape[1:] != (detector.n_cells, detector.n_cells):
            msg = f"{label}: expected {detector.n_cells}x{detector.n_cells} images, got {sample.images.shape[1:]}"
            raise ValueError(msg)
    feats = [obs.features(s, detector) for s in samples]
    histograms = obs.feature_histograms(*feats)
    groups = obs.energy_groups(reference.energy)
    report = Report(
        labels=list(labels[: len(samples)]),
        histograms=histograms,
        cell_spectra=[obs.cell_spectrum(s) for s in samples],
        mean_images=[s.images.mean(axis=0, dtype=np.float64) for s in samples],
        response=[obs.response_table(s, groups) for s in samples],
        detector=detector,
    )
    if generated is not None:
        report.separation_power = {name: separation_power(histograms[0][name], histograms[1][name]) for name in obs.FEATURES}
        report.separation_power["cell_spectrum"] = separation_power(report.cell_spectra[0], report.cell_spectra[1])
        report.wasserstein = {name: wasserstein_1(feats[0][name], feats[1][name]) for name in obs.FEATURES}
        matrices = [np.column_stack([f[name] for name in obs.FEATURES] + [np.log10(s.energy)]) for f, s in zip(feats, samples)]
        report.physics_distances = {"fpd": fpd(*matrices), "kpd": kpd(*matrices)}
        if classifier:
            report.classifier = [classifier_auc(reference, generated, inputs=i, detector=detector) for i in ("low", "high")]
    return report
