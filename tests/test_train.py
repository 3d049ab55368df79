"""Progressive learning: the schedule alone, then real training runs on real photos through the CLI.

The real runs use a tiny V2 (width and depth 0.25) at 32-64 px for a few steps per stage; most of
their time is TensorFlow tracing the train step once per stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from edgeeff.train.schedule import SCHEDULES, ScheduleError, stage_plan

TINY = "v2-b0:width=0.25,depth=0.25"
# EfficientNetV2 paper, Table 6: (min size, max size, RandAugment, mixup, dropout) per model.
PAPER = {
    "v2-s": ((128, 300), (5, 15), (0, 0), (0.1, 0.3)),
    "v2-m": ((128, 380), (5, 20), (0, 0.2), (0.1, 0.4)),
    "v2-l": ((128, 380), (5, 25), (0, 0.4), (0.1, 0.5)),
}


# ---------------------------------------------------------------- the schedule, a pure function


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_schedule_matches_the_papers_ranges(name):
    size, magnitude, mixup, dropout = PAPER[name]
    plan = stage_plan(name, 4, 40)
    assert [(s.first_epoch, s.end_epoch) for s in plan] == [(0, 10), (10, 20), (20, 30), (30, 40)]
    assert (plan[0].image_size, plan[-1].image_size) == size
    assert (plan[0].magnitude, plan[-1].magnitude) == magnitude
    assert (plan[0].mixup, plan[-1].mixup) == pytest.approx(mixup)
    assert (plan[0].dropout, plan[-1].dropout) == pytest.approx(dropout)
    for key in ("image_size", "magnitude", "mixup", "dropout"):
        values = [getattr(s, key) for s in plan]
        assert values == sorted(values)  # everything grows together


def test_linear_interpolation_and_size_rounding():
    plan = stage_plan("v2-s", 4, 40)
    # sizes 128 + 172 * i/3 = 185.3, 242.7: rounded to the nearest multiple of 8; the ends stay exact
    assert [s.image_size for s in plan] == [128, 184, 240, 300]
    assert [s.magnitude for s in plan] == pytest.approx([5, 25 / 3, 35 / 3, 15], abs=1e-3)
    assert [s.dropout for s in plan] == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3], abs=1e-3)
    coarse = stage_plan("v2-s", 3, 9, overrides={"multiple": 32})
    assert [s.image_size for s in coarse] == [128, 224, 300]  # 214 -> 224
    assert [s.epochs for s in stage_plan("v2-s", 3, 10)] == [3, 3, 4]


def test_official_schedule_starts_at_half_and_keeps_dropout():
    plan = stage_plan("v2-s", 4, 40, schedule="official")
    assert [s.image_size for s in plan] == [184, 224, 264, 300]  # 150 + 150 * (i+1)/4, rounded to 8
    assert [s.magnitude for s in plan] == pytest.approx([5, 20 / 3, 25 / 3, 10], abs=1e-3)
    assert {s.dropout for s in plan} == {0.2}
    assert stage_plan("v2-l", 4, 40, schedule="official")[-1].mixup == 0.5
    assert set(SCHEDULES) == {"paper", "official"}


def test_overrides_and_bad_requests():
    plan = stage_plan("v2-s", 2, 4, overrides={"min_size": 64, "max_size": 96, "max_mixup": 0.3})
    assert [(s.image_size, s.mixup) for s in plan] == [(64, 0.0), (96, 0.3)]
    assert stage_plan("v2-s", 1, 5)[0].image_size == 300  # one stage: fixed-size training at the final settings
    for kwargs, needle in (
        ({"overrides": {"max_sise": 200}}, "unknown schedule key"),
        ({"overrides": {"min_size": 320}}, "above max size"),
        ({"overrides": {"max_magnitude": 40}}, "magnitude"),
        ({"overrides": {"min_size": "big"}}, "number"),
        ({"schedule": "fast"}, "unknown schedule"),
    ):
        with pytest.raises(ScheduleError, match=needle):
            stage_plan("v2-s", 2, 4, **kwargs)
    with pytest.raises(ScheduleError, match="stages need at least"):
        stage_plan("v2-s", 5, 4)


def test_dry_run_prints_the_table(tmp_path):
    out = tmp_path / "plan.json"
    result = run_cli("train", "--variant", "v2-m", "--dry-run", "--epochs", "8", "--stages", "4", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "RandAugment magnitude" in result.stdout and "380" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["image_size"] for r in rows] == [128, 208, 296, 380]


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def image_folder(sample_images, tmp_path_factory) -> Path:
    """30 real photos in 3 coarse classes (by ImageNet index: fish/birds, reptiles, other animals), as symlinks."""
    root = tmp_path_factory.mktemp("folder")
    groups = {"low": sample_images[:10], "mid": sample_images[25:35], "high": sample_images[60:70]}
    for name, paths in groups.items():
        (root / name).mkdir()
        for p in paths:
            (root / name / p.name).symlink_to(p)
    (root / "low" / "zz_broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")  # unreadable: counted and skipped
    return root


def _train(folder: Path, out: Path, *extra: str, env: dict | None = None):
    return run_cli("train", "--variant", TINY, "--data", str(folder), "--epochs", "3", "--stages", "2", "--min-size", "32",
                   "--max-size", "64", "--set", "max_mixup=0.4", "--batch", "4", "--steps-per-epoch", "2", "--out", str(out),
                   *extra, env=env)


@pytest.mark.slow
def test_stages_apply_their_settings_resume_continues_and_the_run_converts(image_folder, tmp_path):
    run = tmp_path / "run"
    first = _train(image_folder, run, env={"EDGEEFF_TRAIN_STOP_AFTER_EPOCH": "1"})  # simulated interruption
    assert first.returncode == 130, first.stderr
    assert "--resume" in first.stderr
    state = json.loads((run / "state.json").read_text())
    assert state["completed_epochs"] == 1 and not (run / "model.weights.h5").exists()

    resumed = run_cli("train", "--resume", "--out", str(run))
    assert resumed.returncode == 0, resumed.stderr
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # continued at epoch 2, nothing repeated or lost
    assert [r["image_size"] for r in rows] == [32, 64, 64]
    rates = [r["learning_rate"] for r in rows]
    assert rates[0] > rates[1] > rates[2]  # the optimizer (and its step count) came back: the decay did not restart
    assert (run / "metrics.csv").read_text().count("\n") == 4 and (run / "training.png").stat().st_size > 1000

    # What each stage ran with, read back from its own pipeline batch, its augmentation layers and the model.
    seen = {s["stage"]: s for s in json.loads((run / "stages.json").read_text())}
    assert seen[0]["batch_shape"] == [4, 32, 32, 3] and seen[1]["batch_shape"] == [4, 64, 64, 3]
    assert (seen[0]["magnitude"], seen[1]["magnitude"]) == pytest.approx((5.0, 10.0))
    assert (seen[0]["randaugment_factor"], seen[1]["randaugment_factor"]) == pytest.approx((5 / 30, 10 / 30), abs=1e-5)
    assert (seen[0]["mixup_alpha"], seen[1]["mixup_alpha"]) == pytest.approx((0.0, 0.4))
    assert seen[0]["soft_labels"] is False and seen[1]["soft_labels"] is True  # mixup really mixed the labels
    assert (seen[0]["dropout"], seen[1]["dropout"]) == pytest.approx((0.1, 0.2))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch-003.optimizer.npz", "epoch-003.weights.h5", "stage-0.weights.h5", "stage-1.weights.h5"]
    assert not list(run.rglob("*.tmp*"))

    card = json.loads((run / "edgeeff-run.json").read_text())
    assert card["classes"] == ["high", "low", "mid"] and card["final_size"] == 64
    assert (card["unreadable"], card["train_images"] + card["val_images"]) == (1, 30)
    assert card["convert_variant"] == f"{TINY},resolution=64"
    photo = next(p for p in (image_folder / "mid").iterdir())
    pred = run_cli("predict", str(photo), "--variant", card["convert_variant"], "--weights", str(run), "--top", "3")
    assert pred.returncode == 0, pred.stderr
    assert "mid" in pred.stdout and "high" in pred.stdout  # the run's own class names, not ImageNet's
    conv = run_cli("convert", "--variant", card["convert_variant"], "--weights", str(run), "--target", "tflite-fp32",
                   "--out", str(tmp_path / "conv"), "--json", str(tmp_path / "conv.json"))
    assert conv.returncode == 0, conv.stderr
    meta = json.loads((tmp_path / "conv.json").read_text())["metadata"]
    assert meta["io"]["input"]["shape"][1:] == [64, 64, 3] and meta["io"]["output"]["shape"][-1] == 3
    assert meta["validation"]["max_rel_diff"] <= 1e-4


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus(image_folder, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--variant", TINY, "--data", str(image_folder), "--epochs", "1", "--stages", "1", "--min-size", "32", "--max-size", "48",
                     "--batch", "2", "--steps-per-epoch", "2", "--strategy", "mirrored", "--cpu-replicas", "2", "--out", str(run))
    assert result.returncode == 0, result.stderr
    card = json.loads((run / "edgeeff-run.json").read_text())
    assert (card["replicas"], card["global_batch"]) == (2, 4)
    assert card["learning_rate"] == pytest.approx(0.008 * 4 / 256)
    seen = json.loads((run / "stages.json").read_text())
    assert seen[0]["batch_shape"] == [4, 48, 48, 3]  # the global batch, which the strategy splits 2 + 2
    assert json.loads((run / "metrics.json").read_text())[0]["epoch"] == 1


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


def test_bad_inputs_one_line_and_nothing_written(image_folder, tmp_path, sample_images):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / sample_images[0].name).symlink_to(sample_images[0])
    thin = tmp_path / "thin"
    (thin / "a").mkdir(parents=True)
    (thin / "b").mkdir()
    (thin / "a" / sample_images[0].name).symlink_to(sample_images[0])
    (thin / "a" / sample_images[1].name).symlink_to(sample_images[1])
    (thin / "b" / sample_images[2].name).symlink_to(sample_images[2])
    (thin / "b" / "broken.jpg").write_text("not an image")  # unreadable: counted, skipped -> b has 1 image
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the run directory's parent should be")
    cases = [
        (("--data", str(flat)), "no class sub-folders"),
        (("--data", str(thin)), "class 'b' has 1 readable image"),
        (("--data", str(image_folder), "--min-size", "96", "--max-size", "64"), "above max size"),
        (("--data", str(image_folder), "--stages", "4", "--epochs", "3"), "4 stages need at least 4 epochs"),
        (("--data", str(image_folder), "--set", "colour=1"), "unknown schedule key"),
    ]
    for args, needle in cases:
        out = tmp_path / f"run-{len(needle)}"
        result = run_cli("train", "--variant", TINY, *args, "--out", str(out))
        assert_one_line_error(result, needle)
        assert not out.exists()
    result = run_cli("train", "--variant", TINY, "--data", str(image_folder), "--out", str(blocked / "run"))
    assert_one_line_error(result, "cannot create output folder")
    result = run_cli("train", "--resume", "--out", str(tmp_path / "never"))
    assert_one_line_error(result, "nothing to resume")
