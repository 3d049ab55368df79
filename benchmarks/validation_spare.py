"""Convert's validation on the calibration folder's spare photos: does it refuse broken artifacts and pass healthy ones?

Without ``--images``, ``edgeeff convert`` validates an int8 artifact on up to 100 photos of the
``--calibration`` folder that calibration did not use (``edgeeff.convert.SPARE_VALIDATION``), where the
agreement gate (>= 0.90 on 50+ photos) applies. For each int8 target of Lite0 (real weights):

- ``healthy``: the command of the int8 issue, ``edgeeff convert --variant lite0 --target T
  --calibration <shared sample>``, validated on its 100 spare photos, then scored on all the photos
  calibration did not use (the held-out set);
- ``noise-calibrated``: the same conversion calibrated on uniform noise (a broken artifact),
  validated on the same 100 photos.

The false-refusal rate of a healthy artifact is the binomial tail of its held-out disagreement
rate: P(more than 10 of 100 photos disagree); the pass rate of a broken one likewise.

    python benchmarks/validation_spare.py
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from int8_recipes import SHARED, RESULTS, TARGETS, held_out, noise_folder  # noqa: E402


def binomial_tail_above(n: int, p: float, k: int) -> float:
    """P(X > k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1, n + 1)))


def render(payload: dict) -> None:
    from edgeeff import fsio, report

    rows, spare = payload["rows"], payload["spare_validation"]
    gate = payload["agreement_gate"]
    md = [f"`edgeeff convert --variant lite0 --target T --calibration <shared sample>` on {payload['cpu']} "
          f"({payload['cpu_profile']}: {', '.join(payload['cpu_features'])}): validated on {spare} photos of the folder that "
          f"calibration did not use (gate: agreement >= {gate['min_agreement']} on {gate['min_images']}+ photos); a broken twin calibrated on "
          f"noise is validated on the same photos. Held out: every photo calibration did not use. P(refused): the chance that "
          f"{spare} photos drawn at the held-out disagreement rate fail the gate (binomial). `benchmarks/validation_spare.py`.\n",
          report.to_markdown(rows, [("target", "target"), ("artifact", "artifact"), ("images", "validation photos"),
                                    ("agreement", "agreement"), ("cosine", "cosine"), ("refused_by", "refused by validation"),
                                    ("held_out_images", "held-out photos"), ("held_out_agreement", "agreement (held out)"),
                                    ("held_out_drop_points", "top-1 drop (held out)"), ("p_refused", "P(refused)")])]
    fsio.write_text(RESULTS / "validation_spare.md", "\n".join(md) + "\n")


def main() -> int:
    if sys.argv[1:] == ["--render"]:
        render(json.loads((RESULTS / "validation_spare.json").read_text()))
        return 0
    from edgeeff import fsio
    from edgeeff.convert import AGREEMENT_GATE_MIN_IMAGES, MIN_AGREEMENT, SPARE_VALIDATION, convert, validation_samples
    from edgeeff.data.images import list_samples, write_list
    from edgeeff.devices.cpu import int8_features, local_profile
    from edgeeff.kit import probe as kit_probe

    folder = SHARED / "images"
    if not folder.is_dir():
        raise SystemExit(f"needs the shared sample at {SHARED}")
    allowed = int(SPARE_VALIDATION * (1 - MIN_AGREEMENT) + 1e-9)  # disagreements a 100-photo validation allows
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeeff-spare-") as tmp:
        tmp = Path(tmp)
        noise = noise_folder(tmp)
        photos = list_samples(folder)
        for target in TARGETS:
            print(target, file=sys.stderr, flush=True)
            healthy = convert("lite0", target, out=tmp / "healthy", calibration=folder, require_valid=False)
            val = healthy["validation"]
            used = {f["name"] for f in healthy["calibration"]["files"]}
            rest = [s for s in photos if s.path.name not in used]
            # the photos validation used: the same seeded choice convert made
            spare, _ = validation_samples(None, [s for s in photos if s.path.name in used], folder, seed=0)
            score = held_out(healthy["path"], rest)
            p_disagree = 1 - score["agreement"]
            rows.append({"target": target, "artifact": "healthy", "options": healthy["options"],
                         "validated_on": val["validated_on"], "images": val["images"], "agreement": val["top1_agreement"],
                         "cosine": val["mean_cosine"], "refused_by": "; ".join(val["failures"]) or "-",
                         "held_out_images": score["images"], "held_out_agreement": score["agreement"],
                         "held_out_drop_points": score["drop_points"],
                         "p_refused": binomial_tail_above(SPARE_VALIDATION, p_disagree, allowed)})
            spare_list = write_list(spare, tmp / f"spare-{target}.txt")
            broken = convert("lite0", target, out=tmp / "broken", calibration=noise, images=spare_list, require_valid=False)
            bval = broken["validation"]
            bscore = held_out(broken["path"], rest)
            rows.append({"target": target, "artifact": "noise-calibrated", "options": broken["options"],
                         "validated_on": "the same photos", "images": bval["images"], "agreement": bval["top1_agreement"],
                         "cosine": bval["mean_cosine"], "refused_by": "; ".join(bval["failures"]) or "-",
                         "held_out_images": bscore["images"], "held_out_agreement": bscore["agreement"],
                         "held_out_drop_points": bscore["drop_points"],
                         "p_refused": binomial_tail_above(SPARE_VALIDATION, 1 - bscore["agreement"], allowed)})
    payload = {"cpu": kit_probe.cpu_model(), "cpu_features": int8_features(kit_probe.cpu_features()[0]),
               "cpu_profile": local_profile().name, "spare_validation": SPARE_VALIDATION,
               "agreement_gate": {"min_agreement": MIN_AGREEMENT, "min_images": AGREEMENT_GATE_MIN_IMAGES}, "rows": rows}
    fsio.write_text(RESULTS / "validation_spare.json", json.dumps(payload, indent=2, default=str) + "\n")
    render(payload)
    print(RESULTS / "validation_spare.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
