"""ONNX: tf2onnx from the Keras model (explicit input signature, opset 17), static QDQ int8 through
onnxruntime.quantization, run under onnxruntime."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from edgeeff.errors import EdgeeffError
from edgeeff.kit.core import ArrayRunner, RunnerError, native_stderr_captured, native_stderr_muted, np  # None without numpy: the kit's probe still loads this module
from edgeeff.targets.base import OPTIONS, TargetSpec, versions

OPSET = 17
INPUT_NAME = "image"
# activation+weight integer types. u8s8 saturates on x86 CPUs without VNNI (the AVX2 kernel sums
# two u8*s8 products in int16); s8s8 and u8u8 use kernels that do not. "-reduced" keeps 7-bit weights.
TYPES = {
    "s8s8": ("QInt8", "QInt8", False),
    "u8s8": ("QUInt8", "QInt8", False),
    "u8u8": ("QUInt8", "QUInt8", False),
    "u8s8-reduced": ("QUInt8", "QInt8", True),
}
# Which types a conversion uses is the int8 recipe's choice for the CPU it is for (edgeeff.quant.recipes:
# u8s8-reduced where int8 pairs saturate in int16, s8s8 with VNNI, AMX or ARM dot products); this
# is only the fallback of a direct export() call without options, the setting safe on every CPU.
DEFAULT_TYPES = "u8s8-reduced"


def to_onnx(model, dest: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    res = model.input_shape[1]
    spec = (tf.TensorSpec((None, res, res, 3), tf.float32, name=INPUT_NAME),)
    fn = tf.function(lambda x: model(x, training=False))
    try:
        tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET, output_path=str(dest))
    except Exception as exc:
        raise EdgeeffError(f"tf2onnx conversion failed: {str(exc).splitlines()[0][:200]}") from None


def is_preprocessing_node(name: str) -> bool:
    """Whether an ONNX node (or a profiler event named after one) belongs to the in-graph
    preprocessing: tf2onnx keeps the Keras layer's name in the node's scope."""
    from edgeeff.model.builder import PREPROCESS_LAYER

    return f"/{PREPROCESS_LAYER}" in name or name.startswith(PREPROCESS_LAYER)


def fast_preprocessing(path: Path, channels_first: bool = True) -> str | None:
    """Rewrite the in-graph preprocessing (``x * 1/std - mean/std``) into a form onnxruntime runs
    fast. It broadcasts a per-channel vector along NHWC's innermost axis three floats at a time:
    measured on Lite1's 240x240 input, that Mul and Add took 1.8 ms of the int8 model's 12.8 ms.
    A uniform mean and std (Lite's 127/128, V2-S/M/L's 128/128) become scalars, fast in any layout
    and in int8 graphs too. Per-channel ones (B0's ImageNet card) move behind tf2onnx's NHWC->NCHW
    transpose of the input, where the vector runs along an outer axis; that helps fp32 only, since in
    an int8 graph onnxruntime moves the transpose back to feed its NHWC int8 convolutions (profiled),
    so int8 exports pass ``channels_first=False`` (``benchmarks/onnx_preprocessing.py``). The
    arithmetic is unchanged: outputs are bit-identical. Returns what was done ("scalar",
    "channels-first"), or None where nothing was."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    nodes = list(graph.node)
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    inits = {i.name: i for i in graph.initializer}

    def only_consumer(name):
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and name not in outputs else None

    mul = only_consumer(graph.input[0].name)
    add = mul and mul.op_type == "Mul" and is_preprocessing_node(mul.name) and only_consumer(mul.output[0])
    if not (add and add.op_type == "Add" and mul.input[1] in inits and add.input[1] in inits):
        return None
    consts = [numpy_helper.to_array(inits[node.input[1]]) for node in (mul, add)]
    if any(c.ndim > 1 for c in consts):
        return None
    if all(c.size and np.all(c == c.flat[0]) for c in consts):
        for node, const in zip((mul, add), consts):
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.array(const.flat[0], dtype=const.dtype), node.input[1]))
        done = "scalar"
    elif not channels_first:
        return None
    else:
        transpose = only_consumer(add.output[0])
        perm = transpose and transpose.op_type == "Transpose" and [list(a.ints) for a in transpose.attribute if a.name == "perm"]
        if perm != [[0, 3, 1, 2]]:
            return None
        for node, const in zip((mul, add), consts):
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.reshape(const, (1, -1, 1, 1)), node.input[1]))
        raw, moved = graph.input[0].name, transpose.output[0]
        transpose.input[0], transpose.output[0] = raw, f"{raw}_nchw"
        mul.input[0] = transpose.output[0]
        add.output[0] = moved
        del graph.node[:]
        graph.node.extend([transpose, mul, add] + [n for n in nodes if n not in (transpose, mul, add)])
        done = "channels-first"
    onnx.save(model, str(path))
    return done


