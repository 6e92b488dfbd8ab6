"""Validation of shower datasets: observables, histograms, metrics, plots and the report.

This package compares shower datasets whatever produced them and never imports model code.
"""

from __future__ import annotations

from . import classifier, metrics, observables
from .classifier import classifier_auc
from .metrics import diversity, fpd, kpd, separation_power, wasserstein_1
from .report import EnergyPointMetrics, Report, compare
from .thresholds import Check, Thresholds

__all__ = (
    "Check",
    "EnergyPointMetrics",
    "Report",
    "Thresholds",
    "classifier",
    "classifier_auc",
    "compare",
    "diversity",
    "fpd",
    "kpd",
    "metrics",
    "observables",
    "separation_power",
    "wasserstein_1",
)
