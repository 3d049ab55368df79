"""Labelled image sets: folders with the synset in each file name, or ``label<TAB>path`` list files,
and deterministic, disjoint splits of them (calibration never sees evaluation images)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgeeff.errors import EdgeeffError
from edgeeff.data.labels import label_from_filename, synset_index

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


class DataError(EdgeeffError):
    """An image folder or list that cannot be used."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int | None


def bundled_photos() -> list[Path]:
    """The real photos that ship inside the package (licences in ``edgeeff/data/assets/LICENSES.md``)."""
    from importlib import resources

    folder = Path(str(resources.files("edgeeff.data.assets").joinpath("photos")))
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")


# The embedded default validates int8 artifacts on these three photos and calibrates on the other
# ten. They are the photos whose fp32 answer is decisive (top-1 probability ~0.9, ~0.9 and 0.36
# against 0.05 for the runner-up with Lite0); on the others fp32 itself is split between two
# classes, so a changed answer there says nothing about quantization. Chosen from the fp32 model
# alone, never from an int8 result.
EMBEDDED_VALIDATION = ("camera.jpg", "coffee.jpg", "flower.jpg")


def embedded_split() -> tuple[list[Sample], list[Sample]]:
    """(calibration, validation) parts of the embedded photos: disjoint, fixed."""
    photos = [Sample(p, None) for p in bundled_photos()]
    return [s for s in photos if s.path.name not in EMBEDDED_VALIDATION], [s for s in photos if s.path.name in EMBEDDED_VALIDATION]


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_samples(source: str | Path) -> list[Sample]:
    """Samples from a folder (labels from synset file names, else None) or a ``label<TAB>path`` file.

    Sorted by path, so every consumer sees the same order.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"image source not found: {source}")
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and _is_image_name(p))
        if not files:
            raise DataError(f"{source} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return [Sample(p, label_from_filename(p.name)) for p in files]
    samples = []
    index = synset_index()
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        label_text, sep, path_text = line.partition("\t")
        if not sep:
            raise DataError(f"{source}:{number}: expected 'label<TAB>path'")
        path = Path(path_text.strip())
        if not path.is_absolute():
            path = source.parent / path
        label_text = label_text.strip()
        label = None if label_text == "-" else index.get(label_text)  # "-": unlabelled (calibration lists)
        if label is None and label_text != "-":
            if not label_text.isdigit() or not 0 <= int(label_text) < len(index):
                raise DataError(f"{source}:{number}: label {label_text!r} is neither a synset nor a class index 0-999")
            label = int(label_text)
        samples.append(Sample(path, label))
    if not samples:
        raise DataError(f"{source} lists no images")
    return sorted(samples, key=lambda s: str(s.path))


def write_list(samples: list[Sample], path: str | Path) -> Path:
    """Write ``label<TAB>path`` lines that :func:`list_samples` reads back (synset labels, ``-`` for
    none, absolute paths), atomically."""
    from edgeeff import fsio
    from edgeeff.data.labels import imagenet_classes

    classes = imagenet_classes()
    return fsio.write_text(path, "".join(f"{classes[s.label][0] if s.label is not None else '-'}\t{s.path.resolve()}\n" for s in samples))


def split(samples: list[Sample], fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Deterministic disjoint split by a seeded hash of each file name (stable when files are added).

    Returns (first, second) with about ``fraction`` of the samples in ``first``.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be between 0 and 1, got {fraction}")
    first, second = [], []
    for sample in samples:
        digest = hashlib.sha256(f"{seed}:{sample.path.name}".encode()).digest()
        (first if int.from_bytes(digest[:8], "big") / 2**64 < fraction else second).append(sample)
    return first, second
