"""``edgeeff train``: EfficientNetV2 progressive learning with Keras ``model.fit``, one fit per stage.

One model with open height and width (``build_model(dynamic_size=True)``) trains through every
stage, so the optimizer state and the learning-rate schedule run on across stage boundaries. Per
stage: the data pipeline is rebuilt at the stage's image size, RandAugment magnitude and mixup
alpha (:mod:`edgeeff.train.pipeline`); the classifier's ``top_dropout`` layer gets the stage's rate and
the train function is retraced (``make_train_function(force=True)``) so the new rate is compiled
in rather than a cached graph's old one. Stochastic depth (the blocks' drop-connect) stays fixed at
the variant's rate, as in the official code. Validation runs every epoch at the final stage's size.

Distribution is TensorFlow's own ``tf.distribute``: the model and optimizer are created under
``strategy.scope()`` and Keras ``fit`` splits each global batch across replicas. ``--batch`` is
per replica; the pipeline batches ``global = batch * replicas``; the learning rate is scaled
linearly, ``lr = base_lr * global / 256`` (Goyal et al. 2017). ``mirrored`` uses the GPUs of one
machine (or ``--cpu-replicas N`` logical CPU devices, which is how the tests exercise it);
``multi-worker`` reads the standard ``TF_CONFIG``; the training data is sharded with tf.data's
``DATA`` policy (every worker runs the pipeline and keeps its 1/N share of the batches), the only
policy that fits a dataset built from a list of file names.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from edgeeff.train import rundir
from edgeeff.errors import EdgeeffError
from edgeeff.train.schedule import DEFAULT_SCHEDULE, StageSettings, stage_plan
from edgeeff.model.variants import resolve

STRATEGIES = ("default", "mirrored", "multi-worker")
DROPOUT_LAYER = "top_dropout"  # the builder's classifier dropout
STOP_AFTER_ENV = "EDGEEFF_TRAIN_STOP_AFTER_EPOCH"  # tests: simulate an interruption after epoch N


class TrainError(EdgeeffError):
    """Training that cannot start or continue as asked."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved in ``state.json`` so ``--resume`` continues identically."""

    variant: str
    data: str
    epochs: int = 40
    stages: int = 4
    schedule: str = DEFAULT_SCHEDULE
    overrides: dict = field(default_factory=dict)
    val: str | None = None
    val_fraction: float = 0.2
    weights: str = "none"
    batch: int = 32  # per replica
    base_lr: float = 0.008  # per 256 images of global batch
    label_smoothing: float = 0.1
    steps_per_epoch: int | None = None
    cache: bool = False
    seed: int = 0

    def plan(self) -> list[StageSettings]:
        return stage_plan(self.variant, self.stages, self.epochs, self.schedule, self.overrides)


def make_strategy(name: str, cpu_replicas: int | None = None):
    """The ``tf.distribute`` strategy; ``cpu_replicas`` splits the CPU into logical devices first
    (only possible before TensorFlow has initialised its devices, so call this before anything else)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise TrainError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    if cpu_replicas:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        except RuntimeError:
            raise TrainError("--cpu-replicas must be set before TensorFlow starts; run it in a fresh process") from None
    if name == "mirrored":
        devices = [f"/cpu:{i}" for i in range(cpu_replicas)] if cpu_replicas else None
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise TrainError("--strategy multi-worker needs TF_CONFIG describing the cluster (see README, Train)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def convert_spec(variant: str, size: int) -> str:
    """The variant spelling at the trained size, for ``edgeeff convert --variant``."""
    base, _, overrides = variant.partition(":")
    kept = [item for item in overrides.split(",") if item.strip() and not item.strip().startswith("resolution")]
    return f"{base}:{','.join([*kept, f'resolution={size}'])}"


def _pretrained(variant, weights: str, needed: bool = True):
    """Weights to start from, as (choice, {layer name: arrays}) from a model built the usual way;
    not loaded when a resumed checkpoint replaces them anyway (the choice still gives preprocessing)."""
    from edgeeff.api import build, choose_weights
    from edgeeff.weights.loaders import weights_of_model

    choice = choose_weights(variant, weights)
    if not needed or (choice.card is None and choice.path is None):
        return choice, None
    return choice, weights_of_model(build(variant, weights=weights, classifier_activation=None))


def _fill(model, table: dict) -> None:
    """Copy every layer whose shapes match; the classifier differs when the class count does."""
    for layer in model.layers:
        arrays = table.get(layer.name)
        if layer.weights and arrays and [w.shape for w in layer.get_weights()] == [a.shape for a in arrays]:
            layer.set_weights(arrays)
        elif layer.weights and layer.name != "predictions":
            raise TrainError(f"--weights do not fit layer {layer.name} of {model.name}; are they for another variant?")


def _observe(pipe, model) -> dict:
    """What the stage really runs with, read from the pipeline's own batch and layers and the model."""
    from edgeeff.train.schedule import MAGNITUDE_SCALE

    images, labels = next(iter(pipe.dataset.take(1)))
    dropout = model.get_layer(DROPOUT_LAYER).rate if any(l.name == DROPOUT_LAYER for l in model.layers) else 0.0
    factor = float(pipe.randaugment.factor[1]) if pipe.randaugment is not None else 0.0
    return {
        "stage": pipe.settings.stage, "batch_shape": [int(d) for d in images.shape],
        "image_size": int(images.shape[1]), "randaugment_factor": round(factor, 6),
        "magnitude": round(factor * MAGNITUDE_SCALE, 4), "mixup_alpha": float(pipe.mixup.alpha) if pipe.mixup is not None else 0.0,
        "soft_labels": bool(float(labels.numpy().max(axis=1).min()) < 1.0), "dropout": float(dropout),
        "steps_per_epoch": pipe.steps_per_epoch, "planned": pipe.settings.to_dict(),
    }


