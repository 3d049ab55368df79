"""What a new user meets first, through the real CLI: real weights or a loud refusal, their own
model files, devices set up from the command line, one number format, readable outputs, and bad
arguments answered before TensorFlow starts."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, run_cli
from edgeeff.convert import convert

TINY = "lite0:width=0.25,depth=0.25,resolution=64"
QUICK = ["--rounds", "1", "--warmup-runs", "1", "--warmup-seconds", "0", "--min-runs", "3", "--min-seconds", "0"]
NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # a closed port: downloads fail at once


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random-weights Lite0 as onnx-fp32 and tflite-fp32 artifacts (seconds to convert)."""
    out = tmp_path_factory.mktemp("tiny")
    return {t: convert(TINY, t, weights="none", out=out)["path"] for t in ("onnx-fp32", "tflite-fp32")}


# 1. Weights: real ones by default, random only when asked, and said so --------------------------

def test_a_variant_without_real_weights_is_refused_unless_asked(tmp_path):
    assert_one_line_error(run_cli("convert", "--variant", "phi=1.5", "--target", "onnx-fp32", "--out", str(tmp_path)),
                          "no real weights", "--weights none")
    assert not any(tmp_path.iterdir())


def test_keras_weights_that_cannot_be_downloaded_are_refused_not_replaced(tmp_path):
    env = {**NO_NETWORK, "KERAS_HOME": str(tmp_path / "keras")}  # an empty cache, and no way out
    done = run_cli("convert", "--variant", "b0", "--target", "onnx-fp32", "--out", str(tmp_path / "out"), env=env)
    assert_one_line_error(done, "efficientnetb0.h5", "--weights none")
    assert not (tmp_path / "out" / "b0-onnx-fp32").exists()


