"""Weight compatibility with Keras Applications, measured on real photos.

For each model: build keras.applications.<Model>(weights=None), copy its weights into ours by
layer name, run both on the same real images and compare. Keras's weights=None preprocessing is
x/255 for V1 (its Normalization is unadapted: mean 0, variance 1), x/255 then ImageNet mean/std for
V2-B*, and x/128 - 1 for V2-S/M/L; ours is built with the same card.
"""

import keras
import numpy as np
import pytest

from edgeeff.model.builder import build_model
from edgeeff.data.preprocess import PreprocessCard, load_image
from edgeeff.model.variants import resolve
from edgeeff.weights.cards import IMAGENET_MEAN, IMAGENET_STD
from edgeeff.weights.loaders import assign_by_name, weights_of_model

CASES = {
    "b0": ("EfficientNetB0", (0, 0, 0), (255, 255, 255)),
    "b3": ("EfficientNetB3", (0, 0, 0), (255, 255, 255)),
    "v2-b0": ("EfficientNetV2B0", IMAGENET_MEAN, IMAGENET_STD),
    "v2-s": ("EfficientNetV2S", (128, 128, 128), (128, 128, 128)),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("b3", "v2-s") else n for n in CASES])
def test_outputs_match_keras_applications(name, few_images):
    ctor, mean, std = CASES[name]
    variant = resolve(name)
    theirs = getattr(keras.applications, ctor)(weights=None, classifier_activation=None)
    ours = build_model(variant, mean=mean, std=std, classifier_activation=None)
    loaded = assign_by_name(ours, weights_of_model(theirs), ctor)
    assert loaded == sum(1 for layer in ours.layers if layer.weights)
    card = PreprocessCard(IMAGENET_MEAN, IMAGENET_STD)
    batch = np.stack([load_image(p, variant.resolution, card) for p in few_images])
    logits_theirs = np.asarray(theirs(batch, training=False))
    logits_ours = np.asarray(ours(batch, training=False))
    probs_theirs = np.asarray(keras.ops.softmax(logits_theirs))
    probs_ours = np.asarray(keras.ops.softmax(logits_ours))
    assert np.abs(probs_ours - probs_theirs).max() <= 1e-5
    # Probabilities of a random-init V1 net are near-uniform (its signal shrinks to ~1e-5 by the
    # logits), so the absolute check above alone could not fail there. Logits relative to their own
    # scale can: any structural difference shows as an O(1) relative error at any magnitude.
    scale = float(np.abs(logits_theirs).max())
    assert scale > 0 and np.isfinite(scale)
    assert np.abs(logits_ours - logits_theirs).max() <= 1e-5 * scale
    keras.backend.clear_session()
