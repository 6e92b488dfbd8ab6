"""Classifier two-sample test: can a neural network tell reference from generated showers?

An MLP is trained to separate the two samples; its ROC AUC on a held-out split is 0.5 when the
samples are indistinguishable and 1 when they are fully separable. Following the CaloChallenge
evaluation (arXiv:2410.21611, section on classifier metrics), each run splits the showers into
train / validation / test (60/20/20), trains with early stopping, calibrates the outputs with
isotonic regression on the validation split, and reports the AUC of the calibrated outputs on the
test split; runs with several seeds give the spread. Inputs are

- ``"low"``: the cells divided by the incident energy, and log10 of the incident energy;
- ``"high"``: the high-level features of :mod:`fastcalo.validation.observables`, and log10 E_inc.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..datasets import ShowerData
from ..detector import DEFAULT_DETECTOR, Detector
from . import observables as obs

__all__ = ("ClassifierResult", "classifier_auc", "classifier_inputs")


@dataclass(frozen=True)
class ClassifierResult:
    """AUC per seed, their mean and standard deviation, and what was used."""

    inputs: str
    aucs: tuple[float, ...]
    n_reference: int
    n_generated: int

    @property
    def auc(self) -> float:
        """The mean AUC over the seeds."""
        return float(np.mean(self.aucs))

    @property
    def auc_std(self) -> float:
        """The standard deviation of the AUC over the seeds (NaN for a single seed)."""
        return float(np.std(self.aucs, ddof=1)) if len(self.aucs) > 1 else float("nan")


def classifier_inputs(data: ShowerData, inputs: str, detector: Detector = DEFAULT_DETECTOR) -> NDArray[np.float64]:
    """The classifier's input matrix (N, n_inputs) for ``inputs`` = "low" or "high".

    Raises:
        ValueError for any other ``inputs``.

    Example:
        >>> from fastcalo import mc
        >>> data = mc.simulate([5.0, 10.0], seed=1).showers
        >>> classifier_inputs(data, "low").shape  # 576 cells / E_inc, log10 E_inc
        (2, 577)
    """
    log_e = np.log10(data.energy)[:, None]
    if inputs == "low":
        cells = data.images.reshape(len(data), -1).astype(np.float64) / data.energy[:, None]
        return np.hstack([cells, log_e])
    if inputs == "high":
        feats = obs.features(data, detector)
        matrix: NDArray[np.float64] = np.column_stack([feats[name] for name in obs.FEATURES] + [log_e[:, 0]])
        return np.nan_to_num(matrix, nan=0.0)
    msg = f"inputs must be 'low' or 'high', got {inputs!r}"
    raise ValueError(msg)


#: What scikit-learn's MLPClassifier.fit warns when it catches a KeyboardInterrupt (Ctrl-C, or
#: the CLI's SIGTERM) and returns the half-trained model as if training had ended.
_SWALLOWED_INTERRUPT = "Training interrupted by user"


def _reraise_interrupt(caught: list[warnings.WarningMessage]) -> None:
    """Raise the KeyboardInterrupt that a fit swallowed (an AUC of a half-trained classifier is
    a wrong number, not a result); show the fit's other warnings as they would have been."""
    interrupted = False
    for w in caught:
        if _SWALLOWED_INTERRUPT in str(w.message):
            interrupted = True
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    if interrupted:
        msg = "interrupted while the classifier trained"
        raise KeyboardInterrupt(msg)


def classifier_auc(
    reference: ShowerData,
    generated: ShowerData,
    *,
    inputs: str = "low",
    seeds: Sequence[int] = (0, 1, 2),
    hidden: tuple[int, ...] = (256, 256),
    max_showers: int | None = 50_000,
    detector: Detector = DEFAULT_DETECTOR,
    progress: bool = False,
) -> ClassifierResult:
    """AUC of an MLP separating ``reference`` from ``generated`` (held-out, calibrated), per seed.

    How each run splits, trains and calibrates is in the module docstring.

    Arguments:
        reference, generated: the two samples; each is cut to ``max_showers`` (None: all).
        inputs: "low" (cells / E_inc, log10 E_inc) or "high" (high-level features, log10 E_inc).
        seeds: one training per seed (split, initialisation and shuffling).
        hidden: sizes of the hidden layers.
        progress: a progress bar over the seeds.

    Returns:
        The AUC of each seed (0.5: indistinguishable, 1: fully separable), with the inputs used
        and the sample sizes.

    Raises:
        ValueError for fewer than 50 showers in a sample, or ``inputs`` other than "low"/"high".

    Example:
        >>> import numpy as np
        >>> from fastcalo import mc
        >>> a = mc.simulate(np.full(400, 2.0), 0.0, "photon", seed=1).showers
        >>> b = mc.simulate(np.full(400, 2.0), 0.0, "photon", seed=2).showers
        >>> result = classifier_auc(a, b, inputs="high", seeds=(0, 1), hidden=(32,))
        >>> 0.35 < result.auc < 0.65
        True

    References:
        CaloChallenge evaluation, arXiv:2410.21611 (classifier metrics).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.neural_network import MLPClassifier
    from tqdm.auto import tqdm

    samples = [reference, generated] if max_showers is None else [reference[:max_showers], generated[:max_showers]]
    for sample, label in zip(samples, ("reference", "generated")):
        if len(sample) < 50:
            msg = f"{label}: the classifier test needs at least 50 showers per sample, got {len(sample)}"
            raise ValueError(msg)
    x = np.vstack([classifier_inputs(s, inputs, detector) for s in samples])
    y = np.concatenate([np.zeros(len(samples[0])), np.ones(len(samples[1]))])
    aucs = []
    for seed in tqdm(seeds, desc=f"classifier ({inputs}-level)", unit="seed", disable=not progress):
        order = np.random.default_rng(seed).permutation(len(y))
        n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
        train, val, test = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        std[std == 0] = 1.0
        xs = (x - mean) / std
        model = MLPClassifier(
            hidden_layer_sizes=hidden, alpha=1e-4, learning_rate_init=1e-3, max_iter=200,
            early_stopping=True, validation_fraction=0.15, n_iter_no_change=10, random_state=seed,
        )  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            # early stopping ends training; hitting max_iter first is not an error for a test statistic
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("always", message=_SWALLOWED_INTERRUPT)
            model.fit(xs[train], y[train])
        _reraise_interrupt(caught)
        calibration = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        calibration.fit(model.predict_proba(xs[val])[:, 1], y[val])
        calibrated = calibration.predict(model.predict_proba(xs[test])[:, 1])
        aucs.append(float(roc_auc_score(y[test], calibrated)))
    return ClassifierResult(inputs=inputs, aucs=tuple(aucs), n_reference=len(samples[0]), n_generated=len(samples[1]))
