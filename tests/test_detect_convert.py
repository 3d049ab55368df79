"""Detectors through ``edgeeff convert``: every backend exports the detector's raw outputs, the
post-processing after the runtime gives the Keras detector's boxes, and int8 artifacts of a trained
detector find the Keras detector's confident boxes again on held-out scenes."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, noise_photos, run_cli

ROOT = Path(__file__).resolve().parents[1]
# A Lite0 detector trained on the generated scenes (benchmarks/models/README.md: the command that
# made it); committed because no pretrained detector installs from the package registries.
TRAINED = ROOT / "benchmarks" / "models" / "efficientdet-lite0-scenes"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, sample_images):
    """The trained detector's held-out scenes (only photos it never saw) and a few training scenes
    for calibration: the same seeded command that made its training set."""
    from edgeeff.data.detection import generate_split

    out = tmp_path_factory.mktemp("scenes")
    return generate_split(sample_images[0].parent, out, train_count=64, held_out_count=96, seed=0)


def test_detector_conversion_refuses_what_it_cannot_do(tmp_path):
    result = run_cli("convert", "--variant", "efficientdet-lite0", "--target", "tflite-int8", "--max-drop", "1",
                     "--images", str(tmp_path), "--out", str(tmp_path))
    assert_one_line_error(result, "efficientdet-lite0", "--min-agreement")
    result = run_cli("convert", "--variant", "efficientdet-lite0", "--target", "onnx-fp32", "--weights", str(tmp_path / "nowhere"),
                     "--out", str(tmp_path))
    assert_one_line_error(result, "not found", "train-detect")
    assert not list(tmp_path.iterdir())


def test_a_classifier_run_is_not_a_detector(tmp_path):
    (tmp_path / "edgeeff-run.json").write_text(json.dumps({"variant": "lite0", "classes": ["a", "b"]}))
    result = run_cli("convert", "--variant", "efficientdet-lite0", "--target", "onnx-fp32", "--weights", str(tmp_path),
                     "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "classifier", "train-detect")


@pytest.mark.slow
def test_fp32_artifact_gives_the_keras_detectors_boxes(tmp_path, scenes):
    """The artifact ends at the raw outputs; the same post-processing gives the same boxes as the
    Keras detector's two outputs (one numpy reference for every runtime)."""
    from edgeeff.convert import convert
    from edgeeff.data.images import list_samples
    from edgeeff.detect import build_reference, choose_detector_weights, detection_card, post_processing
    from edgeeff.evaluate import batches
    from edgeeff.model.detectors import get_detector
    from edgeeff.targets.base import get_target, load_runner

    held = scenes["held-out"].parent / "images"
    meta = convert("efficientdet-lite0", "onnx-fp32", weights=str(TRAINED), out=tmp_path, images=held)
    assert meta["task"] == "detect" and meta["validation"]["failures"] == []
    assert meta["validation"]["boxes"]["matched"] == 1.0 and meta["validation"]["boxes"]["reference_boxes"] >= 30
    row, chosen = choose_detector_weights(get_detector("efficientdet-lite0"), str(TRAINED))
    assert row.image_size == meta["preprocessing"]["resolution"] == json.loads((TRAINED / "edgeeff-run.json").read_text())["image_size"]
    model = build_reference(row, chosen)
    runner = load_runner(get_target("onnx-fp32"), Path(meta["path"]) / meta["artifact"])
    post = post_processing(row)
    from edgeeff.model.efficientdet import split_raw

    _, images, _ = next(batches(list_samples(held)[:8], row.image_size, detection_card(row), batch=8))
    logits, regressions = (np.asarray(t) for t in model(images, training=False))
    want = post.apply(logits, regressions)
    got = post.apply(*split_raw(runner.predict(images)))
    assert (got[3] == want[3]).all()
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)
    # Float rounding may swap two boxes whose scores tie to 1e-5: each box must be the Keras
    # detector's box of the same class, to a twentieth of a pixel, wherever it is in the list.
    for image in range(len(images)):
        for box, cls in zip(got[0][image, : got[3][image]], got[2][image, : got[3][image]]):
            same = want[0][image, : want[3][image]][want[2][image, : want[3][image]] == cls]
            assert np.abs(same - box).max(axis=1).min() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("target", ["tflite-int8", "onnx-int8", "openvino-int8"])
def test_int8_detector_finds_the_keras_boxes_again(target, tmp_path, scenes):
    from edgeeff.convert import convert

    meta = convert("efficientdet-lite0", target, weights=str(TRAINED), out=tmp_path,
                   calibration=scenes["train"].parent / "images", images=scenes["held-out"].parent / "images")
    val = meta["validation"]
    assert val["failures"] == [], val["failures"]
    boxes = val["boxes"]
    assert boxes["images"] == 96 and boxes["reference_boxes"] >= 30
    assert boxes["matched"] >= 0.8 and boxes["matched_iou_mean"] >= 0.8 and boxes["map_vs_reference"] >= 0.5
    assert val["max_rel_diff"] > 1e-3  # quantized, not a float graph under an int8 name
    assert meta["conversion"].get("fully_integer") in (True, None)