def test_random_weights_say_so_in_every_row(tmp_path):
    report = tmp_path / "convert.json"
    done = run_cli("convert", "--variant", TINY, "--weights", "none", "--target", "onnx-fp32", "--out", str(tmp_path),
                   "--json", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(report.read_text())["rows"][0]["weights"] == "random weights"
    assert "random weights" in done.stdout and "untrained" in done.stderr


# 2. Bring your own model ----------------------------------------------------------------------------

def test_eval_bench_and_predict_take_a_bare_model_file(tiny, tmp_path, sample_images):
    folder_path = Path(tiny["onnx-fp32"])
    bare = tmp_path / "mine.onnx"
    bare.write_bytes((folder_path / "model.onnx").read_bytes())
    listing = tmp_path / "eval.txt"
    listing.write_text("".join(f"{p.name.split('_')[0]}\t{p}\n" for p in sample_images[:6]))
    done = run_cli("eval", str(bare), "--images", str(listing), "--json", str(tmp_path / "e.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads((tmp_path / "e.json").read_text())
    assert payload["rows"][0]["images"] == 6 and "top1" in payload["rows"][0]
    assert payload["inputs"]["artifact_sha256"] and payload["inputs"]["image_count"] == 6
    assert any("--preprocessing raw" in a for a in payload["inputs"]["assumed"])  # the row says what was assumed
    # the same file through the artifact folder gives the same top-1
    folder = run_cli("eval", str(folder_path), "--images", str(listing), "--json", str(tmp_path / "f.json"))
    assert folder.returncode == 0, folder.stderr[-2000:]
    assert json.loads((tmp_path / "f.json").read_text())["rows"][0]["top1"] == payload["rows"][0]["top1"]

    bench = run_cli("bench", str(bare), str(tiny["tflite-fp32"]), *QUICK, "--json", str(tmp_path / "b.json"))
    assert bench.returncode == 0, bench.stderr[-2000:]
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["target"] for r in rows][0] == "mine.onnx" and rows[0]["runs_as"] == "onnx-fp32"
    assert all(r["median_ms"] > 0 for r in rows)

    top = run_cli("predict", "--model", str(bare), "--top", "1", "--json", "-")
    assert top.returncode == 0, top.stderr[-2000:]
    assert len(json.loads(top.stdout)["rows"]) == 3  # three bundled photos, one class each


def test_a_channels_first_model_expecting_normalised_input(tmp_path, sample_images):
    """A model edgeeff did not make: NCHW input, normalisation expected outside, read from the file."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["logits"])],
        "mean_colour", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "colour.onnx"
    onnx.save(model, str(path))
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    done = run_cli("predict", sample_images[0].as_posix(), "--model", str(path), "--preprocessing", "mean=0,0,0;std=255,255,255",
                   "--labels", str(labels), "--top", "3", "--json", str(tmp_path / "p.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert {r["name"] for r in rows} == {"red", "green", "blue"}
    # the logits are the image's mean colour in 0-1: check against the decoded pixels themselves
    from edgeeff.data.preprocess import PreprocessCard, load_image

    pixels = load_image(sample_images[0], 32, PreprocessCard((0.0,) * 3, (1.0,) * 3)) / 255.0
    mean = pixels.reshape(-1, 3).mean(0)
    expected = np.exp(mean) / np.exp(mean).sum()
    got = {r["name"]: r["probability"] for r in rows}
    assert [got[n] for n in ("red", "green", "blue")] == pytest.approx(expected.tolist(), abs=1e-5)
    assert_one_line_error(run_cli("predict", "--model", str(path), "--preprocessing", "mean=1,2;std=3"), "mean=R,G,B")
    assert_one_line_error(run_cli("bench", str(tmp_path / "nope.onnx")), "does not exist")
    assert_one_line_error(run_cli("bench", str(path), "--targets", "onnx-fp32"), "--targets", "as they are")


# 3. Devices from the command line ------------------------------------------------------------------

def test_devices_are_added_listed_and_removed_from_the_cli(tmp_path):
    file = tmp_path / "conf" / "devices.toml"
    env = {"EDGEEFF_DEVICES": str(file)}
    listed = run_cli("devices", "list", env=env)
    assert listed.returncode == 0 and "does not exist yet" in listed.stdout and "devices add" in listed.stdout
    unknown = run_cli("bench", "--device", "rpi", env=env)
    assert_one_line_error(unknown, "unknown device 'rpi'", str(file), "edgeeff devices add rpi", "ssh://")
    added = run_cli("devices", "add", "rpi", "--host", "raspberrypi.local", "--user", "pi", "--python", "/home/pi/venv/bin/python",
                    env=env)
    assert added.returncode == 0, added.stderr
    assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~_umask()
    assert_one_line_error(run_cli("devices", "add", "rpi", "--host", "other", env=env), "already has", "--replace")
    assert_one_line_error(run_cli("devices", "add", "npu", "--host", "x", "--accelerator", "tpu9", env=env), "accelerator")
    shown = run_cli("devices", "list", "--json", "-", env=env)
    rows = json.loads(shown.stdout)["rows"]
    assert [r["device"] for r in rows if r["where"] != "local"] == ["rpi"] and rows[-1]["where"] == "pi@raspberrypi.local:22"
    assert run_cli("devices", "remove", "rpi", env=env).returncode == 0
    assert_one_line_error(run_cli("devices", "remove", "rpi", env=env), "no device 'rpi'")
    assert_one_line_error(run_cli("bench", "--device", "ssh://pi@host:notaport", env=env), "ssh://")


def test_gpu_is_listed_only_where_one_is_usable():
    from edgeeff.devices.registry import gpu_backends

    rows = json.loads(run_cli("devices", "list", "--json", "-").stdout)["rows"]
    assert ("gpu" in [r["device"] for r in rows]) == bool(gpu_backends())


# 4. One number format ------------------------------------------------------------------------------

def test_one_number_format_everywhere():
    from edgeeff.report import fmt, to_markdown

    row = {"agreement": 0.9231, "images": 13, "median_ms": 7.4553, "speedup_vs_fp32": 1.782, "top1_ci95": [0.762, 0.944],
           "probability": 0.03023, "weights": "none"}
    assert fmt(row["agreement"], "agreement", row) == "92.3% (12/13)"
    assert (fmt(row["median_ms"], "median_ms"), fmt(row["speedup_vs_fp32"], "speedup_vs_fp32")) == ("7.46", "1.78")
    assert fmt(row["top1_ci95"], "top1_ci95") == "76.2% to 94.4%" and fmt(row["probability"], "probability") == "3.0%"
    assert fmt("none", "weights") == "random weights"
    md = to_markdown([row], [("agreement", "agreement"), ("median_ms", "median ms")])
    assert "| 92.3% (12/13) | 7.46 |" in md


def test_eval_table_fits_100_columns_without_breaking_words(tiny):
    done = run_cli("eval", str(tiny["onnx-fp32"]), env={"COLUMNS": "100"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert max(len(line) for line in done.stdout.splitlines()) <= 100
    for word in ("agreement", "cosine", "images"):
        assert word in done.stdout
    assert "(3/3)" in done.stdout or "(13/13)" in done.stdout  # the n beside the agreement


# 5 and 6. Options users can pass, files others can read, JSON that is typed -------------------------

def test_targets_lists_only_options_convert_takes():
    listed = json.loads(run_cli("targets", "--json", "-").stdout)["rows"]
    help_text = run_cli("convert", "--help").stdout
    options = {o.strip() for row in listed for o in row["options"].split(",") if o.strip() not in ("", "-")}
    assert options and all(option in help_text for option in options), options


def test_outputs_follow_the_umask_and_json_goes_to_stdout(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", "-c", f'umask 022 && exec "{sys.executable}" -m edgeeff.cli convert --variant {TINY} '
                           f'--weights none --target tflite-fp32 --out "{out}" --json -'],
                          capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads(done.stdout)  # stdout carries the report alone; the table went to stderr
    folder = Path(payload["rows"][0]["path"])
    assert folder.parent == out and "Validation against" in done.stderr
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}
    assert not (tmp_path / "-").exists() and not (REPO / "-").exists()


def test_bench_csv_and_eval_json_are_typed(tiny, tmp_path):
    done = run_cli("bench", str(tiny["tflite-fp32"]), *QUICK, "--csv", str(tmp_path / "b.csv"))
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(csv.DictReader((tmp_path / "b.csv").open()))
    assert isinstance(json.loads(row["versions"]), dict)  # JSON, not a Python repr
    listing = tmp_path / "l.txt"
    from edgeeff.data.images import bundled_photos

    listing.write_text("".join(f"n03877845\t{p}\n" for p in bundled_photos()[:2]))
    evald = run_cli("eval", str(tiny["tflite-fp32"]), "--images", str(listing), "--json", "-")
    assert evald.returncode == 0, evald.stderr[-2000:]
    payload = json.loads(evald.stdout)
    low, high = payload["rows"][0]["top1_ci95"]
    assert isinstance(low, float) and isinstance(high, float) and low <= high
    assert payload["inputs"]["images"] == str(listing.resolve()) and payload["inputs"]["image_count"] == 2


# 7. Bad arguments are answered before TensorFlow starts ---------------------------------------------

@pytest.mark.parametrize("args", [
    ["bench", "--device", "rpi"], ["convert", "--target", "tflite-in8"], ["eval", "/no/such/model.onnx"],
    ["convert", "--variant", "lite9"], ["bench", "--calibration", "/no/such/folder"], ["convert", "--variant", "phi=1.5"],
])
def test_bad_arguments_fail_before_tensorflow_is_imported(args, tmp_path):
    probe = ("import sys\nfrom edgeeff.cli import main\n"
             f"try:\n    main({args!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
             "print(code, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EDGEEFF_DEVICES": str(tmp_path / "none.toml")})
    assert done.stdout.split()[-2:] == ["2", "False"], (done.stdout, done.stderr[-1000:])
    assert "edgeeff: error:" in done.stderr


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
