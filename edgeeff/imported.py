"""Model files edgeeff did not convert, or whose ``edgeeff.json`` is gone: a bare ``.tflite``,
``.onnx``, ``.xml`` (OpenVINO IR, with its ``.bin``) or ``.keras`` file.

Such a file is wrapped as an artifact folder (links to the file, and an ``edgeeff.json`` written
from what the model itself says and what the user told us), so ``eval``, ``bench`` and ``predict``
run it through the same runners, devices and reports as a converted artifact. What had to be
assumed is recorded under ``imported.assumed`` and shown in the row.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from edgeeff.errors import EdgeeffError
from edgeeff.data.preprocess import PreprocessCard



def model_suffixes() -> dict:
    """suffix -> the fp32 target whose module reads such a file (the registry's own suffixes)."""
    from edgeeff.targets.base import TARGETS

    return {spec.suffix: spec for spec in TARGETS.values() if spec.precision == "fp32"}


RAW = "raw"  # the model normalises inside its graph and takes RGB pixels in 0-255 (edgeeff's own artifacts)
NAMED_NORMALISATIONS = {  # the usual cards a model file may expect outside its graph (pixel units)
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "inception": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
}
PREPROCESSING_HELP = ("--preprocessing raw (the model normalises inside, as edgeeff's artifacts do), imagenet, lite, inception, "
                      "a weights card (lite0-pypi), or mean=R,G,B;std=R,G,B[;crop_padding=32]")


def is_model_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in model_suffixes()


def parse_preprocessing(text: str) -> tuple[PreprocessCard, bool]:
    """``--preprocessing`` as (card, normalise outside the model?)."""
    key = text.strip().lower()
    if key == RAW:
        return PreprocessCard((0.0,) * 3, (1.0,) * 3), False
    if key in NAMED_NORMALISATIONS:
        mean, std = NAMED_NORMALISATIONS[key]
        return PreprocessCard(mean, std), True
    if "=" not in key:
        from edgeeff.weights.cards import all_cards

        if key in all_cards():
            return all_cards()[key].preprocessing, True
        raise EdgeeffError(f"--preprocessing {text!r} is not a card; use {PREPROCESSING_HELP}")
    fields = {}
    for part in key.split(";"):
        name, _, value = part.partition("=")
        fields[name.strip()] = value.strip()
    try:
        mean = tuple(float(v) for v in fields.pop("mean").split(","))
        std = tuple(float(v) for v in fields.pop("std").split(","))
        padding = int(fields.pop("crop_padding", 32))
        if fields or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError
    except (KeyError, ValueError):
        raise EdgeeffError(f"--preprocessing {text!r}: write mean=R,G,B;std=R,G,B (pixel units, std > 0)[;crop_padding=32]") from None
    return PreprocessCard(mean, std, padding), True


def _input_of(module: str, path: Path) -> tuple[list, str]:
    """(input shape, dtype) as the model file declares them, read by its own runtime."""
    from edgeeff.kit.core import RunnerError, load_runner

    try:
        runner = load_runner(module, path, threads=1)
    except RunnerError as exc:
        raise EdgeeffError(str(exc)) from None
    described = runner.describe()["input"]
    shape = described.get("shape") or []
    return [None if (v is None or (isinstance(v, int) and v < 1) or isinstance(v, str)) else int(v) for v in shape], \
        str(described.get("dtype", "float32"))


def _layout_and_resolution(shape: list, name: str) -> tuple[str, int]:
    if len(shape) != 4:
        raise EdgeeffError(f"{name} takes a {len(shape)}-d input {shape}; edgeeff runs image classifiers with one (N, H, W, 3) "
                           "or (N, 3, H, W) input")
    layout = "NCHW" if shape[1] == 3 and shape[3] != 3 else "NHWC"
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if height is None or width is None or height != width:
        raise EdgeeffError(f"{name} has input {shape}: edgeeff needs a fixed square image size")
    return layout, int(height)


def describe_model_file(path: Path, preprocessing: str | None) -> dict:
    """The ``edgeeff.json`` of a bare model file: target, input size and layout read from the
    model, preprocessing from the user, and the list of what was assumed."""
    from edgeeff.fsio import sha256_of
    from edgeeff.targets.base import find_target

    path = Path(path)
    reader = model_suffixes()[path.suffix.lower()]
    module = reader.module()
    files = [path, *module.companion_files(path)]
    shape, dtype = _input_of(reader.module_name, path)
    layout, resolution = _layout_and_resolution(shape, path.name)
    assumed = []
    if preprocessing is None:
        card, outside = PreprocessCard((0.0,) * 3, (1.0,) * 3), False
        assumed.append("input is RGB 0-255 normalised inside the model (--preprocessing raw)")
    else:
        card, outside = parse_preprocessing(preprocessing)
    precision = "int8" if dtype in ("int8", "uint8") or module.graph_is_int8(path) else "fp32"
    target = find_target(reader.backend, precision) or reader
    meta = {
        "target": target.name,
        "backend": target.backend,
        "precision": precision,
        "artifact": path.name,
        "variant": None,
        "weights": {"label": "unknown (imported model file)"},
        "preprocessing": {"resolution": resolution, **card.to_dict(),
                          "input": f"RGB, {layout}" + (", normalised by edgeeff" if outside else ", 0-255")},
        "input_adapter": ({"mean": list(card.mean) if outside else None, "std": list(card.std) if outside else None,
                           "layout": layout} if outside or layout != "NHWC" else None),
        "size_bytes": sum(p.stat().st_size for p in files),
        "files": {p.name: {"bytes": p.stat().st_size} for p in files},
        "validation": {},
        "imported": {"source": str(path.resolve()), "sha256": sha256_of(path), "input_shape": shape, "input_dtype": dtype,
                     "layout": layout, "assumed": assumed},
    }
    return meta


def wrap_model_file(path: Path, root: Path, preprocessing: str | None) -> Path:
    """An artifact folder under ``root`` for a bare model file (links, else copies, of its files)."""
    meta = describe_model_file(path, preprocessing)
    folder = root / f"{path.stem}-{meta['imported']['sha256'][:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in meta["files"]:
        source, link = path.parent / name, folder / name
        if not link.exists():
            try:
                os.symlink(source.resolve(), link)
            except OSError:
                shutil.copy2(source, link)
    (folder / "edgeeff.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder
