"""Pascal VOC folders read as COCO: boxes, ids and difficult objects as the common readers do,
scored by pycocotools exactly as the same set written as COCO JSON; bad XML refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from edgeeff.data import voc
from edgeeff.detection_metrics import coco_scores
from edgeeff.data.coco import DetectionDataError, read_coco

NAMES = ("dog", "cat", "person")  # VOC classes: canonical ids 12, 8, 15


def write_voc(root: Path, boxes_per_image: list[list[tuple]], size=(200, 160), layout="devkit") -> Path:
    """A VOC folder: per image a list of (name, xmin, ymin, xmax, ymax, difficult), 1-based inclusive."""
    from PIL import Image

    annotations = root / "Annotations" if layout == "devkit" else root
    images = root / "JPEGImages" if layout == "devkit" else root
    annotations.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    for number, objects in enumerate(boxes_per_image):
        name = f"{number:04d}"
        Image.new("RGB", size, (number * 20, 90, 140)).save(images / f"{name}.jpg")
        body = "".join(f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                       f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for n, x0, y0, x1, y1, d in objects)
        (annotations / f"{name}.xml").write_text(f"<annotation><filename>{name}.jpg</filename><size><width>{size[0]}</width>"
                                                 f"<height>{size[1]}</height><depth>3</depth></size>{body}</annotation>")
    return root


OBJECTS = [[("dog", 11, 21, 60, 80, False), ("cat", 100, 30, 150, 90, False)],
           [("person", 1, 1, 200, 160, False), ("dog", 40, 40, 70, 70, True)],
           [("cat", 50, 60, 120, 150, False)]]


@pytest.mark.parametrize("layout", ["devkit", "labelimg"])
def test_voc_boxes_ids_and_difficult_objects(tmp_path, layout):
    data = read_coco(write_voc(tmp_path / "voc", OBJECTS, layout=layout))
    assert [(c["id"], c["name"]) for c in data.categories] == [(8, "cat"), (12, "dog"), (15, "person")]
    first = data.images[0]
    assert first.path.is_file() and (first.width, first.height) == (200, 160)
    # 1-based inclusive corners -> [x, y, w, h] with x = xmin - 1 and w = xmax - xmin + 1 (Detectron2's reading)
    assert first.bboxes == ((10.0, 20.0, 50.0, 60.0), (99.0, 29.0, 51.0, 61.0)) and first.category_ids == (12, 8)
    assert data.images[1].bboxes == ((0.0, 0.0, 200.0, 160.0),)  # the difficult dog is not trained on...
    crowd = [a for a in data.coco["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 12  # ...and is ignored by the scorer, as VOC's does


def test_names_outside_voc_are_numbered_in_name_order(tmp_path):
    data = read_coco(write_voc(tmp_path / "voc", [[("widget", 1, 1, 9, 9, False), ("bolt", 2, 2, 8, 8, False)]]))
    assert [(c["id"], c["name"]) for c in data.categories] == [(1, "bolt"), (2, "widget")]


def test_pycocotools_scores_a_voc_folder_as_the_same_set_in_coco_json(tmp_path):
    folder = write_voc(tmp_path / "voc", OBJECTS)
    from_voc = read_coco(folder)
    as_json = tmp_path / "coco" / "annotations.json"
    as_json.parent.mkdir()
    for image in from_voc.images:
        (as_json.parent / image.path.name).symlink_to(image.path)
    as_json.write_text(json.dumps(from_voc.coco))
    rng = np.random.default_rng(0)
    results = []
    for image in from_voc.images:
        for (x, y, w, h), cat in zip(image.bboxes, image.category_ids):
            results.append({"image_id": image.image_id, "category_id": cat, "score": float(rng.uniform(0.3, 1)),
                            "bbox": [x + float(rng.uniform(-4, 4)), y + float(rng.uniform(-4, 4)), w, h]})
    results.append({"image_id": 2, "category_id": 12, "score": 0.99, "bbox": [39.0, 39.0, 31.0, 31.0]})  # on the difficult dog
    results.append({"image_id": 3, "category_id": 15, "score": 0.9, "bbox": [0.0, 0.0, 30.0, 30.0]})  # a false positive
    by_voc, by_json = coco_scores(from_voc.coco, results), coco_scores(read_coco(as_json).coco, results)
    assert by_voc == by_json
    assert 0.3 < by_voc["map"] < 1.0
    # the detection on the difficult dog costs nothing: without it the score is the same
    assert coco_scores(from_voc.coco, [r for r in results if r["bbox"] != [39.0, 39.0, 31.0, 31.0]])["map"] == pytest.approx(by_voc["map"])
    assert voc.digest(folder) == voc.digest(folder) != voc.digest(write_voc(tmp_path / "other", OBJECTS[:2]))


def test_bad_voc_folders_are_refused_in_one_line(tmp_path):
    folder = write_voc(tmp_path / "voc", OBJECTS[:1])
    (folder / "Annotations" / "0000.xml").write_text("<annotation><filename>0000.jpg</filename>")
    with pytest.raises(DetectionDataError, match="0000.xml is not valid XML"):
        read_coco(folder)
    (folder / "Annotations" / "0000.xml").write_text("<annotation><filename>0000.jpg</filename><size><width>20</width>"
                                                      "<height>20</height></size><object><name>dog</name><bndbox><xmin>9</xmin>"
                                                      "<ymin>1</ymin><xmax>2</xmax><ymax>5</ymax></bndbox></object></annotation>")
    with pytest.raises(DetectionDataError, match="xmax < xmin"):
        read_coco(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DetectionDataError, match="without Pascal VOC annotations"):
        read_coco(tmp_path / "empty")
    assert_one_line_error(run_cli("train-detect", "--detector", "efficientdet-lite0", "--data", str(folder), "--out",
                                  str(tmp_path / "run")), "0000.xml", "xmax < xmin")
