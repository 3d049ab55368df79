"""Detection sets as the rest of edgeeff reads them: a COCO annotations JSON, or a Pascal VOC folder
read as one (:mod:`edgeeff.data.voc`), checked so that every failure is one line saying what to fix.
Training, ``eval`` and the gate all read sets through :func:`read_coco`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgeeff.errors import EdgeeffError


class DetectionDataError(EdgeeffError):
    """A detection set that cannot be read as given."""


@dataclass(frozen=True)
class DetectionImage:
    """One annotated image: where it is, its size, and its boxes as COCO [x, y, w, h] with category ids."""

    image_id: int
    path: Path
    height: int
    width: int
    bboxes: tuple[tuple[float, float, float, float], ...]
    category_ids: tuple[int, ...]


@dataclass(frozen=True)
class DetectionSet:
    """A COCO file read and checked: its categories in id order, its images, and the folder their
    ``file_name`` entries are under."""

    coco: dict
    categories: tuple[dict, ...]
    images: tuple[DetectionImage, ...]
    root: Path

    def subset(self, image_ids) -> dict:
        """The COCO dict restricted to ``image_ids``: the ground truth a held-out split is scored against."""
        keep = set(image_ids)
        return {**self.coco, "images": [im for im in self.coco["images"] if im["id"] in keep],
                "annotations": [a for a in self.coco["annotations"] if a["image_id"] in keep]}


def read_coco(dataset: str | Path, images_root: str | Path | None = None) -> DetectionSet:
    """Read and check a COCO detection file, or a Pascal VOC folder read as one (``edgeeff.data.voc``);
    every failure is one line that says what to fix.

    Crowd annotations are left out of training (COCO marks groups it did not box one by one); images
    listed but missing on disk are an error, not a silent skip, since their boxes would vanish.
    """
    from edgeeff.data import voc

    path = Path(dataset)
    if path.is_dir():
        if not voc.is_voc(path):
            raise DetectionDataError(f"{path} is a folder without Pascal VOC annotations (Annotations/*.xml); give a COCO JSON "
                                     "or a VOC folder")
        try:
            coco = voc.read(path)
        except voc.VocError as exc:
            raise DetectionDataError(str(exc)) from None
        images_root = images_root if images_root is not None else voc.images_root(path)
    elif not path.is_file():
        raise DetectionDataError(f"detection annotations not found: {path} (give a COCO JSON, e.g. one written by edgeeff's generator, "
                                 "or a Pascal VOC folder)")
    else:
        try:
            coco = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DetectionDataError(f"{path} is not JSON ({exc}); give a COCO detection file") from None
    missing_keys = [k for k in ("images", "annotations", "categories") if not isinstance(coco, dict) or k not in coco]
    if missing_keys:
        raise DetectionDataError(f"{path} is not a COCO detection file: it has no {', '.join(missing_keys)}")
    categories = tuple(sorted(coco["categories"], key=lambda c: c["id"]))
    if not categories:
        raise DetectionDataError(f"{path} lists no categories")
    known = {c["id"] for c in categories}
    root = Path(images_root) if images_root is not None else path.parent
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        if ann.get("category_id") not in known:
            raise DetectionDataError(f"{path}: annotation {ann.get('id')} has category {ann.get('category_id')}, not among {sorted(known)}")
        if not ann.get("iscrowd", 0):
            by_image.setdefault(ann["image_id"], []).append(ann)
    images, absent = [], []
    for im in coco["images"]:
        file = root / im["file_name"]
        if not file.is_file():
            absent.append(file)
            continue
        anns = by_image.get(im["id"], [])
        images.append(DetectionImage(int(im["id"]), file, int(im["height"]), int(im["width"]),
                                     tuple(tuple(float(v) for v in a["bbox"]) for a in anns),
                                     tuple(int(a["category_id"]) for a in anns)))
    if absent:
        raise DetectionDataError(f"{len(absent)} image(s) of {path} are missing, first {absent[0]}; pass --images-root DIR if they live elsewhere")
    if not images:
        raise DetectionDataError(f"{path} lists no images")
    return DetectionSet(coco, categories, tuple(images), root)


def annotations_digest(dataset: str | Path) -> str:
    """sha256 of a set's annotations as given: the JSON file's bytes, or a VOC folder's XML files."""
    from edgeeff.data import voc
    from edgeeff.fsio import sha256_of

    return voc.digest(dataset) if Path(dataset).is_dir() else sha256_of(dataset)
