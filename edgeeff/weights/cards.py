"""Weight cards: where each set of real weights comes from and how its images must be prepared.

The cards themselves are data (``cards.json`` beside this file); this module only reads them.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from edgeeff.errors import UnknownNameError, WeightsError
from edgeeff.data.preprocess import PreprocessCard
from edgeeff.model.variants import Variant

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class WeightsCard:
    name: str
    variant: str
    kind: str  # keras-imagenet | pypi-torch-legacy | local
    preprocessing: PreprocessCard
    file: str = ""
    url: str = ""
    file_hash: str = ""
    hash_algorithm: str = ""
    sha256: str = ""
    package: str = ""
    module: str = ""
    layout: str = ""
    claimed_top1: float | None = None
    claimed_by: str = ""
    license: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("preprocessing", "extra") and v not in ("", None)}
        out["preprocessing"] = self.preprocessing.to_dict()
        out.update(self.extra)
        return out


@lru_cache(maxsize=1)
def all_cards() -> dict[str, WeightsCard]:
    raw = json.loads(resources.files("edgeeff.weights").joinpath("cards.json").read_text())
    cards = {}
    for entry in raw["cards"]:
        entry = dict(entry)
        pre = PreprocessCard.from_dict(entry.pop("preprocessing"))
        cards[entry["name"]] = WeightsCard(preprocessing=pre, **entry)
    return cards


def cards_for(variant_name: str) -> list[WeightsCard]:
    return [c for c in all_cards().values() if c.variant == variant_name]


def default_preprocessing(variant: Variant) -> PreprocessCard:
    """The card used when a variant is built without weights: its first real card, else its family's."""
    cards = cards_for(variant.member)
    if cards:
        return cards[0].preprocessing
    if variant.family.name == "efficientnet-lite":
        return PreprocessCard((127.0,) * 3, (128.0,) * 3)
    return PreprocessCard(IMAGENET_MEAN, IMAGENET_STD)


def find_card(name: str, variant: Variant) -> WeightsCard:
    """Look up ``name`` (a card name, or ``imagenet``) for ``variant``; refuse weights of another variant."""
    cards = all_cards()
    key = name.strip().lower()
    if key == "imagenet":
        matches = [c for c in cards_for(variant.member) if c.kind == "keras-imagenet"]
        if not matches:
            others = ", ".join(c.name for c in cards_for(variant.member)) or "none"
            raise WeightsError(
                f"no Keras 'imagenet' weights exist for {variant.name}; weights for it: {others} (or pass a file path)"
            )
        return matches[0]
    if key not in cards:
        close = difflib.get_close_matches(key, list(cards), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(
            f"unknown weights {name!r} (not a card name and not an existing file).{hint} "
            f"Valid: imagenet, {', '.join(cards)}, none, or a path to .h5/.weights.h5/.keras/.pth"
        )
    card = cards[key]
    if card.variant != variant.member:
        raise WeightsError(f"weights {card.name!r} are for {card.variant}, not {variant.name}; use --variant {card.variant}")
    return card


def default_weights_name(variant: Variant) -> str:
    """The weights a command uses when none are named: the variant's real ones, never random.

    A card that needs no network (the PyPI Lite weights) comes first, then Keras's ``imagenet``
    (its cache, or a download). A variant without real weights (a custom φ, a changed width or
    depth) is refused: random weights are only ever used when asked for with ``--weights none``.
    """
    from edgeeff.model.variants import VARIANTS

    member = VARIANTS.get(variant.member)
    same_shape = member is not None and (member.width, member.depth) == (variant.width, variant.depth)
    cards = sorted(cards_for(variant.member), key=lambda c: c.kind == "keras-imagenet")
    if same_shape and cards:
        return cards[0].name
    why = "a custom architecture" if member is None or not same_shape else "no published weights"
    raise WeightsError(f"{variant.name} has no real weights ({why}); pass --weights FILE (e.g. a training run), "
                       f"or --weights none to use random weights on purpose")
