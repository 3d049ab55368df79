"""Detection checks of the CI gate: the config parser and its refusals, the paired bootstrap of the
mAP drop on real pycocotools (synthetic detections), and the rules a detection row is judged by."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from edgeeff.detection_metrics import coco_scores, paired_map_drop
from edgeeff.quant.gate import Check, GateConfig, GateConfigError, judge, load_config, markdown


def _coco(images=24, seed=0):
    """A COCO ground truth: 2 categories, 1-3 boxes per image."""
    rng = np.random.default_rng(seed)
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "food"}]}
    for i in range(1, images + 1):
        data["images"].append({"id": i, "file_name": f"{i}.png", "width": 320, "height": 320})
        for _ in range(int(rng.integers(1, 4))):
            x, y, w, h = (float(v) for v in (*rng.uniform(0, 200, 2), *rng.uniform(30, 100, 2)))
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": i, "category_id": int(rng.integers(1, 3)),
                                        "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    return data


def _detections(data, shift=0.0, lose=0.0, seed=1):
    """Each ground-truth box as a detection, moved by ``shift`` of its width, a share ``lose`` of them left out."""
    rng = np.random.default_rng(seed)
    out = []
    for a in data["annotations"]:
        if rng.random() < lose:
            continue
        x, y, w, h = a["bbox"]
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + shift * w, y, w, h],
                    "score": float(rng.uniform(0.5, 1.0))})
    return out


def test_the_paired_bootstrap_recomputes_coco_map_on_the_same_draw_for_both():
    data = _coco()
    fp32, int8 = _detections(data), _detections(data, shift=0.15, lose=0.2)
    drop = paired_map_drop(data, fp32, int8, resamples=50, seed=3)
    assert drop["reference_map"] == pytest.approx(coco_scores(data, fp32)["map"])  # pycocotools' own figure, every image once
    assert drop["candidate_map"] == pytest.approx(coco_scores(data, int8)["map"])
    assert drop["drop_points"] == pytest.approx(100 * (drop["reference_map"] - drop["candidate_map"]))
    low, high = drop["ci95_points"]
    assert 0 < low <= drop["drop_points"] <= high, drop  # a real loss: the interval is above zero
    assert paired_map_drop(data, fp32, int8, resamples=50, seed=3) == drop  # seeded
    same = paired_map_drop(data, fp32, fp32, resamples=50, seed=3)
    assert same["drop_points"] == 0 and same["ci95_points"] == [0.0, 0.0]  # paired: identical detections never differ
    nothing = paired_map_drop(data, fp32, [], resamples=20)
    assert nothing["candidate_map"] == 0 and nothing["ci95_points"][0] > 0


def _files(tmp_path):
    annotations = tmp_path / "held-out.json"
    annotations.write_text(json.dumps(_coco(4)))
    calibration = tmp_path / "calib"
    calibration.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    return annotations, calibration, run


def _config(tmp_path, check: str, top: str = "") -> Path:
    path = tmp_path / "edgeeff.toml"
    path.write_text(f'{top}\nmax_map_drop = 2.5\nbaseline = "baseline.json"\n\n[[checks]]\n{check}\n')
    return path


def test_a_detection_check_names_its_own_data_and_needs_no_classifier_images(tmp_path):
    annotations, calibration, run = _files(tmp_path)
    config = load_config(_config(tmp_path, f'variant = "efficientdet-lite0"\nweights = "{run}"\nimages = "held-out.json"\n'
                                           'calibration = "calib"\ntargets = ["tflite-int8"]'))
    (check,) = config.checks
    assert check.detection and check.images == annotations and check.calibration == calibration and check.weights == str(run)
    assert config.max_map_drop == 2.5 and config.images is None


@pytest.mark.parametrize("check, needle", [
    ('variant = "efficientdet-lite0"\nimages = "held-out.json"\ncalibration = "calib"', "weights = an edgeeff train-detect run"),
    ('variant = "efficientdet-lite0"\nweights = "run"\ncalibration = "calib"', "needs images = a COCO annotations JSON"),
    ('variant = "efficientdet-lite0"\nweights = "run"\nimages = "held-out.json"', "needs calibration = an image folder"),
    ('variant = "efficientdet-lite0"\nweights = "run"\nimages = "calib"\ncalibration = "calib"', "must be a COCO annotations JSON"),
    ('variant = "efficientdet-lite0"\nweights = "run"\nimages = "gone.json"\ncalibration = "calib"', "gone.json does not exist"),
    ('variant = "lite0"\nweights = "lite0-pypi"\nimages = "held-out.json"', "belong to detection checks"),
])
def test_a_detection_check_is_refused_without_what_it_needs(tmp_path, check, needle):
    _files(tmp_path)
    with pytest.raises(GateConfigError, match=needle):
        load_config(_config(tmp_path, check + '\ntargets = ["tflite-int8"]', top='images = "calib"'))


def test_the_check_command_refuses_a_detection_check_in_one_line(tmp_path):
    _files(tmp_path)
    config = _config(tmp_path, 'variant = "efficientdet-lite0"\nweights = "run"\nimages = "held-out.json"\ntargets = ["tflite-int8"]')
    assert_one_line_error(run_cli("check", "--config", str(config)), "needs calibration")


def _row(drop=1.0, ci95=(0.2, 1.8)):
    return {"task": "detect", "variant": "efficientdet-lite0", "weights": "run", "target": "tflite-int8", "images": 96,
            "fp32_map": 0.40, "quantized_map": 0.40 - drop / 100, "drop_points": drop, "drop_ci95_points": list(ci95),
            "bootstrap_resamples": 200, "boxes_matched": 0.9, "evaluation": {"images": 96, "sha256": "0" * 64}}


def _gate(**changes):
    values = dict(checks=(Check("efficientdet-lite0", "run", ("tflite-int8",), Path("a.json"), Path("c")),), max_map_drop=3.0,
                  tolerance=1.5, budget_on="point")
    return GateConfig(**{**values, **changes})


def test_a_detection_row_is_judged_by_its_map_drop_the_bound_and_the_baseline():
    result = lambda row: {"rows": [row], "data": {}}  # noqa: E731
    assert judge(_gate(), result(_row(drop=3.0, ci95=(1.0, 5.0))), None)[0] == []
    (failure,) = judge(_gate(), result(_row(drop=3.1, ci95=(1.0, 5.0))), None)[0]
    assert "tflite-int8: mAP drop 3.10 points > max_map_drop 3 (budget)" in failure
    (failure,) = judge(_gate(budget_on="bound"), result(_row(drop=0.5, ci95=(-1.0, 3.2))), None)[0]
    assert "upper 95% bound of the mAP drop 3.20 points > max_map_drop 3" in failure
    baseline = {"version": 1, "data": {}, "rows": {"efficientdet-lite0|run|tflite-int8": {"drop_points": 0.5}}}
    assert judge(_gate(), result(_row(drop=2.0)), baseline)[0] == []
    (failure,) = judge(_gate(), result(_row(drop=2.1)), baseline)[0]
    assert "mAP drop 2.10 points grew by 1.60 over the baseline's 0.50 (tolerance 1.5)" in failure
    summary = markdown(_gate(), result(_row(drop=2.1)), [failure], [])
    assert "| detector | target |" in summary and "| 0.400 | 0.379 | +2.10 | [+0.20, +1.80] | 90.0% |" in summary
