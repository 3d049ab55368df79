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
