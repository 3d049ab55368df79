"""Open a converted artifact folder (``edgeeff.json`` + the model file) with its target's runner."""

from __future__ import annotations

import json
from pathlib import Path

from edgeeff.errors import EdgeeffError


def read_metadata(folder: str | Path) -> dict:
    folder = Path(folder)
    meta_path = folder / "edgeeff.json"
    if not meta_path.is_file():
        hint = " (pass the folder `edgeeff convert` printed, not the model file)" if folder.is_file() else ""
        raise EdgeeffError(f"{folder} is not a converted artifact: no edgeeff.json{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise EdgeeffError(f"{meta_path} is not valid JSON ({exc}); convert again with --force") from None
    if not (folder / meta.get("artifact", "")).is_file():
        raise EdgeeffError(f"{folder} lacks its model file {meta.get('artifact')!r}; convert again with --force")
    return meta


def artifact_task(path: str | Path) -> str:
    """What a converted artifact folder does: its metadata's ``task`` ("detect"), else "classify"
    (classifiers, bare model files and anything not yet known to be an artifact)."""
    path = Path(path)
    if not (path.is_dir() and (path / "edgeeff.json").is_file()):
        return "classify"
    return read_metadata(path).get("task") or "classify"


def resolve_artifact(path: str | Path, root: Path, preprocessing: str | None = None) -> Path:
    """An artifact folder for ``path``: a converted folder as it is, or a bare model file (``.tflite``,
    ``.onnx``, ``.xml``, ``.keras``) wrapped under ``root`` (``edgeeff.imported``)."""
    from edgeeff.imported import is_model_file, model_suffixes, wrap_model_file

    path = Path(path)
    if not path.exists():
        raise EdgeeffError(f"{path} does not exist; give an artifact folder (from `edgeeff convert`) or a model file "
                           f"({', '.join(model_suffixes())})")
    if path.is_dir() and (path / "edgeeff.json").is_file():
        if preprocessing is not None:
            raise EdgeeffError(f"{path} records its own preprocessing in edgeeff.json; --preprocessing is for bare model files")
        return path
    if is_model_file(path):
        return wrap_model_file(path, root, preprocessing)
    if path.is_file():
        raise EdgeeffError(f"{path.name} is not a model file edgeeff runs; give a {', '.join(model_suffixes())} file or an artifact folder")
    models = sorted(p.name for p in path.iterdir() if is_model_file(p))
    hint = f" (it holds {models[0]}: pass that file)" if models else ""
    raise EdgeeffError(f"{path} is not a converted artifact: no edgeeff.json{hint}")


def open_artifact(folder: str | Path, threads: int | None = None, device: str | None = None):
    """Returns ``(metadata, runner)``; the runner comes from the same target registry as conversion."""
    from edgeeff.targets.base import get_target, load_runner

    meta = read_metadata(folder)
    spec = get_target(meta["target"])
    runner = load_runner(spec, Path(folder) / meta["artifact"], threads=threads, device=device or spec.accelerator or "cpu",
                         adapt=meta.get("input_adapter"))
    return meta, runner


def reference_model(meta: dict):
    """The Keras fp32 model an artifact was converted from (same variant and weights), ending at the
    logits; None for an imported model file, which has no known source."""
    from edgeeff.api import build

    if meta.get("imported") or not meta.get("variant"):
        return None
    weights = meta["weights"]["label"]
    return build(meta["variant"], weights=None if weights == "none" else weights, classifier_activation=None)
