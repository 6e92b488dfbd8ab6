from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(1234)
    torch.manual_seed(1234)


@pytest.fixture
def one_line_error(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], str]:
    """Run ``fastcalo`` with these arguments, expecting exit 2 with one line
    'fastcalo: error: ...' on stderr and no traceback; returns that line."""
    from fastcalo.cli import main

    def run(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("fastcalo: error: ") and "Traceback" not in err, err
        return lines[0]

    return run
