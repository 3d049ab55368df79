"""TensorFlow Lite: export through a SavedModel (the robust route with Keras 3), run under
ai-edge-litert, falling back to tflite-runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeeff.errors import EdgeeffError
from edgeeff.kit.core import native_stderr_muted, tflite_module
from edgeeff.targets.base import TargetSpec, versions


def export(model, spec: TargetSpec, dest: Path, calibration=None, options: dict | None = None, saved_model: Path | None = None,
           progress=None) -> dict:
    import tensorflow as tf

    options = options or {}
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if spec.precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif spec.precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif spec.precision == "int8":
        from edgeeff.calibration.adapters import tflite_representative_dataset

        io_dtype = {"int8": tf.int8, "uint8": tf.uint8}[options.get("io_dtype") or "int8"]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = tflite_representative_dataset(calibration, progress)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_dtype
        converter.inference_output_type = io_dtype
    blocks = options.get("float_blocks") or []
    kept: set[str] = set()
    if blocks:
        from edgeeff.model import blockmap

        kept = blockmap.layers_of(model, blockmap.check_units(model, blocks))
    try:
        with native_stderr_muted():
            if blocks:
                flat = _selectively_quantized(tf, converter, saved_model, blocks, kept, calibration)
            else:
                flat = converter.convert()
    except EdgeeffError:
        raise
    except Exception as exc:
        raise EdgeeffError(f"TFLite conversion failed: {str(exc).splitlines()[0][:200]}") from None
    dest.write_bytes(flat)
    details = {"runtime": versions("ai-edge-litert|tflite-runtime"), "converter": versions("tensorflow-cpu|tensorflow")}
    if spec.precision == "int8":
        details["float_ops"] = float_ops(dest)
        details["fully_integer"] = not details["float_ops"]
        # What validation refuses: float ops beyond the blocks asked to stay in float
        details["unexpected_float_ops"] = float_ops(dest, kept) if blocks else details["float_ops"]
        if blocks:
            details["float_blocks"] = blocks
    if spec.accelerator == "edgetpu":
        details.update(compile_edgetpu(dest))
    return details


def compile_edgetpu(dest: Path) -> dict:
    """Compile a full-integer model for the Edge TPU in place; the uncompiled model stays beside it
    as the CPU twin that validation runs (the compiled one needs the TPU). The compiler's own count
    of the ops it mapped goes into the metadata."""
    import re
    import subprocess

    twin = dest.with_name("model_cpu_twin.tflite")
    dest.rename(twin)
    try:
        done = subprocess.run(["edgetpu_compiler", "--show_operations", "--out_dir", str(dest.parent), str(twin)],
                              capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise EdgeeffError("edgetpu_compiler is not on PATH: install edgetpu-compiler from Coral's apt repository "
                           "(https://coral.ai/docs/edgetpu/compiler/)") from None
    compiled = dest.parent / f"{twin.stem}_edgetpu.tflite"
    if done.returncode != 0 or not compiled.is_file():
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise EdgeeffError(f"edgetpu_compiler failed: {(lines[-1] if lines else f'exit {done.returncode}')[:200]}")
    compiled.rename(dest)
    mapped = re.search(r"Number of operations that will run on Edge TPU:\s*(\d+)", done.stdout)
    on_cpu = re.search(r"Number of operations that will run on CPU:\s*(\d+)", done.stdout)
    return {"cpu_twin": twin.name, "edgetpu_ops": int(mapped.group(1)) if mapped else None,
            "cpu_ops_after_compile": int(on_cpu.group(1)) if on_cpu else None,
            "compiler": done.stdout.splitlines()[0] if done.stdout else "edgetpu_compiler"}


def _ops_of(interp, layers: set[str]) -> dict[int, list[str]]:
    """The ops that compute the given Keras layers: op index -> its output tensors' names. An op is
    named by its output tensor, but the layer that writes the graph's output gets the signature's
    name (``StatefulPartitionedCall_1:0``, no layer path; ``...:01`` in front of an int8 output's
    QUANTIZE), so such an op is named by its constant inputs instead (``lite0_1/predictions_1/MatMul``)."""
    from edgeeff.model import blockmap

    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the interpreter's own op table; no public equivalent
    produced = {i for op in ops for i in op["outputs"]}
    out = {}
    for op in ops:
        tensors = list(op["outputs"])
        if not any("/" in names.get(i, "") for i in tensors):
            tensors = [i for i in op["inputs"] if i >= 0 and i not in produced]
        if any(blockmap.layer_in_name(names[i], layers) for i in tensors if i in names):
            out[op["index"]] = [names[i] for i in op["outputs"]]
    return out


def _selectively_quantized(tf, converter, saved_model: Path, blocks: list[str], layers: set[str], calibration) -> bytes:
    """Full-integer except the given Keras blocks: the converter's quantization debugger with a
    deny-list of those blocks' ops (TFLite's own selective quantization), int8 input/output kept.
    The deny-list names come from the float model's tensors, which keep the Keras layer names. With
    the classifier in float its logits are still written as int8; read before that rounding they
    answered the same (measured, Lite1: the same 12 of 397 top-1 answers differ from fp32).
    """
    from edgeeff.calibration.adapters import tflite_representative_dataset

    module, _ = tflite_module()
    interp = module.Interpreter(model_content=tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert())
    deny = sorted({name for outputs in _ops_of(interp, layers).values() for name in outputs})
    if not deny:
        raise EdgeeffError(f"no TFLite op belongs to {', '.join(blocks)}: cannot keep them in float")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=tflite_representative_dataset(calibration, None),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny, fully_quantize=True))
    return debugger.get_nondebug_quantized_model()


def float_ops(path: Path, kept_layers: set[str] | None = None) -> list[str]:
    """Ops that still compute in float (by their output tensors' dtype): empty means full-integer.
    With ``kept_layers`` (the Keras layers of blocks kept in float on purpose) only the others: ops
    of those layers, and the DEQUANTIZE ops at their borders, are what was asked for."""
    module, _ = tflite_module()
    with native_stderr_muted():
        interp = module.Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    owned = _ops_of(interp, kept_layers) if kept_layers else {}
    floats = []
    for op in interp._get_ops_details():
        if any(tensors[i]["dtype"] in (np.float32, np.float16) for i in op["outputs"] if i in tensors):
            if kept_layers and (op["op_name"] == "DEQUANTIZE" or op["index"] in owned):
                continue
            floats.append(f"{op['op_name']}#{op['index']}")
    return floats
