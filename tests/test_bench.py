"""`edgeeff bench`: real runtimes in fresh processes, rows as data, failures kept as rows.

No timing is asserted (machines are noisy); the tests check that the measurement happened, that
every rendering carries the same rows, and that failures are reported, not fatal."""

import csv
import json

import pytest

from conftest import assert_one_line_error, run_cli
from edgeeff.measure import Schedule, measure_in_subprocess, side_by_side, time_invocations

TINY = "lite0:width=0.25,depth=0.25,resolution=64"
QUICK = ["--rounds", "1", "--warmup-runs", "2", "--warmup-seconds", "0", "--min-runs", "5", "--min-seconds", "0"]


def test_schedule_runs_at_least_the_minimums():
    calls = []
    stats = time_invocations(lambda: calls.append(1), Schedule(warmup_runs=3, warmup_seconds=0, min_runs=7, min_seconds=0))
    assert stats["warmup_runs"] == 3 and stats["runs"] == 7 and len(calls) == 10
    assert stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]


def test_a_side_by_side_worker_answers_each_request_with_its_timings(monkeypatch):
    from edgeeff.kit import core as kit_core

    monkeypatch.setattr(kit_core, "SETTLE_SECONDS", 0)
    calls, written = [], []
    kit_core.serve_timings(lambda: calls.append(1), Schedule(warmup_runs=2, warmup_seconds=0), iter(["3\n", "5\n"]), written.append)
    assert written[0] == "ready" and [len(json.loads(w)) for w in written[1:]] == [3, 5]
    assert len(calls) == 2 + (1 + 3) + (1 + 5)  # warm-up, then one untimed settling run before each block


@pytest.mark.slow
def test_bench_measures_targets_and_renders_the_same_rows(tmp_path):
    out = tmp_path / "artifacts"
    files = {k: tmp_path / f"bench.{k}" for k in ("json", "csv", "md", "png")}
    done = run_cli("bench", "--variant", TINY, "--weights", "none", "--targets", "keras-fp32,onnx-fp32,tflite-fp32,openvino-fp32",
                   "--out", str(out), *QUICK, "--json", str(files["json"]), "--csv", str(files["csv"]),
                   "--markdown", str(files["md"]), "--plot", str(files["png"]))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(files["json"].read_text())["rows"]
    assert [r["target"] for r in rows] == ["keras-fp32", "onnx-fp32", "tflite-fp32", "openvino-fp32"]
    for row in rows:
        assert row["median_ms"] > 0 and row["init_ms"] > 0 and row["peak_rss_mb"] > 50 and row["rounds"] == 1
        assert row["size_mb"] > 0 and row["agreement"] == 1.0 and row["speedup_vs_fp32"] == 1.0
    assert next(r for r in rows if r["target"] == "openvino-fp32")["executed_precision"] == "f32"
    assert next(r for r in rows if r["target"] == "keras-fp32")["executed_on"] == "CPU:0"
    # tensorflow-cpu (what edgeeff installs on x86-64) has no GPU: asking for one is one line, not a CPU run
    keras_dir = next(p for p in out.iterdir() if p.name.endswith("keras-fp32"))
    refused = measure_in_subprocess(keras_dir, device="gpu")
    assert "TensorFlow sees no GPU here" in refused["error"] and "\n" not in refused["error"]
    # two real runtimes, each in its own process, timed in alternating blocks until both have the minimums;
    # a block is at least 4 runs and at least as long as the settling before it (a 0.3 ms model: hundreds)
    from edgeeff.kit.core import SETTLE_SECONDS

    pair = [next(p for p in out.iterdir() if p.name.endswith(t)) for t in ("onnx-fp32", "tflite-fp32")]
    timed = side_by_side(pair, 1, Schedule(warmup_runs=2, warmup_seconds=0, min_runs=10, min_seconds=0), block=4)
    assert [r["path"] for r in timed] == [str(p) for p in pair], timed
    assert all(r["runs"] >= 12 and r["median_ms"] > 0 and r["runs"] * r["median_ms"] >= 1000 * SETTLE_SECONDS * 0.8 for r in timed), timed
    assert [r["target"] for r in csv.DictReader(files["csv"].open())] == [r["target"] for r in rows]
    assert all(r["target"] in files["md"].read_text() for r in rows)
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_broken_artifact_keeps_its_row(tmp_path):
    out = tmp_path / "artifacts"
    first = run_cli("bench", "--variant", TINY, "--weights", "none", "--targets", "onnx-fp32,tflite-fp32", "--out", str(out), *QUICK)
    assert first.returncode == 0, first.stderr[-2000:]
    model = next(out.glob("*onnx-fp32/model.onnx"))
    model.write_bytes(model.read_bytes()[:1000])  # truncated on disk after conversion
    report = tmp_path / "rows.json"
    done = run_cli("bench", "--variant", TINY, "--weights", "none", "--targets", "onnx-fp32,tflite-fp32", "--out", str(out), *QUICK,
                   "--json", str(report))
    assert done.returncode == 1
    rows = {r["target"]: r for r in json.loads(report.read_text())["rows"]}
    assert "cannot load" in rows["onnx-fp32"]["error"] and rows["tflite-fp32"]["median_ms"] > 0
    # side by side, a worker that cannot load its artifact fails the comparison with its reason, one line
    tflite = next(out.glob("*tflite-fp32"))
    failed = side_by_side([tflite, model.parent], 1, Schedule(warmup_runs=1, warmup_seconds=0, min_runs=2, min_seconds=0))
    assert all("cannot load" in r["error"] and "\n" not in r["error"] for r in failed), failed


@pytest.mark.slow
def test_bench_bad_input():
    assert_one_line_error(run_cli("bench", "--variant", TINY, "--device", "gpu"), "no GPU here")
    assert_one_line_error(run_cli("bench", "--variant", TINY, "--device", "rpi4"), "unknown device")
    assert_one_line_error(run_cli("bench", "--variant", TINY, "--targets", "onnx-fp33"), "did you mean 'onnx-fp32'")
