"""``python -m fastcalo``: the ``fastcalo`` command (also what ``torchrun ... -m fastcalo train`` runs)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
