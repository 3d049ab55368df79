"""The composed detection set (exact boxes, seeded) and COCO scoring with pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeeff.data.detection import COARSE_GROUPS, SceneOptions, coarse_category, fit_object, generate
from edgeeff.data.images import Sample
from edgeeff.data.labels import label_from_filename
from edgeeff.data.preprocess import load_rgb
from edgeeff.detection_metrics import coco_scores, to_coco_results

REPO_PHOTOS = __import__('pathlib').Path(__file__).resolve().parents[1] / "edgeeff" / "data" / "assets" / "photos"

OPTIONS = SceneOptions(size=128, max_objects=3, min_side=0.2, max_side=0.45)


@pytest.fixture(scope="module")
def photos(sample_images):
    return [Sample(p, label_from_filename(p.name)) for p in sample_images[::50]]  # 10 photos


@pytest.fixture(scope="module")
def small_set(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    path = generate(photos, out, count=6, seed=3, options=OPTIONS)
    return out, json.loads(path.read_text())


def test_coarse_groups_cover_imagenet_once():
    seen = [coarse_category(c) for c in range(1000)]
    assert set(seen) == set(range(1, len(COARSE_GROUPS) + 1))
    assert coarse_category(151) == coarse_category(268) == 1 and coarse_category(150) == 2  # dogs; sea lion
    assert sum(hi - lo + 1 for _, ranges in COARSE_GROUPS for lo, hi in ranges) == 1000  # no overlap


def test_boxes_are_exact_and_inside(small_set, photos):
    out, coco = small_set
    assert len(coco["images"]) == 6 and coco["annotations"]
    by_name = {s.path.name: s for s in photos}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
        assert ann["category_id"] == coarse_category(by_name[ann["source"]].label)
        image = coco["images"][ann["image_id"] - 1]
        pixels = np.asarray(load_rgb(out / image["file_name"]))[y : y + h, x : x + w]
        pasted = np.asarray(fit_object(load_rgb(by_name[ann["source"]].path), max(w, h)))
        assert np.array_equal(pixels, pasted)  # the box holds exactly the pasted photo
    for image_id in {a["image_id"] for a in coco["annotations"]}:
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image_id]
        for i, (x, y, w, h) in enumerate(boxes):  # no pasted photo hides another
            for bx, by, bw, bh in boxes[i + 1 :]:
                assert x + w <= bx or bx + bw <= x or y + h <= by or by + bh <= y


def test_same_seed_same_bytes_other_seed_differs(small_set, photos, tmp_path):
    out, coco = small_set
    again = json.loads(generate(photos, tmp_path / "a", count=6, seed=3, options=OPTIONS).read_text())
    assert again == coco
    assert (tmp_path / "a/images/000002.png").read_bytes() == (out / "images/000002.png").read_bytes()
    other = json.loads(generate(photos, tmp_path / "b", count=6, seed=4, options=OPTIONS).read_text())
    assert other["annotations"] != coco["annotations"]


def _detections_from_truth(coco, shift=0.0):
    """Ground truth as (boxes, scores, classes, valid) batches, optionally shifted right by a fraction
    of each box's width."""
    ids = [im["id"] for im in coco["images"]]
    boxes = np.zeros((len(ids), 5, 4))
    classes = np.full((len(ids), 5), -1)
    valid = np.zeros(len(ids), int)
    for ann in coco["annotations"]:
        b = ids.index(ann["image_id"])
        x, y, w, h = ann["bbox"]
        x += shift * w
        boxes[b, valid[b]] = [y, x, y + h, x + w]
        classes[b, valid[b]] = ann["category_id"] - 1
        valid[b] += 1
    return ids, boxes, np.ones((len(ids), 5)), classes, valid


def test_perfect_detections_score_one_and_shifted_less(small_set):
    _, coco = small_set
    perfect = coco_scores(coco, to_coco_results(*_detections_from_truth(coco)))
    assert perfect["map"] == pytest.approx(1.0) and perfect["ap50"] == pytest.approx(1.0)
    present = {coco["categories"][a["category_id"] - 1]["name"] for a in coco["annotations"]}
    assert all(perfect["per_class"][name] == pytest.approx(1.0) for name in present)
    shifted = coco_scores(coco, to_coco_results(*_detections_from_truth(coco, shift=0.25)))
    # A quarter-width shift leaves IoU 0.6: found at .5, missed from .65 up.
    assert shifted["ap50"] == pytest.approx(1.0) and shifted["ap75"] == pytest.approx(0.0)
    assert 0.1 < shifted["map"] < 0.5
    assert coco_scores(coco, [])["map"] == 0.0


def test_results_scale_back_to_the_annotated_image():
    ids, boxes = [7], np.array([[[10.0, 20.0, 30.0, 60.0]]])
    (result,) = to_coco_results(ids, boxes, np.array([[0.5]]), np.array([[2]]), np.array([1]), scale=2.0)
    assert result == {"image_id": 7, "category_id": 3, "bbox": [40.0, 20.0, 80.0, 40.0], "score": 0.5}


def test_detection_set_command_holds_out_unseen_photos(tmp_path):
    """`edgeeff detection-set`: a training and a held-out set from disjoint photos, reproducible by
    seed; unlabelled photos are refused in one line."""
    from conftest import SAMPLE, run_cli

    if not SAMPLE.is_dir():
        pytest.fail(f"needs the shared sample at {SAMPLE}")
    args = ["detection-set", str(SAMPLE / "images"), "--train", "5", "--held-out", "3", "--size", "96"]
    done = run_cli(*args, "--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["split"]: r for r in json.loads((tmp_path / "a.json").read_text())["rows"]}
    assert rows["train"]["images"] == 5 and rows["held-out"]["images"] == 3
    train, held = (json.loads((tmp_path / "a" / s / "annotations.json").read_text()) for s in ("train", "held-out"))
    assert {a["category_id"] for a in train["annotations"] + held["annotations"]} <= {c["id"] for c in train["categories"]}
    again = run_cli(*args, "--out", str(tmp_path / "b"))
    assert again.returncode == 0
    for split_name in ("train", "held-out"):
        first = sorted((tmp_path / "a" / split_name / "images").iterdir())
        second = sorted((tmp_path / "b" / split_name / "images").iterdir())
        assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    from edgeeff.data.images import list_samples, split

    held_photos, _ = split(list_samples(SAMPLE / "images"), 0.2, 0)
    held_names = {s.path.name for s in held_photos}
    assert {a["source"] for a in held["annotations"]} <= held_names  # every held-out object is a held-out photo
    assert not {a["source"] for a in train["annotations"]} & held_names  # and no training scene shows one
    refused = run_cli("detection-set", str(REPO_PHOTOS), "--out", str(tmp_path / "c"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "labelled" in refused.stderr
    assert not (tmp_path / "c").exists()
