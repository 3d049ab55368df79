"""EfficientDet as one Keras functional model, built on the classifier builder's backbone.

The backbone is :func:`edgeeff.model.builder.build_model` for the row's backbone variant at the
detector's input size, so preprocessing (the ``preprocess`` Rescaling layer: raw 0-255 RGB in) and
every backbone layer name are the classifier's. Its C3-C5 features are found by the block map: the
last block whose output sits at each level's stride, as the reference's "reduction" endpoints. The
classifier's head (``top_conv``...) is simply not on the path to the detector's outputs, so the
functional model leaves it out.

Then, as google/automl ``efficientdet/tf2/efficientdet_keras.py``:

* P6 = max-pool(BN(conv1x1(C5))), P7 = max-pool(P6) (3x3, stride 2, "same");
* ``fpn_depth`` BiFPN cells: a top-down then a bottom-up path; each node resamples its inputs to its
  level (a 1x1 conv + BN when the channels differ, max-pool down, nearest up), fuses them (fast
  normalised weights, or a plain sum), then activation -> separable 3x3 conv -> BN;
* class and box nets: ``head_depth`` separable 3x3 convs shared by all levels with a batch norm per
  level, then a shared separable prediction conv.

Separable convolutions are written as a DepthwiseConv2D + 1x1 Conv2D pair: the same parameters and
arithmetic as Keras' SeparableConv2D (which is what the converters split it into anyway), and the
kinds of layer :mod:`edgeeff.model.flops` and the block map already count.

Outputs are raw: ``class_logits`` (N, anchors, num_classes) before the sigmoid and
``box_regressions`` (N, anchors, 4) as (ty, tx, th, tw) before decoding; anchors are ordered level,
then row, column, then (scale, aspect ratio), the order of :func:`edgeeff.model.postprocess.anchors`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from edgeeff.errors import WeightsError
from edgeeff.model import blockmap
from edgeeff.model.detectors import Detector, feature_size, get_detector
from edgeeff.model.variants import VARIANTS, with_changes

if TYPE_CHECKING:
    import keras

BN_MOMENTUM, BN_EPSILON = 0.99, 1e-3  # the reference's build_batch_norm defaults
PRIOR_PROBABILITY = 0.01  # class bias starts at -log((1 - p) / p): focal loss's rare-positive prior
BACKBONE_LEVELS = (3, 4, 5)


def backbone_endpoints(model, image_size: int, levels=BACKBONE_LEVELS) -> dict[int, str]:
    """Layer name of each level's backbone feature: the output layer of the last block whose feature
    map is ``image_size`` halved ``level`` times. Found from the block map and the built shapes, so
    any variant's stage table works without restating its strides here."""
    last_layer: dict[str, str] = {}
    for layer in model.layers:
        unit = blockmap.unit_of(layer.name)
        if unit and unit.startswith("block") and not unit.endswith("_se"):
            last_layer[unit] = layer.name  # layers are in graph order: the block's output comes last
    by_size = {feature_size(image_size, level): level for level in levels}
    found: dict[int, str] = {}
    for name in last_layer.values():
        level = by_size.get(int(model.get_layer(name).output.shape[1]))
        if level is not None:
            found[level] = name  # a later block at the same stride replaces an earlier one
    missing = [level for level in levels if level not in found]
    if missing:
        raise ValueError(f"backbone {model.name} has no block at level(s) {missing} for {image_size} px")
    return found


