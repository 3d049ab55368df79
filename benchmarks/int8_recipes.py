"""Int8 recipes per CPU: the evidence for ``edgeeff.quant.recipes`` and for convert's validation rule.

On the CPU this runs on (its profile detected by ``edgeeff.devices.cpu``), for each variant and int8 target,
three artifacts are converted from the same calibration photos and scored on the same held-out
photos against the Keras fp32 model:

- ``previous``: the defaults before CPU profiles (7-bit weights everywhere: onnxruntime
  u8s8-reduced, NNCF overflow fix on every layer; 128 calibration images);
- ``recipe``: this CPU's row of ``edgeeff.quant.recipes`` (what ``edgeeff convert`` now does here);
- ``fp32``: the same backend's float artifact, for the int8 speed-up.

Latency of the three is measured side by side (``edgeeff.measure.side_by_side``), in rounds of
fresh process triples. For the validation rule, each target's recipe artifact is also converted with
the shared sample as ``--calibration`` and no ``--images`` (so it is validated on the 13 embedded
photos, as a user's first command is), and once more calibrated on noise (a broken artifact), and
both are scored on the held-out photos too.

    python benchmarks/int8_recipes.py --variants lite0 --stem int8_recipes_vnni
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "imagenet-sample"
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = ("tflite-int8", "onnx-int8", "openvino-int8")
PREVIOUS = {"tflite-int8": {}, "onnx-int8": {"quant_types": "u8s8-reduced"}, "openvino-int8": {"overflow_fix": "enable"}}


def figures(meta: dict) -> dict:
    """What a conversion's own validation measured (the held-out photos when --images was given)."""
    val = meta["validation"]
    drop = val.get("top1_drop_paired") or {}
    return {"weights": meta["weights"]["label"], "images": val["images"], "agreement": val["top1_agreement"], "cosine": val["mean_cosine"], "ties": val.get("top1_ties"),
            "top1_fp32": val.get("top1_keras"), "top1": val.get("top1_artifact"), "drop_points": drop.get("drop_points"),
            "drop_ci95_points": drop.get("ci95_points"), "failures": val.get("failures", []), "options": meta["options"],
            "calibration_images": meta["calibration"]["count"] if meta.get("calibration") else None, "path": meta["path"]}


def held_out(folder: str, samples) -> dict:
    """An artifact scored against its Keras reference on the held-out photos (artifacts validated elsewhere)."""
    from edgeeff.artifact import open_artifact, reference_model
    from edgeeff.evaluate import paired_drop, score_pair
    from edgeeff.data.preprocess import PreprocessCard

    meta, runner = open_artifact(folder)
    ref = reference_model(meta)
    result = score_pair(runner.predict, lambda x: ref.predict(x, verbose=0), samples, meta["preprocessing"]["resolution"],
                        PreprocessCard.from_dict(meta["preprocessing"]))
    drop = paired_drop(result["reference_correct"], result["correct"])
    return {"images": result["images"], "agreement": result["top1_agreement"], "cosine": result["mean_cosine"],
            "ties": result["top1_ties"], "drop_points": drop["drop_points"], "drop_ci95_points": drop["ci95_points"]}


def noise_folder(root: Path, count: int = 32, seed: int = 0) -> Path:
    """Uniform-noise photos: calibrating on them gives activation ranges no real photo has (a broken artifact)."""
    from PIL import Image

    folder = root / "noise"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / f"noise_{i:02d}.png")
    return folder


