"""Blocks of the network by their Keras names, and the way back from a backend's node names.

edgeeff owns the model definition, so every layer has a Keras Applications name
(``block4b_expand_conv``, ``block4b_se_reduce``, ``top_conv``). A *unit* is what a user reasons
about: ``stem``, each MBConv/Fused-MBConv block (``block4b``), its squeeze-excitation part
(``block4b_se``, where the family has SE) and ``head``. The preprocessing layer is never a unit: it
always stays in float. Backends keep the Keras layer name inside their node names
(``lite0_1/block4b_expand_conv_1/convolution`` in TFLite), but not always: tf2onnx names the
convolutions it fuses with their batch norm ``Conv__330``, and OpenVINO's TF frontend drops every
name, so weighted ops are matched by structure (:func:`match_weighted_ops`) and only the other
nodes by name.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from edgeeff.errors import EdgeeffError

_BLOCK = re.compile(r"^(block\d+[a-z])(_se)?_")
_HEAD = ("top_", "avg_pool", "predictions", "head_")
_SUFFIX = re.compile(r"_\d+$")


def unit_of(layer: str) -> str | None:
    if layer.startswith("stem_"):
        return "stem"
    match = _BLOCK.match(layer)
    if match:
        return match.group(1) + (match.group(2) or "")
    if layer.startswith(_HEAD):
        return "head"
    return None


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
    """Each weighted layer of a unit with the unweighted layers that follow it inside the same unit
    (its batch norm, activation, pooling): what keeping that one convolution in float means."""
    weighted = {name for name, _ in weighted_layers(model)}
    groups: dict[str, list[str]] = {}
    current = None
    for layer in model.layers:
        unit = unit_of(layer.name)
        if layer.name in weighted:
            current = layer.name if unit else None
            if current:
                groups[current] = [current]
        elif current and unit and unit.removesuffix("_se") == unit_of(current).removesuffix("_se"):
            groups[current].append(layer.name)
        else:
            current = None
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
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return [(layer.name, int(layer.output.shape[-1])) for layer in model.layers if isinstance(layer, kinds)]


def match_weighted_ops(model, ops: Sequence, channels_of, name_of) -> dict[str, str]:
    """Keras weighted layer name -> backend op name, by order and checked by output channels. The
    backend's ops must be its convolutions and matmuls in topological order."""
    layers = weighted_layers(model)
    if len(layers) != len(ops):
        raise EdgeeffError(f"cannot map blocks onto this graph: {len(layers)} Keras weighted layers, {len(ops)} backend ops")
    mapping = {}
    for (name, channels), op in zip(layers, ops):
        if channels_of(op) not in (channels, None):
            raise EdgeeffError(f"cannot map blocks onto this graph: {name} has {channels} channels, its match {channels_of(op)}")
        mapping[name] = name_of(op)
    return mapping
