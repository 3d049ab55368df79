"""A seeded detection set with exact boxes, made from labelled photos, in COCO format.

No detection data with real boxes installs from the registries here, so one is composed: each image
is one photo (resized and centre-cropped to the canvas) with one to ``max_objects`` other photos
pasted on it at random sizes and places, never overlapping one another, so every pasted photo is
fully visible and its box is exact to the pixel. The category of a pasted photo is its ImageNet
class folded into a few coarse groups (:data:`COARSE_GROUPS`): a detector can learn five kinds of
thing from a few hundred photos, not five hundred classes.

Images are PNG (lossless: the tests check the pasted pixels), the annotations COCO JSON
(``bbox`` = [x, y, width, height] in pixels, category ids from 1), written last and atomically, so a
folder with ``annotations.json`` is complete. Same photos, options and seed: the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeeff import fsio
from edgeeff.data.images import DataError, Sample, list_samples
from edgeeff.data.preprocess import load_rgb

# ImageNet-1k class index ranges (inclusive) per coarse group; line i of synsets.txt is class i.
COARSE_GROUPS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("dog", ((151, 268),)),  # Chihuahua .. Mexican hairless
    ("animal", ((0, 150), (269, 397))),  # fish, birds, reptiles, invertebrates; wolves .. puffer
    ("food", ((924, 969),)),  # guacamole .. eggnog
    ("nature", ((970, 980), (984, 998))),  # alp .. volcano; rapeseed .. ear (plants, fungi)
    ("object", ((398, 923), (981, 983), (999, 999))),  # abacus .. plate; three people; toilet tissue
)
ANNOTATIONS = "annotations.json"


def coarse_category(imagenet_class: int) -> int:
    """COCO category id (1-based position in :data:`COARSE_GROUPS`) of an ImageNet class index."""
    for cat_id, (_, ranges) in enumerate(COARSE_GROUPS, start=1):
        if any(lo <= imagenet_class <= hi for lo, hi in ranges):
            return cat_id
    raise DataError(f"ImageNet class {imagenet_class} is outside 0-999")


@dataclass(frozen=True)
class SceneOptions:
    """How the set is composed. Object sides are fractions of the canvas side (longer side of the
    pasted photo, aspect kept)."""

    size: int = 320
    max_objects: int = 3
    min_side: float = 0.15
    max_side: float = 0.5
    placement_tries: int = 50  # a placement that overlaps an earlier object is drawn again

    def __post_init__(self):
        if not 0 < self.min_side <= self.max_side <= 1:
            raise DataError(f"need 0 < min_side <= max_side <= 1, got {self.min_side}, {self.max_side}")
        if self.max_objects < 1 or self.size < 16:
            raise DataError("need max_objects >= 1 and size >= 16")


def cover(img, size: int):
    """Resize so the shorter side is ``size`` and centre-crop to a square: the background canvas."""
    from PIL import Image

    width, height = img.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    return img.resize((size, size), Image.BILINEAR, box=box)


def fit_object(img, longer_side: int):
    """Resize a photo so its longer side is ``longer_side`` pixels, aspect kept (at least 1 px)."""
    from PIL import Image

    width, height = img.size
    scale = longer_side / max(width, height)
    return img.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)


def _overlaps(box, boxes) -> bool:
    x, y, w, h = box
    return any(x < bx + bw and bx < x + w and y < by + bh and by < y + h for bx, by, bw, bh in boxes)


def _compose(background: Sample, objects: list[Sample], rng: np.random.Generator, opt: SceneOptions):
    canvas = cover(load_rgb(background.path), opt.size)
    placed: list[tuple[int, int, int, int]] = []
    annotations = []
    for sample in objects:
        longer = int(round(rng.uniform(opt.min_side, opt.max_side) * opt.size))
        photo = fit_object(load_rgb(sample.path), longer)
        w, h = photo.size
        for _ in range(opt.placement_tries):
            box = (int(rng.integers(0, opt.size - w + 1)), int(rng.integers(0, opt.size - h + 1)), w, h)
            if not _overlaps(box, placed):
                break
        else:
            continue  # no free place: this object is left out, the set stays exact
        canvas.paste(photo, box[:2])
        placed.append(box)
        annotations.append({"bbox": list(box), "category_id": coarse_category(sample.label), "source": sample.path.name})
    return canvas, annotations


def generate(source, out_dir: str | Path, count: int, seed: int = 0, options: SceneOptions | None = None) -> Path:
    """Write ``count`` composed images and their COCO annotations under ``out_dir``; return the
    annotations' path. ``source``: a folder of synset-named photos or a list of labelled samples
    (pass disjoint lists to make disjoint training and evaluation sets)."""
    opt = options or SceneOptions()
    samples = list_samples(source) if isinstance(source, (str, Path)) else list(source)
    samples = [s for s in samples if s.label is not None]
    if len(samples) < 2:
        raise DataError("a detection set needs at least two labelled photos (a background and an object)")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        picks = rng.choice(len(samples), size=min(len(samples), 1 + int(rng.integers(1, opt.max_objects + 1))), replace=False)
        canvas, objects = _compose(samples[picks[0]], [samples[i] for i in picks[1:]], rng, opt)
        name = f"{image_id:06d}.png"
        with fsio.atomic_path(out_dir / "images" / name) as tmp:
            canvas.save(tmp, format="PNG")
        images.append({"id": image_id, "file_name": f"images/{name}", "width": opt.size, "height": opt.size})
        for obj in objects:
            x, y, w, h = obj["bbox"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "area": w * h, "iscrowd": 0, **obj})
    coco = {
        "info": {"description": f"edgeeff composed detection set, seed {seed}", "options": vars(opt)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name} for i, (name, _) in enumerate(COARSE_GROUPS, start=1)],
    }
    return fsio.write_text(out_dir / ANNOTATIONS, json.dumps(coco, indent=1))


def generate_split(source, out_dir: str | Path, train_count: int, held_out_count: int, seed: int = 0,
                   held_out_fraction: float = 0.2, options: SceneOptions | None = None) -> dict[str, Path]:
    """A training set and a held-out set whose photos are disjoint (a seeded split of ``source``
    by file name, ``edgeeff.data.images.split``), so held-out scenes show only unseen photos.
    Returns the two annotation files (``train/annotations.json``, ``held-out/annotations.json``)."""
    from edgeeff.data.images import split

    samples = [s for s in (list_samples(source) if isinstance(source, (str, Path)) else list(source)) if s.label is not None]
    held, train = split(samples, held_out_fraction, seed)
    out_dir = Path(out_dir)
    return {"train": generate(train, out_dir / "train", train_count, seed, options),
            "held-out": generate(held, out_dir / "held-out", held_out_count, seed + 1, options)}
