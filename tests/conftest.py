from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(1234)
    torch.manual_seed(1234)
