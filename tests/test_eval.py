"""`edgeeff eval` over a real artifact and the paired statistics the gate relies on."""

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from edgeeff.convert import convert
from edgeeff.evaluate import paired_drop

TINY = "lite0:width=0.25,depth=0.25,resolution=64"


def test_paired_drop_counts_discordant_images():
    ref = np.array([1] * 90 + [1] * 6 + [0] * 1 + [0] * 3, dtype=bool)
    art = np.array([1] * 90 + [0] * 6 + [1] * 1 + [0] * 3, dtype=bool)
    out = paired_drop(ref, art)
    assert out["drop_points"] == pytest.approx(5.0)
    assert (out["only_reference_right"], out["only_artifact_right"]) == (6, 1)
    assert out["mcnemar_p"] == pytest.approx(2 * (1 + 7) / 2**7)
    low, high = out["ci95_points"]
    assert low < 5.0 < high and low > -1 and out["smallest_step_points"] == 1.0
    assert paired_drop(ref, art) == out  # seeded: identical on a second call


def test_paired_drop_of_identical_models_is_zero():
    same = np.array([1, 0, 1, 1], dtype=bool)
    out = paired_drop(same, same)
    assert out["drop_points"] == 0 and out["ci95_points"] == [0.0, 0.0] and out["mcnemar_p"] == 1.0


def test_eval_artifact_against_its_reference(tmp_path, sample_images):
    meta = convert(TINY, "onnx-fp32", weights="none", out=tmp_path)
    folder = meta["path"]
    listing = tmp_path / "eval.txt"
    listing.write_text("".join(f"{p.name.split('_')[0]}\t{p}\n" for p in sample_images[:20]))
    report = tmp_path / "eval.json"
    done = run_cli("eval", folder, "--images", str(listing), "--json", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(report.read_text())["rows"][0]
    assert row["images"] == 20 and row["top1_agreement"] == 1.0 and row["mean_cosine"] > 0.9999
    assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
    assert row["top1"] == row["reference_top1"]  # fp32 artifact: the same answers as its reference


def test_eval_bad_input(tmp_path):
    assert_one_line_error(run_cli("eval", str(tmp_path)), "not a converted artifact")
    assert_one_line_error(run_cli("eval"), "artifact folder, a model file or --variant")
