"""EfficientDet: the rows, the built graph against published sizes, and the numpy post-processing.

Parameter counts are pinned to the paper (D0-D6, within 1 %; D7 to the automl README) and, for Lite,
to the exact trainable count of the reference's own Keras model (google/automl PR 1138). D5-D7 take
the longest to build and sit in the slow tier.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeeff.errors import UnknownNameError, WeightsError
from edgeeff.model.detectors import DETECTORS, PUBLISHED, feature_size, get_detector, list_detectors
from edgeeff.model.postprocess import (
    PostProcess,
    anchor_boxes,
    decode_boxes,
    encode_boxes,
    iou_one_to_many,
    nms,
)
from edgeeff.model.variants import VARIANTS

SLOW = {n for n in DETECTORS if n not in ("efficientdet-d0", "efficientdet-lite0")}  # the quick tier builds two; the slow tier all 13


@pytest.fixture(scope="module")
def lite0():
    from edgeeff.model.efficientdet import build_detector

    return build_detector("efficientdet-lite0")


# --- rows ---------------------------------------------------------------------------------------


def test_thirteen_detectors_with_known_backbones():
    names = list_detectors()
    assert len(names) == 13 and names[0] == "efficientdet-d0" and names[-1] == "efficientdet-lite4"
    for row in DETECTORS.values():
        backbone = VARIANTS[row.backbone]
        assert backbone.family.activation == row.activation, row.name
    assert set(PUBLISHED) == set(DETECTORS)


@pytest.mark.parametrize("phi", range(6))
def test_d_rows_follow_the_compound_rules(phi):
    """Paper: input 512 + 128 phi, BiFPN depth 3 + phi, head depth 3 + phi // 3, backbone B-phi; its
    Table 1 departs from the rule at D5 (1280 px, 7 BiFPN layers)."""
    row = get_detector(f"d{phi}")
    assert row.backbone == f"b{phi}"
    assert row.fpn_depth == (3 + phi if phi < 5 else 7)
    assert row.head_depth == 3 + phi // 3
    assert row.image_size == (512 + 128 * phi if phi < 5 else 1280)
    assert abs(row.fpn_width - 64 * 1.35**phi) / row.fpn_width < 0.06  # the reference rounds by hand


def test_reference_exceptions_are_in_the_rows():
    d6, d7, lite0, lite4 = (get_detector(n) for n in ("d6", "d7", "lite0", "lite4"))
    assert (d6.fusion, d7.fusion, d7.anchor_scale, d7.image_size) == ("sum", "sum", 5.0, 1536)
    assert d7.backbone == d6.backbone == "b6"
    assert get_detector("d0").fusion == "fastattn"
    assert (lite0.activation, lite0.fusion, lite0.image_size, lite0.anchor_scale) == ("relu6", "sum", 320, 3.0)
    assert lite4.anchor_scale == 4.0 and lite4.mean == (127.0,) * 3 and lite4.std == (128.0,) * 3


def test_unknown_detector_names_the_nearest():
    with pytest.raises(UnknownNameError, match="efficientdet-d1"):
        get_detector("efficientdet-d11")
    assert get_detector("EfficientDet-Lite2").name == "efficientdet-lite2"


def test_feature_sizes_round_up():
    assert [feature_size(320, level) for level in range(3, 8)] == [40, 20, 10, 5, 3]
    assert get_detector("lite2").feature_sizes() == {3: 56, 4: 28, 5: 14, 6: 7, 7: 4}


# --- built graph --------------------------------------------------------------------------------


def _count(name, lite0_model):
    """(trainable parameters, multiply-adds, fusion layers) of a built detector."""
    import keras

    from edgeeff.model.efficientdet import build_detector
    from edgeeff.model.flops import count_macs, count_params
    from edgeeff.model.fusion import FastNormalizedFusion

    model = lite0_model if name == "efficientdet-lite0" else build_detector(name)
    trainable = count_params(model)[1]
    macs = count_macs(model)
    fusions = sum(isinstance(layer, FastNormalizedFusion) for layer in model.layers)
    if model is not lite0_model:
        keras.backend.clear_session()
    return trainable, macs, fusions


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in DETECTORS]
)
def test_parameters_and_flops_match_published(name, request):
    lite0_model = request.getfixturevalue("lite0") if name == "efficientdet-lite0" else None
    trainable, macs, fusions = _count(name, lite0_model)
    row = get_detector(name)
    assert fusions == (8 * row.fpn_depth if row.fusion == "fastattn" else 0)  # 8 nodes per cell
    published = PUBLISHED[name]
    if published.reference_trainable is not None:
        assert trainable == published.reference_trainable
    else:
        assert abs(trainable / published.params - 1) < 0.01, trainable
    if published.gflops is not None:
        # Published FLOPs have two or three figures and may count the odd element-wise op; ours are
        # the convolutions' multiply-adds.
        assert abs(macs / 1e9 / published.gflops - 1) < 0.02, macs


def test_detector_rows_are_counted_once_then_cached(tmp_path, monkeypatch):
    from edgeeff.model import efficientdet
    from edgeeff.model.detector_catalog import detector_rows

    monkeypatch.setenv("EDGEEFF_CACHE", str(tmp_path))
    (row,) = detector_rows(["lite0"])
    assert row["detector"] == "efficientdet-lite0" and row["trainable_params"] == 3_243_470
    assert row["params_vs_published"] == round(3_243_470 / 3.2e6 - 1, 4) and row["gmacs"] > 0.5

    def refuse(*args, **kwargs):
        raise AssertionError("built again despite the cache")

    monkeypatch.setattr(efficientdet, "build_detector", refuse)
    assert detector_rows(["efficientdet-lite0"]) == [row]


def test_backbone_endpoints_are_the_last_block_of_each_stride():
    from edgeeff.model.builder import build_model
    from edgeeff.model.efficientdet import backbone_endpoints
    from edgeeff.model.variants import with_changes

    b0 = build_model(with_changes(VARIANTS["b0"], resolution=512), include_top=False)
    # B0 stages end at strides 2, 4, 8, 16, 16, 32, 32: C3 = stage 3, C4 = stage 5, C5 = stage 7.
    assert backbone_endpoints(b0, 512) == {3: "block3b_add", 4: "block5c_add", 5: "block7a_project_bn"}


def test_bifpn_graph_is_the_reference_one():
    from edgeeff.model.efficientdet import bifpn_nodes

    assert bifpn_nodes(3, 7) == [
        (6, (3, 4)), (5, (2, 5)), (4, (1, 6)), (3, (0, 7)),
        (4, (1, 7, 8)), (5, (2, 6, 9)), (6, (3, 5, 10)), (7, (4, 11)),
    ]  # fmt: skip


def test_bifpn_shapes_per_level(lite0):
    row = get_detector("lite0")
    sizes = row.feature_sizes()
    last = row.fpn_depth - 1
    # Node order: top-down P6 P5 P4 P3, then bottom-up P4 P5 P6 P7.
    for node, level in enumerate((6, 5, 4, 3, 4, 5, 6, 7)):
        for cell in (0, last):
            shape = lite0.get_layer(f"bifpn{cell}_node{node}_bn").output.shape
            assert tuple(shape[1:]) == (sizes[level], sizes[level], row.fpn_width), (cell, node)
    assert tuple(lite0.get_layer("resample_p7_pool").output.shape[1:]) == (3, 3, 64)
    assert lite0.get_layer("bifpn0_node1_in0_conv").kernel.shape == (1, 1, 320, 64)  # C5 -> width


def test_lite0_forward_pass_with_random_weights(lite0):
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, size=(2, 320, 320, 3)).astype("float32")
    logits, regressions = lite0.predict(pixels, verbose=0)
    anchors = anchor_boxes(320, anchor_scale=3.0)
    assert logits.shape == (2, len(anchors), 90) and regressions.shape == (2, len(anchors), 4)
    assert np.isfinite(logits).all() and np.isfinite(regressions).all()
    # Untrained batch norms shrink the signal towards the prediction layers' biases, so the logits sit
    # at the focal-loss prior; the regressions (zero bias) still carry each image's own answer.
    assert not np.array_equal(regressions[0], regressions[1])
    boxes, scores, classes, valid = PostProcess.for_detector(get_detector("lite0")).apply(logits, regressions)
    assert boxes.shape == (2, 100, 4) and valid.tolist() == [100, 100]
    assert (boxes >= 0).all() and (boxes <= 320).all() and (classes >= 0).all() and (classes < 90).all()
    assert (np.diff(scores, axis=1) <= 0).all()


def test_fast_normalized_fusion_ignores_negative_weights():
    from edgeeff.model.fusion import EPSILON, FastNormalizedFusion

    layer = FastNormalizedFusion()
    a, b = np.ones((1, 2, 2, 1), "float32"), np.full((1, 2, 2, 1), 3.0, "float32")
    layer.build([a.shape, b.shape])
    layer.edge_weights.assign([1.0, -1.0])
    assert np.allclose(np.asarray(layer([a, b])), 1.0 / (1.0 + EPSILON))
    layer.edge_weights.assign([1.0, 1.0])
    assert np.allclose(np.asarray(layer([a, b])), 4.0 / (2.0 + EPSILON))


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, while refusing the lite1 load
def test_saved_weights_load_back(tmp_path):
    import keras

    from edgeeff.model.efficientdet import build_detector

    model = build_detector("lite0", num_classes=3)
    model.get_layer("class_net_predict_pw").bias.assign(np.arange(27, dtype="float32"))
    path = tmp_path / "det.weights.h5"
    model.save_weights(path)
    again = build_detector("lite0", num_classes=3, weights=str(path))
    assert np.array_equal(np.asarray(again.get_layer("class_net_predict_pw").bias), np.arange(27))
    with pytest.raises(WeightsError, match="lite1"):
        build_detector("lite1", num_classes=3, weights=str(path))
    keras.backend.clear_session()


# --- post-processing ----------------------------------------------------------------------------


def test_anchors_tiny_case_by_hand():
    # 16 px, P3 only: 2x2 cells of stride 8 centred at 4 and 12; one 8 px square anchor per cell.
    boxes = anchor_boxes(16, 3, 3, num_scales=1, aspect_ratios=(1.0,), anchor_scale=1.0)
    assert boxes.tolist() == [[0, 0, 8, 8], [0, 8, 8, 16], [8, 0, 16, 8], [8, 8, 16, 16]]
    # Two octave scales, ratios 1 and 2 (twice as wide as high), anchor scale 4: first cell's four
    # anchors in (scale, ratio) order. Base 32, then 32 * 2**0.5.
    s, r = math.sqrt(2), 16 / math.sqrt(2)
    expected = [
        [4 - 16, 4 - 16, 4 + 16, 4 + 16],
        [4 - r, 4 - 16 * s, 4 + r, 4 + 16 * s],
        [4 - 16 * s, 4 - 16 * s, 4 + 16 * s, 4 + 16 * s],
        [4 - 16, 4 - 32, 4 + 16, 4 + 32],
    ]
    boxes = anchor_boxes(16, 3, 3, num_scales=2, aspect_ratios=(1.0, 2.0), anchor_scale=4.0)
    assert boxes.shape == (16, 4)
    assert np.allclose(boxes[:4], expected)


def test_anchor_count_matches_the_network_outputs():
    # 9 anchors on 40^2 + 20^2 + 10^2 + 5^2 + 3^2 cells at 320 px (P7 rounds 2.5 up to 3).
    assert len(anchor_boxes(320, anchor_scale=3.0)) == 9 * (1600 + 400 + 100 + 25 + 9)
    p7 = anchor_boxes(320)[-9 * 9 :]
    assert np.allclose((p7[::9, 0] + p7[::9, 2]) / 2, np.repeat([320 / 6, 160, 320 - 320 / 6], 3))


def test_decode_known_box_and_round_trip():
    anchor = np.array([[0.0, 0.0, 10.0, 10.0]])
    # Centre moves 0.1 of the height down, height doubles: centre (6, 5), size 20 x 10.
    assert np.allclose(decode_boxes(np.array([[0.1, 0.0, math.log(2), 0.0]]), anchor), [[-4, 0, 16, 10]])
    rng = np.random.default_rng(1)
    anchors = anchor_boxes(64, 3, 4)
    centre = rng.uniform(0, 64, (len(anchors), 2))
    size = rng.uniform(2, 40, (len(anchors), 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    assert np.allclose(decode_boxes(encode_boxes(boxes, anchors), anchors), boxes)
    assert np.allclose(decode_boxes(np.zeros_like(boxes), anchors), anchors)


def test_nms_suppresses_overlap_and_keeps_the_rest():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 5, 10, 15]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert iou_one_to_many(boxes[0], boxes[1:2])[0] == pytest.approx(0.81)
    kept, kept_scores = nms(boxes, scores, 0.5, float("-inf"), 10)
    assert kept.tolist() == [0, 2, 3]  # box 1 (IoU 0.81) goes; box 3 (IoU 1/3) stays
    assert kept_scores.tolist() == [0.9, 0.7, 0.6]
    kept, _ = nms(boxes, scores, 0.5, 0.65, 10)
    assert kept.tolist() == [0, 2]  # 0.6 is under the score threshold
    kept, _ = nms(boxes, scores, 0.5, float("-inf"), 10, groups=np.array([0, 1, 0, 0]))
    assert kept.tolist() == [0, 1, 2, 3]  # another class: per-class NMS keeps it
    kept, kept_scores = nms(boxes, scores, 0.5, 0.001, 10, soft_nms_sigma=0.5)
    assert kept.tolist() == [0, 2, 3]
    assert kept_scores[2] == pytest.approx(0.6 * math.exp(-(1 / 3) ** 2 / 0.5))


def test_postprocess_end_to_end_on_crafted_outputs():
    # 16 px, P3 only, one anchor per cell: anchors are the four 8 px quadrants.
    pp = PostProcess(16, 3, 3, num_scales=1, aspect_ratios=(1.0,), anchor_scale=1.0, max_detections=3)
    logits = np.full((1, 4, 2), -10.0)
    logits[0, :, 1] = [3.0, 2.0, -1.0, 1.0]  # class 1 everywhere, scores falling with the anchor index
    regressions = np.zeros((1, 4, 4))
    regressions[0, 1, 1] = -7 / 8  # anchor 1 slides onto anchor 0: [0, 1, 8, 9], IoU 7/9 with it
    regressions[0, 3, 3] = math.log(2)  # anchor 3 doubles in width: [8, 4, 16, 20] -> clipped at 16
    boxes, scores, classes, valid = pp.apply(logits, regressions)
    assert valid.tolist() == [3]
    assert boxes[0].tolist() == [[0, 0, 8, 8], [8, 4, 16, 16], [8, 0, 16, 8]]
    assert np.allclose(scores[0], 1 / (1 + np.exp(-np.array([3.0, 1.0, -1.0]))))
    assert classes[0].tolist() == [1, 1, 1]
    kept_two = PostProcess(16, 3, 3, 1, (1.0,), 1.0, score_threshold=0.5, max_detections=3)
    boxes, scores, classes, valid = kept_two.apply(logits, regressions)
    assert valid.tolist() == [2] and classes[0].tolist() == [1, 1, -1] and scores[0, 2] == 0
    with pytest.raises(ValueError, match="expected"):
        pp.apply(logits[:, :3], regressions[:, :3])


@pytest.mark.slow
def test_models_lists_detectors_beside_the_classifiers(tmp_path):
    """`edgeeff models` shows detectors with their parameters against the paper's (cached counts)."""
    import json

    from conftest import run_cli

    out = tmp_path / "m.json"
    done = run_cli("models", "--variant", "efficientdet-d0", "--variant", "efficientdet-lite0", "--variant", "lite0", "--json", str(out),
                   env={"EDGEEFF_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["task"], r.get("detector") or r.get("variant")) for r in rows] == [
        ("classify", "lite0"), ("detect", "efficientdet-d0"), ("detect", "efficientdet-lite0")]
    d0 = rows[1]
    assert abs(d0["params_vs_published"]) < 0.01 and d0["trainable_params"] == 3_880_067
    assert "EfficientDet" in done.stdout and "-0.5%" in done.stdout
