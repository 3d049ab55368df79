"""Real-world image mess: grayscale, CMYK, alpha, truncated and non-image files."""

import numpy as np
import pytest
from PIL import Image

from edgeeff.errors import ImageError
from edgeeff.data.preprocess import PreprocessCard, load_image, load_rgb

CARD = PreprocessCard((127.0,) * 3, (128.0,) * 3)


@pytest.fixture
def photo(few_images):
    return few_images[0]


@pytest.mark.parametrize("mode,suffix", [("L", ".jpg"), ("CMYK", ".jpg"), ("RGBA", ".png"), ("P", ".png"), ("LA", ".png")])
def test_modes_become_rgb(photo, tmp_path, mode, suffix):
    path = tmp_path / f"img{suffix}"
    Image.open(photo).convert(mode).save(path)
    arr = load_image(path, 64, CARD)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.float32
    assert 0 <= arr.min() and arr.max() <= 255


def test_alpha_composites_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(path)
    assert np.asarray(load_rgb(path)).min() == 255


def test_geometry_is_centre_crop(tmp_path):
    # A wide image whose centre square is white and sides black: the crop sees only white.
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(img).save(path)
    assert load_image(path, 32, CARD).min() > 250


def test_truncated_jpeg(photo, tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(photo.read_bytes()[:2000])
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(path, 64, CARD)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path, 64, CARD)


def test_missing(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg", 64, CARD)
