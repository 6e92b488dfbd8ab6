"""Pass/fail thresholds of the validation metrics, and the summary table they give.

Every number of a comparison that has a threshold becomes one :class:`Check` (value, bound,
PASS/FAIL). The defaults are in :class:`Thresholds`; ``docs/validation.md`` explains each.
A TOML file with a subset of the keys overrides them (``fastcalo-validate --thresholds FILE``).

Example:
    >>> t = Thresholds(auc_low_max=0.55)
    >>> t.auc_low_max, t.auc_high_max
    (0.55, 0.6)
    >>> Thresholds.from_dict({"auc_lowmax": 0.5})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: thresholds: unknown key(s) ['auc_lowmax'] (did you mean 'auc_low_max'?); valid keys are ...
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .._names import near_misses

__all__ = ("Check", "Thresholds")


@dataclass(frozen=True)
class Thresholds:
    """Bounds that a generated sample must meet against the reference (see docs/validation.md).

    ``*_max`` are upper bounds, ``*_min`` lower bounds. The defaults are meant for samples of
    about 10 000 showers or more per side; smaller samples have larger statistical floors
    (e.g. the separation power's, about bins / (2 N)). Metrics that come with a statistical
    error fail only when they are beyond the bound by more than ``n_sigma`` errors.
    """

    #: classifier AUC on low-level inputs (cells / E_inc, log10 E_inc); 0.5 is ideal.
    auc_low_max: float = 0.60
    #: classifier AUC on high-level features and log10 E_inc.
    auc_high_max: float = 0.60
    #: Fréchet physics distance of the standardised high-level features (in units of variance).
    fpd_max: float = 0.05
    #: kernel physics distance (squared MMD, cubic kernel) of the same features.
    kpd_max: float = 0.01
    #: largest separation power over the feature histograms and the cell spectrum.
    separation_power_max: float = 0.05
    #: largest Wasserstein-1 distance of a feature, in units of the reference's standard deviation.
    wasserstein_max: float = 0.10
    #: largest |mean response ratio - 1| over the energy points (mean of E_dep / E_inc).
    response_mean_max: float = 0.01
    #: largest |resolution ratio - 1| over the energy points (core resolution of E_dep / E_inc:
    #: half the central 68 % interval over the median).
    resolution_max: float = 0.10
    #: k-NN precision (generated showers lie on the reference manifold).
    precision_min: float = 0.80
    #: k-NN recall (the reference manifold is reproduced: no mode collapse).
    recall_min: float = 0.80
    #: density: about 1 for identical samples; low when generated showers sit in sparse regions.
    density_min: float = 0.80
    #: density above this: generated showers crowd into the densest regions.
    density_max: float = 1.20
    #: coverage: about 1 - 2^-k = 0.97 for identical samples with k = 5.
    coverage_min: float = 0.90
    #: a metric with a statistical error (AUC, FPD, KPD, response, resolution) fails only when it is
    #: beyond its bound by more than this many errors (0: compare the value alone).
    n_sigma: float = 2.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                msg = f"thresholds: {f.name} must be a finite number, got {value!r}"
                raise ValueError(msg)
        if self.n_sigma < 0:
            msg = f"thresholds: n_sigma must be >= 0, got {self.n_sigma!r}"
            raise ValueError(msg)

    @classmethod
    def from_dict(cls, values: Mapping[str, float], *, source: str = "thresholds") -> Thresholds:
        """Defaults overridden by ``values`` (checked at run time too: they may come from a file).

        Raises:
            ValueError naming ``source``: for unknown keys (listing the valid ones and near misses)
            and values that are not finite numbers.
        """
        valid = [f.name for f in fields(cls)]
        unknown = [key for key in values if key not in valid]
        if unknown:
            hints = "".join(f" (did you mean {near[0]!r}?)" for key in unknown if (near := near_misses(key, valid, n=1)))
            msg = f"{source}: unknown key(s) {unknown}{hints}; valid keys are {valid}"
            raise ValueError(msg)
        try:
            return cls(**{key: values[key] for key in values})
        except ValueError as error:
            msg = f"{source}: {str(error).removeprefix('thresholds: ')}"
            raise ValueError(msg) from None

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Thresholds:
        """Defaults overridden by the top-level keys of a TOML file, e.g. ``auc_low_max = 0.55``.

        Raises:
            FileNotFoundError; ValueError naming the file for invalid TOML and what
            :meth:`from_dict` refuses; ImportError on Python < 3.11 without ``tomli``.

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "thresholds.toml"
            >>> _ = path.write_text("auc_low_max = 0.55")
            >>> Thresholds.from_toml(path).auc_low_max
            0.55
        """
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            try:
                import tomli as tomllib
            except ModuleNotFoundError:
                msg = "reading a thresholds TOML file on Python < 3.11 needs the 'tomli' package (pip install tomli)"
                raise ImportError(msg) from None

        path = Path(path)
        try:
            with path.open("rb") as f:
                values = tomllib.load(f)
        except FileNotFoundError:
            msg = f"no thresholds file at {path}"
            raise FileNotFoundError(msg) from None
        except tomllib.TOMLDecodeError as error:
            msg = f"{path}: not valid TOML: {error}"
            raise ValueError(msg) from None
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, float]:
        """Every threshold by name (JSON-ready)."""
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """One row of the summary: a metric's value against its bound(s)."""

    name: str
    description: str
    value: float
    low: float | None = None
    high: float | None = None
    error: float | None = None
    detail: str = ""
    #: errors of slack: the value may pass its bound by n_sigma * error (0 without an error).
    n_sigma: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether the value is within its bound(s), with the slack; a value that is not finite fails.

        Example:
            >>> Check("auc", "AUC", 0.63, high=0.6, error=0.02, n_sigma=2.0).passed
            True
        """
        if not math.isfinite(self.value):
            return False
        slack = self.n_sigma * self.error if self.error is not None and math.isfinite(self.error) else 0.0
        return (self.low is None or self.value + slack >= self.low) and (self.high is None or self.value - slack <= self.high)

    @property
    def bound(self) -> str:
        """The bound as text: '≤ 0.6', '≥ 0.8' or '0.8 – 1.2'."""
        if self.low is not None and self.high is not None:
            return f"{self.low:g} – {self.high:g}"
        return f"≥ {self.low:g}" if self.low is not None else f"≤ {self.high:g}"

    def to_dict(self) -> dict[str, object]:
        """The fields and ``passed`` (JSON-ready)."""
        out = asdict(self)
        out["passed"] = self.passed
        return out
