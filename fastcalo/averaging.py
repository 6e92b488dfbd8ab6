"""Weight averaging: an exponential moving average of a network's weights, kept beside them.

Training goes on with the raw weights; the average is swapped in for a block of code (an
evaluation, saving a model) with :meth:`WeightAverage.averaged`, and never feeds back into
training.

References:
    Y. Yazici et al., *The Unusual Effectiveness of Averaging in GAN Training*, arXiv:1806.04498.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

__all__ = ("WeightAverage",)


class WeightAverage:
    """An exponential moving average of some tensors (Polyak averaging), from a given step on.

    Arguments:
        tensors: the tensors to average (a network's parameters and floating-point buffers), which
            training updates in place.
        decay: how much of the average each update keeps; 0 turns averaging off.
        start: the step after which the average starts: updates at steps up to ``start`` are
            ignored, the first one after it copies the tensors.

    Example:
        >>> import torch
        >>> w = torch.zeros(2)
        >>> average = WeightAverage([w], decay=0.5, start=1)
        >>> _ = w.add_(4.0); average.update(1); average.started    # step 1: not yet
        False
        >>> average.update(2); _ = w.add_(4.0); average.update(3)  # a copy (4), then halfway to 8
        >>> with average.averaged():
        ...     w.tolist()
        [6.0, 6.0]
        >>> w.tolist()
        [8.0, 8.0]
    """

    def __init__(self, tensors: Sequence[torch.Tensor], *, decay: float, start: int) -> None:
        self.tensors = list(tensors)
        self.decay = decay
        self.start = start
        self._average: list[torch.Tensor] | None = None

    @property
    def started(self) -> bool:
        """Whether there is an average yet."""
        return self._average is not None

    def update(self, step: int) -> None:
        """Move the average towards the tensors after ``step`` (a no-op up to ``start``)."""
        if self.decay <= 0 or step <= self.start:
            return
        with torch.no_grad():
            if self._average is None:
                self._average = [t.detach().clone() for t in self.tensors]
            else:
                for a, t in zip(self._average, self.tensors):
                    a.lerp_(t.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The tensors hold the average inside the block (if there is one yet), their own values
        again after it."""
        if self._average is None:
            yield
            return
        raw = [t.detach().clone() for t in self.tensors]
        with torch.no_grad():
            for t, a in zip(self.tensors, self._average):
                t.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for t, r in zip(self.tensors, raw):
                    t.copy_(r)

    def state(self) -> list[torch.Tensor]:
        """The average, one tensor per averaged tensor (empty before it starts), for a checkpoint."""
        return list(self._average or [])

    def restore(self, state: Sequence[torch.Tensor], step: int) -> None:
        """Take up the average of :meth:`state` from a checkpoint made after ``step`` steps.

        Raises:
            ValueError if the average should have started by ``step`` but ``state`` does not hold
            one tensor per averaged tensor.
        """
        should_exist = self.decay > 0 and step > self.start
        if (should_exist or state) and len(state) != len(self.tensors):
            msg = (
                f"the checkpoint (step {step}) holds {len(state)} averaged weights, expected {len(self.tensors)} "
                f"for ema_decay = {self.decay} and ema_start = {self.start}"
            )
            raise ValueError(msg)
        self._average = [a.to(t.device) for a, t in zip(state, self.tensors)] if state else None