def _callbacks(run_dir: Path, holder: dict, stage: StageSettings, global_batch: int, steps: int, console):
    import keras

    class Commit(keras.callbacks.Callback):
        """Per epoch: steady-state images/s, checkpoint + state + metrics (atomically), the stage checkpoint
        at a stage's last epoch, then the test hook."""

        def on_epoch_begin(self, epoch, logs=None):
            self.begin, self.first, self.last, self.batches = time.perf_counter(), None, None, 0

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.first = self.first or now
            self.last, self.batches = now, batch + 1

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            steady = (self.batches - 1) * global_batch / (self.last - self.first) if self.batches > 1 else \
                global_batch / (self.last - self.begin)
            row = {"epoch": epoch + 1, "stage": stage.stage, "image_size": stage.image_size, "magnitude": stage.magnitude,
                   "mixup": stage.mixup, "dropout": stage.dropout,
                   **{k: round(float(logs[k]), 5) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs},
                   "train_seconds": round(self.last - self.begin, 3), "images_per_second": round(steady, 2),
                   "learning_rate": float(self.model.optimizer.learning_rate)}
            holder["state"] = rundir.commit_epoch(run_dir, self.model, holder["state"], row)
            if epoch + 1 == stage.end_epoch:
                rundir.save_weights(self.model, run_dir / rundir.CHECKPOINTS / f"stage-{stage.stage}.weights.h5")
            if console is not None:
                console.print(f"epoch {row['epoch']} stage {stage.stage} size {stage.image_size}: loss {row.get('loss', 0):.4f} "
                              f"acc {row.get('accuracy', 0):.3f} val_acc {row.get('val_accuracy', 0):.3f} "
                              f"({row['images_per_second']:.1f} img/s)")
            if os.environ.get(STOP_AFTER_ENV) == str(epoch + 1):
                raise KeyboardInterrupt

    class Bar(keras.callbacks.Callback):
        """A rich progress bar per epoch (Keras's own output is off)."""

        def on_epoch_begin(self, epoch, logs=None):
            from rich.progress import Progress

            self.bar = Progress(console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(f"epoch {epoch + 1} (stage {stage.stage}, {stage.image_size}px)", total=steps)

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(self.task, completed=batch + 1)

        def on_epoch_end(self, epoch, logs=None):
            self.bar.stop()

    return [Bar(), Commit()] if console is not None else [Commit()]


@dataclass
class PreparedRun:
    """A run whose inputs were all checked (schedule, data, run directory) and nothing trained yet."""

    config: TrainConfig
    run_dir: Path
    plan: list[StageSettings]
    folder: object  # trainset.ImageFolder
    state: dict
    resume: bool


def prepare_run(config: TrainConfig | None, run_dir: str | Path, resume: bool = False) -> PreparedRun:
    """Check every input before anything is written or TensorFlow starts: the schedule, the data
    folder (unreadable images counted), then the run directory (created only now). ``--resume``
    takes the config from the run's ``state.json``."""
    from edgeeff.train.pipeline import read_folder

    run_dir = Path(run_dir)
    state = rundir.prepare(run_dir, resume=True) if resume else None
    if resume:
        config = TrainConfig(**state["config"])
    plan = config.plan()  # schedule errors first: they need no data
    folder = read_folder(config.data, config.val, config.val_fraction, config.seed)
    if resume and list(folder.classes) != state["classes"]:
        raise TrainError(f"the classes under {config.data} changed since the run started; start a new run")
    if not resume:
        rundir.prepare(run_dir, resume=False)
        state = {"config": dataclasses.asdict(config), "classes": list(folder.classes), "completed_epochs": 0, "rows": [],
                 "stages": [], "plan": [s.to_dict() for s in plan]}
    return PreparedRun(config, run_dir, plan, folder, state, resume)


def train(run: PreparedRun, strategy: str = "default", cpu_replicas: int | None = None, console=None) -> dict:
    """Train (or resume) a prepared run; returns the run card (``edgeeff-run.json``)."""
    from edgeeff.train.pipeline import eval_pipeline, train_pipeline

    config, run_dir, plan, folder, state, resume = run.config, run.run_dir, run.plan, run.folder, run.state, run.resume
    dist = make_strategy(strategy, cpu_replicas)
    replicas = dist.num_replicas_in_sync
    global_batch = config.batch * replicas
    lr = config.base_lr * global_batch / 256
    v = resolve(config.variant)
    checkpoint = state.get("checkpoint") if resume else None
    choice, table = _pretrained(v, config.weights, needed=checkpoint is None)
    num_classes = len(folder.classes)
    steps = max(1, len(folder.train) // global_batch)
    steps = min(steps, config.steps_per_epoch) if config.steps_per_epoch else steps

    import keras

    from edgeeff.model.builder import build_model

    with dist.scope():
        keras.utils.set_random_seed(config.seed)
        top_rate = max(s.dropout for s in plan)
        model = build_model(v, mean=choice.preprocessing.mean, std=choice.preprocessing.std, num_classes=num_classes,
                            classifier_activation=None, dropout=top_rate, dynamic_size=True)
        if table is not None:
            _fill(model, table)
        schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps * config.epochs)
        model.compile(jit_compile=False,  # XLA would recompile for every stage's size; tracing is slow enough
                      optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-5),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        if checkpoint:
            model.load_weights(str(run_dir / checkpoint["weights"]))
            rundir.load_optimizer(model.optimizer, run_dir / checkpoint["optimizer"], model.trainable_variables)

    final = plan[-1].image_size
    val_ds = eval_pipeline(folder.val, num_classes, final, choice.preprocessing.crop_padding, global_batch)
    holder = {"state": {**state, "unreadable_files": [str(p) for p in folder.unreadable],
                        "distribution": {"strategy": strategy, "replicas": replicas, "global_batch": global_batch, "learning_rate": lr}}}
    start = holder["state"]["completed_epochs"]
    for stage in plan:
        if stage.end_epoch <= start:
            continue
        if any(l.name == DROPOUT_LAYER for l in model.layers):
            model.get_layer(DROPOUT_LAYER).rate = stage.dropout
        model.make_train_function(force=True)  # retrace: the new rate and size are compiled in
        pipe = train_pipeline(folder.train, num_classes, stage, global_batch, config.seed + stage.stage, steps, config.cache)
        seen = _observe(pipe, model)
        holder["state"]["stages"] = [s for s in holder["state"]["stages"] if s["stage"] != stage.stage] + [seen]
        rundir.write_json(run_dir / "stages.json", holder["state"]["stages"])
        with warnings.catch_warnings():  # validation data has no known length (skipped files): Keras warns at its end
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(pipe.dataset, steps_per_epoch=steps, initial_epoch=max(start, stage.first_epoch), epochs=stage.end_epoch,
                      validation_data=val_ds, shuffle=False, verbose=0,
                      callbacks=_callbacks(run_dir, holder, stage, global_batch, steps, console))
    return _finish(run_dir, model, config, folder, choice, holder["state"], final)


def _finish(run_dir: Path, model, config: TrainConfig, folder, choice, state: dict, final: int) -> dict:
    from edgeeff.api import RUN_CARD

    rundir.save_weights(model, run_dir / rundir.FINAL_WEIGHTS)
    rundir.write_json(run_dir / "preprocessing.json", choice.preprocessing.to_dict())
    last = state["rows"][-1] if state["rows"] else {}
    card = {
        "variant": config.variant, "convert_variant": convert_spec(config.variant, final), "classes": list(folder.classes),
        "final_size": final, "weights": rundir.FINAL_WEIGHTS, "started_from": choice.label,
        "preprocessing": {**choice.preprocessing.to_dict(), "input": "RGB 0-255, NHWC"},
        "val_accuracy": last.get("val_accuracy"), "epochs": state["completed_epochs"], "plan": state["plan"],
        "train_images": len(folder.train), "val_images": len(folder.val), "unreadable": len(folder.unreadable),
        "unreadable_files": [str(p) for p in folder.unreadable], **state.get("distribution", {}),
    }
    rundir.write_json(run_dir / RUN_CARD, card)
    return card
