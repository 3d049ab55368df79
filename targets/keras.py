"""Keras: the model itself, saved in Keras's own ``.keras`` format. Not a deployment format but the
baseline row of every bench table (what the framework gives before any converter touches the model)
and TensorFlow's GPU path; validation checks that saving and loading changed nothing."""

from __future__ import annotations

from pathlib import Path

from edgeeff.errors import EdgeeffError
from edgeeff.kit.core import ArrayRunner, RunnerError, native_stderr_muted, np  # None without numpy: the kit's probe still loads this module
from edgeeff.targets.base import TargetSpec, versions


def export(model, spec: TargetSpec, dest: Path, calibration=None, options: dict | None = None, saved_model: Path | None = None,
           progress=None) -> dict:
    try:
        model.save(str(dest))
    except Exception as exc:
        raise EdgeeffError(f"Keras could not save the model: {str(exc).splitlines()[0][:200]}") from None
    return {"format": "keras v3 (.keras zip: config + weights)", "converter": versions("keras", "tensorflow-cpu|tensorflow")}


# --------------------------------------------------------------------------- running (shipped in the kit)

RUNTIME_PIP = "tensorflow keras"

# What each accelerator name asks of TensorFlow: a device scope.
ACCELERATORS = {"cpu": "CPU", "gpu": "GPU"}


class KerasRunner(ArrayRunner):
    """The Keras model itself (a ``.keras`` file) under TensorFlow: the framework baseline every
    converted artifact is compared with, and TensorFlow's own GPU path. The call is one traced
    ``tf.function`` (what ``model.predict`` runs per batch, without its per-call data pipeline), and
    ``invoke`` waits for the result, so GPU time is not hidden by asynchronous dispatch."""

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "CPU") -> None:
        try:
            with native_stderr_muted():
                import keras
                import tensorflow as tf
        except ImportError:
            raise RunnerError("no TensorFlow/Keras here: pip install tensorflow keras") from None
        if threads:
            try:  # only possible before TensorFlow's first op; a fresh measuring process always is
                tf.config.threading.set_intra_op_parallelism_threads(int(threads))
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass
        if device == "GPU" and not tf.config.list_physical_devices("GPU"):
            raise RunnerError("TensorFlow sees no GPU here: on a CUDA machine pip install 'tensorflow[and-cuda]' "
                              "(tensorflow-cpu has no GPU support)")
        self._tf = tf
        self.device = f"/{device}:0"
        try:
            with native_stderr_muted(), tf.device(self.device):
                self.model = keras.saving.load_model(str(path), compile=False)
        except Exception as exc:
            raise RunnerError(f"cannot load {Path(path).name} as a Keras model: {str(exc).splitlines()[0][:160]}") from None
        model, where = self.model, self.device

        def call(x):
            with tf.device(where):  # fixed when traced, so the timed call carries no device scope of its own
                return model(x, training=False)

        self._call = tf.function(call, reduce_retracing=True)
        self._ran_on: str | None = None

    def prepare(self, batch):
        """Copy the batch to the device outside the timed region (as the other runners bind theirs)."""
        with self._tf.device(self.device):
            return self._tf.identity(self._tf.constant(np.ascontiguousarray(batch, dtype=np.float32)))

    def invoke(self, prepared):
        out = self._call(prepared)
        if self._ran_on is None:
            self._ran_on = out.device
        return out.numpy()

    def describe(self) -> dict:
        import keras

        return {
            "runtime": "tensorflow",
            "keras": keras.__version__,
            "tensorflow": self._tf.__version__,
            "device": self.device,
            "execution_devices": [self._ran_on.rsplit("device:", 1)[-1]] if self._ran_on else [self.device.strip("/")],
            "executed_on": self._ran_on.rsplit("device:", 1)[-1] if self._ran_on else self.device.strip("/"),
            "input": {"shape": [None, *self.model.input_shape[1:]], "dtype": "float32"},
            "output": {"shape": [None, *self.model.output_shape[1:]], "dtype": "float32"},
        }


def open_runner(path, threads, setting, precision, prefer, batch) -> ArrayRunner:
    return KerasRunner(path, threads, device=setting)


def companion_files(path: Path) -> list[Path]:
    """Files a model file needs beside it (none: one file holds the model)."""
    return []


def graph_is_int8(path: Path) -> bool:
    """False: an int8 model of this kind declares an integer input dtype, which the runner reads."""
    return False
