"""`edgeeff eval` of a detector artifact: boxes back to the annotated pixels, logit columns to COCO
ids, one-line refusals, and a real conversion scored beside its Keras detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from edgeeff.detect_eval import NO_CATEGORIES_NOTE, category_ids, image_results
from edgeeff.detection_agreement import Detections
from edgeeff.detection_metrics import coco_scores
from edgeeff.errors import EdgeeffError
from edgeeff.data.coco import DetectionImage


def test_a_box_in_a_2x_letterbox_maps_back_exactly_with_its_category_id():
    # 128 x 64 image (height x width) letterboxed to 256: every image pixel is 2 input pixels.
    image = DetectionImage(42, Path("unused.png"), 128, 64, ((5.0, 10.0, 20.0, 20.0),), (9,))
    boxes = np.zeros((1, 3, 4), np.float32)
    boxes[0, 0] = (20, 10, 60, 50)  # (ymin, xmin, ymax, xmax) in input pixels
    found = Detections(boxes, np.array([[0.9, 0, 0]], np.float32), np.array([[1, -1, -1]], np.int32), np.array([1], np.int32))
    results = image_results([image], found, 256, [7, 9])
    assert results == [{"image_id": 42, "category_id": 9, "bbox": [5.0, 10.0, 20.0, 20.0], "score": pytest.approx(0.9)}]
    truth = {"images": [{"id": 42, "file_name": "unused.png", "height": 128, "width": 64}],
             "annotations": [{"id": 1, "image_id": 42, "category_id": 9, "bbox": [5, 10, 20, 20], "area": 400, "iscrowd": 0}],
             "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]}
    scores = coco_scores(truth, results)
    assert scores["map"] == pytest.approx(1.0) and scores["per_class"]["dog"] == pytest.approx(1.0)


def test_logit_columns_take_the_artifacts_category_ids():
    truth = [{"id": 3, "name": "food"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "animal"}]
    meta = {"raw_output": {"classes": 2}, "categories": [{"id": 2, "name": "animal"}, {"id": 3, "name": "food"}]}
    assert category_ids(meta, truth, "set.json") == ([2, 3], [])
    assert category_ids({"raw_output": {"classes": 3}, "categories": None}, truth, "set.json") == ([1, 2, 3], [NO_CATEGORIES_NOTE])
    # the same names under other ids (a VOC folder numbers its own): matched by name, with a note
    columns, notes = category_ids({**meta, "categories": [{"id": 1, "name": "food"}, {"id": 2, "name": "dog"}]}, truth, "voc")
    assert columns == [3, 1] and "matched by name" in notes[0]
    with pytest.raises(EdgeeffError, match="other classes"):
        category_ids({**meta, "categories": [{"id": 2, "name": "cat"}, {"id": 3, "name": "food"}]}, truth, "set.json")
    with pytest.raises(EdgeeffError, match="no category id in common"):
        category_ids({**meta, "categories": [{"id": 8, "name": "x"}, {"id": 9, "name": "y"}]}, truth, "set.json")


@pytest.fixture()
def detector_folder(tmp_path):
    """An artifact folder as far as the refusals look: metadata saying "detect", a model file."""
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(b"")
    (folder / "edgeeff.json").write_text(json.dumps({"task": "detect", "artifact": "model.tflite", "target": "tflite-int8",
                                                     "variant": "efficientdet-lite0"}))
    return folder


def test_a_detector_needs_a_coco_json_in_one_line(detector_folder, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    assert_one_line_error(run_cli("eval", str(detector_folder), "--images", str(images)), "is a folder", "annotations.json")
    assert_one_line_error(run_cli("eval", str(detector_folder), "--images", str(tmp_path / "missing.json")), "not found", "COCO")
    assert_one_line_error(run_cli("eval", str(detector_folder)), "COCO annotations")


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    """Six composed 128 px images from the bundled photos with their COCO json."""
    from edgeeff.data.detection import SceneOptions, generate
    from edgeeff.data.images import Sample, bundled_photos

    classes = [281, 967, 985, 500]
    samples = [Sample(p, classes[i % len(classes)]) for i, p in enumerate(bundled_photos())]
    out = tmp_path_factory.mktemp("detset")
    return generate(samples, out, count=6, seed=1, options=SceneOptions(size=128, max_objects=2, min_side=0.3, max_side=0.5))


@pytest.mark.slow
def test_fp32_artifact_scores_as_its_keras_detector(coco_set, tmp_path):
    from edgeeff.convert import convert

    meta = convert("efficientdet-lite0", "tflite-fp32", weights=None, out=tmp_path / "out")
    report = tmp_path / "eval.json"
    done = run_cli("eval", meta["path"], "--images", str(coco_set), "--json", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mAP" in done.stdout and "post-processing ms" in done.stdout
    payload = json.loads(report.read_text())
    row, details = payload["rows"][0], payload["details"]
    assert row["images"] == 6
    for key in ("map", "ap50", "ap75", "reference_map", "map_drop_points", "postprocess_ms", "runtime_ms"):
        assert isinstance(row[key], float), key
    assert row["postprocess_ms"] > 0 and row["runtime_ms"] > 0
    assert abs(row["map"] - row["reference_map"]) < 1e-6 and abs(row["map_drop_points"]) < 1e-4
    agreement = details["box_agreement"]
    assert row["boxes_found_again"] == 1.0 or (row["boxes_found_again"] is None and agreement["note"])
    names = {c["name"] for c in json.loads(Path(coco_set).read_text())["categories"]}
    assert set(details["per_class"]["artifact"]) == names == set(details["per_class"]["reference"])
    assert NO_CATEGORIES_NOTE in details["notes"]
    assert len(details["timing"]["runtime_ms_per_image"]) == 6
