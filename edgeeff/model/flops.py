"""Multiply-adds and parameters, computed from a built Keras model (never typed in).

Convention (the EfficientNet papers'): one multiply-add per weight per output position for
convolutions, depthwise convolutions and dense layers; batch norm, activations, pooling and
element-wise ops are not counted (they are folded or negligible at inference).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def _spatial(shape) -> int:
    return int(math.prod(int(d) for d in shape[1:-1])) if len(shape) > 2 else 1


def macs_by_layer(model: "keras.Model") -> dict[str, int]:
    """Multiply-adds of each weighted layer, by Keras layer name, over every call: a detector head's
    convolution runs on each of five feature levels."""
    import keras

    out = {}
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            positions = sum(_spatial(node.output_tensors[0].shape) for node in layer._inbound_nodes)
            out[layer.name] = positions * math.prod(int(d) for d in layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            out[layer.name] = int(cin) * int(cout) * len(layer._inbound_nodes)
    return {name: int(n) for name, n in out.items()}


def count_macs(model: "keras.Model") -> int:
    return int(sum(macs_by_layer(model).values()))


def count_params(model: "keras.Model") -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(math.prod(w.shape)) for w in model.weights)
    return total, trainable
