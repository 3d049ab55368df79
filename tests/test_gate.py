"""The CI gate: records a baseline, passes identically run after run, fails on a degraded
quantization, and refuses what it cannot judge (exit 2, one line)."""

import json
import shutil

import pytest

from conftest import assert_one_line_error, noise_photos, run_cli
from edgeeff.data.images import list_samples, split, write_list
from edgeeff.quant.gate import manifest

REAL_SMALL = "lite0:resolution=128"


@pytest.fixture(scope="module")
def data(tmp_path_factory, sample_images):
    folder = tmp_path_factory.mktemp("gate-data")
    calib, evaluation = split(list_samples(sample_images[0].parent), 0.4, seed=0)
    noise_dir = noise_photos(folder / "noise", 8, 160)
    return {"calib": write_list(calib[:32], folder / "calib.txt"), "eval": write_list(evaluation[:60], folder / "eval.txt"),
            "noise": noise_dir}


def _config(folder, calibration, evaluation, variant=REAL_SMALL, extra="", max_drop=10.0, min_agreement=0.8, name="edgeeff.toml"):
    path = folder / name
    path.write_text(f"""
calibration = "{calibration}"
evaluation = "{evaluation}"
max_drop = {max_drop}
min_agreement = {min_agreement}
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_gate_fails_when_calibration_is_noise(tmp_path, data):
    """End to end: a baseline from real calibration, then an int8 artifact calibrated on noise. Under
    the budget the gate runs with, the budget rule fails; under a budget loose enough to pass it (no
    absolute limit at all), the baseline's tolerances alone catch the regression."""
    good = _config(tmp_path, data["calib"], data["eval"])
    assert run_cli("check", "--config", str(good), "--update-baseline").returncode == 0
    noisy = _config(tmp_path, data["noise"], data["eval"])
    done = run_cli("check", "--config", str(noisy), "--markdown", str(tmp_path / "summary.md"))
    assert done.returncode == 1, done.stderr[-2000:]
    failures = [line for line in done.stderr.splitlines() if line.startswith("edgeeff: check failed:")]
    assert failures and all("onnx-int8" in line for line in failures)
    assert any("agreement" in line and "min_agreement" in line for line in failures), failures
    assert "FAILED" in (tmp_path / "summary.md").read_text()
    loose = _config(tmp_path, data["noise"], data["eval"], max_drop=100.0, min_agreement=0.0, name="loose.toml")
    regressed = run_cli("check", "--config", str(loose), "--json", str(tmp_path / "loose.json"))
    assert regressed.returncode == 1, regressed.stderr[-2000:]
    failures = [line for line in regressed.stderr.splitlines() if line.startswith("edgeeff: check failed:")]
    assert not any("(budget)" in line for line in failures), failures
    assert any("grew by" in line and "over the baseline's" in line for line in failures), failures
    assert any("fell below the baseline's" in line for line in failures), failures


@pytest.mark.slow
def test_gate_refuses_what_it_cannot_judge(tmp_path, data):
    config = _config(tmp_path, data["calib"], data["eval"])
    assert_one_line_error(run_cli("check", "--config", str(config)), "no baseline")
    (tmp_path / "baseline.json").write_text(json.dumps({"version": 1, "rows": {"b0|none|onnx-int8": {}}, "data": {}}))
    assert_one_line_error(run_cli("check", "--config", str(config)), "differ from the baseline")
    same_data = {"evaluation": manifest(list_samples(data["eval"]))}
    (tmp_path / "baseline.json").write_text(json.dumps({"version": 1, "rows": {"b0|none|onnx-int8": {}}, "data": same_data}))
    assert_one_line_error(run_cli("check", "--config", str(config)), "no entry for", "b0|none|onnx-int8")
    broken = tmp_path / "broken.toml"
    broken.write_text("max_drop = [1.0\n")
    assert_one_line_error(run_cli("check", "--config", str(broken)), "not valid TOML")
    unknown = _config(tmp_path, data["calib"], data["eval"], extra="max_dorp = 1.0")
    assert_one_line_error(run_cli("check", "--config", str(unknown)), "unknown key", "max_dorp")
    assert_one_line_error(run_cli("check", "--config", str(tmp_path / "missing.toml")), "no config")


# -- every rule of gate.judge on crafted results: each shown to pass just inside and fail just outside

_EVAL = {"images": 290, "sha256": "0" * 64}
_KEY = "lite0|lite0-pypi|onnx-int8"


def _rules(**changes):
    from pathlib import Path

    from edgeeff.quant.gate import Check, GateConfig

    values = dict(checks=(Check("lite0", "lite0-pypi", ("onnx-int8",)),), images=Path("."), max_drop=3.0, min_agreement=0.93,
                  tolerance=1.5, agreement_tolerance=0.02, budget_on="point")
    return GateConfig(**{**values, **changes})


def _result(drop=1.03, ci95=(-0.34, 2.41), agreement=0.955):
    row = {"variant": "lite0", "weights": "lite0-pypi", "target": "onnx-int8", "images": 290, "fp32_top1": 0.70,
           "quantized_top1": 0.70 - drop / 100, "drop_points": drop, "drop_ci95_points": list(ci95), "mcnemar_p": 0.5,
           "agreement": agreement, "smallest_step_points": 100 / 290}
    return {"rows": [row], "data": {"evaluation": dict(_EVAL)}}


def _baseline(drop=1.03, agreement=0.955):
    return {"version": 1, "data": {"evaluation": dict(_EVAL)}, "rows": {_KEY: {"drop_points": drop, "agreement": agreement}}}


def _judge(config, result, baseline):
    from edgeeff.quant.gate import judge

    return judge(config, result, baseline)[0]


def test_gate_budget_on_the_point_estimate():
    assert _judge(_rules(), _result(drop=3.0, ci95=(1.0, 5.0)), None) == []  # at the budget: holds; the bound is not judged
    (failure,) = _judge(_rules(), _result(drop=3.1, ci95=(1.0, 5.0)), None)
    assert "onnx-int8: top-1 drop 3.10 points > max_drop 3 (budget)" in failure


def test_gate_budget_on_the_upper_bound():
    bound = _rules(budget_on="bound")
    assert _judge(bound, _result(drop=0.5, ci95=(-1.0, 3.0)), None) == []
    (failure,) = _judge(bound, _result(drop=0.5, ci95=(-1.0, 3.2)), None)  # the point estimate is well inside: the bound fails
    assert "upper 95% bound of the top-1 drop 3.20 points > max_drop 3 (budget)" in failure


def test_gate_minimum_agreement():
    assert _judge(_rules(), _result(agreement=0.93), None) == []
    (failure,) = _judge(_rules(), _result(agreement=0.929), None)
    assert "top-1 agreement 0.929 < min_agreement 0.93 (budget)" in failure


def test_gate_drop_may_not_grow_over_the_baseline_by_more_than_the_tolerance():
    """Well inside the absolute budget, a drop 1.6 points larger than the baseline's is a regression."""
    assert _judge(_rules(), _result(drop=2.5), _baseline(drop=1.0)) == []  # grew by exactly the tolerance
    (failure,) = _judge(_rules(), _result(drop=2.6), _baseline(drop=1.0))
    assert "top-1 drop 2.60 points grew by 1.60 over the baseline's 1.00 (tolerance 1.5)" in failure
    (failure,) = _judge(_rules(tolerance=0.5), _result(drop=1.6), _baseline(drop=1.0))  # the config's tolerance is the one used
    assert "grew by 0.60" in failure and "(tolerance 0.5)" in failure


def test_gate_agreement_may_not_fall_below_the_baseline_by_more_than_its_tolerance():
    """Well above min_agreement, agreement 0.021 under the baseline's is a regression."""
    assert _judge(_rules(), _result(agreement=0.96), _baseline(agreement=0.98)) == []
    (failure,) = _judge(_rules(), _result(agreement=0.959), _baseline(agreement=0.98))
    assert "agreement 0.959 fell below the baseline's 0.980 by more than 0.02" in failure


def test_gate_names_every_broken_rule_and_the_markdown_says_failed():
    from edgeeff.quant.gate import judge, markdown

    config, result = _rules(budget_on="bound"), _result(drop=4.0, ci95=(2.0, 6.0), agreement=0.90)
    failures, _notes = judge(config, result, _baseline(drop=0.5, agreement=0.96))
    assert len(failures) == 4, failures
    assert [rule for rule in ("max_drop", "min_agreement", "grew by", "fell below") if any(rule in f for f in failures)] == [
        "max_drop", "min_agreement", "grew by", "fell below"]
    summary = markdown(config, result, failures, _notes)
    assert "FAILED" in summary and all(f in summary for f in failures) and "| +0.50 |" in summary
