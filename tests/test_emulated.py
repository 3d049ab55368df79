"""The emulated Raspberry Pi (``edgeeff devices emulate rpi``): a Debian bookworm arm64 root run by
qemu-user behind the host's sshd, provisioned by ``devices setup``'s own wheelhouse path. Every
command here runs ARM builds of Python, numpy, LiteRT and onnxruntime for real.

The first test on a fresh machine builds the root (mmdebstrap, a few minutes); later runs reuse the
cache (``$EDGEEFF_EMULATED_CACHE``, else ~/.cache/edgeeff/emulated). Without root or binfmt_misc the
tests skip with the reason; under CI they fail instead (.ci/run installs and enables what they need).
Only correctness is asserted: under emulation timing means nothing.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import assert_one_line_error, run_cli

# Slow tier, with room for a cold build of the arm64 root (12 min measured on a loaded 2-core host;
# the module fixture's time counts toward the first test's timeout).
pytestmark = [pytest.mark.device, pytest.mark.slow, pytest.mark.timeout(2400)]

TINY = "lite0:width=0.25,depth=0.25,resolution=64"
QUICK = ["--rounds", "1", "--warmup-runs", "1", "--warmup-seconds", "0", "--min-runs", "3", "--min-seconds", "0"]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """The emulated rpi up (built or reused), its entry in a test devices file; stopped afterwards
    unless it was running before the tests."""
    from edgeeff.devices import emulated as emulate

    board = emulate.get_board("rpi")
    cache = emulate.default_cache(board)
    why = emulate.missing_prerequisite(board, cache)
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the emulated rpi cannot run in CI: {why} (.ci/run must provide it)")
        pytest.skip(f"no emulated rpi here: {why}")
    was_running = emulate.sshd_pid(cache / "ssh") is not None
    folder = tmp_path_factory.mktemp("emulated")
    devices = folder / "devices.toml"
    report = folder / "emulate.json"
    done = run_cli("devices", "emulate", "rpi", "--devices-file", str(devices), "--json", str(report), timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    yield {"devices": devices, "cache": cache, "first": json.loads(report.read_text()), "folder": folder}
    if not was_running:
        assert run_cli("devices", "emulate", "rpi", "--stop").returncode == 0


def test_emulate_is_idempotent_and_the_device_is_aarch64(emulated):
    again = emulated["folder"] / "again.json"
    done = run_cli("devices", "emulate", "rpi", "--devices-file", str(emulated["devices"]), "--json", str(again))
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads(again.read_text())
    assert second["port"] == emulated["first"]["port"] and second["timings"]["root_s"] < 1  # reused, not rebuilt
    check = emulated["folder"] / "check.json"
    done = run_cli("devices", "check", "rpi", "--devices-file", str(emulated["devices"]), "--json", str(check))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "aarch64" in done.stdout and "emulated" in done.stdout and "asimd" in done.stdout
    info = json.loads(check.read_text())["rows"][0]
    assert info["machine"] == "aarch64" and info["emulated"] is True and info["python"].startswith("3.11")
    assert {"asimd", "asimddp"} <= set(info["cpu_features"])  # qemu's "max" CPU has NEON and the dot product
    assert set(info["runtimes"]) >= {"numpy", "ai-edge-litert", "onnxruntime"}
    from importlib import metadata

    assert info["runtimes"]["onnxruntime"] == metadata.version("onnxruntime")  # pinned to this host's version
    entry = (emulated["devices"]).read_text()
    assert "emulated = true" in entry


def test_setup_creates_a_venv_from_a_wheelhouse_and_redoes_an_interrupted_one(emulated, tmp_path):
    devices = tmp_path / "devices.toml"
    text = emulated["devices"].read_text().replace("[devices.rpi]", "[devices.fresh]")
    devices.write_text(text.replace("/root/edgeeff-venv/bin/python", "/root/edgeeff-test-venv/bin/python"))
    venv = emulated["cache"] / "root" / "root" / "edgeeff-test-venv"
    shutil.rmtree(venv, ignore_errors=True)
    venv.mkdir()
    (venv / ".edgeeff-partial").touch()  # as a setup killed halfway leaves it
    (venv / "junk").write_text("half-built")
    report = tmp_path / "setup.json"
    try:
        done = run_cli("devices", "setup", "fresh", "--devices-file", str(devices), "--wheelhouse", str(emulated["cache"] / "wheels"),
                       "--package", "numpy", "--package", "onnxruntime", "--json", str(report), timeout=1200)
        assert done.returncode == 0, done.stderr[-3000:]
        info = json.loads(report.read_text())["rows"][0]
        assert info["machine"] == "aarch64" and info["emulated"] is True
        assert info["python_executable"] == "/root/edgeeff-test-venv/bin/python" and {"numpy", "onnxruntime"} <= set(info["runtimes"])
        assert "onnxruntime" in done.stdout and not (venv / ".edgeeff-partial").exists() and not (venv / "junk").exists()
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_setup_refuses_a_python_outside_a_venv(emulated, tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_text(emulated["devices"].read_text().replace("/root/edgeeff-venv/bin/python", "python3"))
    assert_one_line_error(run_cli("devices", "setup", "rpi", "--devices-file", str(devices)), "not a venv's python", "--python")


def test_bench_and_eval_on_the_emulated_rpi_say_emulated(emulated, few_images, tmp_path):
    out = tmp_path / "artifacts"
    report = tmp_path / "bench.json"
    done = run_cli("bench", "--device", "rpi", "--devices-file", str(emulated["devices"]), "--variant", TINY, "--weights", "none",
                   "--targets", "tflite-int8,onnx-int8", "--out", str(out), *QUICK, "--json", str(report), timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "emulated" in done.stdout and "not a board's" in done.stdout
    data = json.loads(report.read_text())
    assert {r["target"] for r in data["rows"]} == {"tflite-int8", "onnx-int8"}
    for row in data["rows"]:
        assert row["emulated"] is True and row["median_ms"] > 0 and row["device"] == "rpi"
    assert data["devices"]["rpi"]["machine"] == "aarch64" and data["devices"]["rpi"]["emulated"] is True and data["caveats"]

    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"-\t{p}\n" for p in few_images))
    evaluated = tmp_path / "eval.json"
    folder = next(out.glob("*tflite-int8"))
    done = run_cli("eval", str(folder), "--device", "rpi", "--devices-file", str(emulated["devices"]), "--images", str(listing),
                   "--batch", "2", "--compare-local", "--json", str(evaluated), timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "agrees with this CPU" in done.stdout and "emulated" in done.stdout
    result = json.loads(evaluated.read_text())
    row, local = result["rows"][0], result["compare_local"]
    assert row["emulated"] is True and row["images"] == len(few_images) and result["runner"]["device"] == "rpi"
    assert local["images"] == len(few_images) and 0 <= local["identical_outputs"] <= len(few_images)
    assert len(local["disagreements"]) == round((1 - local["top1_agreement"]) * len(few_images))
    assert local["local_runner"]["runtime"] == "ai-edge-litert" and local["mean_cosine"] > 0.9  # the same int8 model on two CPUs


def test_compare_local_needs_a_remote_device(tmp_path):
    assert_one_line_error(run_cli("eval", str(tmp_path), "--compare-local"), "--compare-local")


def test_emulate_bad_input_is_one_line(tmp_path):
    assert_one_line_error(run_cli("devices", "emulate", "rpj"), "did you mean 'rpi'")
    from edgeeff.devices import emulated as emulate

    board = emulate.get_board("rpi")
    if emulate.missing_prerequisite(board, emulate.default_cache(board)) is None:
        done = run_cli("devices", "emulate", "rpi", "--cpu", "cortex-a99", "--devices-file", str(tmp_path / "d.toml"))
        assert_one_line_error(done, "cortex-a76")
        assert not (tmp_path / "d.toml").exists()
