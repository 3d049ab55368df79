"""Int8 on an AVX2 CPU without one: Lite0's int8 artifacts run under qemu-user emulating an Intel
Haswell (AVX2, FMA, no AVX-512, no VNNI), beside the same artifacts on this machine's CPU.

The runtimes pick their int8 kernels from the CPUID instruction, which qemu answers as a Haswell
(numpy's own dispatch, recorded below, sees AVX2 and no AVX-512 in the emulated process), and qemu's
TCG carries out AVX2's ``vpmaddubsw`` with its int16 saturation exactly: so the outputs are the
AVX2 kernels' own, and only their timing is qemu's (none is recorded). Each artifact is scored
against the Keras fp32 model's logits (computed once, natively, on the same decoded photos) on the
photos calibration did not use, once under emulation and once natively, and the two runs are
compared image by image.

Configurations: each int8 target with the AVX2 row of ``edgeeff.quant.recipes`` (what ``edgeeff
convert --for-cpu avx2`` does); the full-range weights of the VNNI rows (onnxruntime u8s8, NNCF
overflow fix on the first layer only), which a runner on AVX2 warns about ("saturates here"); and
onnxruntime u8u8, whose AVX2 kernel widens to int16 before multiplying (no pair sums to saturate).

    python benchmarks/int8_emulated_avx2.py            # about 20 min on 2 cores
    python benchmarks/int8_emulated_avx2.py --render   # the .md from the recorded .json

Writes benchmarks/results/int8_emulated_avx2.{json,md} atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "imagenet-sample" / "images"
RESULTS = ROOT / "benchmarks" / "results"
QEMU = "qemu-x86_64-static"
QEMU_CPU = "Haswell-v4"  # Haswell without TSX: AVX2, FMA3, F16C, BMI2; no AVX-512, no VNNI
FEATURES = ("AVX2", "FMA3", "AVX512F", "AVX512_SKX", "AVX512_CLX", "AVX512VNNI")

# (label, target, options, CPU profile whose recipe fills the rest)
CONFIGS = (
    ("avx2 recipe", "tflite-int8", {}, "avx2"),
    ("avx2 recipe", "onnx-int8", {}, "avx2"),
    ("avx2 recipe", "openvino-int8", {}, "avx2"),
    ("full-range weights (vnni recipe)", "onnx-int8", {}, "vnni"),
    ("full-range weights", "openvino-int8", {"overflow_fix": "first_layer_only"}, "avx2"),
    ("u8u8", "onnx-int8", {"quant_types": "u8u8"}, "avx2"),
)


# --------------------------------------------------------------------------- the scorer (runs emulated or native)


def score(artifact: str, listing: str, reference: str, out: str) -> None:
    """Score one artifact on the listed photos against the recorded reference logits; write JSON + logits."""
    from numpy._core._multiarray_umath import __cpu_features__

    from edgeeff.artifact import open_artifact
    from edgeeff.data.images import list_samples
    from edgeeff.data.preprocess import PreprocessCard
    from edgeeff.evaluate import paired_drop, score_pair

    samples = list_samples(listing)
    meta, runner = open_artifact(artifact)
    ref_logits = np.load(reference)
    outputs, position = [], [0]

    def recorded(images: np.ndarray) -> np.ndarray:
        start = position[0]
        position[0] += len(images)
        return ref_logits[start:position[0]]

    def predict(images: np.ndarray) -> np.ndarray:
        logits = np.asarray(runner.predict(images))
        outputs.append(logits)
        return logits

    started = time.perf_counter()
    result = score_pair(predict, recorded, samples, meta["preprocessing"]["resolution"], PreprocessCard.from_dict(meta["preprocessing"]),
                        batch=8)
    if position[0] != len(ref_logits):
        raise SystemExit(f"scored {position[0]} photos, the reference has {len(ref_logits)}")
    drop = paired_drop(result["reference_correct"], result["correct"])
    np.save(out + ".npy", np.concatenate(outputs))
    Path(out + ".json").write_text(json.dumps({
        "images": result["images"], "agreement": result["top1_agreement"], "cosine": result["mean_cosine"], "ties": result["top1_ties"],
        "drop_points": drop["drop_points"], "drop_ci95_points": drop["ci95_points"], "wall_s": round(time.perf_counter() - started, 1),
        "numpy_cpu_dispatch": {k: bool(__cpu_features__.get(k)) for k in FEATURES}}))


# --------------------------------------------------------------------------- the run


def keras_logits(samples, meta: dict, path: Path) -> None:
    from edgeeff.artifact import reference_model
    from edgeeff.data.preprocess import PreprocessCard
    from edgeeff.evaluate import batches

    model = reference_model(meta)
    card = PreprocessCard.from_dict(meta["preprocessing"])
    parts = [model.predict(images, verbose=0) for _, images, _ in batches(samples, meta["preprocessing"]["resolution"], card, 8)
             if images is not None]
    np.save(path, np.concatenate(parts).astype(np.float32))


def run_scorer(prefix: list[str], artifact: str, listing: Path, reference: Path, out: Path) -> dict:
    cmd = [*prefix, sys.executable, __file__, "--score", artifact, str(listing), str(reference), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed:\n{done.stderr[-3000:]}")
    return json.loads(Path(f"{out}.json").read_text())


def main_run(args) -> int:
    from edgeeff import report
    from edgeeff.convert import convert
    from edgeeff.data.images import list_samples, write_list
    from edgeeff.devices.cpu import int8_features, local_profile
    from edgeeff.kit import probe as kit_probe

    if not shutil.which(QEMU):
        raise SystemExit(f"{QEMU} is not installed: apt-get install qemu-user-static")
    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeeff-avx2-") as tmp:
        tmp = Path(tmp)
        held, reference = None, tmp / "keras.npy"
        for number, (label, target, options, profile) in enumerate(CONFIGS):
            say(f"{target} ({label}): converting for {profile}")
            meta = convert("lite0", target, out=tmp / str(number), calibration=args.images, options=options, cpu=profile, require_valid=False)
            used = {f["name"] for f in meta["calibration"]["files"]}
            chosen = [s for s in list_samples(args.images) if s.path.name not in used]
            if held is None:
                held = chosen
                listing = write_list(held, tmp / "held-out.txt")
                say(f"Keras fp32 logits on the {len(held)} held-out photos")
                keras_logits(held, meta, reference)
            elif [s.path.name for s in chosen] != [s.path.name for s in held]:
                raise SystemExit(f"{target}: calibration chose other photos than the first conversion")
            runs = {}
            for where, prefix in (("native", []), ("emulated", [QEMU, "-cpu", QEMU_CPU])):
                say(f"{target} ({label}): scoring {where}")
                runs[where] = run_scorer(prefix, meta["path"], listing, reference, tmp / f"{number}-{where}")
            native, emulated = (np.load(tmp / f"{number}-{w}.npy") for w in ("native", "emulated"))
            identical = int((native == emulated).all(axis=1).sum())
            same_top1 = float((native.argmax(1) == emulated.argmax(1)).mean())
            row = {"label": label, "target": target, "for_cpu": profile, "options": meta["options"],
                   "calibration_images": meta["calibration"]["count"], "images": runs["emulated"]["images"],
                   **{f"{w}_{k}": runs[w][k] for w in runs for k in ("agreement", "cosine", "ties", "drop_points", "drop_ci95_points")},
                   "identical_to_native": identical, "top1_same_as_native": same_top1,
                   "max_abs_diff_to_native": float(np.abs(native - emulated).max()),
                   "emulated_dispatch": runs["emulated"]["numpy_cpu_dispatch"], "native_dispatch": runs["native"]["numpy_cpu_dispatch"],
                   "emulated_wall_s": runs["emulated"]["wall_s"]}
            say(f"  emulated AVX2 {report.percent(row['emulated_agreement'])}, native {report.percent(row['native_agreement'])}, "
                f"{identical}/{row['images']} identical")
            rows.append(row)
    host = kit_probe.probe()
    payload = {"variant": "lite0", "weights": "lite0-pypi", "qemu": subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.split("\n")[0],
               "qemu_cpu": QEMU_CPU, "host_cpu": kit_probe.cpu_model(), "host_profile": local_profile().name,
               "host_features": int8_features(kit_probe.cpu_features()[0]), "runtimes": host["runtimes"], "images": str(args.images),
               "note": "Emulated runs: the AVX2 kernels' outputs; their timing is qemu's and is not recorded."}
    report.write_json(RESULTS / "int8_emulated_avx2.json", rows, **payload)
    render(json.loads((RESULTS / "int8_emulated_avx2.json").read_text()))
    return 0


def render(data: dict) -> None:
    from edgeeff import fsio, report

    def agreement(r: dict, where: str) -> str:
        return f"{report.percent(r[f'{where}_agreement'])} ({round(r[f'{where}_agreement'] * r['images'])}/{r['images']})"

    def options(r: dict) -> str:
        keep = {k: v for k, v in r["options"].items() if k in ("quant_types", "overflow_fix")}
        return ", ".join(f"{k}={v}" for k, v in keep.items()) or "-"

    table = [{"target": r["target"], "label": r["label"], "options": options(r), "emulated": agreement(r, "emulated"),
              "drop": f"{r['emulated_drop_points']:.2f}", "native": agreement(r, "native"),
              "identical": f"{r['identical_to_native']}/{r['images']}", "diff": f"{r['max_abs_diff_to_native']:.2e}"} for r in data["rows"]]
    seen = data["rows"][0]["emulated_dispatch"]
    lines = [
        f"# Lite0 int8 on an emulated AVX2 CPU ({data['qemu_cpu']} under {data['qemu']})", "",
        f"Host: {data['host_cpu']} ({data['host_profile']}: {', '.join(data['host_features'])}); runtimes "
        f"{', '.join(f'{k} {v}' for k, v in data['runtimes'].items() if k in ('ai-edge-litert', 'onnxruntime', 'openvino', 'numpy'))}. "
        f"In the emulated process numpy's CPU dispatch sees {', '.join(k for k, v in seen.items() if v)} and not "
        f"{', '.join(k for k, v in seen.items() if not v)}: the runtimes choose their AVX2 kernels, whose int16 pair sums qemu "
        "carries out exactly. Timing under emulation is qemu's and is not recorded.", "",
        f"Calibrated on 200 photos of the shared sample (the recipe's seeded choice), scored on the {data['rows'][0]['images']} others "
        "against the Keras fp32 model (`benchmarks/int8_emulated_avx2.py`). Agreement: top-1 with Keras; drop: Keras minus artifact "
        "top-1 (points); identical: photos whose logits are bit-identical under emulated AVX2 and on the host.", "",
        report.to_markdown(table, [("target", "target"), ("label", "artifact"), ("options", "options"), ("emulated", "agreement, AVX2 (emulated)"),
                                   ("drop", "top-1 drop, AVX2"), ("native", f"agreement, host ({data['host_profile']})"),
                                   ("identical", "bit-identical to host"), ("diff", "max abs logit diff to host")]).rstrip(), ""]
    fsio.write_text(RESULTS / "int8_emulated_avx2.md", "\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--score"]:
        score(*argv[1:5])
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=Path, default=SHARED)
    parser.add_argument("--render", action="store_true", help="Rewrite the .md from the recorded .json; run nothing.")
    args = parser.parse_args(argv)
    if args.render:
        render(json.loads((RESULTS / "int8_emulated_avx2.json").read_text()))
        return 0
    return main_run(args)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1:]))
