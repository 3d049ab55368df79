"""Adding a target is one module plus one registry entry: a toy target, installed the way a
plug-in package would be (a module and an ``edgeeff.targets`` entry point in a dist-info folder on
the path), is listed, converted, validated, evaluated, measured and shipped in the device kit by
the unchanged CLI, with no edit anywhere in edgeeff."""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import run_cli

TOY_MODULE = '''
"""A toy backend: the Keras model saved under its own suffix and run by a numpy-facing runner."""
from pathlib import Path

from edgeeff.kit.core import ArrayRunner, RunnerError, np
from edgeeff.targets.base import TargetSpec

SPEC = TargetSpec("toy-keras", "toy", "fp32", ".toy.keras", ("keras",), "all", module_path="toy_target")
RUNTIME_PIP = "keras"
ACCELERATORS = {"cpu": "CPU"}
EXPORTS = []


def export(model, spec, dest, calibration=None, options=None, saved_model=None, progress=None):
    model.save(str(dest))
    EXPORTS.append(str(dest))
    return {"format": "toy (a .keras file)"}


class ToyRunner(ArrayRunner):
    def __init__(self, path):
        import keras

        self.model = keras.saving.load_model(str(path), compile=False)

    def invoke(self, prepared):
        return np.asarray(self.model(prepared, training=False))

    def describe(self):
        return {"runtime": "toy", "input": {"shape": [None, *self.model.input_shape[1:]], "dtype": "float32"}}


def open_runner(path, threads, setting, precision, prefer, batch):
    if not Path(path).name.endswith(".toy.keras"):
        raise RunnerError(f"toy runs .toy.keras files, not {Path(path).name}")
    return ToyRunner(path)


def companion_files(path):
    return []


def graph_is_int8(path):
    return False
'''


@pytest.fixture
def toy_env(tmp_path):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "toy_target.py").write_text(TOY_MODULE)
    info = plugin / "edgeeff_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeeff-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgeeff.targets]\ntoy = toy_target:SPEC\n")
    return {"PYTHONPATH": str(plugin)}


def test_a_toy_target_registered_by_entry_point_runs_through_the_cli(tmp_path, toy_env):
    listed = run_cli("targets", "--json", str(tmp_path / "t.json"), env=toy_env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = {r["target"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert "toy-keras" in rows and "keras-fp32" in rows

    out = tmp_path / "artifacts"
    converted = run_cli("convert", "--variant", "lite0:width=0.25,depth=0.25,resolution=64", "--weights", "none", "--target", "toy-keras",
                        "--out", str(out), env=toy_env)
    assert converted.returncode == 0, converted.stderr[-2000:]
    folder = next(p.parent for p in out.rglob("edgeeff.json"))
    meta = json.loads((folder / "edgeeff.json").read_text())
    assert meta["target"] == "toy-keras" and (folder / meta["artifact"]).name.endswith(".toy.keras")
    assert meta["validation"]["images"] > 0 and meta["validation"]["max_rel_diff"] < 1e-4  # validated against Keras like any target

    evaluated = run_cli("eval", str(folder), "--json", str(tmp_path / "e.json"), env=toy_env)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    row = json.loads((tmp_path / "e.json").read_text())["rows"][0]
    assert "toy-keras" in row["model"] and row["images"] > 0

    # Without the plug-in on the path the same artifact is refused in one line, not run by another backend.
    refused = run_cli("eval", str(folder))
    assert refused.returncode == 2 and "toy-keras" in refused.stderr and "Traceback" not in refused.stderr


def test_the_device_kit_carries_a_registered_targets_module(toy_env):
    import subprocess
    import sys


    code = textwrap.dedent("""
        import io, sys, zipfile
        from edgeeff.kit.bundle import kit_bytes
        names = zipfile.ZipFile(io.BytesIO(kit_bytes())).namelist()
        print(" ".join(names))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**__import__("os").environ, **toy_env})
    assert done.returncode == 0, done.stderr[-2000:]
    names = done.stdout.split()
    assert "toy_target.py" in names and "edgeeff/targets/onnx.py" in names and "__main__.py" in names