def render(payload: dict, stem: str) -> None:
    """The Markdown tables of a results JSON (the README quotes them)."""
    from edgeeff import fsio, report

    rows, rule_rows = payload["rows"], payload.get("validation_rule", [])
    md = [f"Int8 recipes on {payload['cpu']} ({payload['cpu_profile']}: {', '.join(payload['cpu_features'])}); real weights "
          f"({', '.join(sorted({r['weights'] for r in rows}))}), calibrated on 200 photos of the shared sample, scored against Keras "
          f"fp32 on the {payload['held_out_images']} others (benchmarks/int8_recipes.py)\n",
          report.to_markdown([{**r, "options": ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"} for r in rows],
                             [("variant", "variant"), ("target", "target"), ("setting", "setting"), ("options", "options"),
                              ("calibration_images", "calibration images"), ("agreement", "agreement"), ("drop_points", "top-1 drop (points)"),
                              ("drop_ci95_points", "paired 95% CI"), ("ties", "tied top-1"), ("cosine", "cosine"),
                              ("median_ms", "median ms"), ("speedup_vs_fp32", "x fp32")])]
    if rule_rows:
        md += ["\nValidation rule: the recipe artifact calibrated on the shared sample (healthy) and on noise (broken), "
               "validated on the embedded photos as `edgeeff convert` does without --images, then scored on the held-out photos"
               + (f" ({payload['validation_rule_note']})" if payload.get("validation_rule_note") else "") + "\n",
               report.to_markdown(rule_rows, [("variant", "variant"), ("target", "target"), ("artifact", "artifact"),
                                              ("embedded_images", "embedded photos"), ("embedded_cosine", "cosine (embedded)"),
                                              ("embedded_agreement", "agreement (embedded)"), ("held_out_agreement", "agreement (held out)"),
                                              ("held_out_cosine", "cosine (held out)"), ("held_out_drop_points", "top-1 drop (held out)"),
                                              ("refused_by", "refused by validation")])]
    fsio.write_text(RESULTS / f"{stem}.md", "\n".join(md))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="lite0")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--rounds", type=int, default=3, help="Side-by-side rounds of fresh process triples.")
    parser.add_argument("--stem", default=None, help="Results file stem (default int8_recipes_<cpu profile>).")
    parser.add_argument("--skip-validation-rule", action="store_true")
    parser.add_argument("--render", action="store_true", help="Only write the Markdown again from the stem's JSON.")
    args = parser.parse_args()
    if args.render:
        from edgeeff.devices.cpu import local_profile

        stem = args.stem or f"int8_recipes_{local_profile().name}"
        render(json.loads((RESULTS / f"{stem}.json").read_text()), stem)
        return 0

    from edgeeff import fsio


    from edgeeff.kit import probe as kit_probe
    from edgeeff.convert import convert
    from edgeeff.devices.cpu import int8_features, local_profile
    from edgeeff.data.images import list_samples, split, write_list
    from edgeeff.measure import Schedule, side_by_side
    from edgeeff.model.variants import resolve
    from edgeeff.weights.cards import default_weights_name

    if not (SHARED / "images").is_dir():
        raise SystemExit(f"needs the shared sample at {SHARED}")
    profile = local_profile()
    stem = args.stem or f"int8_recipes_{profile.name}"
    rows, rule_rows = [], []
    with tempfile.TemporaryDirectory(prefix="edgeeff-recipes-") as tmp:
        tmp = Path(tmp)
        calib, held = split(list_samples(SHARED / "images"), 0.4, seed=0)
        calib_list, eval_list = write_list(calib, tmp / "calib.txt"), write_list(held, tmp / "eval.txt")
        noise = noise_folder(tmp)
        for variant in args.variants.split(","):
            weights = default_weights_name(resolve(variant))  # the real weights, as the CLI's default
            for target in args.targets.split(","):
                print(f"{variant} {target}", file=sys.stderr, flush=True)
                out = tmp / variant / target
                made = {
                    "previous": convert(variant, target, weights, out=out / "previous", calibration=calib_list, images=eval_list,
                                        options=PREVIOUS[target], calibration_count=128, require_valid=False, cpu="avx2"),
                    "recipe": convert(variant, target, weights, out=out / "recipe", calibration=calib_list, images=eval_list,
                                      require_valid=False),
                    "fp32": convert(variant, target.replace("int8", "fp32"), weights, out=out / "fp32", images=eval_list),
                }
                timings: dict[str, list[float]] = {k: [] for k in made}
                for _ in range(args.rounds):
                    for name, row in zip(made, side_by_side([m["path"] for m in made.values()], threads=None,
                                                            schedule=Schedule(10, 1.0, 50, 3.0))):
                        if "error" in row:
                            raise SystemExit(f"{variant} {target} {name}: {row['error']}")
                        timings[name].append(row["median_ms"])
                medians = {k: float(np.median(v)) for k, v in timings.items()}
                for name in ("previous", "recipe"):
                    rows.append({"variant": variant, "target": target, "setting": name, **figures(made[name]),
                                 "median_ms": medians[name], "fp32_median_ms": medians["fp32"],
                                 "speedup_vs_fp32": medians["fp32"] / medians[name], "rounds_ms": timings[name]})
                if args.skip_validation_rule:
                    continue
                for kind, source in (("healthy", calib_list), ("noise-calibrated", noise)):
                    meta = convert(variant, target, weights, out=out / kind, calibration=source, require_valid=False)
                    embedded = figures(meta)
                    rule_rows.append({"variant": variant, "target": target, "artifact": kind, "embedded_images": embedded["images"],
                                      "embedded_cosine": embedded["cosine"], "embedded_agreement": embedded["agreement"],
                                      "refused_by": embedded["failures"], **{f"held_out_{k}": v for k, v in
                                                                              held_out(meta["path"], held).items()}})
    measured = {(r["variant"], r["target"]) for r in rows}
    previous = RESULTS / f"{stem}.json"
    if previous.is_file():  # keep the rows of pairs not measured this time (one target can be re-run alone)
        old = json.loads(previous.read_text())
        rows = [r for r in old["rows"] if (r["variant"], r["target"]) not in measured] + rows
        if args.skip_validation_rule:
            rule_rows = old.get("validation_rule", [])
    order = {t: i for i, t in enumerate(TARGETS)}
    rows.sort(key=lambda r: (r["variant"], order.get(r["target"], 9), r["setting"] != "previous"))
    payload = {"cpu": kit_probe.cpu_model(), "cpu_features": int8_features(kit_probe.cpu_features()[0]), "cpu_profile": profile.name,
               "calibration": "shared sample, seeded split 0.4 (200 calibration photos)", "held_out_images": len(held),
               "rows": rows, "validation_rule": rule_rows}
    fsio.write_text(RESULTS / f"{stem}.json", json.dumps(payload, indent=2) + "\n")
    render(payload, stem)
    print(RESULTS / f"{stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
