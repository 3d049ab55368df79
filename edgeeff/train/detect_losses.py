"""EfficientDet's training losses as Keras 3 losses: focal loss on the class logits, Huber on the boxes.

As google/automl ``efficientdet/keras/train_lib.py`` (``FocalLoss``, ``BoxLoss``, ``_detection_loss``)
with its default hyper-parameters (``hparams_config.py``): alpha 0.25, gamma 1.5, label smoothing 0,
Huber delta 0.1, box loss weight 50. Both are normalised by the positive anchors of the whole batch
plus one (the +1 keeps an image without objects finite), the box loss also by its four coordinates:
a batch with many objects does not weigh more than one with few.

Two departures, on purpose:

* the reference's Keras trainer clips each level's class loss to [0, 2]; its TF1 trainer
  (``det_model_fn.py``) does not, and a clip hides a diverging run rather than fixing it, so there is
  none here;
* the reference masks the box loss per coordinate (``box_targets != 0``), which drops a positive
  anchor's coordinate whose target happens to be exactly 0; here the mask is per anchor (any
  coordinate non-zero: the labeler writes zeros only for anchors that are not positive).

Targets are what :mod:`edgeeff.train.detect_targets` produces: class columns with -1 background and
-2 ignored, encoded box regressions. They are Keras ``Loss`` subclasses so ``model.compile`` can key
them on the detector's two outputs (``class_logits``, ``box_regressions``); each returns the batch's
scalar loss.
"""

from __future__ import annotations

import keras
from keras import ops

ALPHA = 0.25
GAMMA = 1.5
LABEL_SMOOTHING = 0.0
HUBER_DELTA = 0.1
BOX_LOSS_WEIGHT = 50.0


def focal_loss(class_targets, class_logits, alpha: float = ALPHA, gamma: float = GAMMA,
               label_smoothing: float = LABEL_SMOOTHING):
    """Sum over anchors and classes of alpha_t (1 - p_t)^gamma CE, divided by (positives + 1).

    ``class_targets`` (N, A): column, -1 background, -2 ignored; ``class_logits`` (N, A, C). The
    modulating factor uses the unsmoothed labels (as the reference: smoothing must not inflate it).
    """
    logits = ops.convert_to_tensor(class_logits)
    targets = ops.cast(ops.round(ops.convert_to_tensor(class_targets)), "int32")
    num_classes = logits.shape[-1]
    onehot = ops.cast(ops.equal(ops.expand_dims(targets, -1), ops.arange(num_classes, dtype="int32")), logits.dtype)
    prob = ops.sigmoid(logits)
    p_t = onehot * prob + (1.0 - onehot) * (1.0 - prob)
    alpha_t = onehot * alpha + (1.0 - onehot) * (1.0 - alpha)
    modulating = ops.power(1.0 - p_t, gamma)
    labels = onehot * (1.0 - label_smoothing) + 0.5 * label_smoothing
    # Sigmoid cross-entropy from logits, in the overflow-safe form TensorFlow uses.
    ce = ops.relu(logits) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))
    keep = ops.cast(ops.not_equal(targets, -2), logits.dtype)
    positives = ops.sum(ops.cast(targets >= 0, logits.dtype))
    return ops.sum(alpha_t * modulating * ce * ops.expand_dims(keep, -1)) / (positives + 1.0)


def box_loss(box_targets, box_regressions, delta: float = HUBER_DELTA):
    """Huber loss (``delta``) of the positive anchors' regressions, divided by 4 (positives + 1)."""
    preds = ops.convert_to_tensor(box_regressions)
    targets = ops.cast(ops.convert_to_tensor(box_targets), preds.dtype)
    positive = ops.cast(ops.any(ops.not_equal(targets, 0.0), axis=-1), preds.dtype)
    error = ops.abs(preds - targets)
    huber = ops.where(error <= delta, 0.5 * ops.square(error), delta * (error - 0.5 * delta))
    return ops.sum(huber * ops.expand_dims(positive, -1)) / ((ops.sum(positive) + 1.0) * 4.0)


@keras.saving.register_keras_serializable(package="edgeeff")
class FocalLoss(keras.losses.Loss):
    """:func:`focal_loss` as a Keras loss for the ``class_logits`` output."""

    def __init__(self, alpha: float = ALPHA, gamma: float = GAMMA, label_smoothing: float = LABEL_SMOOTHING,
                 name: str = "focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.gamma, self.label_smoothing = alpha, gamma, label_smoothing

    def call(self, y_true, y_pred):
        return focal_loss(y_true, y_pred, self.alpha, self.gamma, self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="edgeeff")
class BoxLoss(keras.losses.Loss):
    """:func:`box_loss` as a Keras loss for the ``box_regressions`` output (weighted 50 in compile)."""

    def __init__(self, delta: float = HUBER_DELTA, name: str = "box_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.delta = delta

    def call(self, y_true, y_pred):
        return box_loss(y_true, y_pred, self.delta)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}
