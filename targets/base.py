"""The target registry: one row per target, driving the CLI, validation and benchmarks.

A backend module (``keras``, ``tflite``, ``onnx``, ``openvino``) provides
``export(model, spec, dest, calibration, options, saved_model=, progress=) -> dict``: it writes the
artifact at ``dest`` and returns details for the metadata (``progress(done, total)`` follows the
calibration passes). Running an artifact is the device kit's job (``edgeeff.kit.core``), here
through :func:`load_runner` and on a remote device through the same file. Heavy imports live inside
those modules; importing this registry is free.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgeeff.kit.core import ArrayRunner, RunnerError, load_runner as kit_load_runner
from edgeeff.errors import BackendMissingError, EdgeeffError, lookup


class Runner(Protocol):
    """A loaded artifact: float32 (N, H, W, 3) pixels in 0-255 in, float32 class logits out
    (artifacts end before the softmax; see ``edgeeff.convert.OUTPUT``)."""

    def predict(self, batch): ...  # float32 arrays in and out (numpy is imported by the runners)

    def describe(self) -> dict: ...


@dataclass(frozen=True)
class TargetOption:
    """A conversion option a target may take: its values (None: a flag, or a value the CLI does not
    take directly) and its help line. The one place option values live: the CLI's options, the
    targets' validation and the calibration sweep read them from :data:`OPTIONS`."""

    name: str
    choices: tuple[str, ...] | None
    help: str
    cli: bool = True  # a convert/sensitivity option (float_blocks and accuracy_control are set by their own commands)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value) -> None:
        if self.choices is not None and value not in self.choices:
            raise EdgeeffError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")


OPTIONS: dict[str, TargetOption] = {o.name: o for o in (
    TargetOption("io_dtype", ("int8", "uint8"), "input/output type (default int8)."),
    TargetOption("calibration_method", ("minmax", "entropy", "percentile"), "calibration method (default minmax)."),
    TargetOption("quant_types", ("u8u8", "u8s8", "s8s8", "u8s8-reduced"),
                 "activation/weight types (default: the CPU's recipe: u8s8-reduced, 7-bit weights, where int8 pairs saturate "
                 "in int16 (AVX2); u8s8 with VNNI, AMX or ARM dot product)."),
    TargetOption("preset", ("performance", "mixed"), "NNCF preset: symmetric or asymmetric activations (default performance)."),
    TargetOption("overflow_fix", ("enable", "first_layer_only", "disable"),
                 "7-bit weights against saturation (default: the CPU's recipe)."),
    TargetOption("fast_bias_correction", None, "NNCF's fast bias correction (default fast; --bias-correction re-fits each bias)."),
    TargetOption("float_blocks", None, "blocks kept in float (set by --float-blocks and the budget search).", cli=False),
    TargetOption("accuracy_control", None, "NNCF's quantize_with_accuracy_control (run by the budget search).", cli=False),
)}


