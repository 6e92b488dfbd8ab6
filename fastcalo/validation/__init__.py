"""Validation of shower datasets: observables, histograms, metrics, plots and the report.

This package compares shower datasets whatever produced them and never imports model code.
"""

from __future__ import annotations

from . import classifier, metrics, observables
from .classifier import classifier_auc
from .metrics import fpd, kpd, separation_power, wasserstein_1
from .report import Report, compare

__all__ = (
    "Report",
    "classifier",
    "classifier_auc",
    "compare",
    "fpd",
    "kpd",
    "metrics",
    "observables",
    "separation_power",
    "wasserstein_1",
)
