"""The CI gate: records a baseline, passes identically run after run, fails on a degraded
quantization, and refuses what it cannot judge (exit 2, one line)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, run_cli
from edgeeff.data import list_samples, split, write_list
from edgeeff.gate import _manifest

REAL_SMALL = "lite0:resolution=128"


@pytest.fixture(scope="module")
def data(tmp_path_factory, sample_images):
    folder = tmp_path_factory.mktemp("gate-data")
    calib, evaluation = split(list_samples(sample_images[0].parent), 0.4, seed=0)
    noise_dir = folder / "noise"
    noise_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(noise_dir / f"noise{i}.png")
    return {"calib": write_list(calib[:32], folder / "calib.txt"), "eval": write_list(evaluation[:60], folder / "eval.txt"),
            "noise": noise_dir}


def _config(folder, calibration, evaluation, variant=REAL_SMALL, extra=""):
    path = folder / "edgeeff.toml"
    path.write_text(f"""
calibration = "{calibration}"
evaluation = "{evaluation}"
max_drop = 10.0
min_agreement = 0.8
tolerance = 3.0
baseline = "baseline.json"
cache = "cache"
{extra}
[[checks]]
variant = "{variant}"
weights = "lite0-pypi"
targets = ["onnx-int8"]
""")
    return path


def test_gate_records_a_baseline_then_passes_with_identical_figures(tmp_path, data):
    config = _config(tmp_path, data["calib"], data["eval"])
    first = run_cli("check", "--config", str(config), "--update-baseline", "--json", str(tmp_path / "a.json"),
                    "--markdown", str(tmp_path / "summary.md"))
    assert first.returncode == 0, first.stderr[-2000:]
    baseline = json.loads((tmp_path / "baseline.json").read_text())
    assert list(baseline["rows"]) == [f"{REAL_SMALL}|lite0-pypi|onnx-int8"] and baseline["data"]["evaluation"]["images"] == 60
    shutil.rmtree(tmp_path / "cache")  # convert again from scratch: the figures must not move
    second = run_cli("check", "--config", str(config), "--json", str(tmp_path / "b.json"))
    assert second.returncode == 0, second.stderr[-2000:]
    a, b = (json.loads((tmp_path / n).read_text())["rows"][0] for n in ("a.json", "b.json"))
    for key in ("fp32_top1", "quantized_top1", "drop_points", "drop_ci95_points", "agreement", "mcnemar_p"):
        assert a[key] == b[key], key
    assert b["baseline_drop_points"] == a["drop_points"]
    assert "passed" in (tmp_path / "summary.md").read_text()


def test_gate_fails_when_calibration_is_noise(tmp_path, data):
    good = _config(tmp_path, data["calib"], data["eval"])
    assert run_cli("check", "--config", str(good), "--update-baseline").returncode == 0
    noisy = _config(tmp_path, data["noise"], data["eval"])
    done = run_cli("check", "--config", str(noisy), "--markdown", str(tmp_path / "summary.md"))
    assert done.returncode == 1, done.stderr[-2000:]
    failures = [line for line in done.stderr.splitlines() if line.startswith("edgeeff: check failed:")]
    assert failures and all("onnx-int8" in line for line in failures)
    assert any("agreement" in line and "min_agreement" in line for line in failures), failures
    assert "FAILED" in (tmp_path / "summary.md").read_text()


def test_gate_refuses_what_it_cannot_judge(tmp_path, data):
    config = _config(tmp_path, data["calib"], data["eval"])
    assert_one_line_error(run_cli("check", "--config", str(config)), "no baseline")
    (tmp_path / "baseline.json").write_text(json.dumps({"version": 1, "rows": {"b0|none|onnx-int8": {}}, "data": {}}))
    assert_one_line_error(run_cli("check", "--config", str(config)), "differ from the baseline")
    same_data = {"evaluation": _manifest(list_samples(data["eval"]))}
    (tmp_path / "baseline.json").write_text(json.dumps({"version": 1, "rows": {"b0|none|onnx-int8": {}}, "data": same_data}))
    assert_one_line_error(run_cli("check", "--config", str(config)), "no entry for", "b0|none|onnx-int8")
    broken = tmp_path / "broken.toml"
    broken.write_text("max_drop = [1.0\n")
    assert_one_line_error(run_cli("check", "--config", str(broken)), "not valid TOML")
    unknown = _config(tmp_path, data["calib"], data["eval"], extra="max_dorp = 1.0")
    assert_one_line_error(run_cli("check", "--config", str(unknown)), "unknown key", "max_dorp")
    assert_one_line_error(run_cli("check", "--config", str(tmp_path / "missing.toml")), "no config")
