"""Near misses: the names a user probably meant, for error messages that help."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ("near_misses",)


def near_misses(name: str, names: Iterable[str], *, n: int = 3) -> list[str]:
    """Up to ``n`` of ``names`` close to ``name``: the same name in another case first, then the
    closest spellings (:func:`difflib.get_close_matches`, cutoff 0.6).

    Example:
        >>> near_misses("Photon_PT", ["Photon_pt", "Photon_eta", "Electron_pt"])
        ['Photon_pt', 'Photon_eta']
        >>> near_misses("xyz", ["Photon_pt"])
        []
    """
    names = list(names)
    same_case = [other for other in names if other.lower() == name.lower() and other != name]
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    return list(dict.fromkeys([*same_case, *close]))[:n]
