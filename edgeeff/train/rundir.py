"""A training run directory: everything ``edgeeff train`` writes, each file atomically.

Layout (``RUN_DIR/``):

* ``state.json``: the commit point of resume. Written last after every epoch: the run's settings,
  the completed epoch count, the checkpoint files of that epoch, and every metrics row so far.
* ``checkpoints/epoch-NNN.weights.h5`` and ``epoch-NNN.optimizer.npz``: the model and optimizer
  after epoch NNN (older epochs are removed once a newer state is committed);
  ``checkpoints/stage-K.weights.h5``: the model at the end of stage K.
* ``metrics.csv`` / ``metrics.json``: one row per epoch; ``training.png``: loss, accuracy and image
  size over epochs; ``stages.json``: what each stage's pipeline and model actually ran with.
* ``model.weights.h5`` + ``edgeeff-run.json`` + ``preprocessing.json``: the final model, its
  classes and preprocessing, so the directory is a weights source (``--weights RUN_DIR``).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeeff import fsio, report
from edgeeff.errors import EdgeeffError

STATE = "state.json"
FINAL_WEIGHTS = "model.weights.h5"
CHECKPOINTS = "checkpoints"


class RunDirError(EdgeeffError):
    """A run directory that cannot be started or resumed."""


def prepare(run_dir: Path, resume: bool) -> dict | None:
    """Check the run directory before any work; returns the saved state when resuming."""
    state_path = run_dir / STATE
    if resume:
        if not state_path.is_file():
            raise RunDirError(f"nothing to resume in {run_dir}: it has no {STATE} (start without --resume)")
        return json.loads(state_path.read_text())
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {run_dir} is a file, not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(f"run directory {run_dir} is not empty; continue it with --resume or choose another --out")
    fsio.ensure_writable_dir(run_dir)
    return None


def write_json(path: Path, payload) -> None:
    fsio.write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def save_weights(model, dest: Path) -> None:
    """``model.save_weights`` through a temporary file renamed into place (Keras wants the suffix)."""
    with fsio.atomic_path(dest, suffix=".weights.h5", keep_suffix=True) as tmp:
        tmp.unlink()
        model.save_weights(str(tmp))


def save_optimizer(optimizer, dest: Path) -> None:
    import numpy as np

    arrays = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    with fsio.atomic_path(dest, suffix=".npz", keep_suffix=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_optimizer(optimizer, source: Path, trainable_variables) -> None:
    import numpy as np

    optimizer.build(trainable_variables)
    with np.load(source) as data:
        arrays = [data[k] for k in sorted(data.files)]
    if len(arrays) != len(optimizer.variables):
        raise RunDirError(f"{source} holds {len(arrays)} optimizer variables, the model needs {len(optimizer.variables)}")
    for variable, value in zip(optimizer.variables, arrays):
        variable.assign(value)


def commit_epoch(run_dir: Path, model, state: dict, row: dict) -> dict:
    """Write the epoch's checkpoint, then the state that points at it, then metrics and plot."""
    epoch = row["epoch"]
    ckpt = run_dir / CHECKPOINTS
    weights, optimizer = ckpt / f"epoch-{epoch:03d}.weights.h5", ckpt / f"epoch-{epoch:03d}.optimizer.npz"
    save_weights(model, weights)
    save_optimizer(model.optimizer, optimizer)
    previous = state.get("checkpoint")
    state = {**state, "completed_epochs": epoch, "rows": [*state.get("rows", []), row],
             "checkpoint": {"weights": str(weights.relative_to(run_dir)), "optimizer": str(optimizer.relative_to(run_dir))}}
    write_json(run_dir / STATE, state)
    if previous:
        for old in previous.values():
            (run_dir / old).unlink(missing_ok=True)
    write_metrics(run_dir, state["rows"])
    return state


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    fsio.write_text(run_dir / "metrics.csv", report.to_csv(rows))
    write_json(run_dir / "metrics.json", rows)
    plot(rows, run_dir / "training.png")


def plot(rows: list[dict], dest: Path) -> None:
    """Loss, accuracy and training image size per epoch, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [r.get(key) for r in rows], marker="o", label="train")
        ax.plot(epochs, [r.get(f"val_{key}") for r in rows], marker="s", label="validation (final size)")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    axes[2].step(epochs, [r["image_size"] for r in rows], where="mid", marker="o")
    axes[2].set_title("training image size (px)")
    axes[2].set_xlabel("epoch")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    with fsio.atomic_path(dest, suffix=".png", keep_suffix=True) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
