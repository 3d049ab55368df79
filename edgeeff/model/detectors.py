"""The detector registry: EfficientDet-D0..D7 and EfficientDet-Lite0..4 as rows of data.

A detector is a classifier variant (its backbone, from :mod:`edgeeff.model.variants`) plus the few
numbers that size the feature network and the heads. Every difference between D and Lite is a field
of the row (activation, fusion, input normalisation, anchor scale), so the one builder in
:mod:`edgeeff.model.efficientdet` has no per-name branches.

Source of the rows: google/automl ``efficientdet/hparams_config.py`` (the newest snapshot, where
Lite0 takes 320 px, not the 512 px of its first release). Where the reference departs from the
paper's rules, the reference wins, because its checkpoints define what a weight file expects:

* input size: the paper's rule 512 + 128·φ holds for D0-D4; D5 and D6 take 1280 and D7 1536;
* BiFPN width 64·1.35^φ is the paper's rule, but the reference's table rounds it by hand
  (D2 112, D4 224, D5 288, D6 and D7 384), so the widths here are that table, not a formula;
* D6 and D7 fuse with an unweighted sum ("for stability"), D7 uses anchor scale 5;
* Lite rows use ReLU6, unweighted-sum fusion, pixels normalised as (x - 127) / 128, and anchor
  scale 3 except Lite3 and Lite4 (4).

The published parameter counts and FLOPs the tests pin live in :data:`PUBLISHED`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeeff.errors import EdgeeffError, lookup

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # the reference's default mean_rgb
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
LITE_MEAN = (127.0, 127.0, 127.0)  # lite_common_param: as the EfficientNet-Lite classifiers
LITE_STD = (128.0, 128.0, 128.0)

FUSIONS = ("fastattn", "sum")  # fast normalised weighted fusion (paper, eq. 3) / plain sum


@dataclass(frozen=True)
class Detector:
    """One EfficientDet: backbone variant name, sizes of the feature network and heads, anchors."""

    name: str
    backbone: str  # a name in edgeeff.model.variants.VARIANTS
    image_size: int
    fpn_width: int  # BiFPN channels (fpn_num_filters)
    fpn_depth: int  # BiFPN cells (fpn_cell_repeats)
    head_depth: int  # class/box conv layers before the prediction layer (box_class_repeats)
    activation: str
    fusion: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    anchor_scale: float = 4.0
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)  # width / height
    num_classes: int = 90  # COCO's 90 category ids, as the reference

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(range(self.min_level, self.max_level + 1))

    @property
    def anchors_per_location(self) -> int:
        return self.num_scales * len(self.aspect_ratios)

    def feature_sizes(self) -> dict[int, int]:
        """Side of the square feature map at each level: what the network produces and where the
        anchors sit, so both read it from here."""
        return {level: feature_size(self.image_size, level) for level in self.levels}


def feature_size(image_size: int, level: int) -> int:
    """Side of a level's feature map: the image halved ``level`` times, rounding up (stride-2 "same"
    convolutions and pools), as the reference's ``get_feat_sizes``; 320 px gives 3 at P7, not 2.5."""
    size = image_size
    for _ in range(level):
        size = (size - 1) // 2 + 1
    return size


def _d(name, backbone, size, width, depth, head, fusion="fastattn", anchor_scale=4.0):
    return Detector(name, backbone, size, width, depth, head, "swish", fusion, IMAGENET_MEAN, IMAGENET_STD, anchor_scale)


def _lite(name, backbone, size, width, depth, head, anchor_scale):
    return Detector(name, backbone, size, width, depth, head, "relu6", "sum", LITE_MEAN, LITE_STD, anchor_scale)


