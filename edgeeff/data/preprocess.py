"""Image decoding and the preprocessing card: the one definition that calibration, evaluation,
prediction and deployment all read, so they see identical pixels.

The card splits preprocessing in two on purpose. Geometry (crop, resize, interpolation) happens
here, outside the model, because it depends on the source image. Normalisation (mean/std) lives
inside the graph (the builder's ``preprocess`` layer), so every exported model takes raw RGB 0-255.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeeff.errors import ImageError

_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
_FITS = ("crop", "letterbox")


@dataclass(frozen=True)
class PreprocessCard:
    """How a weights source expects its images.

    ``mean``/``std`` are per-channel in pixel units (the graph computes ``(x - mean) / std``).
    Geometry (``fit``) follows the TensorFlow EfficientNet evaluation for classifiers ("crop": a
    centred square crop of ``resolution / (resolution + crop_padding)`` of the shorter side, resized
    to the resolution) and the EfficientDet reference for detectors ("letterbox": the longer side
    resized to the resolution, aspect kept, zero padding bottom-right, so boxes map back by one scale).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_padding: int = 32
    interpolation: str = "bicubic"
    fit: str = "crop"

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}")
        if self.fit not in _FITS:
            raise ValueError(f"fit must be one of {_FITS}")

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.fit == "crop":  # the classifiers' cards (and artifact keys) as before the field existed
            del out["fit"]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessCard":
        return cls(
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            crop_padding=int(data.get("crop_padding", 32)),
            interpolation=str(data.get("interpolation", "bicubic")),
            fit=str(data.get("fit", "crop")),
        )


def load_rgb(path: str | Path):
    """Open any image PIL can read as 8-bit RGB: grayscale, CMYK, palette and alpha images included.

    Alpha is composited onto white (a transparent background is not black in any photo), EXIF
    orientation is applied, and truncated or non-image files raise :class:`ImageError`.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                peak = arr.max() or 1.0
                img = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8))
            return img.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode {path} (truncated or corrupt: {exc})") from None


def crop_and_resize(img, resolution: int, card: PreprocessCard) -> np.ndarray:
    """Centre crop and resize (or letterbox) per the card; returns float32 (resolution, resolution, 3) in 0-255."""
    from PIL import Image

    if card.fit == "letterbox":
        return letterbox(img, resolution, card)
    width, height = img.size
    side = min(width, height) * resolution / (resolution + card.crop_padding)
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    box = (left, top, left + side, top + side)
    method = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[card.interpolation]
    out = img.resize((resolution, resolution), method, box=box)
    return np.asarray(out, dtype=np.float32)


def letterbox_scale(height: int, width: int, resolution: int) -> float:
    """Input pixels per image pixel under the letterbox fit (boxes map back by dividing by it)."""
    return resolution / max(height, width)


def letterbox(img, resolution: int, card: PreprocessCard) -> np.ndarray:
    """The longer side resized to ``resolution`` (aspect kept), zero padding bottom-right: the
    detector's input, as the EfficientDet reference and ``edgeeff train-detect`` feed it."""
    from PIL import Image

    width, height = img.size
    scale = letterbox_scale(height, width, resolution)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    method = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[card.interpolation]
    out = np.zeros((resolution, resolution, 3), np.float32)
    out[: size[1], : size[0]] = np.asarray(img.resize(size, method), dtype=np.float32)
    return out


def load_image(path: str | Path, resolution: int, card: PreprocessCard) -> np.ndarray:
    """Decode, crop and resize one image: the model input for one sample (no batch axis)."""
    return crop_and_resize(load_rgb(path), resolution, card)
