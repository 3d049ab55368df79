"""One Keras builder for the whole family: it reads a :class:`~edgeeff.model.variants.Variant` and nothing else.

Layer names are Keras Applications' (``stem_conv``, ``block2b_se_reduce``, ``top_conv``,
``predictions``...), so official weights load by name and per-layer reports point at readable
layers. Preprocessing is one ``Rescaling`` layer (``preprocess``) at the bottom of the graph built
from the weights' preprocessing card, so every exported artifact takes raw RGB pixels in 0-255.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from edgeeff.model.variants import Variant

if TYPE_CHECKING:  # keras is imported lazily: `import edgeeff` must stay cheap
    import keras

CONV_INIT = {"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
DENSE_INIT = {"class_name": "VarianceScaling", "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


def _correct_pad(size: int | None, kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """TensorFlow "same" padding for a stride-2 conv, made explicit (Keras Applications' correct_pad)."""
    adjust = 1 if size is None else 1 - size % 2
    half = kernel // 2
    return ((half - adjust, half), (half - adjust, half))


class _Ctx:
    """Layer factory bound to one variant's policy (activation, BN settings, padding convention)."""

    def __init__(self, variant: Variant):
        import keras

        self.k = keras
        self.v = variant
        self.p = variant.family

    def bn(self, x, name):
        return self.k.layers.BatchNormalization(momentum=self.p.bn_momentum, epsilon=self.p.bn_epsilon, name=name)(x)

    def act(self, x, name):
        return self.k.layers.Activation(self.p.activation, name=name)(x)

    def conv(self, x, filters, kernel, strides, name, groups_depthwise=False, activation=None, use_bias=False):
        """Conv (or depthwise conv) with the family's stride-2 padding convention."""
        layers = self.k.layers
        padding = "same"
        if strides == 2 and self.p.explicit_stride_padding:
            x = layers.ZeroPadding2D(padding=_correct_pad(x.shape[1], kernel), name=name + "_pad")(x)
            padding = "valid"
        if groups_depthwise:
            return layers.DepthwiseConv2D(
                kernel, strides=strides, padding=padding, use_bias=False, depthwise_initializer=CONV_INIT, name=name
            )(x)
        return layers.Conv2D(
            filters,
            kernel,
            strides=strides,
            padding=padding,
            use_bias=use_bias,
            activation=activation,
            kernel_initializer=CONV_INIT,
            name=name,
        )(x)

    def squeeze_excite(self, x, filters_in, filters, ratio, prefix):
        layers = self.k.layers
        filters_se = max(1, int(filters_in * ratio))
        se = layers.GlobalAveragePooling2D(name=prefix + "se_squeeze")(x)
        se = layers.Reshape((1, 1, filters), name=prefix + "se_reshape")(se)
        se = self.conv(se, filters_se, 1, 1, prefix + "se_reduce", activation=self.p.activation, use_bias=True)
        se = self.conv(se, filters, 1, 1, prefix + "se_expand", activation="sigmoid", use_bias=True)
        return layers.multiply([x, se], name=prefix + "se_excite")

    def block(self, inputs, prefix, filters_in, filters_out, kernel, stride, expand, se_ratio, fused, id_skip, drop):
        """MBConv or Fused-MBConv, named as Keras Applications names them."""
        layers = self.k.layers
        filters = filters_in * expand
        x = inputs
        if fused:
            if expand != 1:
                x = self.conv(x, filters, kernel, stride, prefix + "expand_conv")
                x = self.act(self.bn(x, prefix + "expand_bn"), prefix + "expand_activation")
        else:
            if expand != 1:
                x = self.conv(x, filters, 1, 1, prefix + "expand_conv")
                x = self.act(self.bn(x, prefix + "expand_bn"), prefix + "expand_activation")
            x = self.conv(x, None, kernel, stride, prefix + self.p.depthwise_name, groups_depthwise=True)
            x = self.act(self.bn(x, prefix + "bn"), prefix + "activation")
        if self.p.use_se and 0 < se_ratio <= 1:
            x = self.squeeze_excite(x, filters_in, filters, se_ratio, prefix)
        if fused and expand == 1:
            x = self.conv(x, filters_out, kernel, stride, prefix + "project_conv")
            x = self.act(self.bn(x, prefix + "project_bn"), prefix + "project_activation")
        else:
            x = self.conv(x, filters_out, 1, 1, prefix + "project_conv")
            x = self.bn(x, prefix + "project_bn")
        if id_skip and stride == 1 and filters_in == filters_out:
            if drop > 0:
                x = layers.Dropout(drop, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
            x = layers.add([x, inputs], name=prefix + "add")
        return x


PREPROCESS_LAYER = "preprocess"  # exporters find the in-graph preprocessing by this name


def build_model(
    variant: Variant,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (255.0, 255.0, 255.0),
    num_classes: int = 1000,
    classifier_activation: str | None = "softmax",
    include_top: bool = True,
    dropout: float | None = None,
    dynamic_size: bool = False,
) -> "keras.Model":
    """Build ``variant`` as a Keras functional model taking (N, H, W, 3) RGB pixels in 0-255.

    ``mean``/``std`` are per-channel, in pixel units: the graph computes ``(x - mean) / std``.
    ``dropout`` overrides the variant's classifier dropout (progressive training changes it).
    ``dynamic_size`` leaves height and width open, so one model trains at every stage's image size
    (progressive learning) and keeps its optimizer state across stages.
    """
    import keras

    ctx = _Ctx(variant)
    layers = keras.layers
    res = variant.resolution
    inputs = keras.Input(shape=(None, None, 3) if dynamic_size else (res, res, 3), name="image")
    scale = [1.0 / s for s in std]
    offset = [-m / s for m, s in zip(mean, std)]
    x = layers.Rescaling(scale=scale, offset=offset, name=PREPROCESS_LAYER)(inputs)

    x = ctx.conv(x, variant.stem_filters(), 3, 2, "stem_conv")
    x = ctx.act(ctx.bn(x, "stem_bn"), "stem_activation")

    repeats = variant.stage_repeats()
    total = float(sum(repeats))
    index = 0
    for stage_no, (stage, count) in enumerate(zip(variant.block_args, repeats), start=1):
        filters_out = variant.round_filters(stage.filters_out)
        for j in range(count):
            # The tensor's own channel count, not the table's scaled `i` field: they agree for the
            # scaled families, but Lite's fixed 32-channel stem feeds a first stage whose scaled `i`
            # differs (Lite3: 40), exactly as in the official builder.
            x = ctx.block(
                x,
                prefix=f"block{stage_no}{chr(j + 97)}_",
                filters_in=int(x.shape[-1]),
                filters_out=filters_out,
                kernel=stage.kernel,
                stride=stage.stride if j == 0 else 1,
                expand=stage.expand,
                se_ratio=stage.se_ratio,
                fused=stage.fused,
                id_skip=stage.id_skip,
                drop=variant.drop_connect * index / total,
            )
            index += 1

    x = ctx.conv(x, variant.head_filters(), 1, 1, "top_conv")
    x = ctx.act(ctx.bn(x, "top_bn"), "top_activation")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        rate = variant.dropout if dropout is None else dropout
        if rate > 0:
            x = layers.Dropout(rate, name="top_dropout")(x)
        x = layers.Dense(
            num_classes, activation=classifier_activation, kernel_initializer=DENSE_INIT, name="predictions"
        )(x)
    return keras.Model(inputs, x, name=variant.name.replace("=", "").replace(":", "_").replace(",", "_"))
