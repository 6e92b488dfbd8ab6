"""Weight averaging: the update rule, the swap in and out, the checkpoint state."""

from __future__ import annotations

import pytest
import torch

from fastcalo.averaging import WeightAverage


def test_the_average_is_an_exponential_moving_one_from_its_start() -> None:
    w = torch.zeros(3)
    average = WeightAverage([w], decay=0.9, start=2)
    expected = None
    for step in range(1, 8):
        w.fill_(float(step))
        average.update(step)
        if step > 2:
            expected = w.clone() if expected is None else 0.9 * expected + 0.1 * w
    assert average.started
    with average.averaged():
        torch.testing.assert_close(w, expected)
    assert torch.equal(w, torch.full((3,), 7.0))


def test_off_or_before_its_start_nothing_changes() -> None:
    w = torch.ones(2)
    for average in (WeightAverage([w], decay=0.0, start=0), WeightAverage([w], decay=0.5, start=10)):
        average.update(5)
        assert not average.started and average.state() == []
        with average.averaged():
            assert torch.equal(w, torch.ones(2))


def test_the_raw_weights_come_back_after_an_error_in_the_block() -> None:
    layer = torch.nn.Linear(2, 2)
    raw = layer.weight.detach().clone()
    average = WeightAverage(list(layer.parameters()), decay=0.5, start=0)
    average.update(1)
    with torch.no_grad():
        layer.weight.add_(1.0)
    with pytest.raises(RuntimeError), average.averaged():
        assert torch.equal(layer.weight, raw)
        raise RuntimeError
    assert torch.equal(layer.weight, raw + 1.0)


def test_state_and_restore() -> None:
    w = torch.arange(3.0)
    average = WeightAverage([w], decay=0.5, start=0)
    average.update(1)
    again = WeightAverage([torch.zeros(3)], decay=0.5, start=0)
    again.restore(average.state(), step=1)
    assert again.started and torch.equal(again.state()[0], w)
    with pytest.raises(ValueError, match=r"step 4\) holds 0 averaged weights, expected 1"):
        WeightAverage([w], decay=0.5, start=3).restore([], step=4)
    WeightAverage([w], decay=0.5, start=3).restore([], step=3)  # not started yet: nothing to restore
