"""fastcalo: fast calorimeter shower simulation, with its own reference Monte Carlo."""

from __future__ import annotations

from . import datasets, detector, mc
from .datasets import ShowerData
from .detector import DEFAULT_DETECTOR, Detector

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # fastcalo.validation pulls in hist and matplotlib, model and train pull in torch: on first use only
    if name in ("model", "train", "validation"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    msg = f"module 'fastcalo' has no attribute {name!r}"
    raise AttributeError(msg)

__all__ = (
    "DEFAULT_DETECTOR",
    "Detector",
    "ShowerData",
    "__version__",
    "datasets",
    "detector",
    "mc",
    "model",
    "train",
    "validation",
)
