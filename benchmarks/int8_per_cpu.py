"""Int8 per CPU, one table from the records: agreement with fp32, top-1 drop and int8/fp32 speed-up
of each int8 target with the recipe of the CPU it ran on, for every CPU measured so far.

Reads (and never re-measures) the records under benchmarks/results/:

- ``targets_lite0.json``: AMD EPYC without VNNI (AVX2), 2026-11-27, the AVX2 recipes (7-bit
  weights for onnxruntime and NNCF), 210 calibration photos, 290 held out;
- ``int8_recipes_vnni.json`` (``setting == recipe``): Intel Xeon with AVX-512 VNNI, Lite0-2,
  200 calibration photos, 290 held out;
- ``validation_spare.json`` (healthy rows): AMD EPYC with AVX-512 VNNI, Lite0, 200 calibration
  photos chosen from the whole sample, the 300 others held out; the speed-up from
  ``bench_lite0_epyc_vnni.json`` (``edgeeff bench`` with the same calibration, so the same artifacts);
- ``int8_emulated_avx2.json`` (the AVX2 recipe rows): the same artifacts' AVX2 kernels, run under
  qemu-user emulating an Intel Haswell (``benchmarks/int8_emulated_avx2.py``), 200 calibration
  photos, 300 held out;
- ``emulated_rpi*.json``: the emulated Raspberry Pi 5 (Cortex-A76 under qemu-user, ARM builds of
  LiteRT and onnxruntime running artifacts converted on x86), 200 photos; latency under emulation
  means nothing, so none is given.

    python benchmarks/int8_per_cpu.py   # writes benchmarks/results/int8_per_cpu.{json,md}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
INT8 = ("tflite-int8", "onnx-int8", "openvino-int8")


def _options(options: dict) -> str:
    keep = {k: v for k, v in options.items() if k in ("quant_types", "overflow_fix", "io_dtype")}
    return ", ".join(f"{k}={v}" for k, v in keep.items()) or "-"


def rows() -> list[dict]:
    out = []
    avx2 = json.loads((RESULTS / "targets_lite0.json").read_text())
    for r in avx2["rows"]:
        if r["target"] in INT8:
            out.append({"cpu": f"{avx2['environment']['processor']} (no VNNI)", "profile": "avx2", "variant": "lite0", "target": r["target"],
                        "recipe": _options(r["options"]), "images": r["images"], "agreement": r["agreement"],
                        "drop_points": 100 * (r["top1_keras"] - r["top1"]), "speedup_vs_fp32": r["speedup_vs_fp32"],
                        "source": "targets_lite0.json"})
    xeon = json.loads((RESULTS / "int8_recipes_vnni.json").read_text())
    for r in xeon["rows"]:
        if r["setting"] == "recipe":
            out.append({"cpu": xeon["cpu"], "profile": xeon["cpu_profile"], "variant": r["variant"], "target": r["target"],
                        "recipe": _options(r["options"]), "images": xeon["held_out_images"], "agreement": r["agreement"],
                        "drop_points": r["drop_points"], "speedup_vs_fp32": r["speedup_vs_fp32"], "source": "int8_recipes_vnni.json"})
    epyc = json.loads((RESULTS / "validation_spare.json").read_text())
    bench = {r["target"]: r for r in json.loads((RESULTS / "bench_lite0_epyc_vnni.json").read_text())["rows"]}
    for r in epyc["rows"]:
        if r["artifact"] == "healthy":
            timed = bench.get(r["target"], {})
            out.append({"cpu": epyc["cpu"], "profile": epyc["cpu_profile"], "variant": "lite0", "target": r["target"],
                        "recipe": _options(r["options"]), "images": r["held_out_images"], "agreement": r["held_out_agreement"],
                        "drop_points": r["held_out_drop_points"], "speedup_vs_fp32": timed.get("speedup_vs_fp32"),
                        "source": "validation_spare.json" + (", bench_lite0_epyc_vnni.json" if timed else "")})
    for path in sorted(RESULTS.glob("emulated_rpi*.json")):
        emu = json.loads(path.read_text())
        for r in emu["rows"]:
            if r["target"] in INT8:
                out.append({"cpu": "emulated Raspberry Pi 5 (Cortex-A76, qemu-user)", "profile": "arm64-dotprod", "variant": emu["variant"],
                            "target": r["target"], "recipe": "x86 artifact", "images": r["images"], "agreement": r["agreement_keras"],
                            "drop_points": 100 * (r["reference_top1"] - r["top1"]), "speedup_vs_fp32": None, "source": path.name})
    emulated_avx2 = RESULTS / "int8_emulated_avx2.json"
    if emulated_avx2.exists():
        haswell = json.loads(emulated_avx2.read_text())
        for r in haswell["rows"]:
            if r["label"] == "avx2 recipe":
                out.append({"cpu": f"emulated Intel Haswell ({haswell['qemu_cpu']}, qemu-user)", "profile": "avx2", "variant": haswell["variant"],
                            "target": r["target"], "recipe": _options(r["options"]), "images": r["images"], "agreement": r["emulated_agreement"],
                            "drop_points": r["emulated_drop_points"], "speedup_vs_fp32": None, "source": emulated_avx2.name})
    order = {t: i for i, t in enumerate(INT8)}
    return sorted(out, key=lambda r: (r["variant"], order[r["target"]]))


def main() -> int:
    from edgeeff import fsio, report

    table = rows()
    fsio.write_text(RESULTS / "int8_per_cpu.json", json.dumps({"rows": table}, indent=2) + "\n")
    md = ["Int8 with each CPU's recipe, from the records (`benchmarks/int8_per_cpu.py`; the source column names each). Agreement: "
          "top-1 with the Keras fp32 model on photos calibration did not use; drop: fp32 minus int8 top-1 on the same photos; "
          "x fp32: median latency of the same backend's fp32 artifact over the int8 one, side by side (meaningless under "
          "emulation). The emulated Pi runs the artifacts converted on x86 for VNNI (ARM's dot "
          "product takes the same recipe); the emulated Haswell runs the AVX2 recipes' artifacts on the AVX2 kernels "
          "(`int8_emulated_avx2.md`).\n",
          report.to_markdown(table, [("variant", "variant"), ("target", "target"), ("cpu", "CPU"), ("profile", "profile"),
                                     ("recipe", "recipe"), ("images", "images"), ("agreement", "agreement"),
                                     ("drop_points", "top-1 drop (points)"), ("speedup_vs_fp32", "x fp32"), ("source", "source")])]
    fsio.write_text(RESULTS / "int8_per_cpu.md", "\n".join(md) + "\n")
    print(RESULTS / "int8_per_cpu.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