@dataclass(frozen=True)
class TargetSpec:
    name: str
    backend: str  # module name under edgeeff.targets
    precision: str  # fp32 | fp16 | dynamic | int8
    suffix: str
    packages: tuple[str, ...]  # distributions that must be installed
    extra: str  # pip extra that installs them
    options: tuple[str, ...] = ()  # conversion options this target accepts
    tools: tuple[tuple[str, str], ...] = ()  # (executable, how to install it) the export needs
    accelerator: str | None = None  # the accelerator the artifact needs to run (kit_core.ACCELERATORS)
    # Settings that change how the int8 numbers are chosen but not the graph that runs them, so they
    # cost conversion time and no latency: the budget search (``edgeeff.quant.sensitivity``) tries each,
    # in order, before it keeps any block in float.
    budget_settings: tuple[tuple[tuple[str, object], ...], ...] = ()
    # Where the backend module lives when it is not ``edgeeff.targets.<backend>`` (a plug-in target).
    module_path: str | None = None
    needs_saved_model: bool = False  # the exporter reads a SavedModel (convert writes one for it)
    # Part of the artifact's content key: raised when the exported graph changes for the same inputs,
    # so an artifact cached from an older graph is converted again (None: never changed).
    graph_revision: int | None = None
    sweep_option: str | None = None  # the option whose values the calibration sweep tries (None: one method)
    runs_on_tensorflow: bool = False  # its runner starts TensorFlow (the CLI mutes TensorFlow's start-up for it)

    @property
    def module_name(self) -> str:
        """The module that exports and runs this target's artifacts (shipped in the device kit)."""
        return self.module_path or f"edgeeff.targets.{self.backend}"

    @property
    def quantized(self) -> bool:
        return self.precision in ("int8", "dynamic")

    @property
    def needs_calibration(self) -> bool:
        return self.precision == "int8"

    def module(self):
        self.require()
        return importlib.import_module(self.module_name)

    def missing(self) -> list[str]:
        """Distributions still to install; ``a|b`` is satisfied by either."""
        return [p.split("|")[0] for p in self.packages if not any(_installed(n) for n in p.split("|"))]

    def missing_tools(self) -> list[tuple[str, str]]:
        return [(tool, how) for tool, how in self.tools if shutil.which(tool) is None]

    def require(self) -> None:
        missing = self.missing()
        if missing:
            raise BackendMissingError(
                f"target {self.name} needs {', '.join(missing)}: pip install \"edgeeff[{self.extra}]\" (or pip install {' '.join(missing)})"
            )
        for tool, how in self.missing_tools():
            raise BackendMissingError(f"target {self.name} needs {tool} on PATH: {how}")


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


_TFLITE = ("tensorflow-cpu|tensorflow", "ai-edge-litert|tflite-runtime")
_ONNX = ("tf2onnx", "onnxruntime|onnxruntime-gpu")
_OV = ("openvino",)
_KERAS = ("tensorflow-cpu|tensorflow", "keras")
# The ONNX graph's revision (see TargetSpec.graph_revision). 2: the preprocessing's constants as
# scalars, or behind the input's transpose (targets/onnx.py, fast_preprocessing).
ONNX_GRAPH_REVISION = 2

TARGETS: dict[str, TargetSpec] = {
    t.name: t
    for t in (
        TargetSpec("keras-fp32", "keras", "fp32", ".keras", _KERAS, "all", runs_on_tensorflow=True),
        TargetSpec("tflite-fp32", "tflite", "fp32", ".tflite", _TFLITE, "tflite", needs_saved_model=True),
        TargetSpec("tflite-fp16", "tflite", "fp16", ".tflite", _TFLITE, "tflite", needs_saved_model=True),
        TargetSpec("tflite-dynamic", "tflite", "dynamic", ".tflite", _TFLITE, "tflite", needs_saved_model=True),
        TargetSpec("tflite-int8", "tflite", "int8", ".tflite", _TFLITE, "tflite", ("io_dtype", "float_blocks"), needs_saved_model=True),
        TargetSpec("tflite-edgetpu", "tflite", "int8", "_edgetpu.tflite", _TFLITE, "tflite", ("io_dtype",), needs_saved_model=True,
                   tools=(("edgetpu_compiler", "install edgetpu-compiler from Coral's apt repository, x86-64 Linux only "
                           "(https://coral.ai/docs/edgetpu/compiler/)"),), accelerator="edgetpu"),
        TargetSpec("onnx-fp32", "onnx", "fp32", ".onnx", _ONNX, "onnx", graph_revision=ONNX_GRAPH_REVISION),
        # Percentile calibration clips the activation ranges' outliers; the QDQ graph and its kernels
        # stay as they are. Measured, 397 photos: Lite2 plain int8 drop 0.50 -> 0.00 points (nothing
        # left to keep in float), Lite0 1.51 -> 1.01. Entropy did not help Lite0 (1.51) and is slower.
        TargetSpec("onnx-int8", "onnx", "int8", ".onnx", _ONNX, "onnx", ("calibration_method", "quant_types", "float_blocks"),
                   budget_settings=((("calibration_method", "percentile"),),), graph_revision=ONNX_GRAPH_REVISION,
                   sweep_option="calibration_method"),
        TargetSpec("openvino-fp32", "openvino", "fp32", ".xml", _OV, "openvino", needs_saved_model=True),
        TargetSpec("openvino-fp16", "openvino", "fp16", ".xml", _OV, "openvino", needs_saved_model=True),
        # Budget settings, tried in order before any block is kept in float; each leaves the graph's
        # kernels as they were. NNCF's full bias correction (fast_bias_correction off) re-fits each
        # layer's bias on the quantized model's own activations: measured plain int8 drop, 397
        # photos, Lite0 0.50 -> 0.00, Lite1 2.02 -> 1.26 points, for 3x the calibration time. The
        # mixed preset adds asymmetric ranges where activations are signed (the linear bottlenecks):
        # Lite1 1.26 -> 0.76 points, the same int8 kernels, median latency within noise.
        # accuracy_control: NNCF's quantize_with_accuracy_control, which the budget search runs
        # after these settings and before its own block search (targets/openvino.py says why).
        TargetSpec("openvino-int8", "openvino", "int8", ".xml", _OV + ("nncf",), "openvino",
                   ("preset", "fast_bias_correction", "overflow_fix", "float_blocks", "accuracy_control"),
                   budget_settings=((("fast_bias_correction", False),),
                                    (("fast_bias_correction", False), ("preset", "mixed"))),
                   needs_saved_model=True, sweep_option="preset"),
    )
}


