"""Validation of shower datasets: observables, histograms, metrics, plots and the report.

This package compares shower datasets whatever produced them and never imports model code.
"""

from __future__ import annotations

from . import observables
from .report import Report, compare, separation_power

__all__ = ("Report", "compare", "observables", "separation_power")
