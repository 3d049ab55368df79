"""ONNX: tf2onnx from the Keras model (explicit input signature, opset 17), static QDQ int8 through
onnxruntime.quantization, run under onnxruntime."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeeff.errors import EdgeeffError
from edgeeff.targets.base import TargetSpec, versions

OPSET = 17
INPUT_NAME = "image"
METHODS = ("minmax", "entropy", "percentile")
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
# Part of every ONNX artifact's content key (``convert._content_key``): raised when the exported
# graph changes for the same inputs, so an artifact cached from an older graph is converted again.
# 2: the preprocessing's constants as scalars, or behind the input's transpose (fast_preprocessing).
GRAPH_REVISION = 2


def _to_onnx(model, dest: Path) -> None:
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
    keep a Keras layer name are matched by name; convolutions and matmuls by order and output
    channels, because tf2onnx renames a convolution it fuses with its batch norm (``Conv__330``).
    Matching those by name alone left the stem's and every 1x1 convolution quantized while their
    activations went float: a quantize step on the wide pre-activation range, which made "stem in
    float" 6.9 dB worse than plain int8."""
    import onnx

    from edgeeff.model import blockmap

    layers = blockmap.layers_of(model, blockmap.check_units(model, blocks))
    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    shapes.update({n.output[0]: tuple(n.attribute[0].t.dims) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].t.dims})

    def channels(node):
        dims = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if not dims:
            return None
        if node.op_type == "Conv":
            return dims[0]
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return dims[0] if node.op_type == "Gemm" and trans_b else dims[-1]

    weighted = [n for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in shapes]
    mapping = blockmap.match_weighted_ops(model, weighted, channels, name_of=lambda n: n.name)
    chosen = {mapping[name] for name in mapping if name in layers}
    names = [n.name for n in graph.node if n.name in chosen or blockmap.layer_in_name(n.name, layers)]
    if not names:
        raise EdgeeffError(f"no ONNX node belongs to {', '.join(blocks)}: cannot keep them in float")
    return names


def export(model, spec: TargetSpec, dest: Path, calibration=None, options: dict | None = None, saved_model: Path | None = None,
           progress=None) -> dict:
    options = options or {}
    if spec.precision == "fp32":
        _to_onnx(model, dest)
        return {"opset": OPSET, "preprocessing_graph": fast_preprocessing(dest), "converter": versions("tf2onnx", "onnx"),
                "runtime": versions("onnxruntime|onnxruntime-gpu")}
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeeff.calibration.adapters import ort_reader

    method = options.get("calibration_method") or "minmax"
    if method not in METHODS:
        raise EdgeeffError(f"--calibration-method must be one of {', '.join(METHODS)}, got {method!r}")
    types = options.get("quant_types") or DEFAULT_TYPES
    if types not in TYPES:
        raise EdgeeffError(f"--quant-types must be one of {', '.join(TYPES)}, got {types!r}")
    activation, weight, reduce_range = TYPES[types]
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        pre = Path(tmp) / "pre.onnx"
        _to_onnx(model, fp32)
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