def register(spec: TargetSpec, replace: bool = False) -> TargetSpec:
    """Add a target to the registry: the one step besides writing its module (``export`` and
    ``open_runner``; see targets/tflite.py). Its options must be in :data:`OPTIONS`."""
    if spec.name in TARGETS and not replace:
        raise EdgeeffError(f"target {spec.name} is already registered")
    unknown = [o for o in spec.options if o not in OPTIONS]
    if unknown:
        raise EdgeeffError(f"target {spec.name}: unknown option {unknown[0]!r}; options are {', '.join(OPTIONS)}")
    TARGETS[spec.name] = spec
    return spec


def load_plugins() -> None:
    """Targets other packages provide: each entry point of the group ``edgeeff.targets`` names a
    :class:`TargetSpec` (whose ``module_path`` is the plug-in's module). Installing such a package
    is all it takes; a broken one is named in one line."""
    for entry in importlib.metadata.entry_points(group="edgeeff.targets"):
        try:
            spec = entry.load()
        except Exception as exc:
            raise EdgeeffError(f"target plug-in {entry.name} ({entry.value}) does not load: {str(exc).splitlines()[0][:160]}") from None
        if not isinstance(spec, TargetSpec):
            raise EdgeeffError(f"target plug-in {entry.name} ({entry.value}) is not a TargetSpec")
        register(spec, replace=True)


def list_targets() -> list[str]:
    return list(TARGETS)


def get_target(name: str) -> TargetSpec:
    return lookup(TARGETS, name, "target")


def find_target(backend: str, precision: str) -> TargetSpec | None:
    """The registry's target of this backend and precision (the first, where several share them)."""
    return next((t for t in TARGETS.values() if t.backend == backend and t.precision == precision), None)


def check_options(spec: TargetSpec, options: dict) -> None:
    """Reject options the target does not take; never silently drop or change them."""
    for key, value in options.items():
        if value is not None and key not in spec.options:
            takers = [t.name for t in TARGETS.values() if key in t.options]
            flag = "--" + key.replace("_", "-")
            raise EdgeeffError(f"{flag} does not apply to {spec.name}; it is an option of {', '.join(takers)}")


def load_runner(spec: TargetSpec, path: str | Path, threads: int | None = None, device: str = "cpu",
                precision: str | None = "f32", adapt: dict | None = None) -> ArrayRunner:
    """An artifact's runner on this machine: the device kit's, with its refusals as EdgeeffError.
    ``device`` is an accelerator name (``cpu``, ``gpu``, ``edgetpu``, ...; see kit_core.ACCELERATORS)."""
    try:
        return kit_load_runner(spec.module_name, path, threads, device, precision, adapt=adapt)
    except RunnerError as exc:
        raise EdgeeffError(str(exc)) from None


def versions(*distributions: str) -> dict[str, str]:
    out = {}
    for dist in distributions:
        for name in dist.split("|"):
            try:
                out[name] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


load_plugins()
