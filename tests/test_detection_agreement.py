"""Box agreement and raw-output figures on hand-made detections (numpy and pycocotools only).

Every expected value is worked out by hand in the test, so that a wrong match rule, a box-corner
mix-up or a mis-built COCO ground truth fails here rather than in a validation report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeeff.detection_agreement import NO_CONFIDENT_NOTE, Detections, box_agreement, raw_output_figures

K = 6  # rows per image; the last ones padding


def reference() -> Detections:
    """Two images, 4 confident boxes each (40 x 40 px, apart), one low-score box on image 0, and
    padding that would match nothing if it were read."""
    boxes = np.zeros((2, K, 4), np.float32)
    scores = np.zeros((2, K), np.float32)
    classes = np.full((2, K), -1, np.int32)
    rows = {
        0: [((10, 10, 50, 50), 0.9, 0), ((10, 100, 50, 140), 0.8, 1), ((100, 10, 140, 50), 0.7, 0),
            ((100, 100, 140, 140), 0.6, 2), ((150, 150, 190, 190), 0.1, 1)],
        1: [((20, 20, 60, 60), 0.95, 1), ((20, 120, 60, 160), 0.85, 1), ((120, 20, 160, 60), 0.5, 2),
            ((120, 120, 160, 160), 0.4, 0)],
    }
    valid = np.zeros(2, np.int32)
    for b, items in rows.items():
        for k, (box, score, c) in enumerate(items):
            boxes[b, k], scores[b, k], classes[b, k] = box, score, c
        valid[b] = len(items)
    return Detections(boxes, scores, classes, valid)


def replace(d: Detections, **changes) -> Detections:
    fields = {"boxes": d.boxes.copy(), "scores": d.scores.copy(), "classes": d.classes.copy(), "valid": d.valid.copy()}
    fields.update(changes)
    return Detections(**fields)


def test_identical_detections_agree_fully():
    """The reference against itself: every confident box found at IoU 1 with no score change, and
    pycocotools gives mAP 1 (its low-score extra row ranks below every true positive)."""
    ref = reference()
    out = box_agreement(ref, ref)
    assert out["images"] == 2 and out["reference_boxes"] == 8
    assert out["matched"] == 1.0
    assert out["matched_iou_mean"] == pytest.approx(1.0) and out["matched_iou_min"] == pytest.approx(1.0)
    assert out["score_diff_mean"] == 0.0 and out["score_diff_max"] == 0.0
    assert out["map_vs_reference"] == pytest.approx(1.0) and out["ap50_vs_reference"] == pytest.approx(1.0)
    assert "note" not in out
    json.dumps(out)  # goes into a report as is


def test_shifted_boxes_give_the_hand_computed_iou_and_map():
    """Every box moved 8 px right: overlap 32 x 40 over union 48 x 40, IoU 2/3. COCO's thresholds
    .50 .. .95 then count it found at .50, .55, .60, .65 (4 of 10): mAP 0.4, AP50 1."""
    ref = reference()
    shifted = ref.boxes.copy()
    shifted[..., [1, 3]] += 8
    out = box_agreement(ref, replace(ref, boxes=shifted))
    assert out["matched"] == 1.0
    assert out["matched_iou_mean"] == pytest.approx(2 / 3) and out["matched_iou_min"] == pytest.approx(2 / 3)
    assert out["map_vs_reference"] == pytest.approx(0.4) and out["ap50_vs_reference"] == pytest.approx(1.0)
    assert box_agreement(ref, replace(ref, boxes=shifted), iou_match=0.7)["matched"] == 0.0


def test_score_differences_are_over_matched_pairs():
    """Candidate scores lowered by 0.05 on image 0 and raised by 0.1 on image 1 (4 confident boxes
    each): mean |difference| 0.075, max 0.1."""
    ref = reference()
    scores = ref.scores.copy()
    scores[0] -= 0.05
    scores[1] += 0.1
    out = box_agreement(ref, replace(ref, scores=scores))
    assert out["matched"] == 1.0
    assert out["score_diff_mean"] == pytest.approx(0.075, abs=1e-6)
    assert out["score_diff_max"] == pytest.approx(0.1, abs=1e-6)


def test_missing_half_the_confident_boxes():
    """The candidate keeps only the first two rows of each image: 4 of the 8 confident boxes, so
    matched 0.5. Per class (reference: class 0 has 3 boxes, class 1 has 3, class 2 has 2) the kept
    rows find 1, 3 and 0: precision stays 1 up to recall 1/3, 1 and 0, so COCO's 101-point AP is
    34/101, 1 and 0 at every IoU threshold, and the mAP their mean."""
    ref = reference()
    cand = replace(ref, valid=np.array([2, 2], np.int32))
    out = box_agreement(ref, cand)
    assert out["reference_boxes"] == 8 and out["matched"] == 0.5
    expected = (34 / 101 + 1.0 + 0.0) / 3
    assert out["map_vs_reference"] == pytest.approx(expected, abs=1e-6)
    assert out["ap50_vs_reference"] == pytest.approx(expected, abs=1e-6)
    assert out["map_vs_reference"] < box_agreement(ref, ref)["map_vs_reference"]


def test_class_mismatch_does_not_match():
    """Same boxes, every class moved to another column: nothing matches, and COCO finds nothing."""
    ref = reference()
    classes = np.where(ref.classes >= 0, (ref.classes + 1) % 3, -1).astype(np.int32)
    out = box_agreement(ref, replace(ref, classes=classes))
    assert out["matched"] == 0.0 and out["matched_iou_mean"] is None
    assert out["map_vs_reference"] == 0.0


def test_padding_rows_are_ignored():
    """Rows past valid hold confident-looking boxes in both models; they count as neither reference
    boxes nor candidate matches. A candidate whose only copy of a box sits in padding misses it."""
    ref = reference()
    boxes, scores, classes = ref.boxes.copy(), ref.scores.copy(), ref.classes.copy()
    boxes[1, 5], scores[1, 5], classes[1, 5] = (200, 200, 240, 240), 0.99, 0  # padding of image 1
    padded = replace(ref, boxes=boxes, scores=scores, classes=classes)
    out = box_agreement(padded, padded)
    assert out["reference_boxes"] == 8 and out["matched"] == 1.0

    cand_boxes, cand_scores, cand_classes = boxes.copy(), scores.copy(), classes.copy()
    cand_boxes[1, 4], cand_scores[1, 4], cand_classes[1, 4] = cand_boxes[1, 0], 0.95, 1  # a copy of (1, 0) ...
    cand_boxes[1, 0] = (300, 300, 340, 340)  # ... moved away from the valid row
    cand_valid = np.array([5, 4], np.int32)  # ... and the copy left in padding
    out = box_agreement(padded, Detections(cand_boxes, cand_scores, cand_classes, cand_valid))
    assert out["matched"] == 7 / 8


def test_matching_is_one_to_one_and_highest_score_first():
    """Two reference boxes of one class, one candidate that is an exact copy of the lower-scoring one:
    the higher-scoring reference box is served first and takes it (IoU 35/45 >= 0.5), so the copy's
    own box is lost. One candidate never matches twice."""
    ref = Detections(
        np.array([[[0, 0, 40, 40], [0, 5, 40, 45]]], np.float32),  # IoU 35/45 between them
        np.array([[0.9, 0.8]], np.float32),
        np.array([[0, 0]], np.int32),
        np.array([2], np.int32),
    )
    cand = Detections(np.array([[[0, 5, 40, 45]]], np.float32), np.array([[0.8]], np.float32),
                      np.array([[0]], np.int32), np.array([1], np.int32))
    out = box_agreement(ref, cand)
    assert out["matched"] == 0.5
    assert out["matched_iou_mean"] == pytest.approx(35 / 45)
    assert out["score_diff_max"] == pytest.approx(0.1, abs=1e-6)


def test_no_confident_reference_box_gives_none_and_a_note():
    """An untrained detector's scores sit near the 0.01 prior: nothing to judge by boxes."""
    ref = reference()
    low = replace(ref, scores=np.where(ref.scores > 0, 0.011, 0.0).astype(np.float32))
    out = box_agreement(low, ref)
    assert out["reference_boxes"] == 0 and out["images"] == 2
    for key in ("matched", "matched_iou_mean", "matched_iou_min", "score_diff_mean", "score_diff_max",
                "map_vs_reference", "ap50_vs_reference"):
        assert out[key] is None, key
    assert out["note"] == NO_CONFIDENT_NOTE and "raw" in out["note"]
    json.dumps(out)


