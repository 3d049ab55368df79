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


def open_artifact(folder: str | Path, threads: int | None = None, device: str | None = None):
    """Returns ``(metadata, runner)``; the runner comes from the same target registry as conversion."""
    from edgeeff.targets.base import get_target, load_runner

    meta = read_metadata(folder)
    spec = get_target(meta["target"])
    runner = load_runner(spec, Path(folder) / meta["artifact"], threads=threads, device=device or spec.accelerator or "cpu")
    return meta, runner


def reference_model(meta: dict):
    """The Keras fp32 model an artifact was converted from (same variant and weights), ending at the logits."""
    from edgeeff.api import build

    weights = meta["weights"]["label"]
    return build(meta["variant"], weights=None if weights == "none" else weights, classifier_activation=None)