class _Net:
    """Layer factory for one detector row: activation, batch norm, separable conv, resampling."""

    def __init__(self, row: Detector):
        import keras

        self.k = keras
        self.row = row

    def bn(self, x, name):
        return self.k.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)

    def act(self, x, name):
        return self.k.layers.Activation(self.row.activation, name=name)(x)

    def separable(self, filters, name, bias_initializer="zeros"):
        """(depthwise 3x3, pointwise 1x1 with bias): a pair of layers, callable on several levels."""
        layers = self.k.layers
        dw = layers.DepthwiseConv2D(3, padding="same", use_bias=False, depthwise_initializer="variance_scaling", name=name + "_dw")
        pw = layers.Conv2D(filters, 1, kernel_initializer="variance_scaling", bias_initializer=bias_initializer, name=name + "_pw")
        return lambda x: pw(dw(x))

    def resample(self, x, target: int, name: str):
        """Bring ``x`` to the fpn width (1x1 conv + BN when needed) and to a ``target`` x ``target`` map."""
        layers = self.k.layers
        if int(x.shape[-1]) != self.row.fpn_width:
            x = layers.Conv2D(self.row.fpn_width, 1, padding="same", name=name + "_conv")(x)
            x = self.bn(x, name + "_bn")
        size = int(x.shape[1])
        if size > target:
            stride = (size - 1) // target + 1
            x = layers.MaxPooling2D(stride + 1, strides=stride, padding="same", name=name + "_pool")(x)
        elif size < target:
            # Nearest neighbour as TF1's resize_nearest_neighbor (no half-pixel centres): repeat each
            # pixel, then crop, which for the odd sizes of 320 and 448 px inputs (3 -> 5, 4 -> 7) picks
            # the same source pixels that resize does.
            factor = -(-target // size)
            x = layers.UpSampling2D(factor, interpolation="nearest", name=name + "_up")(x)
            extra = size * factor - target
            if extra:
                x = layers.Cropping2D(((0, extra), (0, extra)), name=name + "_crop")(x)
        if int(x.shape[1]) != target:
            raise ValueError(f"{name}: resampled to {x.shape[1]}, wanted {target}")
        return x

    def fuse(self, nodes, name):
        if self.row.fusion == "sum":
            return self.k.layers.Add(name=name)(nodes)
        if self.row.fusion == "fastattn":
            from edgeeff.model.fusion import FastNormalizedFusion

            return FastNormalizedFusion(name=name)(nodes)
        raise ValueError(f"unknown fusion {self.row.fusion!r}")


def bifpn_nodes(min_level: int, max_level: int) -> list[tuple[int, tuple[int, ...]]]:
    """The BiFPN graph as data: (level, input node ids) per new node, ids counting P3..P7 from 0 and
    then each new node in order (the reference's ``bifpn_config``). Top-down nodes take the level's
    latest node and the coarser level's; bottom-up nodes take every node of their level and the
    finer level's latest."""
    ids = {level: [i] for i, level in enumerate(range(min_level, max_level + 1))}
    counter = max_level - min_level + 1
    nodes = []
    for level in range(max_level - 1, min_level - 1, -1):
        nodes.append((level, (ids[level][-1], ids[level + 1][-1])))
        ids[level].append(counter)
        counter += 1
    for level in range(min_level + 1, max_level + 1):
        nodes.append((level, (*ids[level], ids[level - 1][-1])))
        ids[level].append(counter)
        counter += 1
    return nodes


def _bifpn_cell(net: _Net, feats: dict[int, object], cell: int) -> dict[int, object]:
    row = net.row
    sizes = row.feature_sizes()
    all_nodes = [feats[level] for level in row.levels]
    latest = {}
    for n, (level, inputs) in enumerate(bifpn_nodes(row.min_level, row.max_level)):
        prefix = f"bifpn{cell}_node{n}"
        resampled = [net.resample(all_nodes[i], sizes[level], f"{prefix}_in{j}") for j, i in enumerate(inputs)]
        x = net.fuse(resampled, prefix + "_fuse")
        x = net.act(x, prefix + "_act")
        x = net.separable(row.fpn_width, prefix + "_conv")(x)
        x = net.bn(x, prefix + "_bn")
        all_nodes.append(x)
        latest[level] = x
    return {level: latest[level] for level in row.levels}


def _head(net: _Net, feats: dict[int, object], name: str, outputs_per_anchor: int, bias_initializer):
    """Shared convolutions over every level with a batch norm per level; returns (N, anchors, k)."""
    row = net.row
    layers = net.k.layers
    convs = [net.separable(row.fpn_width, f"{name}_{i}") for i in range(row.head_depth)]
    predict = net.separable(row.anchors_per_location * outputs_per_anchor, f"{name}_predict", bias_initializer)
    flat = []
    for level in row.levels:
        x = feats[level]
        for i, conv in enumerate(convs):
            x = net.bn(conv(x), f"{name}_{i}_bn_p{level}")
            x = net.act(x, f"{name}_{i}_act_p{level}")
        x = predict(x)
        flat.append(layers.Reshape((-1, outputs_per_anchor), name=f"{name}_flat_p{level}")(x))
    return flat


def build_detector(row: Detector | str, num_classes: int | None = None, weights: str | None = None) -> "keras.Model":
    """Build the detector ``row`` (a :class:`Detector` or its name) as one Keras functional model.

    Input: (N, S, S, 3) RGB pixels in 0-255, S the row's image size; outputs ``class_logits``
    (N, A, num_classes) and ``box_regressions`` (N, A, 4). ``num_classes`` defaults to the row's (90,
    COCO). ``weights``: a Keras weights file saved from the same detector (``model.save_weights``);
    without it the weights are random (no pretrained detector installs from the registries here).
    """
    import keras

    from edgeeff.model.builder import build_model

    row = get_detector(row)
    classes = row.num_classes if num_classes is None else int(num_classes)
    if classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {classes}")
    variant = with_changes(VARIANTS[row.backbone], resolution=row.image_size)
    if variant.family.activation != row.activation:
        raise ValueError(f"{row.name}: activation {row.activation} differs from backbone {row.backbone}'s")
    backbone = build_model(variant, mean=row.mean, std=row.std, include_top=False)
    net = _Net(row)
    endpoints = backbone_endpoints(backbone, row.image_size)
    feats = {level: backbone.get_layer(endpoints[level]).output for level in BACKBONE_LEVELS}
    sizes = row.feature_sizes()
    for level in range(max(BACKBONE_LEVELS) + 1, row.max_level + 1):
        feats[level] = net.resample(feats[level - 1], sizes[level], f"resample_p{level}")

    for cell in range(row.fpn_depth):
        feats = _bifpn_cell(net, feats, cell)

    prior = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    class_levels = _head(net, feats, "class_net", classes, keras.initializers.Constant(prior))
    box_levels = _head(net, feats, "box_net", 4, "zeros")
    class_logits = keras.layers.Concatenate(axis=1, name="class_logits")(class_levels)
    box_regressions = keras.layers.Concatenate(axis=1, name="box_regressions")(box_levels)
    model = keras.Model(backbone.inputs, [class_logits, box_regressions], name=row.name.replace("-", "_"))
    if weights is not None:
        try:
            model.load_weights(weights)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot load detector weights {weights} into {row.name}: {exc}") from None
    return model


# Exported detectors end in one tensor: the box regressions then the class logits of every anchor,
# (N, A, 4 + num_classes). One output keeps every runner, the device kit and the board protocol as
# they are for classifiers (one array out); post-processing (anchors, decoding, NMS) runs after the
# runtime in :class:`edgeeff.model.postprocess.PostProcess`, the numpy reference, timed on its own.
RAW_OUTPUT = "detections"
BOX_COLUMNS = 4


def raw_output_model(model) -> "keras.Model":
    """The detector with its two outputs joined into :data:`RAW_OUTPUT` (same layers, same weights)."""
    import keras

    logits, regressions = model.outputs
    joined = keras.layers.Concatenate(axis=-1, name=RAW_OUTPUT)([regressions, logits])
    return keras.Model(model.inputs, joined, name=model.name)


def split_raw(raw):
    """(class logits (N, A, C), box regressions (N, A, 4)) from a :func:`raw_output_model` output."""
    return raw[..., BOX_COLUMNS:], raw[..., :BOX_COLUMNS]
