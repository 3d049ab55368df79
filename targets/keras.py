"""Keras: the model itself, saved in Keras's own ``.keras`` format. Not a deployment format but the
baseline row of every bench table (what the framework gives before any converter touches the model)
and TensorFlow's GPU path; validation checks that saving and loading changed nothing."""

from __future__ import annotations

from pathlib import Path

from edgeeff.errors import EdgeeffError
from edgeeff.targets.base import TargetSpec, versions


def export(model, spec: TargetSpec, dest: Path, calibration=None, options: dict | None = None, saved_model: Path | None = None,
           progress=None) -> dict:
    try:
        model.save(str(dest))
    except Exception as exc:
        raise EdgeeffError(f"Keras could not save the model: {str(exc).splitlines()[0][:200]}") from None
    return {"format": "keras v3 (.keras zip: config + weights)", "converter": versions("keras", "tensorflow-cpu|tensorflow")}