def preprocessing_nodes(path: Path) -> list[str]:
    """The in-graph preprocessing (x * 1/std - mean/std on the full-resolution input) stays in float:
    quantized, onnxruntime runs it as a slow broadcasting QLinearMul/QLinearAdd (a fifth of the int8
    model's time, measured) and rounds the normalised pixels; in float it is exact and cheap."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if is_preprocessing_node(n.name)]


def block_node_names(model, path: Path, blocks: list[str]) -> list[str]:
    """ONNX nodes of the given Keras blocks, for quantize_static's ``nodes_to_exclude``. Nodes that
    keep a Keras layer name are matched by name; convolutions and matmuls by their weights
    (``blockmap.match_weighted_ops``), because tf2onnx renames a convolution it fuses with its batch
    norm (``Conv__330``). Matching those by name alone left the stem's and every 1x1 convolution
    quantized while their activations went float: a quantize step on the wide pre-activation range,
    which made "stem in float" 6.9 dB worse than plain int8."""
    import onnx
    from onnx import numpy_helper

    from edgeeff.model import blockmap

    layers = blockmap.layers_of(model, blockmap.check_units(model, blocks))
    graph = onnx.load(str(path)).graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].t.dims})

    def kernel(node):
        """The constant kernel with output channels first: Conv (O, I/g, kH, kW); MatMul (I, O);
        Gemm (O, I) with transB, else (I, O)."""
        w = values.get(node.input[1])
        if w is None or node.op_type == "Conv":
            return w
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return w if node.op_type == "Gemm" and trans_b else w.reshape(-1, w.shape[-1]).T

    weighted = [n for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in values]
    mapping = blockmap.match_weighted_ops(model, weighted, kernel, name_of=lambda n: n.name)
    chosen = {op for name, ops in mapping.items() if name in layers for op in ops}
    names = [n.name for n in graph.node if n.name in chosen or blockmap.layer_in_name(n.name, layers)]
    if not names:
        raise EdgeeffError(f"no ONNX node belongs to {', '.join(blocks)}: cannot keep them in float")
    return names


def export(model, spec: TargetSpec, dest: Path, calibration=None, options: dict | None = None, saved_model: Path | None = None,
           progress=None) -> dict:
    options = options or {}
    if spec.precision == "fp32":
        to_onnx(model, dest)
        return {"opset": OPSET, "preprocessing_graph": fast_preprocessing(dest), "converter": versions("tf2onnx", "onnx"),
                "runtime": versions("onnxruntime|onnxruntime-gpu")}
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeeff.calibration.adapters import ort_reader

    method = options.get("calibration_method") or "minmax"
    OPTIONS["calibration_method"].check(method)
    types = options.get("quant_types") or DEFAULT_TYPES
    OPTIONS["quant_types"].check(types)
    activation, weight, reduce_range = TYPES[types]
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        pre = Path(tmp) / "pre.onnx"
        to_onnx(model, fp32)
        rewritten = fast_preprocessing(fp32, channels_first=False)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        float_nodes = preprocessing_nodes(pre)
        blocks = options.get("float_blocks") or []
        block_nodes = block_node_names(model, pre, blocks) if blocks else []
        quantize_static(
            str(pre),
            str(dest),
            ort_reader(calibration, INPUT_NAME, progress),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=getattr(QuantType, activation),
            weight_type=getattr(QuantType, weight),
            reduce_range=reduce_range,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            nodes_to_exclude=float_nodes + block_nodes,
            extra_options={"CalibMovingAverage": False},
        )
    return {
        "opset": OPSET,
        "quant_format": "QDQ",
        "quant_types": types,
        "float_nodes": float_nodes,
        "preprocessing_graph": rewritten,
        "float_blocks": blocks,
        "float_block_nodes": len(block_nodes),
        "activations": f"{activation} (asymmetric)",
        "weights": f"{weight} per-channel" + (" (7-bit range)" if reduce_range else ""),
        "calibration_method": method,
        "converter": versions("tf2onnx", "onnx"),
        "runtime": versions("onnxruntime|onnxruntime-gpu"),
    }


# --------------------------------------------------------------------------- running (shipped in the kit)

RUNTIME_PIP = "onnxruntime"

# What each accelerator name asks of onnxruntime: execution providers, in order.
ACCELERATORS = {
    "cpu": ["CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider"],
    "npu": ["QNNExecutionProvider"],
    "cuda": ["CUDAExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    "openvino-ep": ["OpenVINOExecutionProvider"],
    "qnn": ["QNNExecutionProvider"],
    "coreml": ["CoreMLExecutionProvider"],
    "directml": ["DmlExecutionProvider"],
}

# Which pip package brings an onnxruntime execution provider.
PROVIDER_PACKAGES = {
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu (and TensorRT)",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "QNNExecutionProvider": "onnxruntime-qnn",
    "DmlExecutionProvider": "onnxruntime-directml",
    "CoreMLExecutionProvider": "onnxruntime (macOS build)",
}

# What an execution provider needs besides the wheel, for the line that explains a failed start.
PROVIDER_NEEDS = {
    "CUDAExecutionProvider": "onnxruntime-gpu needs the CUDA and cuDNN versions it was built for "
                             "(pip install 'onnxruntime-gpu[cuda,cudnn]', or those libraries on LD_LIBRARY_PATH) and an NVIDIA driver",
    "TensorrtExecutionProvider": "it needs TensorRT's libraries (pip install tensorrt, or libnvinfer on LD_LIBRARY_PATH) besides CUDA",
}


def provider_failure(log: list[str]) -> str:
    """The cause onnxruntime logged for a provider it could not start, as ": cause", or ""."""
    for line in log:
        if line.startswith("EP Error"):
            return ": " + line.rsplit(") ", 1)[-1].strip()[:200]
    for line in log:
        if "with error:" in line:
            return ": " + line.split("with error:", 1)[1].strip()[:200]
    for line in log:
        if "Failed to create" in line or "ExecutionProvider" in line:
            return ": " + re.sub(r"\x1b\[[0-9;]*m", "", line).split("]", 1)[-1].strip()[:200]
    return ""


def _preload_cuda_libraries(ort) -> None:
    """onnxruntime-gpu's own loader for CUDA/cuDNN from pip's nvidia-* wheels (what
    ``pip install 'onnxruntime-gpu[cuda,cudnn]'`` installs but the system loader cannot see). It
    prints its warnings, so stdout, which carries the kit's replies, is kept clean."""
    try:
        with contextlib.redirect_stdout(sys.stderr), native_stderr_muted():
            ort.preload_dlls()
    except Exception:  # a failed preload shows up as the provider failing to start, with its cause
        pass


