"""Golden counts, Keras Applications layer names, and the compound rule's FLOPs growth."""

import math

import keras
import numpy as np
import pytest

from edgeeff.model.builder import build_model
from edgeeff.model.flops import count_macs, count_params
from edgeeff.model.variants import VARIANTS, resolve

# Keras Applications' count_params() for the same architecture. Keras keeps 7 preprocessing
# statistics (Normalization mean/variance/count) as weights in V1 models; ours live in the card.
KERAS_PARAMS = {
    "b0": 5_330_571, "b1": 7_856_239, "b2": 9_177_569, "b3": 12_320_535, "b4": 19_466_823,
    "b5": 30_562_527, "b6": 43_265_143, "b7": 66_658_687,
    "v2-b0": 7_200_312, "v2-b1": 8_212_124, "v2-b2": 10_178_374, "v2-b3": 14_467_622,
    "v2-s": 21_612_360, "v2-m": 54_431_388, "v2-l": 119_027_848,
}
KERAS_PREPROCESSING_WEIGHTS = {"efficientnet": 7, "efficientnetv2": 0}
# Official tensorflow/tpu builder test (timm agrees): trainable parameters.
LITE_TRAINABLE = {"lite0": 4_652_008, "lite1": 5_416_680, "lite2": 6_092_072, "lite3": 8_197_096, "lite4": 13_006_568}


BIG = {"b4", "b5", "b6", "b7", "v2-s", "v2-m", "v2-l"}  # over ~20 s each to build on 2 cores


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in VARIANTS])
def test_golden_parameter_counts(name):
    variant = VARIANTS[name]
    model = build_model(variant)
    total, trainable = count_params(model)
    if name in LITE_TRAINABLE:
        assert trainable == LITE_TRAINABLE[name]
    else:
        assert total + KERAS_PREPROCESSING_WEIGHTS[variant.family.name] == KERAS_PARAMS[name]
    keras.backend.clear_session()


def test_b0_count_against_live_keras_applications():
    ours = build_model(VARIANTS["b0"])
    theirs = keras.applications.EfficientNetB0(weights=None)
    assert ours.count_params() + 7 == theirs.count_params() == 5_330_571


def _weighted_names(model):
    return {layer.name for layer in model.layers if layer.weights and not layer.name.startswith("normalization")}


@pytest.mark.parametrize("name,ctor", [("b0", "EfficientNetB0"), ("v2-b0", "EfficientNetV2B0")])
def test_layer_names_match_keras_applications(name, ctor):
    ours = build_model(resolve(name))
    theirs = getattr(keras.applications, ctor)(weights=None)
    assert _weighted_names(ours) == _weighted_names(theirs)
    assert {"stem_conv", "block1a_dwconv" if name == "b0" else "block1a_project_conv", "top_conv", "predictions"} <= _weighted_names(ours)


def test_paper_flops():
    # Tan & Le: B0 0.39B, B1 0.70B; V2 paper: V2-B0 0.72B (multiply-adds).
    for name, paper in (("b0", 0.39e9), ("b1", 0.70e9), ("v2-b0", 0.72e9)):
        assert count_macs(build_model(VARIANTS[name])) == pytest.approx(paper, rel=0.03)


@pytest.mark.slow
def test_flops_grow_about_two_to_the_phi():
    # The compound rule's design point: alpha * beta^2 * gamma^2 ~ 2, so FLOPs ~ 2^phi. Rounding of
    # channels, repeats (ceil) and resolution (multiple of 8) moves it; the fitted slope of
    # log2(FLOPs) over phi must stay within 15 % of 1.
    phis = [0.0, 1.0, 2.0, 3.0]
    logs = [math.log2(count_macs(build_model(resolve(f"phi={p}")))) for p in phis]
    slope = np.polyfit(phis, logs, 1)[0]
    assert 0.85 <= slope <= 1.15, slope


def test_lite_has_no_se_and_relu6():
    model = build_model(VARIANTS["lite0"])
    names = [layer.name for layer in model.layers]
    assert not any("se_" in n for n in names)
    assert model.get_layer("stem_activation").get_config()["activation"] == "relu6"


def test_v2_uses_fused_blocks():
    model = build_model(VARIANTS["v2-b0"])
    # Fused-MBConv stages have no depthwise conv; MBConv stages do.
    assert "block1a_dwconv2" not in {l.name for l in model.layers}
    assert "block4a_dwconv2" in {l.name for l in model.layers}


def test_preprocessing_in_graph():
    model = build_model(resolve("phi=-4:resolution=64"), mean=(127.0,) * 3, std=(128.0,) * 3)
    assert model.input_shape == (None, 64, 64, 3)
    layer = model.get_layer("preprocess")
    out = layer(np.array([[[[0.0, 127.0, 255.0]]]], dtype="float32"))
    np.testing.assert_allclose(np.asarray(out), [[[[-127 / 128, 0.0, 1.0]]]], atol=1e-6)