@pytest.mark.slow
def test_a_detector_calibrated_on_noise_is_refused_though_it_finds_the_boxes(tmp_path, scenes):
    """Calibrated on noise, the trained detector's onnx-int8 keeps a class-logit cosine near 1 and finds
    most of the Keras boxes again, but misplaced (its mAP on the labels falls to about a third:
    benchmarks/results/detector_validation.md): the mAP against the Keras boxes refuses it, exit 1,
    nothing published."""
    noise = noise_photos(tmp_path / "noise", 16, 256)
    out = tmp_path / "out"
    done = run_cli("convert", "--variant", "efficientdet-lite0", "--weights", str(TRAINED), "--target", "onnx-int8",
                   "--calibration", str(noise), "--images", str(scenes["held-out"].parent / "images"), "--out", str(out))
    assert_one_line_error(done, "onnx-int8 failed validation", "mAP against the Keras detector's own boxes", "nothing was published",
                          code=1)
    assert "mean cosine of class logits" not in done.stderr  # the cosine alone would have passed it
    assert not out.exists() or list(out.iterdir()) == []


def _float_convolutions(meta: dict) -> int:
    """Convolutions an int8 artifact computes in float, read from the artifact itself: ONNX Convs
    whose weights are a float initializer (not a DequantizeLinear), OpenVINO convolutions whose input
    is not fake-quantized, TFLite convolutions with a float output."""
    path = Path(meta["path"]) / meta["artifact"]
    if meta["backend"] == "onnx":
        import onnx

        graph = onnx.load(str(path)).graph
        initializers = {init.name for init in graph.initializer}
        return sum(n.op_type == "Conv" and n.input[1] in initializers for n in graph.node)
    if meta["backend"] == "openvino":
        import openvino as ov

        return sum(op.get_type_name() in ("Convolution", "GroupConvolution")
                   and op.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"
                   for op in ov.Core().read_model(str(path)).get_ordered_ops())
    return sum(op.split("#")[0] in ("CONV_2D", "DEPTHWISE_CONV_2D") for op in meta["conversion"]["float_ops"])


@pytest.mark.slow
@pytest.mark.parametrize("target", ["tflite-int8", "onnx-int8", "openvino-int8"])
def test_a_detectors_bifpn_cell_and_head_stay_float_in_every_backend(target, tmp_path, scenes):
    """--float-blocks on a detector: a BiFPN cell and the class head, whose convolutions run once per
    level (one Keras layer, five backend ops), are float in the artifact, on every level, and nothing
    else is: the backend ops are found by their weights, since no order or name matches them."""
    from edgeeff.convert import convert
    from edgeeff.detect import build_reference, choose_detector_weights
    from edgeeff.model import blockmap
    from edgeeff.model.detectors import get_detector

    blocks = ["bifpn2", "class_net"]
    meta = convert("efficientdet-lite0", target, weights=str(TRAINED), out=tmp_path, calibration=scenes["train"].parent / "images",
                   calibration_count=16, images=scenes["held-out"].parent / "images", options={"float_blocks": blocks})
    assert meta["validation"]["failures"] == [] and meta["conversion"]["float_blocks"] == blocks
    model = build_reference(*choose_detector_weights(get_detector("efficientdet-lite0"), str(TRAINED)))
    chosen = blockmap.layers_of(model, blocks)
    expected = sum(len(model.get_layer(name)._inbound_nodes) for name, _ in blockmap.weighted_layers(model) if name in chosen)
    assert expected == 8 * 5 + 8 * 2  # class_net: 4 separable convolutions on 5 levels; bifpn2: 8 nodes' separable convolutions
    assert _float_convolutions(meta) == expected
    assert not meta["conversion"].get("unexpected_float_ops")


@pytest.mark.slow
def test_detector_sensitivity_ranks_a_bifpn_cell_and_a_head_by_their_boxes(tmp_path, scenes):
    """`edgeeff sensitivity` on a trained detector: one real conversion per block, judged by the int8
    artifact's mAP against the fp32 detector's boxes and ranked by the SNR of its raw output. Keeping
    a block in float removes quantization noise (benchmarks/results/sensitivity/
    efficientdet-lite0-onnx-int8.json: class_net and bifpn2 rank first and third)."""
    path = tmp_path / "sensitivity.json"
    done = run_cli("sensitivity", "--variant", "efficientdet-lite0", "--weights", str(TRAINED), "--target", "onnx-int8",
                   "--blocks", "bifpn2,class_net", "--images", str(scenes["held-out"].parent / "images"),
                   "--calibration", str(scenes["train"].parent / "images"), "--calibration-count", "16", "--json", str(path))
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(path.read_text())
    rows, base = {row["block"]: row for row in record["rows"]}, record["plain_int8"]
    assert set(rows) == {"bifpn2", "class_net"} and sorted(record["ranking"]) == ["bifpn2", "class_net"]
    assert base["reference_boxes"] >= 30 and 0.5 < base["agreement"] < 1 and "mAP" in record["agreement"]
    for row in rows.values():
        assert row["delta_agreement"] == pytest.approx(row["agreement"] - base["agreement"])
        assert row["delta_snr_db"] > 0, row
    assert "mAP vs fp32 boxes" in done.stdout and "/96)" not in done.stdout  # an mAP, not a share of images