def test_concat_and_from_apply_keep_image_order_and_pad():
    """Batches of different K join in order; the narrower one is padded as PostProcess pads."""
    ref = reference()
    first = Detections.from_apply((ref.boxes[:1], ref.scores[:1], ref.classes[:1], ref.valid[:1]))
    second = Detections.from_apply((ref.boxes[1:, :4], ref.scores[1:, :4], ref.classes[1:, :4], ref.valid[1:]))
    joined = Detections.concat([first, second])
    assert joined.boxes.shape == (2, K, 4)
    assert np.array_equal(joined.boxes[:, :4], ref.boxes[:, :4]) and np.array_equal(joined.valid, ref.valid)
    assert np.all(joined.classes[1, 4:] == -1) and np.all(joined.scores[1, 4:] == 0)
    assert box_agreement(ref, joined)["matched"] == 1.0
    with pytest.raises(ValueError):
        Detections(ref.boxes, ref.scores, ref.classes, np.array([7, 0]))  # valid beyond K
    with pytest.raises(ValueError):
        box_agreement(ref, first)  # 2 images against 1


def test_raw_output_figures():
    """Identical outputs: cosines 1, no difference. Class logits negated on image 1 only: its
    class cosine is -1 (mean over the two images 0), its top anchor moves; boxes untouched. The
    largest change is 2 x the largest logit of image 1, against the largest |value| overall."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2, 50, 4 + 3))
    same = raw_output_figures(ref, ref.copy())
    assert same["max_rel_diff"] == 0.0
    assert same["class_logit_cosine"] == pytest.approx(1.0) and same["box_cosine"] == pytest.approx(1.0)
    assert same["top_score_agreement"] == 1.0

    cand = ref.copy()
    cand[1, :, 4:] *= -1
    out = raw_output_figures(ref, cand)
    assert out["class_logit_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert out["box_cosine"] == pytest.approx(1.0)
    assert out["max_rel_diff"] == pytest.approx(2 * np.abs(ref[1, :, 4:]).max() / np.abs(ref).max())
    assert out["top_score_agreement"] == 0.5  # argmax of the max logit vs argmax of minus the min

    scaled = raw_output_figures(ref, ref * 1.1)  # a uniform 10 % gain: direction kept, 10 % off
    assert scaled["max_rel_diff"] == pytest.approx(0.1)
    assert scaled["class_logit_cosine"] == pytest.approx(1.0) and scaled["top_score_agreement"] == 1.0
