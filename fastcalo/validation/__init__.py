"""Validation of shower datasets: observables, histograms, metrics, plots and the report.

This package compares shower datasets whatever produced them and never imports model code.
"""

from __future__ import annotations

from . import classifier, diagnosis, metrics, observables
from .classifier import classifier_auc
from .diagnosis import VIEWS, Diagnosis, diagnose
from .metrics import diversity, fpd, kpd, separation_power, wasserstein_1
from .report import EnergyPointMetrics, Report, compare
from .thresholds import Check, Thresholds

__all__ = (
    "VIEWS",
    "Check",
    "Diagnosis",
    "EnergyPointMetrics",
    "Report",
    "Thresholds",
    "classifier",
    "classifier_auc",
    "compare",
    "diagnose",
    "diagnosis",
    "diversity",
    "fpd",
    "kpd",
    "metrics",
    "observables",
    "separation_power",
    "wasserstein_1",
)
