"""fastcalo: fast calorimeter shower simulation, with its own reference Monte Carlo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import datasets, detector, mc
from .datasets import ShowerData
from .detector import DEFAULT_DETECTOR, Detector

if TYPE_CHECKING:  # imported lazily by __getattr__; here so that type checkers know them
    from . import model, particles, simulator, train, validation
    from .simulator import Simulator

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """The modules and names that are imported on first use (see ``__all__``)."""
    # fastcalo.validation pulls in hist and matplotlib, model, train and simulator pull in torch,
    # particles pulls in vector and particle: imported on first use only
    import importlib

    if name in ("model", "particles", "simulator", "train", "validation"):
        return importlib.import_module(f".{name}", __name__)
    if name == "Simulator":
        return importlib.import_module(".simulator", __name__).Simulator
    msg = f"module 'fastcalo' has no attribute {name!r}"
    raise AttributeError(msg)

__all__ = (
    "DEFAULT_DETECTOR",
    "Detector",
    "ShowerData",
    "Simulator",
    "__version__",
    "datasets",
    "detector",
    "mc",
    "model",
    "particles",
    "simulator",
    "train",
    "validation",
)
