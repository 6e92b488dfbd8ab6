"""fastcalo: fast calorimeter shower simulation, with its own reference Monte Carlo."""

from __future__ import annotations

from . import datasets, detector, mc
from .datasets import ShowerData
from .detector import DEFAULT_DETECTOR, Detector

__version__ = "0.1.0"

__all__ = ("DEFAULT_DETECTOR", "Detector", "ShowerData", "__version__", "datasets", "detector", "mc")