class OnnxRunner(ArrayRunner):
    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerError("no ONNX runtime: pip install onnxruntime") from None
        path = Path(path)
        wanted = list(providers or ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        absent = [p for p in wanted if p not in available]
        if absent:
            raise RunnerError(f"onnxruntime here has no {absent[0]} (available: {', '.join(available)}): "
                              f"pip install {PROVIDER_PACKAGES.get(absent[0], 'an onnxruntime build with it')}")
        if "CPUExecutionProvider" not in wanted:
            wanted.append("CPUExecutionProvider")  # fallback for nodes the accelerator cannot take; reported below
        self.requested = wanted

        def options(profile: bool = False):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads or os.cpu_count() or 1
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if profile:
                opts.enable_profiling = True
                opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="edgeeff-ortprof-"), "p")
            return opts

        self._options = options
        self._path = path
        accelerated = [p for p in wanted if p != "CPUExecutionProvider"]
        if accelerated and hasattr(ort, "preload_dlls"):
            _preload_cuda_libraries(ort)
        try:
            printed = io.StringIO()  # its Python side prints "EP Error ... Falling back" on stdout, the kit's reply channel
            with native_stderr_captured() as log, contextlib.redirect_stdout(printed):
                self.session = ort.InferenceSession(str(path), options(), providers=wanted)
            log[:0] = printed.getvalue().splitlines()
        except Exception as exc:
            raise RunnerError(f"cannot load {path.name} as an ONNX model: {str(exc).splitlines()[0][:160]}") from None
        lost = [p for p in accelerated if p not in self.session.get_providers()]
        if lost:  # onnxruntime logs the cause and runs on the CPU instead: never measure that as the GPU
            raise RunnerError(f"onnxruntime could not start {lost[0]}{provider_failure(log)}; "
                              f"{PROVIDER_NEEDS.get(lost[0], 'see the provider requirements of this onnxruntime build')}")
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]
        self._placement: dict | None = None

    def invoke(self, prepared):
        return self.session.run([self.output.name], {self.input.name: prepared})[0]

    def node_placement(self) -> dict:
        """Nodes per execution provider, read from onnxruntime's own profile of one run in a second
        session, so a fallback to the CPU is counted, never silent."""
        if self._placement is None:
            import onnxruntime as ort

            session = ort.InferenceSession(str(self._path), self._options(profile=True), providers=self.requested)
            shape = [d if isinstance(d, int) else 1 for d in self.input.shape]
            session.run(None, {self.input.name: np.zeros(shape, dtype=np.float32)})
            profile = Path(session.end_profiling())
            counts: dict[str, int] = {}
            for event in json.loads(profile.read_text()):
                args = event.get("args", {})
                if event.get("cat") == "Node" and "provider" in args and event.get("name", "").endswith("_kernel_time"):
                    counts[args["provider"]] = counts.get(args["provider"], 0) + 1
            shutil.rmtree(profile.parent, ignore_errors=True)
            self._placement = counts
        return self._placement

    def describe(self) -> dict:
        row = {
            "runtime": "onnxruntime",
            "providers": self.session.get_providers(),
            "input": {"name": self.input.name, "shape": list(self.input.shape), "dtype": self.input.type},
            "output": {"name": self.output.name, "shape": list(self.output.shape), "dtype": self.output.type},
        }
        if self.requested != ["CPUExecutionProvider"]:
            row["nodes_by_provider"] = self.node_placement()
            row["executed_on"] = ", ".join(f"{p.replace('ExecutionProvider', '')}:{n}" for p, n in row["nodes_by_provider"].items())
        else:
            row["executed_on"] = row["providers"][0].replace("ExecutionProvider", "")
        return row


def open_runner(path, threads, setting, precision, prefer, batch) -> ArrayRunner:
    return OnnxRunner(path, threads, providers=setting)


def companion_files(path: Path) -> list[Path]:
    """Files a model file needs beside it (none: edgeeff's ONNX files keep their weights inside)."""
    return []


def graph_is_int8(path: Path) -> bool:
    """A QDQ (or QLinear) graph with float input: an int8 model that says so only in its nodes."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return False
    return any(node.op_type in ("QuantizeLinear", "QLinearConv", "DequantizeLinear") for node in graph.node)