_TABLE: tuple[Detector, ...] = (
    _d("efficientdet-d0", "b0", 512, 64, 3, 3),
    _d("efficientdet-d1", "b1", 640, 88, 4, 3),
    _d("efficientdet-d2", "b2", 768, 112, 5, 3),
    _d("efficientdet-d3", "b3", 896, 160, 6, 4),
    _d("efficientdet-d4", "b4", 1024, 224, 7, 4),
    _d("efficientdet-d5", "b5", 1280, 288, 7, 4),
    _d("efficientdet-d6", "b6", 1280, 384, 8, 5, fusion="sum"),
    _d("efficientdet-d7", "b6", 1536, 384, 8, 5, fusion="sum", anchor_scale=5.0),
    _lite("efficientdet-lite0", "lite0", 320, 64, 3, 3, 3.0),
    _lite("efficientdet-lite1", "lite1", 384, 88, 4, 3, 3.0),
    _lite("efficientdet-lite2", "lite2", 448, 112, 5, 3, 3.0),
    _lite("efficientdet-lite3", "lite3", 512, 160, 6, 4, 4.0),
    _lite("efficientdet-lite4", "lite4", 640, 224, 7, 4, 4.0),
)

DETECTORS: dict[str, Detector] = {row.name: row for row in _TABLE}


@dataclass(frozen=True)
class Published:
    """A published size: parameters, FLOPs (multiply-adds, billions) and, where the reference's own
    Keras model was counted, its exact trainable parameters."""

    params: float
    gflops: float | None
    source: str
    reference_trainable: int | None = None


_PAPER = "Tan, Pang, Le 2020, Table 2"
_README = "google/automl efficientdet/README.md"
_PR1138 = "google/automl PR 1138: EfficientDetNet(config).summary() trainable params"

# D0-D6: the paper (FLOPs to two figures; the automl README gives D5 130B, the paper 135B). D7: the
# paper has no separate row (D6's network at 1536 px); the README gives 51.9M / 325B. Lite: the
# README rounds to 0.1M and gives no FLOPs; PR 1138, which corrected those figures, counted the
# reference's Keras model exactly, so Lite is pinned to the parameter.
PUBLISHED: dict[str, Published] = {
    "efficientdet-d0": Published(3.9e6, 2.5, _PAPER),
    "efficientdet-d1": Published(6.6e6, 6.1, _PAPER),
    "efficientdet-d2": Published(8.1e6, 11.0, _PAPER),
    "efficientdet-d3": Published(12.0e6, 25.0, _PAPER),
    "efficientdet-d4": Published(20.7e6, 55.0, _PAPER),
    "efficientdet-d5": Published(33.7e6, 135.0, _PAPER),
    "efficientdet-d6": Published(51.9e6, 226.0, _PAPER),
    "efficientdet-d7": Published(51.9e6, 325.0, _README),
    "efficientdet-lite0": Published(3.2e6, None, _PR1138, 3_243_470),
    "efficientdet-lite1": Published(4.2e6, None, _PR1138, 4_248_318),
    "efficientdet-lite2": Published(5.3e6, None, _PR1138, 5_252_334),
    "efficientdet-lite3": Published(8.4e6, None, _PR1138, 8_350_862),
    "efficientdet-lite4": Published(15.1e6, None, _PR1138, 15_130_894),
}


def list_detectors() -> list[str]:
    """The registered detector names, D0..D7 then Lite0..4 (the order ``edgeeff models`` shows)."""
    return list(DETECTORS)


def get_detector(name: str | Detector) -> Detector:
    """The row for ``name`` (``efficientdet-d0``; ``d0`` and ``lite0`` are accepted too), or a one-line
    error with the nearest valid name."""
    if isinstance(name, Detector):
        return name
    key = name.strip().lower()
    if key in DETECTORS:
        return DETECTORS[key]
    short = {n.removeprefix("efficientdet-"): row for n, row in DETECTORS.items()}
    if key in short:
        return short[key]
    return lookup(DETECTORS, name, "detector")


def is_detector(name: str) -> bool:
    """Whether ``name`` is a detector's full name (``efficientdet-lite0``; the short ``lite0`` is the
    classifier): how convert, eval and bench tell the two kinds of model apart."""
    return isinstance(name, Detector) or str(name).strip().lower() in DETECTORS


def at_size(row: Detector, image_size: int | None) -> Detector:
    """The row at another input size (the same network, fewer or more anchors), or itself."""
    import dataclasses

    if image_size is None or int(image_size) == row.image_size:
        return row
    if image_size < 2 ** row.max_level or image_size % 2 ** row.min_level:
        raise EdgeeffError(f"a {row.name} input size must be a multiple of {2 ** row.min_level} and at least "
                           f"{2 ** row.max_level}, got {image_size}")
    return dataclasses.replace(row, image_size=int(image_size))
