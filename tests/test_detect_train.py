"""Detection training: anchor targets, the two losses against hand computation, and a tiny real run.

The run is efficientdet-lite0 at 128 px with random weights on 16 composed images from the bundled
photos: it checks the run directory, resume and that the held-out scores are COCO numbers, not that
the detector is good (nothing learns to detect in four steps).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeeff.model.postprocess import anchor_boxes, decode_boxes
from edgeeff.train.detect_targets import (
    BACKGROUND,
    IGNORE,
    coco_to_corners,
    iou_matrix,
    label_anchors,
    resize_scale,
)

SIZE = 128
ANCHORS = anchor_boxes(SIZE, anchor_scale=3.0)  # Lite0's anchors at 128 px


# --- anchor targets -----------------------------------------------------------------------------


def test_coco_boxes_map_into_the_resized_input():
    scale = resize_scale(200, 100, 128)  # portrait: the height fits
    assert scale == pytest.approx(0.64)
    np.testing.assert_allclose(coco_to_corners([[10, 20, 30, 40]], scale), [[12.8, 6.4, 38.4, 25.6]])


def test_positives_reach_half_iou_and_decode_back_to_their_box():
    box = np.array([[30.0, 40.0, 70.0, 90.0]])  # 40 x 50 px, class column 3
    t = label_anchors(ANCHORS, box, [3])
    iou = iou_matrix(box, ANCHORS)[0]
    positive = t.classes >= 0
    assert positive.sum() == (iou >= 0.5).sum() > 1 and t.num_positives == positive.sum()
    assert set(t.classes[positive]) == {3} and set(t.classes[~positive]) == {BACKGROUND}
    np.testing.assert_allclose(decode_boxes(t.boxes[positive], ANCHORS[positive]), np.repeat(box, positive.sum(), 0), atol=1e-4)
    assert not t.boxes[~positive].any()


def test_every_box_claims_its_best_anchor_even_below_the_threshold():
    tiny = np.array([[60.0, 60.0, 63.0, 64.0]])  # far smaller than any anchor: IoU < 0.5 everywhere
    assert iou_matrix(tiny, ANCHORS).max() < 0.5
    t = label_anchors(ANCHORS, tiny, [1])
    assert t.num_positives == 1 and t.classes[iou_matrix(tiny, ANCHORS)[0].argmax()] == 1


def test_the_ignore_band_and_its_absence_at_the_reference_thresholds():
    box = np.array([[30.0, 40.0, 70.0, 90.0]])
    iou = iou_matrix(box, ANCHORS)[0]
    band = (iou >= 0.4) & (iou < 0.5)
    assert band.any()
    wide = label_anchors(ANCHORS, box, [0], match_threshold=0.5, unmatched_threshold=0.4)
    assert (wide.classes[band] == IGNORE).all() and (wide.classes == IGNORE).sum() == band.sum()
    assert not (label_anchors(ANCHORS, box, [0]).classes == IGNORE).any()  # 0.5 / 0.5: no band
    with pytest.raises(ValueError):
        label_anchors(ANCHORS, box, [0], match_threshold=0.4, unmatched_threshold=0.5)


def test_shared_best_anchor_goes_to_the_lower_box_and_empty_images_are_background():
    box = [[30.0, 40.0, 70.0, 90.0]]
    t = label_anchors(ANCHORS, box * 2, [0, 4])  # the same box twice, two classes
    assert set(t.classes[t.classes >= 0]) == {0}
    empty = label_anchors(ANCHORS, np.zeros((0, 4)), [])
    assert (empty.classes == BACKGROUND).all() and not empty.boxes.any()
    flat = label_anchors(ANCHORS, [[10.0, 10.0, 10.0, 50.0]], [2])  # no height: dropped, not log(0)
    assert (flat.classes == BACKGROUND).all()


# --- losses -------------------------------------------------------------------------------------


def test_focal_loss_matches_the_textbook_formula():
    from edgeeff.train.detect_losses import FocalLoss, focal_loss

    logits = np.array([[[2.0, -1.0], [0.5, 0.0], [3.0, 3.0], [-2.0, 1.5]]], np.float32)
    targets = np.array([[0, BACKGROUND, IGNORE, 1]], np.float32)
    alpha, gamma = 0.25, 1.5
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = 0.0
    for a, target in enumerate(targets[0]):
        if target == IGNORE:
            continue
        for c in range(2):
            if c == target:
                expected += alpha * (1 - p[0, a, c]) ** gamma * -np.log(p[0, a, c])
            else:
                expected += (1 - alpha) * p[0, a, c] ** gamma * -np.log(1 - p[0, a, c])
    expected /= 2 + 1  # two positive anchors, plus one
    assert float(focal_loss(targets, logits)) == pytest.approx(expected, rel=1e-5)
    assert float(FocalLoss()(targets, logits)) == pytest.approx(expected, rel=1e-5)
    # Smoothing changes the cross-entropy only: a positive logit's loss rises when its label is 0.95.
    assert float(focal_loss(targets, logits, label_smoothing=0.1)) > expected


def test_box_loss_is_huber_over_positive_anchors_per_coordinate():
    from edgeeff.train.detect_losses import BoxLoss, box_loss

    targets = np.array([[[0.1, 0.2, 0.0, 0.05], [0.0, 0.0, 0.0, 0.0]]], np.float32)  # one positive (a 0 coordinate in it)
    preds = np.array([[[0.3, 0.2, -0.05, 0.0], [1.0, 1.0, 1.0, 1.0]]], np.float32)  # the negative's error must not count
    # |errors| 0.2, 0, 0.05, 0.05 at delta 0.1: 0.1 * (0.2 - 0.05) + 0 + 0.5 * 0.05^2 * 2 = 0.0175; over (1 + 1) * 4.
    assert float(box_loss(targets, preds)) == pytest.approx(0.0175 / 8, rel=1e-5)
    assert float(BoxLoss()(targets, preds)) == pytest.approx(0.0175 / 8, rel=1e-5)


# --- inputs and a tiny real run -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """16 composed 128 px images from the bundled photos, labelled with ImageNet classes of four groups."""
    from edgeeff.data.detection import SceneOptions, generate
    from edgeeff.data.images import Sample, bundled_photos

    classes = [281, 967, 985, 500]  # tabby (animal), espresso (food), daisy (nature), cliff dwelling (object)
    samples = [Sample(p, classes[i % len(classes)]) for i, p in enumerate(bundled_photos())]
    out = tmp_path_factory.mktemp("detset")
    return generate(samples, out, count=16, seed=1, options=SceneOptions(size=SIZE, max_objects=2, min_side=0.3, max_side=0.5))


def test_bad_inputs_fail_in_one_line_before_training(tiny_set, tmp_path):
    from click.testing import CliRunner

    from edgeeff.cli import Group, train_detect
    from edgeeff.data.coco import DetectionDataError
    from edgeeff.train.detect_loop import DetectTrainError, DetectTrainConfig, prepare_detect_run

    with pytest.raises(DetectionDataError, match="not found"):
        prepare_detect_run(DetectTrainConfig("lite0", str(tmp_path / "none.json")), tmp_path / "run")
    broken = json.loads(tiny_set.read_text())
    broken["images"][0]["file_name"] = "images/gone.png"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(DetectionDataError, match="missing.*--images-root"):
        prepare_detect_run(DetectTrainConfig("lite0", str(tmp_path / "broken.json"), images_root=str(tiny_set.parent)), tmp_path / "run")
    with pytest.raises(DetectTrainError, match="multiple of 8"):
        prepare_detect_run(DetectTrainConfig("lite0", str(tiny_set), image_size=100), tmp_path / "run")
    with pytest.raises(DetectTrainError, match="at least 128"):  # convert's own rule: no run it could not deploy
        prepare_detect_run(DetectTrainConfig("lite0", str(tiny_set), image_size=64), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written for bad input

    group = Group(commands={"train-detect": train_detect})
    result = CliRunner().invoke(group, ["train-detect", "--data", str(tmp_path / "none.json"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.output.strip().startswith("edgeeff: error: detection annotations not found")
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(group, ["train-detect", "--resume", "--epochs", "3", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "drop --epochs" in result.output


def test_split_is_seeded_disjoint_and_complete(tiny_set):
    from edgeeff.data.coco import read_coco
    from edgeeff.train.detect_loop import split_images

    data = read_coco(tiny_set)
    train, held = split_images(data.images, 0.25, seed=0)
    ids = lambda images: {im.image_id for im in images}  # noqa: E731
    assert len(held) == 4 and not ids(train) & ids(held) and ids(train) | ids(held) == set(range(1, 17))
    assert ids(split_images(data.images, 0.25, seed=0)[1]) == ids(held)
    assert ids(split_images(data.images, 0.25, seed=1)[1]) != ids(held)


def test_batch_norm_statistics_are_re_estimated_as_a_plain_average(tiny_set):
    """The moving mean becomes the average of the batch means (here: of all images, equal batches),
    the moving variance the average of the batch variances; a frozen norm and the momenta stay."""
    import keras

    from edgeeff.data.coco import read_coco
    from edgeeff.train.detect_loop import image_batches, recompute_batch_norm

    images = list(read_coco(tiny_set).images)
    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    model = keras.Model(inputs, [keras.layers.BatchNormalization(name="bn")(features), frozen(features)])
    conv = keras.Model(inputs, features)
    batches = [np.asarray(conv(x)).reshape(-1, 4) for x in image_batches(images, SIZE, 4)]
    assert recompute_batch_norm(model, images, SIZE, batch=4) == 16
    bn = model.get_layer("bn")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), np.mean([b.mean(0) for b in batches], axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), np.mean([b.var(0) for b in batches], axis=0), rtol=1e-3)
    assert bn.momentum == frozen.momentum == 0.99
    assert not np.asarray(frozen.moving_mean).any() and (np.asarray(frozen.moving_variance) == 1).all()


@pytest.mark.slow
def test_two_epochs_interrupted_resumed_and_scored(tiny_set, tmp_path, monkeypatch):
    """Lite0 at 128 px, random weights, backbone frozen: epoch 1, a simulated interruption, resume for
    epoch 2; the backbone is bit-identical to its initial state, the heads moved, and the held-out
    split has COCO scores."""
    import keras

    from edgeeff.model.efficientdet import build_detector
    from edgeeff.detect import backbone_layers
    from edgeeff.train.detect_loop import detector_row, train_detector
    from edgeeff.train.loop import STOP_AFTER_ENV

    run = tmp_path / "run"
    common = dict(epochs=2, batch=4, image_size=SIZE, weights="none", steps_per_epoch=2, seed=0)
    monkeypatch.setenv(STOP_AFTER_ENV, "1")
    with pytest.raises(KeyboardInterrupt):
        train_detector("efficientdet-lite0", tiny_set, None, run, **common)
    state = json.loads((run / "state.json").read_text())
    assert state["completed_epochs"] == 1 and (run / state["checkpoint"]["weights"]).is_file()
    monkeypatch.delenv(STOP_AFTER_ENV)

    card = train_detector("efficientdet-lite0", None, None, run, resume=True)
    assert card["epochs"] == 2 and card["held_out_images"] == 3 and card["train_images"] == 13
    assert card["batch_norm_recomputed_on"] == 13 and card["started_from"] == "none" and card["frozen_layers"] > 50
    for key in ("map", "ap50", "ap75"):
        assert 0.0 <= card[key] <= 1.0, card
    assert card["map"] <= card["ap50"]
    assert set(card["per_class_ap"]) == {"dog", "animal", "food", "nature", "object"}
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["loss"] > 0 and r["val_loss"] > 0 for r in rows)
    assert rows[0]["loss"] == pytest.approx(rows[0]["class_loss"] + 50 * rows[0]["box_loss"], rel=1e-3)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-002.optimizer.npz", "epoch-002.weights.h5"]
    assert (run / "training.png").stat().st_size > 0 and (run / "edgeeff-run.json").is_file()
    optimizer_state = np.load(run / "checkpoints/epoch-002.optimizer.npz")
    assert int(optimizer_state["v0000"]) == 4  # iterations ran on across the resume: 2 epochs x 2 steps

    row = detector_row("efficientdet-lite0", SIZE)
    keras.utils.set_random_seed(0)
    initial = build_detector(row, num_classes=5)
    trained = build_detector(row, num_classes=5, weights=str(run / "model.weights.h5"))
    for before, after in zip(backbone_layers(initial, SIZE), backbone_layers(trained, SIZE)):
        for a, b in zip(before.get_weights(), after.get_weights()):
            np.testing.assert_array_equal(a, b)  # frozen, BN statistics included
    head = "class_net_predict_pw"
    assert not np.array_equal(initial.get_layer(head).get_weights()[0], trained.get_layer(head).get_weights()[0])
