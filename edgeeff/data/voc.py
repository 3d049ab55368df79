"""Pascal VOC detection sets, read as the COCO dict the rest of edgeeff scores and trains on.

A VOC set is a folder of XML annotations: the VOCdevkit layout (``Annotations/*.xml`` beside
``JPEGImages/``) or XML files next to their images (LabelImg's layout). Each becomes a COCO image and
its objects COCO annotations, so pycocotools scores VOC the same way it scores COCO (mAP@[.5:.95],
AP50, AP75), and a ``train-detect`` run's categories carry over to ``convert`` and ``eval``.

Choices, each the common one:

* Boxes: VOC's ``xmin ymin xmax ymax`` are 1-based pixel indices, inclusive; as Detectron2 reads
  them, ``xmin`` and ``ymin`` lose 1 and the maxima stay, so a COCO box is
  ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``.
* ``difficult`` objects become ``iscrowd: 1``: VOC's evaluation ignores them, and pycocotools ignores
  a detection matched to a crowd region in the same way; training leaves them out.
* Category ids: when every name is one of VOC's 20 classes, the canonical order (aeroplane = 1 ...
  tvmonitor = 20), so a split that lacks a class keeps the others' ids; otherwise the names sorted,
  numbered from 1.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

from edgeeff.errors import EdgeeffError

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
               "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


class VocError(EdgeeffError):
    """A VOC folder that cannot be read (one line naming the file)."""


def annotation_files(folder: str | Path) -> list[Path]:
    """The XML annotations of a VOC folder (``Annotations/`` where it has one), sorted; empty when none."""
    folder = Path(folder)
    where = folder / "Annotations" if (folder / "Annotations").is_dir() else folder
    return sorted(p for p in where.glob("*.xml") if p.is_file()) if where.is_dir() else []


def is_voc(path: str | Path) -> bool:
    return Path(path).is_dir() and bool(annotation_files(path))


def images_root(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder / "JPEGImages" if (folder / "JPEGImages").is_dir() else folder


def digest(folder: str | Path) -> str:
    """sha256 over the annotation files' names and bytes: what a set's manifest records."""
    h = hashlib.sha256()
    for path in annotation_files(folder):
        h.update(f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _text(node, tag: str, path: Path) -> str:
    found = node.find(tag)
    if found is None or found.text is None or not found.text.strip():
        raise VocError(f"{path}: no <{tag}>; a VOC annotation needs filename, size and objects with name and bndbox")
    return found.text.strip()


def _number(node, tag: str, path: Path) -> float:
    text = _text(node, tag, path)
    try:
        return float(text)
    except ValueError:
        raise VocError(f"{path}: <{tag}> is {text!r}, not a number") from None


def read(folder: str | Path) -> dict:
    """The COCO dict of a VOC folder; ``file_name`` is relative to :func:`images_root`."""
    folder = Path(folder)
    files = annotation_files(folder)
    if not files:
        raise VocError(f"{folder} holds no Pascal VOC annotations (Annotations/*.xml or *.xml)")
    parsed = []
    for path in files:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise VocError(f"{path} is not valid XML ({exc})") from None
        size = root.find("size")
        if size is None:
            raise VocError(f"{path}: no <size>; a VOC annotation records the image's width and height")
        objects = []
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            if box is None:
                raise VocError(f"{path}: an <object> has no <bndbox>")
            x0, y0, x1, y1 = (_number(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
            if x1 < x0 or y1 < y0:
                raise VocError(f"{path}: a box has xmax < xmin or ymax < ymin ({x0:g}, {y0:g}, {x1:g}, {y1:g})")
            difficult = obj.find("difficult")
            objects.append((_text(obj, "name", path), [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1],
                            difficult is not None and (difficult.text or "0").strip() == "1"))
        parsed.append((_text(root, "filename", path), int(_number(size, "width", path)), int(_number(size, "height", path)), objects))
    names = sorted({name for *_, objects in parsed for name, _, _ in objects})
    order = list(VOC_CLASSES) if set(names) <= set(VOC_CLASSES) else names
    ids = {name: order.index(name) + 1 for name in names}
    coco = {"images": [], "annotations": [], "categories": [{"id": ids[n], "name": n} for n in sorted(names, key=ids.get)]}
    for image_id, (file_name, width, height, objects) in enumerate(parsed, 1):
        coco["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for name, bbox, difficult in objects:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": ids[name],
                                        "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": int(difficult)})
    return coco
