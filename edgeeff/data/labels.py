"""The ImageNet-1k class list (shipped with the package) and labels read from file names."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_SYNSET = re.compile(r"^(n\d{8})")


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """(synset, name) in the standard class-index order (sorted synsets)."""
    text = resources.files("edgeeff.data.assets").joinpath("imagenet_classes.txt").read_text()
    rows = []
    for line in text.splitlines():
        if line.strip():
            synset, _, name = line.strip().partition(" ")
            rows.append((synset, name))
    return tuple(rows)


@lru_cache(maxsize=1)
def synset_index() -> dict[str, int]:
    return {synset: i for i, (synset, _) in enumerate(imagenet_classes())}


def label_from_filename(name: str) -> int | None:
    """Class index from a file name that starts with a synset (``n01440764_tench.JPEG``), else None."""
    match = _SYNSET.match(name)
    return synset_index().get(match.group(1)) if match else None
