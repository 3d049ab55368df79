"""``edgeeff bench`` of a detector: the runtime's latency as for classifiers, the numpy
post-processing timed on its own, and end to end = runtime + post-processing."""

import json
from dataclasses import asdict

import numpy as np
import pytest

from conftest import run_cli
from edgeeff import bench
from edgeeff.model.detectors import at_size, get_detector
from edgeeff.model.postprocess import PostProcess


def _detector_meta(size=128, classes=3):
    post = PostProcess.for_detector(at_size(get_detector("efficientdet-lite0"), size))
    return {"task": "detect", "post_processing": {**asdict(post), "runs": "after the runtime"},
            "raw_output": {"anchors": int(len(post.anchors())), "classes": classes}, "path": "/nonexistent"}, post


def test_the_post_processing_comes_back_from_the_metadata_and_is_timed():
    meta, post = _detector_meta()
    assert bench.post_processing_of(json.loads(json.dumps(meta))) == post  # through JSON: tuples come back as lists
    raw, source = bench.one_raw_output({"tflite-fp32": meta}, image=None)  # no artifact runs: a synthetic output, said so
    assert raw.shape == (1, meta["raw_output"]["anchors"], 7) and "synthetic" in source
    timed = bench.post_processing_ms(post, raw)
    assert timed["median_ms"] > 0 and timed["p90_ms"] >= timed["median_ms"] and timed["runs"] >= 30


def test_detector_rows_get_post_processing_and_end_to_end_and_the_columns_follow():
    meta, _ = _detector_meta()
    rows = [{"target": "tflite-fp32", "median_ms": 10.0}, {"target": "onnx-int8", "error": "no"}]
    timed = bench.add_post_processing(rows, {"tflite-fp32": meta, "onnx-int8": {"error": "no"}}, image=None, batch=1)
    assert rows[0]["end_to_end_ms"] == pytest.approx(10.0 + rows[0]["post_processing_ms"]) and timed["median_ms"] > 0
    assert "post_processing_ms" not in rows[1]
    assert bench.add_post_processing([{"target": "tflite-fp32"}], {"tflite-fp32": {"target": "tflite-fp32"}}, None, 1) is None
    keys = [k for k, _ in bench.detector_columns([("target", "t"), ("agreement", "a"), ("median_ms", "m"), ("p90_ms", "p")])]
    assert keys == ["target", "boxes_matched", "logit_cosine", "median_ms", "p90_ms", "post_processing_ms", "end_to_end_ms"]


@pytest.mark.slow
def test_bench_of_a_detector_on_one_target(tmp_path):
    """Default weights (backbone only, heads untrained): the cheapest real run."""
    out = run_cli("bench", "--variant", "efficientdet-lite0", "--targets", "tflite-fp32", "--rounds", "1", "--min-runs", "10",
                  "--min-seconds", "0.5", "--warmup-seconds", "0.1", "--out", str(tmp_path / "out"), "--json", str(tmp_path / "b.json"),
                  "--markdown", str(tmp_path / "b.md"))
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "b.md").read_text()  # the printed table wraps at the terminal's width; the Markdown does not
    assert "| post-processing ms | end to end ms |" in table and "runs after the runtime" in table
    data = json.loads((tmp_path / "b.json").read_text())
    (row,) = data["rows"]
    assert row["task"] == "detect" and row["target"] == "tflite-fp32" and row["median_ms"] > 0
    assert row["post_processing_ms"] > 0 and row["end_to_end_ms"] == pytest.approx(row["median_ms"] + row["post_processing_ms"])
    assert row["logit_cosine"] > 0.99 and "heads untrained" in row["weights"]
    assert data["inputs"]["variant"] == "efficientdet-lite0" and data["post_processing"]["median_ms"] == row["post_processing_ms"]
    assert np.isfinite(row["end_to_end_ms"])
