"""Blocks of the network by their Keras names, and the way back from a backend's node names.

edgeeff owns the model definition, so every layer has a Keras Applications name
(``block4b_expand_conv``, ``block4b_se_reduce``, ``top_conv``). A *unit* is what a user reasons
about: ``stem``, each MBConv/Fused-MBConv block (``block4b``), its squeeze-excitation part
(``block4b_se``, where the family has SE) and ``head``; in a detector (``edgeeff.model.efficientdet``)
also the extra levels' resampling (``resample_p6``), each BiFPN cell (``bifpn0``) and the two heads
(``class_net``, ``box_net``). The preprocessing layer is never a unit: it always stays in float.
Backends keep the Keras layer name inside their node names
(``lite0_1/block4b_expand_conv_1/convolution`` in TFLite), but not always: tf2onnx names the
convolutions it fuses with their batch norm ``Conv__330``, and OpenVINO's TF frontend drops every
name, so weighted ops are matched by their weights (:func:`match_weighted_ops`) and only the other
nodes by name.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Sequence

from edgeeff.errors import EdgeeffError

if TYPE_CHECKING:
    import numpy as np

_BLOCK = re.compile(r"^(block\d+[a-z])(_se)?_")
_HEAD = ("top_", "avg_pool", "predictions", "head_")
_DETECTOR = re.compile(r"^(resample_p\d+|bifpn\d+|class_net|box_net)_")
_SUFFIX = re.compile(r"_\d+$")


def unit_of(layer: str) -> str | None:
    if layer.startswith("stem_"):
        return "stem"
    match = _BLOCK.match(layer)
    if match:
        return match.group(1) + (match.group(2) or "")
    if layer.startswith(_HEAD):
        return "head"
    match = _DETECTOR.match(layer)
    return match.group(1) if match else None


def units(model) -> list[str]:
    """Units in network order (stem, block1a, [block1a_se,] ..., head)."""
    seen: list[str] = []
    for layer in model.layers:
        unit = unit_of(layer.name)
        if unit and unit not in seen:
            seen.append(unit)
    return seen


def unit_macs(model) -> dict[str, int]:
    """Multiply-adds of each unit (a block with its SE part): the cost proxy for keeping it in float."""
    from edgeeff.model.flops import macs_by_layer

    out = {unit: 0 for unit in units(model)}
    for name, macs in macs_by_layer(model).items():
        unit = unit_of(name)
        if unit:
            out[unit.removesuffix("_se")] += macs
    return out


def layer_macs(model) -> dict[str, list[tuple[str, int]]]:
    """Each block's weighted layers (as units: :func:`layer_groups`) with their multiply-adds, cheapest
    first: the narrower fallbacks the budget search tries in place of a whole float block."""
    from edgeeff.model.flops import macs_by_layer

    macs = macs_by_layer(model)
    out: dict[str, list[tuple[str, int]]] = {}
    for name in layer_groups(model):
        out.setdefault(unit_of(name).removesuffix("_se"), []).append((name, macs[name]))
    return {block: sorted(layers, key=lambda item: item[1]) for block, layers in out.items()}


def check_units(model, chosen: Iterable[str]) -> list[str]:
    """The chosen units, checked against the model. ``-blockX_se`` takes a block's SE part back out
    (``block4a,-block4a_se``: the block in float but its SE int8), the set that quantizing the SE
    part alone needs, since a block otherwise includes its SE part. A weighted layer's own name
    (``block1a_dwconv``) is a unit too: that convolution with its batch norm and activation, a
    cheaper fallback than its whole block."""
    known = units(model)
    chosen = list(dict.fromkeys(chosen))
    unknown = [u for u in chosen if u.removeprefix("-") not in known]
    if unknown:
        convolutions = layer_groups(model)
        unknown = [u for u in unknown if u not in convolutions]
    if unknown:
        raise EdgeeffError(f"unknown block(s) {', '.join(unknown)}; this model has: {', '.join(known)} "
                           "(or a convolution of a block by its layer name, such as block1a_dwconv)")
    wrong = [u for u in chosen if u.startswith("-") and not u.endswith("_se")]
    if wrong:
        raise EdgeeffError(f"only a squeeze-excitation part can be taken out of a block (-blockX_se), not {', '.join(wrong)}")
    return chosen


def layer_groups(model) -> dict[str, list[str]]:
    """Each weighted layer of a unit with the unweighted layers it feeds inside the same unit (its
    batch norm, activation, pooling): what keeping that one convolution in float means. Read from the
    graph, not the layer list: a layer whose inputs come from several weighted layers (a residual
    add, the SE gate's multiply, a BiFPN fusion) goes with the latest of them, and a detector head's
    shared convolution collects its batch norm of every level, which the layer list interleaves with
    the other head's layers."""
    in_order = [name for name, _ in weighted_layers(model)]
    weighted = set(in_order)
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    nearest: dict[str, set[str]] = {}  # unweighted layer -> the weighted layers just upstream of it
    # in network order, so convolutions of equal cost are tried in the same order in every process
    groups: dict[str, list[str]] = {name: [name] for name in in_order if unit_of(name)}
    for layer in model.layers:
        parents = {parent.operation.name for node in layer._inbound_nodes for parent in node.parent_nodes}
        if layer.name in weighted:
            continue
        nearest[layer.name] = set().union(*({p} if p in weighted else nearest.get(p, set()) for p in parents)) if parents else set()
        unit = unit_of(layer.name)
        if unit and nearest[layer.name]:
            owner = max(nearest[layer.name], key=position.__getitem__)
            if owner in groups and unit.removesuffix("_se") == unit_of(owner).removesuffix("_se"):
                groups[owner].append(layer.name)
    return groups


def layers_of(model, chosen: Iterable[str]) -> set[str]:
    """Keras layer names inside the chosen units; a block includes its SE part unless ``-blockX_se``
    is chosen too; a weighted layer's name brings its group (:func:`layer_groups`)."""
    chosen = set(chosen)
    out = set()
    for layer in model.layers:
        unit = unit_of(layer.name)
        if unit and f"-{unit}" not in chosen and (unit in chosen or unit.removesuffix("_se") in chosen):
            out.add(layer.name)
    known = set(units(model))
    groups = layer_groups(model) if any(u.removeprefix("-") not in known for u in chosen) else {}
    for name in chosen:
        out.update(groups.get(name, []))
    return out


def layer_in_name(node_name: str, layer_names: set[str]) -> str | None:
    """The Keras layer a backend node or tensor belongs to: a path component of its name, less the
    ``_1`` suffix that Keras 3's export adds (``lite0_1/block4b_dwconv_1/depthwise``)."""
    for name in node_name.split(";"):
        for part in name.split("/"):
            for candidate in (part, _SUFFIX.sub("", part)):
                if candidate in layer_names:
                    return candidate
    return None


def weighted_layers(model) -> list[tuple[str, int]]:
    """(name, output channels) of the layers that carry weights, in network order."""
    return [(layer.name, int(layer.kernel.shape[-1]) * (int(layer.kernel.shape[-2]) if _is_depthwise(layer) else 1))
            for layer in _weighted(model)]


def _weighted(model) -> list:
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


def _is_depthwise(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.DepthwiseConv2D)


def kernel_fingerprint(per_channel) -> "np.ndarray":
    """A kernel as (output channels, n): each channel's |weights| sorted and divided by the largest.
    The same in every backend: sorting forgets the layout a converter chose (OIHW, HWIO) and the
    division the per-channel scale that folding a batch norm into the convolution multiplies in."""
    import numpy as np

    rows = np.sort(np.abs(np.asarray(per_channel, np.float64).reshape(len(per_channel), -1)), axis=1)
    return rows / np.maximum(rows[:, -1:], 1e-30)


def match_weighted_ops(model, ops: Sequence, kernel_of, name_of) -> dict[str, list[str]]:
    """Keras weighted layer name -> its backend ops, matched by weights. ``kernel_of(op)`` gives an
    op's constant kernel with output channels first (or None). Order cannot match them: a BiFPN's
    parallel branches and a detector's two heads have no one topological order, and a head's
    convolution shared by five feature levels is one Keras layer but five ops. Each op goes to the
    Keras layer of the same kernel shape whose :func:`kernel_fingerprint` is nearest; every layer
    must then have one op per call."""
    import numpy as np

    layers = _weighted(model)
    prints = {layer.name: kernel_fingerprint(np.asarray(layer.kernel).reshape(-1, channels).T)
              for layer, (_, channels) in zip(layers, weighted_layers(model))}
    by_shape: dict[tuple, list[str]] = {}
    for name, fingerprint in prints.items():
        by_shape.setdefault(fingerprint.shape, []).append(name)
    mapping: dict[str, list[str]] = {name: [] for name in prints}
    for op in ops:
        kernel = kernel_of(op)
        fingerprint = kernel_fingerprint(kernel) if kernel is not None else None
        candidates = by_shape.get(getattr(fingerprint, "shape", None), [])
        if not candidates:
            raise EdgeeffError(f"cannot map blocks onto this graph: backend op {name_of(op)} matches no Keras layer's kernel")
        distances = sorted((float(np.abs(prints[name] - fingerprint).mean()), name) for name in candidates)
        if len(distances) > 1 and distances[1][0] - distances[0][0] < 1e-12:
            raise EdgeeffError(f"cannot map blocks onto this graph: {distances[0][1]} and {distances[1][1]} have the same weights "
                               "(untrained or zero kernels?), so their backend ops cannot be told apart")
        mapping[distances[0][1]].append(name_of(op))
    for layer in layers:
        if len(mapping[layer.name]) != len(layer._inbound_nodes):
            raise EdgeeffError(f"cannot map blocks onto this graph: {layer.name} is applied {len(layer._inbound_nodes)} time(s), "
                               f"{len(mapping[layer.name])} backend op(s) carry its weights")
    return mapping
