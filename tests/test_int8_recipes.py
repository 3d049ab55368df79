"""Int8 recipes chosen for the CPU an artifact will run on, and one top-1 rule for tied logits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from edgeeff.devices.cpu import PROFILES, detect, from_probe, local_profile, named, recipe_note
from edgeeff.quant.recipes import FULL_RANGE, RECIPES, recipe_for, saturation_warning

TINY = "lite0:width=0.25,depth=0.25,resolution=64"


@pytest.mark.parametrize("features, machine, expected", [
    (["avx2", "avx512f", "avx512_vnni"], "x86_64", "vnni"),        # this project's Xeon, Zen 4
    (["avx2"], "x86_64", "avx2"),                                    # the AMD EPYC of earlier sessions
    (["avx2", "avx_vnni"], "x86_64", "avx-vnni"),
    (["avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_tile"], "x86_64", "amx"),
    (["asimd", "asimddp"], "aarch64", "arm64-dotprod"),             # Raspberry Pi 5 (Cortex-A76)
    (["asimd"], "aarch64", "arm64"),                                 # Raspberry Pi 4 (Cortex-A72)
    (["asimd", "asimddp", "i8mm"], "arm64", "arm64-i8mm"),
])
def test_profiles_come_from_the_reported_features(features, machine, expected):
    assert detect(features, machine).name == expected
    assert from_probe({"cpu_features": features, "machine": machine}).name == expected


def test_only_cpus_without_int8_dot_products_saturate():
    assert {p.name for p in PROFILES.values() if not p.int8_dot} == {"avx2", "x86-64"}
    assert from_probe({"machine": "x86_64"}) is None  # a probe from before CPU features: unknown, not guessed
    assert from_probe({"machine": "riscv64", "cpu_features": []}) is None


def test_every_int8_target_has_one_recipe_per_cpu_class_with_its_evidence():
    for target in ("tflite-int8", "onnx-int8", "openvino-int8"):
        for dot in (False, True):
            matches = [r for r in RECIPES if r.target == target and r.int8_dot == dot]
            assert len(matches) == 1, (target, dot)
            assert matches[0].evidence.startswith("benchmarks/results/") and matches[0].why
    # a recipe for a saturating CPU never gives full-range weights
    for recipe in RECIPES:
        for option, full in FULL_RANGE.get(recipe.target, {}).items():
            assert not (recipe.options.get(option) in full and not recipe.int8_dot), recipe


def test_a_full_range_artifact_on_a_saturating_cpu_says_how_to_convert():
    meta = {"target": "onnx-int8", "options": recipe_for("onnx-int8", named("vnni")).options}
    note = recipe_note(meta, named("avx2"))
    assert note and "saturates here" in note and "--for-cpu avx2" in note
    assert recipe_note(meta, named("vnni")) is None and recipe_note(meta, named("arm64-dotprod")) is None
    assert recipe_note({"target": "onnx-int8", "options": recipe_for("onnx-int8", named("avx2")).options}, named("avx2")) is None
    assert saturation_warning("openvino-int8", {"overflow_fix": "disable"}, named("avx2"))


def test_ties_at_the_top_go_to_the_lowest_class_everywhere():
    from edgeeff.evaluate import top1_ties, top_k

    logits = np.array([[0.5, 2.0, 2.0, 1.0], [3.0, 1.0, 3.0, 0.0], [0.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    assert top_k(logits, 1)[:, 0].tolist() == logits.argmax(1).tolist() == [1, 0, 3]
    assert top1_ties(logits) == 2


@pytest.mark.slow  # two real conversions (about 30 s): the full suite runs it
def test_convert_uses_the_recipe_of_the_cpu_it_is_for(tmp_path):
    """Real onnx-int8 conversions of a tiny model, one per CPU profile: the artifact records the profile
    and carries that profile's recipe; a user's own option wins over the recipe."""
    metas = {}
    for cpu in ("avx2", "vnni"):
        out = tmp_path / cpu
        done = run_cli("convert", "--variant", TINY, "--weights", "none", "--target", "onnx-int8", "--for-cpu", cpu,
                       "--out", str(out), "--json", str(tmp_path / f"{cpu}.json"))
        assert done.returncode == 0, done.stderr[-2000:]
        metas[cpu] = json.loads((tmp_path / f"{cpu}.json").read_text())["metadata"]
    assert metas["avx2"]["options"]["quant_types"] == "u8s8-reduced" and metas["avx2"]["cpu_profile"]["name"] == "avx2"
    assert metas["vnni"]["options"]["quant_types"] == "u8s8" and metas["vnni"]["cpu_profile"]["int8_dot"] is True
    assert metas["vnni"]["conversion"]["weights"].startswith("QInt8 per-channel") and "7-bit" not in metas["vnni"]["conversion"]["weights"]
    assert metas["vnni"]["recipe"]["evidence"].startswith("benchmarks/results/")
    own = run_cli("convert", "--variant", TINY, "--weights", "none", "--target", "onnx-int8", "--for-cpu", "vnni",
                  "--quant-types", "u8s8-reduced", "--out", str(tmp_path / "own"), "--json", "-")
    assert own.returncode == 0, own.stderr[-2000:]
    assert json.loads(own.stdout)["metadata"]["options"]["quant_types"] == "u8s8-reduced"


@pytest.mark.slow  # a real conversion (about 15 s)
def test_convert_for_a_device_reads_the_profile_devices_check_recorded(tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_text('[devices.pi5]\nhost = "pi5.local"\ncpu = "arm64-dotprod"\n\n[devices.fresh]\nhost = "new.local"\n')
    done = run_cli("convert", "--variant", TINY, "--weights", "none", "--target", "openvino-int8", "--device", "pi5",
                   "--devices-file", str(devices), "--out", str(tmp_path / "out"), "--json", "-")
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads(done.stdout)["metadata"]
    assert meta["cpu_profile"]["name"] == "arm64-dotprod"
    assert meta["options"]["overflow_fix"] == recipe_for("openvino-int8", named("arm64-dotprod")).options["overflow_fix"]
    assert meta["recipe"]["calibration_count"] == 200
    assert_one_line_error(run_cli("convert", "--variant", TINY, "--weights", "none", "--target", "onnx-int8", "--device", "fresh",
                                  "--devices-file", str(devices)), "devices check fresh", "--for-cpu")
    assert_one_line_error(run_cli("convert", "--target", "onnx-int8", "--for-cpu", "vnni", "--device", "pi5",
                                  "--devices-file", str(devices)), "give one")
    devices.write_text('[devices.pi5]\nhost = "pi5.local"\ncpu = "arm99"\n')
    assert_one_line_error(run_cli("devices", "list", "--devices-file", str(devices)), "cpu 'arm99' is unknown")


def test_this_machine_has_a_profile_and_targets_show_its_recipes():
    profile = local_profile()
    rows = json.loads(run_cli("targets", "--json", "-").stdout)["rows"]
    onnx = next(r for r in rows if r["target"] == "onnx-int8")
    assert recipe_for("onnx-int8", profile).options["quant_types"] in onnx["recipe"]


EMULATED_RUN = """
import sys, numpy as np
from numpy._core._multiarray_umath import __cpu_features__ as features
from edgeeff.artifact import open_artifact
assert features["AVX2"] and not features.get("AVX512F"), {k: features.get(k) for k in ("AVX2", "AVX512F")}
np.save(sys.argv[3], np.asarray(open_artifact(sys.argv[1])[1].predict(np.load(sys.argv[2]))))
"""


@pytest.mark.slow  # two real Lite0 conversions and two runs under qemu (45 s in CI)
def test_full_range_int8_weights_saturate_on_an_avx2_cpu_and_the_avx2_recipe_does_not(tmp_path, sample_images):
    """The premise of the recipe table, on the AVX2 kernels themselves: qemu-user emulating a Haswell
    (AVX2, no AVX-512, no VNNI) makes onnxruntime choose its AVX2 u8s8 kernels, whose int16 pair sums
    qemu carries out exactly. The AVX2 recipe's 7-bit weights give the same logits there as on a CPU
    with int8 dot products; the VNNI recipe's full-range weights do not, and a runner on AVX2 says so."""
    import os
    import shutil
    import subprocess
    import sys

    from edgeeff.artifact import open_artifact
    from edgeeff.data.preprocess import PreprocessCard, load_image

    qemu = shutil.which("qemu-x86_64-static")
    if qemu is None:
        if os.environ.get("CI"):
            pytest.fail("qemu-x86_64-static is missing: .ci/run installs Debian's qemu-user-static")
        pytest.skip("no qemu-x86_64-static here (apt-get install qemu-user-static)")
    if not local_profile().int8_dot:
        pytest.skip("this CPU has no int8 dot products: the host's own outputs already saturate")
    photos = sample_images[1::50]  # 10 real photos
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for photo in sample_images[::25]:
        if photo not in photos:
            (calibration / photo.name).symlink_to(photo)
    logits = {}
    for cpu in ("avx2", "vnni"):
        done = run_cli("convert", "--variant", "lite0", "--target", "onnx-int8", "--for-cpu", cpu, "--calibration", str(calibration),
                       "--out", str(tmp_path / cpu), "--json", str(tmp_path / f"{cpu}.json"))
        assert done.returncode == 0, done.stderr[-2000:]
        folder = json.loads((tmp_path / f"{cpu}.json").read_text())["metadata"]["path"]
        meta, runner = open_artifact(folder)
        card = PreprocessCard.from_dict(meta["preprocessing"])
        pixels = np.stack([load_image(p, meta["preprocessing"]["resolution"], card) for p in photos])
        np.save(tmp_path / "pixels.npy", pixels)
        emulated = subprocess.run([qemu, "-cpu", "Haswell-v4", sys.executable, "-c", EMULATED_RUN, folder, str(tmp_path / "pixels.npy"),
                                   str(tmp_path / f"{cpu}-avx2.npy")], capture_output=True, text=True, timeout=600)
        assert emulated.returncode == 0, emulated.stderr[-2000:]
        logits[cpu] = (np.asarray(runner.predict(pixels)), np.load(tmp_path / f"{cpu}-avx2.npy"), meta["options"])
    here, avx2, options = logits["avx2"]
    assert np.array_equal(here, avx2)  # 7-bit weights: the same integers with or without VNNI
    assert saturation_warning("onnx-int8", options, named("avx2")) is None
    here, avx2, options = logits["vnni"]
    assert np.abs(here - avx2).max() > 0.1 * np.abs(here).max()  # full-range weights: AVX2's int16 pair sums saturate
    assert "--for-cpu avx2" in saturation_warning("onnx-int8", options, named("avx2"))
