"""Training data: a folder with one sub-folder per class, a seeded disjoint validation split, and the
tf.data pipelines that apply one progressive-learning stage (size, RandAugment, mixup).

Augmentation uses Keras 3's own layers (``RandomCrop``, ``RandomFlip``, ``RandAugment``, ``MixUp``),
which are safe inside tf.data; decoding is TensorFlow's, in parallel, with prefetch, so the CPU
keeps the model fed. Pixels stay RGB 0-255 floats: normalisation is inside the model graph.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from edgeeff.data.images import IMAGE_SUFFIXES
from edgeeff.errors import EdgeeffError
from edgeeff.train.schedule import MAGNITUDE_SCALE, StageSettings

MIN_TRAIN_PER_CLASS = 1  # and at least one validation image per class
RANDAUGMENT_OPS = 2  # the paper's N (ops per image)


class TrainDataError(EdgeeffError):
    """A training folder that cannot be used as given."""


@dataclass(frozen=True)
class ImageFolder:
    """Class names, and (path, class index) pairs for training and validation, disjoint."""

    classes: tuple[str, ...]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    unreadable: list[Path] = field(default_factory=list)


def _readable(path: Path) -> bool:
    """A cheap header check (PIL ``verify``): unreadable files are counted and skipped, not fatal."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many types for non-images and broken headers
        return False


def _class_files(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise TrainDataError(f"data folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise TrainDataError(f"{root} has no class sub-folders; put each class's images in {root}/<class>/")
    return {f.name: sorted(p for p in f.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) for f in folders}


def _seeded_order(paths: list[Path], seed: int) -> list[Path]:
    """Order by a seeded hash of the file name: stable when files are added, different per seed."""
    return sorted(paths, key=lambda p: hashlib.sha256(f"{seed}:{p.name}".encode()).digest())


def read_folder(data: str | Path, val: str | Path | None = None, val_fraction: float = 0.2, seed: int = 0) -> ImageFolder:
    """Read ``data/<class>/*`` (and ``val/<class>/*`` if given), skipping unreadable images.

    Without ``val`` each class is split on its own (stratified), ``round(n * val_fraction)`` images
    but at least one to validation, chosen by a seeded hash, so the split is disjoint and repeatable.
    """
    if not 0.0 < val_fraction < 1.0:
        raise TrainDataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    files = _class_files(Path(data))
    unreadable: list[Path] = []

    def keep(paths: list[Path]) -> list[Path]:
        good = [p for p in paths if _readable(p)]
        unreadable.extend(p for p in paths if p not in set(good))
        return good

    files = {name: keep(paths) for name, paths in files.items()}
    classes = tuple(files)
    train: list[tuple[Path, int]] = []
    held: list[tuple[Path, int]] = []
    if val is not None:
        val_files = {name: keep(paths) for name, paths in _class_files(Path(val)).items()}
        extra = sorted(set(val_files) - set(classes))
        if extra:
            raise TrainDataError(f"--val has class folder(s) {', '.join(extra)} that --data lacks")
    for index, name in enumerate(classes):
        paths = files[name]
        if val is not None:
            part_val, part_train = val_files.get(name, []), paths
        else:
            ordered = _seeded_order(paths, seed)
            n_val = max(1, round(len(paths) * val_fraction))
            part_val, part_train = ordered[:n_val], ordered[n_val:]
        if len(part_train) < MIN_TRAIN_PER_CLASS or (val is None and not part_val):
            raise TrainDataError(
                f"class {name!r} has {len(paths)} readable image(s): too few for a training and a validation part; "
                f"add images (at least 2) or give --val DIR"
            )
        train += [(p, index) for p in part_train]
        held += [(p, index) for p in part_val]
    if not held:
        raise TrainDataError(f"--val {val} holds no readable images for these classes")
    return ImageFolder(classes, sorted(train, key=str), sorted(held, key=str), unreadable)


def _decode(path, label, num_classes: int):
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.cast(image, tf.float32), tf.one_hot(label, num_classes)


def _files(items: list[tuple[Path, int]]):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(([str(p) for p, _ in items], [label for _, label in items]))


@dataclass
class StagePipeline:
    """One stage's training dataset and the augmentation layers it runs (read back by the recorder)."""

    dataset: object
    settings: StageSettings
    randaugment: object | None
    mixup: object | None
    steps_per_epoch: int


def train_pipeline(items: list[tuple[Path, int]], num_classes: int, settings: StageSettings, global_batch: int,
                   seed: int = 0, steps_per_epoch: int | None = None, cache: bool = False) -> StagePipeline:
    """Shuffle, decode in parallel, resize, random crop and flip, RandAugment at the stage's magnitude,
    batch, mixup at the stage's alpha, prefetch. Repeats forever; ``steps_per_epoch`` bounds an epoch.

    Images are resized to 1/0.875 of the stage size, then randomly cropped to it (the usual
    train-time crop); ``cache`` keeps the decoded, resized images in memory (small data sets).
    """
    import keras
    import tensorflow as tf

    size = settings.image_size
    base = int(round(size / 0.875))
    autotune = tf.data.AUTOTUNE
    crop = keras.layers.RandomCrop(size, size, seed=seed)
    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    factor = settings.magnitude / MAGNITUDE_SCALE
    randaugment = (keras.layers.RandAugment(value_range=(0, 255), num_ops=RANDAUGMENT_OPS, factor=factor, seed=seed)
                   if factor > 0 else None)
    mixup = keras.layers.MixUp(alpha=settings.mixup, seed=seed) if settings.mixup > 0 else None

    def resize(image, label):
        return tf.image.resize(image, [base, base]), label

    def augment(image, label):
        image = flip(crop(image, training=True), training=True)
        if randaugment is not None:
            image = randaugment(image, training=True)
        return tf.clip_by_value(image, 0.0, 255.0), label

    def mix(images, labels):
        out = mixup({"images": images, "labels": labels}, training=True)
        return out["images"], out["labels"]

    ds = _files(items).map(lambda p, y: _decode(p, y, num_classes), num_parallel_calls=autotune).ignore_errors()
    ds = ds.map(resize, num_parallel_calls=autotune)
    if cache:
        ds = ds.cache()
    ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(augment, num_parallel_calls=autotune).batch(global_batch, drop_remainder=True)
    if mixup is not None:
        ds = ds.map(mix, num_parallel_calls=autotune)
    options = tf.data.Options()  # multi-worker: shard batches, not files (there is no file-reader op to shard)
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    steps = max(1, len(items) // global_batch)
    if steps_per_epoch:
        steps = min(steps, steps_per_epoch)
    return StagePipeline(ds.prefetch(autotune), settings, randaugment, mixup, steps)


def eval_pipeline(items: list[tuple[Path, int]], num_classes: int, size: int, crop_padding: int, global_batch: int):
    """Evaluation at one size, with the preprocessing card's geometry: a centred square crop of
    ``size / (size + crop_padding)`` of the shorter side, bicubic resize (as ``edgeeff.data.preprocess``)."""
    import tensorflow as tf

    def center(image, label):
        shape = tf.shape(image)
        h, w = shape[0], shape[1]
        side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * size / (size + crop_padding), tf.int32)
        image = tf.image.crop_to_bounding_box(image, (h - side) // 2, (w - side) // 2, side, side)
        return tf.clip_by_value(tf.image.resize(image, [size, size], method="bicubic"), 0.0, 255.0), label

    autotune = tf.data.AUTOTUNE
    ds = _files(items).map(lambda p, y: _decode(p, y, num_classes), num_parallel_calls=autotune).ignore_errors()
    return ds.map(center, num_parallel_calls=autotune).batch(global_batch).prefetch(autotune)
