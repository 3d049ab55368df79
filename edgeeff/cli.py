"""The ``edgeeff`` command: thin click commands over the library; no logic of its own.

Exit codes: 0 ok, 1 a check fell short, 2 bad input or could not run. Errors are one line on
stderr, never a traceback (set EDGEEFF_DEBUG=1 to see one).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from edgeeff.devices.cpu import PROFILES as CPU_PROFILES
from edgeeff.errors import EdgeeffError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not ours to print


def quiet_tensorflow_import() -> None:
    """Import TensorFlow with file descriptor 2 muted: its absl start-up lines ignore
    TF_CPP_MIN_LOG_LEVEL and would bury our one-line errors. Import failures still surface."""
    if "tensorflow" in sys.modules or os.environ.get("EDGEEFF_DEBUG"):
        return
    from edgeeff.kit.core import native_stderr_muted

    try:
        with native_stderr_muted():
            import tensorflow
    except ImportError as exc:
        fail(f"TensorFlow is not importable ({exc}); reinstall: pip install -e .")
    # Its Python warnings too: "N out of the last N calls ... triggered tf.function retracing" comes
    # from validating one freshly built model per conversion (bench converts nine) and says nothing
    # a user can act on.
    tensorflow.get_logger().setLevel("ERROR")


def check_report_paths(*paths: str | None) -> None:
    """Refuse before any work when a report (--json, --plot, ...) could not be written at the end;
    ``-`` is standard output (tables then go to stderr, so the pipe carries the report alone)."""
    from edgeeff import report
    from edgeeff.fsio import STDOUT

    if sum(1 for path in paths if path == STDOUT) > 1:
        raise EdgeeffError("only one report can go to standard output (-)")
    for path in paths:
        if path == STDOUT:
            report.report_to_stdout()
        elif path and not Path(path).resolve().parent.is_dir():
            raise EdgeeffError(f"cannot write {path}: its folder does not exist")


def fail(message: str, code: int = 2) -> None:
    click.echo(f"edgeeff: error: {message}", err=True)
    sys.exit(code)


class Group(click.Group):
    """Turns project errors into one line and an exit code. Commands check their arguments first
    and import TensorFlow (``quiet_tensorflow_import``) only once there is work to do, so a typo
    is answered at once, not after seconds of framework start-up."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeeffError as exc:
            if os.environ.get("EDGEEFF_DEBUG"):
                raise
            fail(str(exc), exc.exit_code)
        except click.UsageError as exc:  # an option out of range, a missing value: one line too, not click's block
            where = f"edgeeff {exc.ctx.info_name} --help" if exc.ctx is not None and exc.ctx.parent is not None else "edgeeff --help"
            fail(f"{exc.format_message()} (see {where})", 2)
        except KeyboardInterrupt:
            fail("interrupted; nothing was written", 130)
        except MemoryError:
            fail("out of memory; try a smaller --batch or variant")


def default_weights(variant) -> str:
    """The weights a command uses when none are named (``edgeeff.weights.cards.default_weights_name``)."""
    from edgeeff.weights.cards import default_weights_name

    return default_weights_name(variant)


def chosen_weights(variant, weights: str | None) -> str:
    """``--weights`` as given, else the variant's real weights (or a refusal); checked before TensorFlow starts."""
    if weights is None:
        return default_weights(variant)
    from edgeeff.api import choose_weights

    choose_weights(variant, weights)  # an unknown card or one of another variant fails here, not after the model is built
    return weights


def target_cpu(for_cpu: str | None, device_name: str | None, devices_file: str | None):
    """The CPU profile an int8 artifact is converted for: named, a device's recorded one, or None (this machine's)."""
    if for_cpu and device_name:
        raise EdgeeffError("--for-cpu and --device both name the CPU; give one")
    if not device_name:
        return for_cpu
    from edgeeff.devices.registry import get_device

    device = get_device(device_name, devices_file)
    profile = device.cpu_profile()
    if profile is None:
        raise EdgeeffError(f"{device.name}'s CPU is not known yet: run `edgeeff devices check {device.name}` (it records it), "
                           f"or pass --for-cpu ({', '.join(CPU_PROFILES)})")
    return profile


def generated_quantizer_options() -> list:
    """The int8 quantizer's click options, generated from the target registry's option table
    (``edgeeff.targets.base.OPTIONS``): values and help from there, and which targets take each."""
    from edgeeff.targets.base import OPTIONS, TARGETS

    made = []
    for option in OPTIONS.values():
        takers = [t.name for t in TARGETS.values() if option.name in t.options and t.precision == "int8" and t.accelerator is None]
        if not option.cli or not takers:
            continue
        where = f"{', '.join(takers)} only: "
        if option.choices is None:
            made.append(click.option(f"{option.flag}/--{option.name.split('_', 1)[-1].replace('_', '-')}", default=None,
                                     help=where + option.help))
        else:
            made.append(click.option(option.flag, type=click.Choice(list(option.choices)), default=None, help=where + option.help))
    return made


def quantizer_options(command):
    """The int8 quantizer's own settings, shared by convert and sensitivity: a ranking measured under
    other settings than the conversion it steers ranks the wrong errors."""
    for option in reversed(generated_quantizer_options()):
        command = option(command)
    return command


def chosen_options(quantizer: dict) -> dict:
    """The quantizer settings the user gave (targets validate them against their own options)."""
    return {k: v for k, v in quantizer.items() if v is not None}


@contextlib.contextmanager
def step_progress(console):
    """A rich progress line for a multi-step job: ``say(step)`` names the step, ``say(step, done, total)``
    turns it into a bar. Transient, on stderr, so stdout stays the result."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def say(step: str, done: int | None = None, total: int | None = None) -> None:
            bar.update(task, description=step, completed=done or 0, total=total)

        yield say


def bundled_images() -> list[Path]:
    from edgeeff.data.images import bundled_photos

    return [p for p in bundled_photos() if p.name in ("grace_hopper.jpg", "flower.jpg", "china.jpg")]


@click.group(cls=Group)
@click.version_option(package_name="edgeeff")
def main() -> None:
    """EfficientNet from one Keras definition to measured edge deployments."""


@main.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON (each row says its task).")
@click.option("--variant", "names", multiple=True, help="Only these variants or detectors (efficientdet-d0 ...; repeatable).")
def models(json_path: str | None, names: tuple[str, ...]) -> None:
    """Every named variant and detector: resolution, sizes, parameters, multiply-adds, real weights."""
    from rich.progress import Progress

    from edgeeff import report
    from edgeeff.model import catalog, detector_catalog
    from edgeeff.model.detectors import DETECTORS, get_detector
    from edgeeff.model.variants import resolve

    check_report_paths(json_path)
    wanted_detectors = [get_detector(n).name for n in names if n.strip().lower().startswith("efficientdet")]
    wanted_variants = [resolve(n).name for n in names if not n.strip().lower().startswith("efficientdet")]
    variants = wanted_variants or (None if not names else [])
    detectors = wanted_detectors or (None if not names else [])
    quiet_tensorflow_import()
    classifiers: list[dict] = []
    found: list[dict] = []
    with Progress(transient=True) as progress:
        if variants != []:
            task = progress.add_task("counting", total=len(variants or catalog.VARIANTS))
            classifiers = catalog.model_rows(variants, progress=lambda n: progress.update(task, advance=1, description=f"building {n}"))
        if detectors != []:
            task = progress.add_task("counting detectors", total=len(detectors or DETECTORS))
            found = detector_catalog.detector_rows(detectors, progress=lambda n: progress.update(task, advance=1, description=f"building {n}"))
    if classifiers:
        report.print_table(classifiers, [
            ("variant", "variant"), ("family", "family"), ("resolution", "res"), ("width", "width"),
            ("depth", "depth"), ("dropout", "dropout"), ("params", "params"), ("gmacs", "GMACs"), ("weights", "real weights"),
        ], title="EfficientNet family (MACs computed from the built model)")
    if found:
        report.print_table(found, [("detector", "detector"), ("backbone", "backbone"), ("resolution", "res"),
                                   ("fpn_width", "BiFPN width"), ("fpn_depth", "BiFPN depth"), ("head_depth", "head depth"),
                                   ("trainable_params", "params"), ("published_params", "published"),
                                   ("params_vs_published", "vs published"), ("gmacs", "GMACs"), ("published_gflops", "published GFLOPs")],
                           title="EfficientDet (90 classes; parameters counted from the built model, the paper counts trainable ones)")
    rows = [{"task": "classify", **r} for r in classifiers] + [{"task": "detect", **r} for r in found]
    if json_path:
        report.write_json(json_path, rows)


@main.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X (a Keras model built here).")
@click.option("--weights", default=None, help="imagenet, a card name (lite0-pypi), a file, or none (random). Default: the variant's real weights.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Run this instead of --variant: an artifact folder, or a .tflite/.onnx/.xml/.keras file.")
@click.option("--preprocessing", default=None, help="With a bare model file: raw, imagenet, lite, inception, a card, or mean=R,G,B;std=R,G,B.")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Class names, one per line in output order (default: ImageNet's 1000).")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON (- for stdout).")
def predict(images: tuple[Path, ...], variant: str, weights: str | None, model_path: Path | None, preprocessing: str | None,
            labels_path: str | None, top: int, json_path: str | None) -> None:
    """Top-k classes for IMAGES (default: the photos that ship with edgeeff)."""
    import tempfile

    from edgeeff import report
    from edgeeff.predict import read_labels, top_k_rows
    from edgeeff.model.variants import resolve

    check_report_paths(json_path)
    names = read_labels(labels_path) if labels_path else None
    paths = list(images) or bundled_images()
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise EdgeeffError(f"image not found: {missing[0]}")
    if model_path is not None:
        from edgeeff.artifact import open_artifact, resolve_artifact
        from edgeeff.data.preprocess import PreprocessCard

        with tempfile.TemporaryDirectory(prefix="edgeeff-model-") as scratch:
            folder = resolve_artifact(model_path, Path(scratch), preprocessing)
            quiet_tensorflow_import_if_keras(folder)
            meta, runner = open_artifact(folder)
            rows = top_k_rows(runner.predict, paths, meta["preprocessing"]["resolution"], PreprocessCard.from_dict(meta["preprocessing"]),
                              top, names)
        title, extra = f"{model_path} ({meta['target']}{assumed_text(meta)})", {"model": str(model_path), "target": meta["target"]}
    else:
        if preprocessing is not None:
            raise EdgeeffError("--preprocessing is for a bare model file given with --model")
        v = resolve(variant)
        weights = chosen_weights(v, weights)
        quiet_tensorflow_import()
        from edgeeff.api import build

        model = build(v, weights=weights)
        if names:
            import dataclasses

            model.edgeeff_weights = dataclasses.replace(model.edgeeff_weights, classes=names)
        from edgeeff.predict import predict_images

        rows = predict_images(model, paths, top=top)
        label = report.weights_text(model.edgeeff_weights.label)
        title, extra = f"{v.name} with {label}" + ("" if label == report.RANDOM_WEIGHTS else " weights"), {"variant": v.name, "weights": label}
    report.print_table(
        rows,
        [("file", "image"), ("rank", "#"), ("synset", "synset"), ("name", "class"), ("probability", "probability")],
        title=title,
    )
    if json_path:
        report.write_json(json_path, rows, **extra)


def device_title(device, info: dict) -> str:
    """A device as a table title names it: a board's CPU and machine, and the int8 profile it ran with."""
    parts = device.title_parts(info)
    if info.get("cpu_profile"):
        parts.append(f"int8 profile {info['cpu_profile']}")
    parts = [p for p in parts if p]
    return device.name + (f" ({', '.join(parts)})" if parts else "")


def quiet_tensorflow_import_if_keras(folder: Path) -> None:
    """A target whose runner starts TensorFlow (a .keras model): start it muted, as the commands that build models do."""
    from edgeeff.targets.base import TARGETS

    meta = json.loads((folder / "edgeeff.json").read_text()) if (folder / "edgeeff.json").is_file() else {}
    spec = TARGETS.get(meta.get("target", ""))
    if spec is not None and spec.runs_on_tensorflow:
        quiet_tensorflow_import()


def assumed_text(meta: dict) -> str:
    """What an imported model file's row had to assume, for a table title."""
    assumed = (meta.get("imported") or {}).get("assumed") or []
    return f"; assumed: {'; '.join(assumed)}" if assumed else ""


@main.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
def targets(json_path: str | None) -> None:
    """Every conversion target, whether its backend is installed, and the pip command if not."""
    from edgeeff import report
    from edgeeff.targets.base import TARGETS

    from edgeeff.devices.cpu import local_profile
    from edgeeff.quant.recipes import recipe_for

    check_report_paths(json_path)
    convert_options = {param.name for param in convert.params}  # the options a user can pass, from convert itself
    profile = local_profile()
    rows = []
    for spec in TARGETS.values():
        recipe = recipe_for(spec.name, profile)
        missing, tools = spec.missing(), spec.missing_tools()
        rows.append({
            "target": spec.name, "backend": spec.backend, "precision": spec.precision,
            "options": ", ".join("--" + o.replace("_", "-") for o in spec.options if o in convert_options) or "-",
            "installed": not missing and not tools,
            "install": f'pip install "edgeeff[{spec.extra}]"' if missing else (f"{tools[0][0]}: {tools[0][1]}" if tools else "-"),
            "runs_on": spec.accelerator or "cpu/gpu",
            "recipe": (", ".join([f"--{k.replace('_', '-')} {v}" for k, v in recipe.options.items()]
                                 + [f"{recipe.calibration_count} calibration images"]) if recipe else "-"),
        })
    shown = [{**row, "install": "yes" if row["installed"] else row["install"]} for row in rows]
    report.print_table(shown, [("target", "target"), ("options", "options"), ("recipe", f"int8 recipe for this CPU ({profile.name})"),
                               ("install", "installed")], title="Targets")
    if json_path:
        report.write_json(json_path, rows)


@main.group()
def devices() -> None:
    """Devices a bench can run on: this machine's CPU/GPU and boards reached over SSH (devices.toml)."""


DEVICES_FILE_OPTION = click.option("--devices-file", type=click.Path(dir_okay=False), default=None,
                                   help="Devices TOML (default: $EDGEEFF_DEVICES, else ~/.config/edgeeff/devices.toml).")


@devices.command(name="list")
@DEVICES_FILE_OPTION
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON (- for stdout).")
def devices_list(devices_file: str | None, json_path: str | None) -> None:
    """Every device: name, where it is, the Python it uses, its accelerator (gpu only where one is usable)."""
    from edgeeff import report
    from edgeeff.devices.registry import default_devices_file, load_devices, usable_local_devices

    check_report_paths(json_path)
    path = Path(devices_file).expanduser() if devices_file else default_devices_file()
    local = {d.name for d in usable_local_devices()}
    rows = [{"device": d.name, "where": d.where, "python": d.interpreter,
             "accelerator": d.accelerator, "runtime": d.runtime or "-", "description": d.description}
            for d in load_devices(devices_file).values() if not d.shares_this_machine or d.name in local]
    report.print_table(rows, [("device", "device"), ("where", "where"), ("accelerator", "accelerator"), ("python", "python"),
                              ("runtime", "TFLite runtime")], title="Devices")
    report.echo(f"devices file: {path}" + ("" if path.is_file() else
                " (does not exist yet: add a board with `edgeeff devices add NAME --host HOST --user USER`)"))
    if json_path:
        report.write_json(json_path, rows, devices_file=str(path), devices_file_exists=path.is_file())


@devices.command(name="add")
@click.argument("name")
@click.option("--host", required=True, help="Address or ~/.ssh/config alias of the board.")
@click.option("--user", default=None, help="SSH user (default: ssh's own choice).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="SSH port (default 22).")
@click.option("--identity", default=None, help="Private key file (default: ssh's keys and agent).")
@click.option("--known-hosts", default=None, help="known_hosts file (default: ssh's own).")
@click.option("--python", "python_path", default=None, help="Python on the board, ideally a venv's (default python3).")
@click.option("--runtime", default=None, help="Preferred TFLite runtime there: ai-edge-litert or tflite-runtime.")
@click.option("--accelerator", default=None, help="cpu (default), edgetpu, gpu, npu, cuda, ...")
@click.option("--workdir", default=None, help="Cache folder on the board (default .cache/edgeeff in the login directory).")
@click.option("--description", default=None, help="A line shown by `devices list`.")
@click.option("--replace", is_flag=True, help="Overwrite an entry of the same name.")
@DEVICES_FILE_OPTION
def devices_add(name, host, user, port, identity, known_hosts, python_path, runtime, accelerator, workdir, description, replace,
                devices_file) -> None:
    """Add a board reached over SSH to the devices file (validated, written atomically; other entries kept)."""
    from edgeeff.devices.registry import add_device

    settings = {"host": host, "user": user, "port": port, "identity": identity, "known_hosts": known_hosts, "python": python_path,
                "runtime": runtime, "accelerator": accelerator, "workdir": workdir, "description": description}
    path = add_device(name, settings, devices_file, replace)
    click.echo(f"added {name} to {path}; check it with: edgeeff devices check {name}"
               + (f" --devices-file {devices_file}" if devices_file else ""))


@devices.command(name="remove")
@click.argument("name")
@DEVICES_FILE_OPTION
def devices_remove(name: str, devices_file: str | None) -> None:
    """Remove a board from the devices file (written atomically)."""
    from edgeeff.devices.registry import remove_device

    click.echo(f"removed {name} from {remove_device(name, devices_file)}")


@devices.command(name="check")
@click.argument("name")
@click.option("--devices-file", type=click.Path(dir_okay=False), default=None, help="Devices TOML (default: ~/.config/edgeeff/devices.toml).")
@click.option("--accept-new-host-key", is_flag=True, help="Let ssh record the host key of a device it has never seen (never a changed one).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
def devices_check(name: str, devices_file: str | None, accept_new_host_key: bool, json_path: str | None) -> None:
    """Connect and report CPU, cores, OS, architecture, Python, runtimes, free disk, temperature."""
    from edgeeff import report
    from edgeeff.devices.registry import get_device

    check_report_paths(json_path)
    device = get_device(name, devices_file)
    device.check()
    info = device.connect(accept_new_host_key).probe()
    from edgeeff.devices.cpu import from_probe
    from edgeeff.devices.registry import record_cpu_profile

    profile = from_probe(info)
    if profile is not None:
        info["cpu_profile"] = profile.name
        if device.records_profile and record_cpu_profile(device.name, profile.name, devices_file):
            click.echo(f"recorded cpu = \"{profile.name}\" for {device.name} (convert --device {device.name} uses it)", err=True)
    info = {**info, **device.marks}
    print_device_info(device, info, f"Device {device.name}")
    if json_path:
        report.write_json(json_path, [info], device=device.name, **({"caveat": device.caveat} if device.caveat else {}))
    runtimes = info.get("runtimes", {})
    if "numpy" not in runtimes or not (set(runtimes) - {"numpy"}):
        what = "numpy" if "numpy" not in runtimes else "a runtime"
        click.echo(f"edgeeff: {device.name} has no {what} yet: run edgeeff devices setup {device.name} "
                   f"(or on the device: {device.python} -m pip install numpy ai-edge-litert)", err=True)
        sys.exit(1)


def print_device_info(device, info: dict, title: str) -> None:
    """The probe of a device as a field/value table (``devices check``, ``devices setup``, ``devices emulate``)."""
    from edgeeff import report
    from edgeeff.devices.cpu import PROFILES, int8_features

    features = info.get("cpu_features") or []
    if info.get("machine") == "x86_64":  # x86 lists ~100 flags: show the ones that pick int8 kernels (ARM's list is short)
        features = int8_features(features)
    profile = PROFILES.get(info.get("cpu_profile") or "")
    runtimes = info.get("runtimes", {})
    rows = [{"field": k, "value": v} for k, v in (
        ("device", f"{device.name} ({device.where})"),
        ("emulated", "yes: outputs are the ARM build's own, latency is qemu's, not a board's" if info.get("emulated") else None),
        ("cpu", info.get("cpu")),
        ("cores", info.get("cores")), ("machine", info.get("machine")),
        ("cpu features", " ".join(features) + f" ({info.get('cpu_features_source')})" if info.get("cpu_features_source") else None),
        ("int8 profile", f"{profile.name}: {profile.description}" if profile else None), ("os", info.get("os")),
        ("distribution", info.get("distribution")), ("board", info.get("board")), ("python", f"{info.get('python')} ({info.get('python_executable')})"),
        ("memory", f"{info.get('memory_total_mb')} MB"), ("free disk", f"{info.get('free_disk_gb')} GB"),
        ("temperature", f"{info['temperature_c']:.1f} C" if "temperature_c" in info else None),
        ("throttled", info.get("throttled")), ("accelerator", device.accelerator),
        *((f"runtime {r}", runtimes.get(r) or "not installed") for r in ("numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "openvino")),
    ) if v is not None]
    report.print_table(rows, [("field", "field"), ("value", "value")], title=title)


@devices.command(name="setup")
@click.argument("name")
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder of wheels for the device (pip download --platform ...): uploaded and installed with --no-index, for devices without network.")
@click.option("--package", "packages", multiple=True, help="What to install (repeatable; default: numpy ai-edge-litert onnxruntime).")
@DEVICES_FILE_OPTION
@click.option("--accept-new-host-key", is_flag=True, help="Let ssh record the host key of a device it has never seen (never a changed one).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the device's probe as JSON (- for stdout).")
def devices_setup(name: str, wheelhouse: Path | None, packages: tuple[str, ...], devices_file: str | None, accept_new_host_key: bool,
                  json_path: str | None) -> None:
    """Install what the device kit needs into the device's venv over SSH (creating the venv), check it imports, report versions."""
    from rich.console import Console

    from edgeeff import report

    from edgeeff.devices import provision
    from edgeeff.devices.registry import get_device

    check_report_paths(json_path)
    if wheelhouse is not None and not wheelhouse.is_dir():
        raise EdgeeffError(f"--wheelhouse {wheelhouse} does not exist: download wheels there with pip download --platform ... --only-binary=:all:")
    device = get_device(name, devices_file)
    session = device.connect(accept_new_host_key)
    with step_progress(Console(stderr=True)) as say:
        info = session.provision(list(packages) or None, wheelhouse, say)
    info = {**info, **device.marks}
    print_device_info(device, info, f"Device {device.name}: set up")
    if json_path:
        report.write_json(json_path, [info], device=device.name, packages=list(packages) or list(provision.DEFAULT_PACKAGES))


@devices.command(name="emulate")
@click.argument("board", default="rpi")
@click.option("--name", default=None, help="Device name in the devices file (default: the board's, e.g. rpi).")
@click.option("--stop", is_flag=True, help="Stop the emulated board's sshd and unmount its /proc and /dev nodes (the cache is kept).")
@click.option("--cpu", default=None, help="The CPU qemu emulates (default: the board's, cortex-a76 for rpi = Pi 5; cortex-a72 = Pi 4; "
                                        "max = every feature qemu has). Restarts sshd if it ran with another.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the root, wheels and keys live (default: $EDGEEFF_EMULATED_CACHE/BOARD, else ~/.cache/edgeeff/emulated/BOARD).")
@DEVICES_FILE_OPTION
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the timings and the device's probe as JSON (- for stdout).")
def devices_emulate(board: str, name: str | None, stop: bool, cpu: str | None, cache: Path | None, devices_file: str | None,
                    json_path: str | None) -> None:
    """Bring up an emulated board (rpi: Debian bookworm arm64 under qemu-user) as an SSH device on 127.0.0.1: builds or reuses
    its cached root, wheels and keys, starts its sshd if it is not running, writes its devices-file entry, installs the runtimes.
    Needs root. Outputs on it are the ARM build's own; its latency is qemu's, not a board's."""
    from rich.console import Console

    from edgeeff import report

    from edgeeff.devices import emulated as emulate

    check_report_paths(json_path)
    spec = emulate.get_board(board)
    cache = (cache or emulate.default_cache(spec)).expanduser().resolve()
    if stop:
        done = emulate.stop(spec, cache)
        click.echo("; ".join(done) if done else f"{spec.name}: nothing was running ({cache})")
        return
    with step_progress(Console(stderr=True)) as say:
        result = emulate.up(spec, name or spec.name, cache, devices_file, say, cpu)
    device = result["device"]
    print_device_info(device, {**result["probe"], **device.marks}, f"Device {device.name}: emulated {spec.name} on 127.0.0.1:{result['port']}")
    t = result["timings"]
    click.echo(f"{device.name} is up in {t['total_s']:.0f} s (root {t['root_s']:.0f} s, wheels {t['wheels_s']:.0f} s, sshd {t['sshd_s']:.0f} s, "
               f"runtimes {t['provision_s']:.0f} s); entry written to {result['devices_file']}; stop it with: edgeeff devices emulate {spec.name} --stop")
    if json_path:
        report.write_json(json_path, [{**result["probe"], **device.marks}], device=device.name, board=spec.name, cache=result["cache"],
                          port=result["port"], qemu_cpu=result["qemu_cpu"], timings=t, wheels=result["wheels"], caveat=device.caveat)


def render_detector_conversion(meta: dict, out, json_path) -> None:
    """The validation table of a detector artifact: raw outputs, then boxes after post-processing."""
    from edgeeff import report

    val, boxes = meta["validation"], meta["validation"]["boxes"]
    row = {
        "target": meta["target"], "variant": meta["variant"], "weights": report.weights_text(meta["weights"]["label"]),
        "size_mb": round(meta["size_bytes"] / 1e6, 2), "seconds": meta["conversion_seconds"], "images": boxes["images"],
        "class_logit_cosine": val["class_logit_cosine"], "max_rel_diff": val["max_rel_diff"],
        "reference_boxes": boxes["reference_boxes"], "matched": boxes["matched"], "matched_iou_mean": boxes["matched_iou_mean"],
        "score_diff_mean": boxes["score_diff_mean"], "map_vs_reference": boxes["map_vs_reference"],
        "reused": bool(meta.get("reused")), "fully_integer": meta["conversion"].get("fully_integer"),
        "path": meta.get("path", str(Path(out))),
    }
    labels = [("target", "target"), ("variant", "detector"), ("weights", "weights"), ("size_mb", "size (MB)"),
              ("seconds", "conversion (s)"), ("fully_integer", "full integer"), ("images", "validation images"),
              ("class_logit_cosine", "mean cosine of class logits"), ("max_rel_diff", "max relative output difference"),
              ("reference_boxes", "confident Keras boxes"), ("matched", "found again (same class, IoU >= 0.5)"),
              ("matched_iou_mean", "mean IoU of those"), ("score_diff_mean", "mean score difference"),
              ("map_vs_reference", "mAP against Keras's boxes"), ("reused", "reused existing artifact")]
    summary = [{"field": label, "value": report.fmt(row[key], key, row)} for key, label in labels if row.get(key) is not None]
    report.print_table(summary, [("field", "field"), ("value", "value")], title="Validation against the Keras detector")
    if meta.get("budget"):
        render_budget(meta["budget"], detector=True)
    report.echo(f"artifact: {row['path']}")
    if json_path:
        report.write_json(json_path, [row], metadata=meta)


def render_budget(b: dict, detector: bool) -> None:
    """The budget search's steps and its outcome (``convert --max-drop/--min-agreement``); a
    detector's agreement is its mAP against the fp32 detector's boxes."""
    from edgeeff import report
    from edgeeff.quant.budget import settings_text

    agreement = ("map_vs_reference", "mAP vs fp32 boxes") if detector else ("agreement", "agreement")
    steps = [{"step": st.get("step", ""), "float": ", ".join(st["float_blocks"]) or "-", "drop": st.get("drop_points"),
              agreement[0]: st["agreement"], "meets": "yes" if st.get("meets") else "no", "median_ms": st["median_ms"],
              "side_by_side": (f"{st['side_by_side_ms'][0]:.2f} vs {st['side_by_side_ms'][1]:.2f}: "
                               f"{'faster, kept' if st.get('faster') else 'not faster'}"
                               if all(st.get("side_by_side_ms") or [None]) else None)}
             for st in b["steps"]]
    drop = [] if detector else [("drop", "top-1 drop (pts)")]
    report.print_table(steps, [("step", "step"), ("float", "blocks in float"), *drop,
                               agreement, ("meets", "meets budget"), ("median_ms", "median ms"),
                               ("side_by_side", "ms side by side (this vs before)")],
                       title="Budget search (each step a real conversion, measured)")
    settings = settings_text(b.get("settings"))
    kept = ", ".join(b["float_blocks"]) or f"nothing (plain int8{' with ' + settings if settings else ''} meets the budget)"
    if settings and b["float_blocks"]:
        kept += f" (with {settings})"
    ci = b.get("result", {}).get("drop_ci95_points")
    drop = (f"; top-1 drop {b['result']['drop_points']:+.2f} points (paired 95% interval {ci[0]:+.2f} to {ci[1]:+.2f})"
            if ci else "")
    share = f"{b['speedup_kept']:.0%}" if b.get("speedup_kept") else "-"
    click.echo(f"kept in float: {kept}{drop}; speedup over fp32 {report.fmt(b.get('speedup_budgeted'))} "
               f"(plain int8 {report.fmt(b.get('speedup_plain_int8'))}, {share} of it kept)")


@main.command()
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X (overrides: NAME:resolution=R), or a detector (efficientdet-lite0; see edgeeff models).")
@click.option("--target", "target", default="tflite-int8", show_default=True, help="See `edgeeff targets`.")
@click.option("--weights", default=None, help="imagenet, a card name, a file, or none. Default: the variant's first real weights, else none.")
@click.option("--out", type=click.Path(file_okay=False), default="edgeeff-out", show_default=True, help="Folder for artifacts.")
@click.option("--calibration", type=click.Path(), default=None, help="Calibration images (folder or label<TAB>path list). Default: the embedded photos.")
@click.option("--calibration-count", type=int, default=None, help="Number of calibration images (seeded choice). Default: the int8 recipe's (200).")
@click.option("--calibration-views", type=click.IntRange(1, 12), default=None,
              help="Views per calibration image (whole photo, crops, mirrored). Default: 12 below 50 images, else 1.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--images", type=click.Path(), default=None, help="Validation images (kept disjoint from calibration).")
@quantizer_options
@click.option("--float-blocks", default=None, help="int8 targets: keep these blocks in float (e.g. stem,block1a,head; a detector's also resample_p6, bifpn0, class_net, box_net; see `edgeeff sensitivity`); a block includes its SE part unless -blockX_se is listed too; one convolution by its layer name (block1a_dwconv) keeps only it.")
@click.option("--max-drop", type=float, default=None, help="int8 targets: keep the fewest blocks in float until the top-1 drop vs fp32 on --images is at most this many points (then a float neighbour or a single convolution where that also runs faster).")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None, help="int8 targets: ... until top-1 agreement with fp32 on --images is at least this (0-1); for a detector, its mAP against the fp32 detector's own boxes.")
@click.option("--sensitivity", "sensitivity_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="With --max-drop/--min-agreement: the block ranking from `edgeeff sensitivity --json` (else measured now).")
@click.option("--for-cpu", "for_cpu", type=click.Choice(list(CPU_PROFILES)), default=None,
              help="int8: the CPU the artifact will run on, which picks the int8 recipe (default: this machine's; see README, Int8 recipes).")
@click.option("--device", "device_name", default=None,
              help="int8: convert for this device's CPU (recorded by `edgeeff devices check NAME`), instead of --for-cpu.")
@click.option("--devices-file", type=click.Path(dir_okay=False), default=None, help="Devices TOML (default: ~/.config/edgeeff/devices.toml).")
@click.option("--force", is_flag=True, help="Convert again even if an identical artifact exists.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the metadata as JSON (- for stdout).")
def convert(variant, target, weights, out, calibration, calibration_count, calibration_views, seed, images, float_blocks, max_drop,
            min_agreement, sensitivity_path, for_cpu, device_name, devices_file, force, json_path, **quantizer) -> None:
    """Convert a variant to a deployment target, calibrated on real images, validated against Keras."""
    from rich.console import Console

    from edgeeff.convert import convert as run_convert
    from edgeeff.model.variants import resolve

    from edgeeff.targets.base import check_options, get_target

    from edgeeff.model.detectors import is_detector

    console = Console(stderr=True)
    check_report_paths(json_path)
    detector = is_detector(variant)
    v = None if detector else resolve(variant)
    spec = get_target(target)
    options = chosen_options(quantizer)
    check_options(spec, options)
    for what, path in (("--calibration", calibration), ("--images", images)):
        if path is not None and not Path(path).exists():
            raise EdgeeffError(f"{what} {path} does not exist")
    cpu = target_cpu(for_cpu, device_name, devices_file)
    if float_blocks:
        options["float_blocks"] = [b.strip() for b in float_blocks.split(",") if b.strip()]
    budgeted = max_drop is not None or min_agreement is not None
    if detector and max_drop is not None:
        raise EdgeeffError(f"{variant}: --max-drop is top-1 points; a detector's budget is --min-agreement, the mAP (0-1) of the "
                           "int8 artifact against the fp32 detector's own boxes on --images")
    if sensitivity_path and not budgeted:
        raise EdgeeffError("--sensitivity ranks blocks for --max-drop/--min-agreement; give one of them")
    if budgeted and float_blocks:
        raise EdgeeffError("--float-blocks and --max-drop/--min-agreement are alternatives: the budget chooses the blocks")
    if budgeted and images is None:
        raise EdgeeffError("--max-drop/--min-agreement need --images: the evaluation images the budget is measured on")
    if max_drop is not None and max_drop < 0:
        raise EdgeeffError("--max-drop must be >= 0 (top-1 points)")
    weights = weights if detector else chosen_weights(v, weights)
    quiet_tensorflow_import()
    with step_progress(console) as say:
        if budgeted:
            from edgeeff.quant.budget import convert_within_budget

            meta = convert_within_budget(variant, target, weights, images, calibration, calibration_count, seed, options, Path(out),
                                         max_drop, min_agreement, say, calibration_views, cpu=cpu, sensitivity_report=sensitivity_path)
        else:
            meta = run_convert(variant, target, weights=weights, out=out, calibration=calibration,
                               calibration_count=calibration_count, calibration_views=calibration_views, seed=seed, images=images,
                               force=force, options=options, progress=say, cpu=cpu)
    if meta.get("calibration"):
        for warning in meta["calibration"].get("warnings", []):
            console.print(f"[yellow]warning:[/] {warning}")
    for note in meta["validation"].get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    if detector:
        render_detector_conversion(meta, out, json_path)
        return
    if meta["weights"]["label"] == "none":
        console.print("[yellow]warning:[/] random weights (--weights none): this model is untrained; its agreement with Keras "
                      "says the conversion is faithful, not that it classifies anything")
    from edgeeff import report

    val = meta["validation"]
    row = {
        "target": meta["target"], "variant": meta["variant"], "weights": report.weights_text(meta["weights"]["label"]),
        "size_mb": round(meta["size_bytes"] / 1e6, 2), "seconds": meta["conversion_seconds"],
        "images": val["images"], "agreement": val["top1_agreement"], "cosine": val["mean_cosine"],
        "max_rel_diff": val["max_rel_diff"], "reused": bool(meta.get("reused")),
        "fully_integer": meta["conversion"].get("fully_integer"), "path": meta.get("path", str(Path(out))),
    }
    labels = [("target", "target"), ("variant", "variant"), ("weights", "weights"), ("size_mb", "size (MB)"),
              ("seconds", "conversion (s)"), ("fully_integer", "full integer"), ("images", "validation images"),
              ("agreement", "top-1 agreement with Keras"), ("cosine", "mean cosine of logits"),
              ("max_rel_diff", "max relative logit difference"), ("reused", "reused existing artifact")]
    summary = [{"field": label, "value": report.fmt(row[key], key, row)} for key, label in labels if row.get(key) is not None]
    for key, label in (("top1_keras", "top-1 Keras"), ("top1_artifact", "top-1 artifact")):
        if key in val:
            summary.append({"field": label, "value": report.fmt(val[key], key)})
    report.print_table(summary, [("field", "field"), ("value", "value")], title="Validation against the Keras model")
    if meta.get("budget"):
        render_budget(meta["budget"], detector=False)
    report.echo(f"artifact: {row['path']}")
    if json_path:
        report.write_json(json_path, [row], metadata=meta)


@main.command()
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X, or a detector (efficientdet-lite0).")
@click.option("--weights", default=None, help="Default: the variant's first real weights, else none; a detector's: an edgeeff train-detect run directory.")
@click.option("--target", default="onnx-int8", show_default=True, help="An int8 target: tflite-int8, onnx-int8, openvino-int8.")
@click.option("--images", type=click.Path(), required=True, help="Evaluation images (kept disjoint from calibration).")
@click.option("--calibration", type=click.Path(), default=None, help="Calibration images (default: the embedded photos).")
@click.option("--calibration-count", type=int, default=None, help="Calibration images used (seeded choice). Default: the int8 recipe's (200).")
@click.option("--blocks", default=None, help="Only these blocks (comma-separated); default every block, stem and head.")
@click.option("--mode", type=click.Choice(["keep-float", "quantize-alone"]), default="keep-float", show_default=True,
              help="keep-float: all int8 but the block (error it removes); quantize-alone: only the block int8 (error it causes).")
@click.option("--seed", type=int, default=0, show_default=True)
@quantizer_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Rows and ranking as JSON (input for convert --sensitivity).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Bar chart PNG of the SNR change per block.")
def sensitivity(variant, weights, target, images, calibration, calibration_count, blocks, mode, seed, json_path, plot_path,
                **quantizer) -> None:
    """Per-block int8 sensitivity: agreement, cosine and SNR of the logits against fp32, by Keras block name
    (a detector's: mAP against the fp32 detector's boxes, class-logit cosine, SNR of the raw output)."""
    from rich.console import Console

    from edgeeff import report

    from edgeeff.model import blockmap
    from edgeeff.model.detectors import get_detector, is_detector
    from edgeeff.quant import sensitivity as sens
    from edgeeff.model.variants import resolve

    from edgeeff.targets.base import check_options, get_target

    detector = is_detector(variant)
    name = get_detector(variant).name if detector else resolve(variant).name
    check_report_paths(json_path, plot_path)
    options = chosen_options(quantizer)
    check_options(get_target(target), options)
    if not Path(images).exists():
        raise EdgeeffError(f"--images {images} does not exist")
    weights = weights if detector else chosen_weights(resolve(variant), weights)
    quiet_tensorflow_import()
    model = sens.model_of(name, weights)
    units = blockmap.check_units(model, blocks.split(",")) if blocks else blockmap.units(model)
    del model
    root, cleanup = sens.trial_root(None)
    try:
        with step_progress(Console(stderr=True)) as say:
            trials = sens.Trials(name, target, weights, images, calibration, calibration_count, seed, options, root, say)
            result = sens.sensitivity(trials, units, mode)
    finally:
        cleanup()
    base = result["plain_int8"]
    # a detector's agreement is an mAP (against the fp32 detector's boxes), not a share of images
    key, label, delta = (("map_vs_reference", "mAP vs fp32 boxes", ("delta_map_points", "d mAP vs fp32 boxes (pts)")) if detector
                         else ("agreement", "agreement", ("delta_agreement", "d agreement")))
    shown = [{**row, key: row["agreement"], "delta_map_points": row["delta_agreement"] * 100} for row in result["rows"]]
    title = (f"{name} ({weights}) {target}, {mode}: plain int8 {label} {base['agreement']:.1%}, cosine {base['cosine']:.4f}, "
             f"SNR {base['snr_db']:.1f} dB on {base['images']} images")
    report.print_table(shown, [("block", "block"), (key, label), ("cosine", "cosine"), ("snr_db", "SNR dB"), delta,
                               ("delta_snr_db", "d SNR dB")], title=title)
    click.echo(f"most sensitive first: {', '.join(result['ranking'][:8])}")
    if json_path:
        report.write_json(json_path, result["rows"], ranking=result["ranking"], plain_int8=base, mode=mode, target=target,
                          variant=name, weights=weights, options=options,
                          agreement="mAP (0-1) against the fp32 detector's confident boxes" if detector else "top-1 agreement with fp32")
    if plot_path:
        sens.bar_chart(result, plot_path, title)


@main.command(name="calibrate-sweep")
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X.")
@click.option("--weights", default=None, help="Default: the variant's first real weights, else none.")
@click.option("--target", default="tflite-int8", show_default=True, help="An int8 target.")
@click.option("--calibration", type=click.Path(), required=True, help="Calibration pool (folder or list).")
@click.option("--images", type=click.Path(), required=True, help="Evaluation images (disjoint from the pool).")
@click.option("--counts", default="16,64,128,300,all", show_default=True, help="Calibration sizes; 'all' is the whole pool.")
@click.option("--methods", default=None, help="Calibration methods where the backend has several (onnx: minmax,entropy,percentile).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Rows as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Agreement vs calibration size PNG.")
def calibrate_sweep(variant, weights, target, calibration, images, counts, methods, seed, json_path, plot_path) -> None:
    """Int8 agreement and accuracy against calibration size and method; checks calibration preprocessing = evaluation's."""
    from rich.console import Console

    from edgeeff import report

    from edgeeff.quant import sweep
    from edgeeff.quant import sensitivity as sens
    from edgeeff.data.images import list_samples
    from edgeeff.model.variants import resolve

    v = resolve(variant)
    check_report_paths(json_path, plot_path)
    weights = chosen_weights(v, weights)
    pool = list_samples(calibration)
    sizes = []
    for part in counts.split(","):
        part = part.strip().lower()
        if part == "all":
            sizes.append(len(pool))
        elif part.isdigit() and int(part) > 0:
            sizes.append(min(int(part), len(pool)))
        else:
            raise EdgeeffError(f"--counts takes positive numbers or 'all', got {part!r}")
    sizes = sorted(set(sizes))
    chosen = sweep.methods_for(target, [m.strip() for m in methods.split(",")] if methods else None)
    quiet_tensorflow_import()
    console = Console(stderr=True)
    check = sweep.preprocessing_check(v.name, weights, pool)
    verdict = "identical" if check["identical"] else f"DIFFERENT (max |logit diff| {check['max_abs_logit_diff']:.3g})"
    console.print(f"calibration vs evaluation preprocessing on {check['images']} images, fp32 logits: {verdict}")
    root, cleanup = sens.trial_root(None)
    try:
        with step_progress(console) as say:
            rows = sweep.sweep(v.name, target, weights, calibration, images, sizes, chosen, seed, root, say)
    finally:
        cleanup()
    title = f"{v.name} ({weights}) {target}: calibration size and method, {rows[0]['images']} evaluation images"
    columns = [("method", "method"), ("count", "calib images"), ("views", "views each"), ("agreement", "agreement"), ("cosine", "cosine"), ("snr_db", "SNR dB"),
               ("top1", "top-1"), ("top1_fp32", "fp32 top-1"), ("convert_seconds", "convert s")]
    report.print_table(rows, [c for c in columns if any(r.get(c[0]) is not None for r in rows)], title=title)
    if json_path:
        report.write_json(json_path, rows, preprocessing_check=check, variant=v.name, weights=weights, target=target)
    if plot_path:
        sweep.plot(rows, plot_path, title)
    if not check["identical"]:
        sys.exit(1)


def render_detector_eval(done, device, json_path) -> None:
    """A detector artifact's COCO scores beside its fp32 detector's, then AP per class."""
    from edgeeff import report

    row, details = done.row, done.result
    if row.get("note"):
        click.echo(f"edgeeff: warning: {done.meta['target']} on {device.name}: {row['note']}", err=True)
    for note in details.get("notes", []):
        click.echo(f"edgeeff: note: {note}", err=True)
    columns = [(k, h) for k, h in (("model", "model"), ("images", "images"), ("map", "mAP"), ("ap50", "AP50"), ("ap75", "AP75"),
                                   ("reference_map", "fp32 mAP"), ("map_drop_points", "mAP drop (pts)"),
                                   ("boxes_found_again", "boxes found again"), ("postprocess_ms", "post-processing ms"),
                                   ("runtime_ms", "runtime ms")) if k in row]
    if device.emulated:
        columns.insert(1, ("emulated", "emulated"))
    report.print_table([row], columns, title="Detection (COCO mAP@[.5:.95])" + (f". {device.caveat}" if device.caveat else ""))
    per_class = details["per_class"]
    classes = [{"class": name, "class_ap": ap, "reference_class_ap": per_class.get("reference", {}).get(name)}
               for name, ap in per_class["artifact"].items()]
    class_columns = [("class", "class"), ("class_ap", "AP")] + ([("reference_class_ap", "fp32 AP")] if "reference" in per_class else [])
    report.print_table(classes, class_columns, title="AP per class (-: not in these images)")
    if json_path:
        extra = {"caveat": device.caveat} if device.caveat else {}
        report.write_json(json_path, [row], inputs=done.source, details=details, runner=done.runner, **extra)


@main.command(name="eval")
@click.argument("artifact", required=False, type=click.Path(path_type=Path))
@click.option("--variant", default=None, help="Evaluate this Keras variant instead of an artifact.")
@click.option("--weights", default=None, help="With --variant: weights (default: the variant's real weights; none for random).")
@click.option("--images", type=click.Path(), default=None,
              help="Labelled images: a folder (synset in the file name) or a label<TAB>path list. Default: the embedded photos (no labels: agreement only). "
                   "A detector artifact: a COCO annotations JSON (images in its folder) or a Pascal VOC folder.")
@click.option("--reference", type=click.Choice(["keras", "none"]), default="keras", show_default=True,
              help="What an artifact is compared with: the Keras fp32 model of the same variant and weights (none for a bare model file).")
@click.option("--preprocessing", default=None, help="With a bare model file: raw, imagenet, lite, inception, a card, or mean=R,G,B;std=R,G,B.")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Class names, one per line in output order, for the disagreements list (default: ImageNet's).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images.")
@click.option("--batch", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="Runtime threads (default: all cores).")
@click.option("--show", type=click.IntRange(0), default=10, show_default=True, help="Disagreements to list.")
@click.option("--device", "device_name", default="cpu", show_default=True,
              help="Where the artifact runs: cpu, gpu, a device from the devices file, or ssh://user@host[:port] "
                   "(images are preprocessed here and sent in batches).")
@click.option("--devices-file", type=click.Path(dir_okay=False), default=None, help="Devices TOML (default: ~/.config/edgeeff/devices.toml).")
@click.option("--accept-new-host-key", is_flag=True, help="Let ssh record the host key of a device it has never seen.")
@click.option("--compare-local", is_flag=True,
              help="With a remote --device: also run the same artifact on this machine's CPU on the same images and compare "
                   "the two image by image (agreement, identical outputs, the disagreeing images).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results as JSON (- for stdout).")
def evaluate(artifact, variant, weights, images, reference, preprocessing, labels_path, limit, batch, threads, show, device_name,
             devices_file, accept_new_host_key, compare_local, json_path) -> None:
    """Top-1/top-5 of an artifact, a model file (.tflite/.onnx/.xml/.keras) or a Keras variant, and its agreement with fp32."""
    from edgeeff import report
    from edgeeff.accuracy import AccuracyJob, run_accuracy
    from edgeeff.data.labels import imagenet_classes
    from edgeeff.devices.registry import get_device

    if (artifact is None) == (variant is None):
        raise EdgeeffError("give an artifact folder, a model file or --variant (one of them)")
    check_report_paths(json_path)
    device = get_device(device_name, devices_file)
    device.check()
    job = AccuracyJob(artifact=artifact, variant=variant, weights=weights, images=images, reference=reference,
                      preprocessing=preprocessing, labels_path=labels_path, limit=limit, batch=batch, threads=threads,
                      compare_local=compare_local, accept_new_host_key=accept_new_host_key)
    job.check(device)
    if variant is not None:
        from edgeeff.model.variants import resolve

        job.weights = chosen_weights(resolve(variant), weights)
    done = run_accuracy(job, device, before_loading=quiet_tensorflow_import)
    if done.meta.get("task") == "detect":
        render_detector_eval(done, device, json_path)
        return
    row, result, source, local, names, meta = done.row, done.result, done.source, done.local, done.names, done.meta
    if row.get("note"):
        click.echo(f"edgeeff: warning: {meta['target']} on {device.name}: {row['note']}", err=True)
    columns = [(k, h) for k, h in (("model", "model"), ("images", "images"), ("top1", "top-1"), ("top1_ci95", "top-1 95% CI"),
                                   ("top5", "top-5"), ("reference_top1", "fp32 top-1"), ("top1_agreement", "agreement"),
                                   ("mean_cosine", "cosine"), ("mean_kl", "KL"), ("top1_ties", "tied top-1"),
                                   ("cpu_profile", "int8 profile here"), ("converted_for", "converted for"),
                                   ("unreadable", "unreadable")) if k in row]
    if local is not None:
        columns += [("local_agreement", "agrees with this CPU"), ("local_identical", "identical outputs")]
    if device.emulated:
        columns.insert(1, ("emulated", "emulated"))
    report.print_table([row], columns, title="Accuracy" + (f" (assumed: {'; '.join(source['assumed'])})" if source.get("assumed") else "")
                       + (f". {device.caveat}" if device.caveat else ""))
    classes = [("-", n) for n in names] if names else imagenet_classes()
    dis = result.get("disagreements", [])

    def class_name(index: int) -> str:
        return classes[index][1] if index < len(classes) else str(index)

    if dis and show:
        rows = [{"file": d["file"], "artifact": class_name(d["artifact"]), "reference": class_name(d["reference"])} for d in dis[:show]]
        report.print_table(rows, [("file", "image"), ("artifact", "artifact says"), ("reference", "fp32 says")],
                           title=f"{len(dis)} disagreement(s) with the fp32 reference" + (f" (first {show})" if len(dis) > show else ""))
    if local is not None and local["disagreements"] and show:
        rows = [{"file": d["file"], "device": class_name(d["device"]), "local": class_name(d["local"])} for d in local["disagreements"][:show]]
        report.print_table(rows, [("file", "image"), ("device", f"{device.name} says"), ("local", "this CPU says")],
                           title=f"{len(local['disagreements'])} disagreement(s) between {device.name} and this machine's CPU (same artifact)")
    if json_path:
        per_image = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in result.items()}
        extra = {"compare_local": {**local, "local_runner": done.local_runner}} if local is not None else {}
        if device.caveat:
            extra["caveat"] = device.caveat
        report.write_json(json_path, [row], inputs=source, details=per_image, runner=done.runner, **extra)


@main.command()
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X (converted to each target, reused when identical).")
@click.option("--weights", default=None, help="Default: the variant's real weights; none for random.")
@click.option("--targets", "target_names", default="all", show_default=True, help="Comma-separated targets, or all.")
@click.option("--preprocessing", default=None, help="With bare model files: raw, imagenet, lite, inception, a card, or mean=R,G,B;std=R,G,B.")
@click.option("--device", "device_name", default="cpu", show_default=True,
              help="cpu, gpu, a device from the devices file (`edgeeff devices list`), or ssh://user@host[:port]; "
                   "several, comma-separated, run concurrently.")
@click.option("--devices-file", type=click.Path(dir_okay=False), default=None, help="Devices TOML (default: ~/.config/edgeeff/devices.toml).")
@click.option("--accept-new-host-key", is_flag=True, help="Let ssh record the host key of a device it has never seen (never a changed one).")
@click.option("--images", type=click.Path(), default=None, help="Labelled images for top-1 and agreement (validation set).")
@click.option("--calibration", type=click.Path(), default=None, help="Calibration images for int8 targets (default: embedded photos).")
@click.option("--out", type=click.Path(file_okay=False), default="edgeeff-out", show_default=True, help="Artifact folder (reused).")
@click.option("--threads", type=click.IntRange(1), default=None, help="Runtime threads (default: all cores).")
@click.option("--batch", type=click.IntRange(1, 1024), default=1, show_default=True, help="Images per inference.")
@click.option("--rounds", type=click.IntRange(1, 100), default=3, show_default=True, help="Interleaved rounds (fresh process each).")
@click.option("--warmup-runs", type=click.IntRange(0), default=10, show_default=True, help="Untimed inferences after loading, at least.")
@click.option("--warmup-seconds", type=float, default=1.0, show_default=True, help="Untimed warm-up time, at least.")
@click.option("--min-runs", type=click.IntRange(1), default=50, show_default=True, help="Timed inferences per process, at least.")
@click.option("--min-seconds", type=float, default=3.0, show_default=True, help="Timed seconds per process, at least.")
@click.option("--openvino-precision", type=click.Choice(["f32", "default"]), default="f32", show_default=True,
              help="OpenVINO INFERENCE_PRECISION_HINT: f32, or the plugin's default (bf16 on CPUs that have it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration choice and the timed random input.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Rows as JSON (- for stdout).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Rows as CSV.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Rows as a Markdown table.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Accuracy vs latency (Pareto) PNG.")
@click.pass_context
def bench(ctx, models, variant, weights, target_names, preprocessing, device_name, devices_file, accept_new_host_key, images, calibration,
          out, threads, batch, rounds, warmup_runs, warmup_seconds, min_runs, min_seconds, openvino_precision, seed, json_path, csv_path,
          markdown_path, plot_path) -> None:
    """Latency, init time, memory and size of every target (or of MODELS: artifact folders, .tflite/.onnx/.xml/.keras
    files), measured side by side in fresh processes."""
    import tempfile

    from rich.console import Console

    from edgeeff import bench as bench_lib
    from edgeeff import fsio, report
    from edgeeff.devices.registry import get_device
    from edgeeff.measure import Schedule
    from edgeeff.targets.base import TARGETS, get_target
    from edgeeff.model.detectors import get_detector, is_detector
    from edgeeff.model.variants import resolve

    devices = [get_device(n.strip(), devices_file) for n in device_name.split(",") if n.strip()]
    if not devices or len({d.name for d in devices}) != len(devices):
        raise EdgeeffError("--device needs distinct device names, e.g. --device rpi or --device rpi,gateway")
    for device in devices:
        device.check()
    if warmup_seconds < 0 or min_seconds < 0:
        raise EdgeeffError("--warmup-seconds and --min-seconds must be >= 0")
    check_report_paths(json_path, csv_path, markdown_path, plot_path)
    if models:
        given = [name for name in ("variant", "weights", "target_names", "images", "calibration")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            flag = {"target_names": "targets"}.get(given[0], given[0])
            raise EdgeeffError(f"--{flag} chooses what to convert; with MODELS given, bench measures those files as they are")
    else:
        if preprocessing is not None:
            raise EdgeeffError("--preprocessing is for bare model files given as MODELS")
        detector = is_detector(variant)
        # A detector converts through the same convert() (edgeeff.convert.subject_kind); its --weights
        # (a train-detect run, a file, or nothing: untrained heads) are read there.
        subject_name = get_detector(variant).name if detector else resolve(variant).name
        if target_names.strip().lower() == "all":  # every target some chosen device can run
            names = [t for t, spec in TARGETS.items() if any(bench_lib.target_fits_device(spec, d.accelerator) is None for d in devices)]
        else:
            names = [get_target(t).name for t in target_names.split(",") if t.strip()]
        for what, path in (("--calibration", calibration), ("--images", images)):
            if path is not None and not Path(path).exists():
                raise EdgeeffError(f"{what} {path} does not exist")
        weights = weights if detector else chosen_weights(resolve(variant), weights)
    console = Console(stderr=True)
    schedule = Schedule(warmup_runs, warmup_seconds, min_runs, min_seconds)
    precision = None if openvino_precision == "default" else openvino_precision
    with step_progress(console) as say, tempfile.TemporaryDirectory(prefix="edgeeff-models-") as scratch:
        if models:
            say("reading the model files")
            artifacts = bench_lib.given_artifacts(models, Path(scratch), preprocessing)
            subject = ", ".join(str(m) for m in models)
        else:
            say("starting TensorFlow")
            quiet_tensorflow_import()
            artifacts = bench_lib.ensure_artifacts(subject_name, weights, names, Path(out), images, calibration, seed, say)
            labels = [(m.get("weights") or {}).get("label") for m in artifacts.values() if "error" not in m]
            weights = labels[0] if labels and weights is None else weights  # a detector's default, as convert named it
            subject = f"{subject_name} ({report.weights_text(weights)})"
        results = bench_lib.measure_on_devices(devices, artifacts, threads, batch, rounds, schedule, precision, say,
                                               accept_new_host_key=accept_new_host_key)
        say("writing the reports")
        rows = [row for device_rows, _ in results.values() for row in device_rows]
        post = bench_lib.add_post_processing(rows, artifacts, bench_lib.one_image(images) or bundled_images()[0], batch, schedule)
        infos = {name: info for name, (_, info) in results.items()}
        unreachable = [info["error"] for info in infos.values() if "error" in info]
        if len(unreachable) == len(devices):  # no device answered: nothing was measured
            raise EdgeeffError(unreachable[0] if len(unreachable) == 1 else "; ".join(unreachable))
    columns = [("device", "device"), ("target", "target"), ("top1", "top-1"), ("agreement", "agreement"), ("size_mb", "MB"),
               ("init_ms", "init ms"), ("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("speedup_vs_fp32", "x fp32"),
               ("executed_on", "ran on"), ("executed_precision", "ran as"), ("note", "note"), ("error", "error")]
    columns[2:2] = [("emulated", "emulated")]  # after the target: rows from an emulated board say so
    if post is not None:  # detectors: box agreement for top-1 agreement; the post-processing that runs after the runtime
        columns = bench_lib.detector_columns(columns)
    columns = [c for c in columns if c[0] not in ("top1", "note", "error", "emulated") or any(r.get(c[0]) is not None for r in rows)]
    if len(devices) == 1:
        columns = [c for c in columns if c[0] != "device"]
    where = ", ".join(device_title(d, infos[d.name]) for d in devices)
    title = f"{subject} on {where}, batch {batch}, {rounds} interleaved rounds"
    caveats = [d.caveat for d in devices if d.caveat]
    title += "".join(f". {c}" for c in caveats)
    if post is not None:
        title += (f". Post-processing (NMS etc.) runs after the runtime: numpy PostProcess.apply on this machine, "
                  f"{post['median_ms']:.2f} ms median for every target; end to end = median + post-processing")
    report.print_table(rows, columns, title=title)
    for name, info in infos.items():
        if "uploaded_bytes" in info:
            console.print(f"{name}: copied {info['uploaded_bytes'] / 1e6:.2f} MB to the device (artifacts cached there by content)")
    for row in rows:
        if "error" in row:
            click.echo(f"edgeeff: {row['target']} on {row['device']}: {row['error']}", err=True)
    if json_path:
        inputs = ({"models": [{"path": str(Path(m).resolve()), "sha256": artifacts[label].get("imported", {}).get("sha256")
                               or artifacts[label].get("files", {}).get(artifacts[label].get("artifact"), {}).get("sha256")}
                              for m, label in zip(models, artifacts)]} if models else
                  {"variant": subject_name, "weights": report.weights_text(weights), "targets": names,
                   "images": str(Path(images).resolve()) if images else "embedded photos", "calibration": calibration or "embedded photos"})
        report.write_json(json_path, rows, inputs=inputs, devices=infos, schedule=schedule.__dict__,
                          **({"caveats": caveats} if caveats else {}), **({"post_processing": post} if post else {}))
    if csv_path:
        fsio.write_text(csv_path, report.to_csv(rows))
    if markdown_path:
        fsio.write_text(markdown_path, f"{title}\n\n" + report.to_markdown(rows, columns))
    if plot_path:
        bench_lib.pareto_plot(rows, plot_path, title)
    if any("error" in r for r in rows):
        sys.exit(1)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="edgeeff.toml, or pyproject.toml with [tool.edgeeff]. Default: ./edgeeff.toml, else ./pyproject.toml.")
@click.option("--update-baseline", is_flag=True, help="Rewrite the baseline from this run (deliberately; atomic). Budget still applies.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows, failures and notes as JSON.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Also write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY).")
def check(config_path: Path | None, update_baseline: bool, json_path: str | None, markdown_path: str | None) -> None:
    """CI gate: fail (exit 1) when quantization costs more top-1 (or, for a detector, COCO mAP) than the budget or the baseline allows."""
    from rich.console import Console

    from edgeeff import fsio, report

    from edgeeff.quant import detect_gate, gate

    if config_path is None:
        config_path = Path("edgeeff.toml") if Path("edgeeff.toml").is_file() else Path("pyproject.toml")
    check_report_paths(json_path, markdown_path)
    config = gate.load_config(config_path)
    baseline = None if update_baseline else gate.read_baseline(config.baseline)
    quiet_tensorflow_import()
    console = Console(stderr=True)
    with step_progress(console) as say:
        result = gate.run_gate(config, baseline, progress=say)
    failures, notes = gate.judge(config, result, baseline)
    detections = [r for r in result["rows"] if r.get("task") == "detect"]
    if detections:
        report.print_table(detect_gate.table_rows(detections), detect_gate.TABLE_COLUMNS,
                           title=f"Detection checks (COCO mAP@[.5:.95], {detections[0]['images']} images, "
                                 f"paired bootstrap of {detections[0]['bootstrap_resamples']} resamples)")
    classifiers = [r for r in result["rows"] if r.get("task") != "detect"]
    rows = [{"pair": f"{r['variant']} {r['target']}", "top1": f"{r['fp32_top1']:.1%} -> {r['quantized_top1']:.1%}",
             "drop": f"{r['drop_points']:+.2f}", "ci": "[{:+.2f}, {:+.2f}]".format(*r["drop_ci95_points"]),
             "p": f"{r['mcnemar_p']:.2f}", "agreement": f"{r['agreement']:.1%}",
             "baseline": "-" if r.get("baseline_drop_points") is None else f"{r['baseline_drop_points']:+.2f}"} for r in classifiers]
    if rows or not detections:
        report.print_table(rows, [("pair", "variant target"), ("top1", "top-1 fp32 -> int8"), ("drop", "drop pts"),
                                  ("ci", "paired 95% CI"), ("p", "McNemar p"), ("agreement", "agree"), ("baseline", "baseline drop")],
                           title=f"Quantization gate ({len(classifiers)} pairs, {classifiers[0]['images'] if classifiers else 0} images)")
    for note in notes:
        console.print(f"[yellow]noise:[/] {note}")
    if markdown_path:
        fsio.write_text(markdown_path, gate.markdown(config, result, failures, notes))
    if json_path:
        report.write_json(json_path, result["rows"], failures=failures, notes=notes, data=result["data"], versions=result["versions"])
    if update_baseline:
        path = gate.write_baseline(config, result)
        click.echo(f"baseline written: {path}")
    if failures:
        for failure in failures:
            click.echo(f"edgeeff: check failed: {failure}", err=True)
        sys.exit(1)
    click.echo("gate passed")


TRAIN_SETTINGS = ("variant", "data", "val", "val_fraction", "epochs", "stages", "schedule", "min_size", "max_size", "settings",
                  "weights", "batch", "lr", "steps_per_epoch", "cache", "seed")


@main.command()
@click.option("--variant", default="v2-s", show_default=True, help="Variant name, with overrides (v2-b0:width=0.25,depth=0.25).")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Folder with one sub-folder of images per class.")
@click.option("--val", type=click.Path(path_type=Path), default=None, help="Validation folder (same class sub-folders). Default: a seeded split of --data.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Share of each class held out when there is no --val.")
@click.option("--epochs", type=int, default=40, show_default=True)
@click.option("--stages", type=int, default=4, show_default=True, help="Progressive-learning stages (1: fixed-size training).")
@click.option("--schedule", default="paper", show_default=True, help="Named schedule: paper or official (see README, Train).")
@click.option("--min-size", type=int, default=None, help="First stage's image size (overrides the schedule).")
@click.option("--max-size", type=int, default=None, help="Last stage's image size, also the evaluation size.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a schedule end: min_magnitude, max_magnitude, min_mixup, max_mixup, min_dropout, max_dropout, multiple.")
@click.option("--weights", default="none", show_default=True, help="Start from: none, imagenet, a card name, a file, or a run directory.")
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True, help="Images per replica per step.")
@click.option("--lr", type=float, default=0.008, show_default=True, help="Learning rate per 256 images of global batch (scaled linearly).")
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None, help="Cap the steps per epoch (quick runs).")
@click.option("--cache", is_flag=True, help="Keep decoded, resized images in memory (small data sets).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multi-worker"]), default="default", show_default=True,
              help="tf.distribute strategy: mirrored = this machine's GPUs, multi-worker = TF_CONFIG cluster.")
@click.option("--cpu-replicas", type=click.IntRange(1, 64), default=None, help="Split the CPU into N logical devices (tests mirrored without GPUs).")
@click.option("--out", "run_dir", type=click.Path(path_type=Path), default=None, help="Run directory (checkpoints, metrics, final model).")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last completed epoch, with its saved settings.")
@click.option("--dry-run", is_flag=True, help="Print the per-stage schedule and stop.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the stage table (dry run) or run card as JSON.")
@click.pass_context
def train(ctx, variant, data, val, val_fraction, epochs, stages, schedule, min_size, max_size, settings, weights, batch, lr,
          steps_per_epoch, cache, seed, strategy, cpu_replicas, run_dir, resume, dry_run, json_path) -> None:
    """Train with EfficientNetV2 progressive learning: image size and regularisation grow stage by stage."""
    from rich.console import Console

    from edgeeff import report
    from edgeeff.train.loop import TrainConfig, prepare_run, train as run_train

    overrides = {k: v for k, v in (("min_size", min_size), ("max_size", max_size)) if v is not None}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise EdgeeffError(f"--set needs KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    config = TrainConfig(variant=variant, data=str(data), epochs=epochs, stages=stages, schedule=schedule, overrides=overrides,
                         val=str(val) if val else None, val_fraction=val_fraction, weights=weights, batch=batch, base_lr=lr,
                         steps_per_epoch=steps_per_epoch, cache=cache, seed=seed)
    if dry_run:
        rows = [s.to_dict() for s in config.plan()]
        columns = [("stage", "stage"), ("epochs", "epochs"), ("image_size", "image size"), ("magnitude", "RandAugment magnitude"),
                   ("mixup", "mixup alpha"), ("dropout", "dropout")]
        report.print_table(rows, columns, title=f"{variant}: {schedule} schedule, {stages} stages, {epochs} epochs")
        if json_path:
            report.write_json(json_path, rows, variant=variant, schedule=schedule, overrides=overrides)
        return
    if run_dir is None:
        raise EdgeeffError("give --out RUN_DIR (where checkpoints, metrics and the final model go)")
    if resume:
        refuse_settings_on_resume(ctx, TRAIN_SETTINGS)
    elif data is None:
        raise EdgeeffError("give --data DIR: a folder with one sub-folder of images per class")
    prepared = prepare_run(None if resume else config, run_dir, resume)  # bad input fails here, before TensorFlow starts
    quiet_tensorflow_import()
    console = Console(stderr=True)
    try:
        card = run_train(prepared, strategy=strategy, cpu_replicas=cpu_replicas, console=console)
    except KeyboardInterrupt:
        fail(f"interrupted; {run_dir} keeps the last completed epoch: continue with edgeeff train --resume --out {run_dir}", 130)
    rows = [{"field": k, "value": card[k]} for k in ("variant", "epochs", "final_size", "val_accuracy", "train_images", "val_images",
                                                     "unreadable", "replicas", "global_batch", "learning_rate")]
    report.print_table(rows, [("field", "field"), ("value", "value")], title=f"Trained {len(card['classes'])} classes")
    if json_path:
        report.write_json(json_path, [card])
    click.echo(f"run: {run_dir}  (edgeeff convert --variant '{card['convert_variant']}' --weights {run_dir} --target tflite-fp32)")


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--fraction", type=float, default=0.4, show_default=True, help="Share that goes to the first list.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--first", "first_path", type=click.Path(dir_okay=False), required=True, help="List file for the first part (e.g. calibration).")
@click.option("--second", "second_path", type=click.Path(dir_okay=False), required=True, help="List file for the rest (e.g. evaluation).")
def split(source: Path, fraction: float, seed: int, first_path: str, second_path: str) -> None:
    """Split a labelled image folder into two disjoint label<TAB>path lists (seeded, stable)."""
    from edgeeff.data.images import list_samples, split as split_samples, write_list

    a, b = split_samples(list_samples(source), fraction, seed)
    for path, part in ((first_path, a), (second_path, b)):
        write_list(part, path)
    click.echo(f"{len(a)} -> {first_path}, {len(b)} -> {second_path}")


@main.command(name="detection-set")
@click.argument("images", type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for train/ and held-out/.")
@click.option("--train", "train_count", default=320, show_default=True, type=click.IntRange(1), help="Composed training images.")
@click.option("--held-out", "held_count", default=64, show_default=True, type=click.IntRange(1), help="Composed held-out images.")
@click.option("--size", default=320, show_default=True, type=click.IntRange(16), help="Side of each composed image (px).")
@click.option("--seed", default=0, show_default=True, help="Seeds the photo split and every placement: same seed, same bytes.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
def detection_set(images: Path, out: Path, train_count: int, held_count: int, size: int, seed: int, json_path: str | None) -> None:
    """Compose a COCO-format detection set from labelled photos (synset-named files or label<TAB>path
    lists): photos pasted at seeded scales and places onto other photos, exact boxes, coarse classes;
    the held-out set uses photos the training set never shows."""
    from edgeeff import report
    from edgeeff.data.detection import SceneOptions, generate_split

    check_report_paths(json_path)
    written = generate_split(images, out, train_count, held_count, seed, options=SceneOptions(size=size))
    rows = []
    for split_name, path in written.items():
        coco = json.loads(Path(path).read_text())
        rows.append({"split": split_name, "images": len(coco["images"]), "objects": len(coco["annotations"]), "annotations": str(path)})
    report.print_table(rows, [("split", "split"), ("images", "images"), ("objects", "objects"), ("annotations", "annotations")],
                       title=f"Detection set (seed {seed}, {size} px)")
    if json_path:
        report.write_json(json_path, rows, source=str(images), seed=seed, size=size)


def refuse_settings_on_resume(ctx, settings: tuple[str, ...]) -> None:
    """A resumed run continues with its saved settings: one given again on the command line is refused."""
    given = [name for name in settings if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise EdgeeffError(f"--resume continues with the run's saved settings; drop --{given[0].replace('_', '-')}")


# ``edgeeff train-detect`` is its own command rather than ``train --task detect``: the two share only
# --out, --resume, --epochs and --batch; a detector takes a COCO file, not a class folder, and none of
# the progressive-learning options apply, so one command with both sets would take options it must refuse.
DETECT_SETTINGS = ("detector", "data", "images_root", "val", "val_images_root", "val_fraction", "epochs", "batch", "lr",
                   "image_size", "weights", "train_backbone", "steps_per_epoch", "no_flip", "seed")


@main.command(name="train-detect")
@click.option("--detector", default="efficientdet-lite0", show_default=True, help="Detector name (edgeeff models lists them).")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="COCO detection JSON (or Pascal VOC folder) to train on.")
@click.option("--images-root", type=click.Path(path_type=Path), default=None, help="Folder the JSON's file_name entries are under (default: the JSON's folder).")
@click.option("--val", type=click.Path(path_type=Path), default=None, help="Held-out COCO JSON or VOC folder (default: a seeded split of --data).")
@click.option("--val-images-root", type=click.Path(path_type=Path), default=None, help="Images folder of --val (default: its JSON's folder).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Share of --data held out when there is no --val.")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lr", type=float, default=0.08, show_default=True, help="Peak learning rate per 64 images (scaled linearly with --batch).")
@click.option("--image-size", type=click.IntRange(1), default=None, help="Train and score at this input size instead of the detector's (a multiple of 8, at least 128: sizes convert takes).")
@click.option("--weights", default="auto", show_default=True,
              help="Backbone start: auto (the backbone's real weights), a card name, imagenet, a file, or none (random).")
@click.option("--train-backbone", is_flag=True, help="Train the backbone too (default: frozen).")
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None, help="Cap the steps per epoch (quick runs).")
@click.option("--no-flip", is_flag=True, help="No random horizontal flip.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "run_dir", type=click.Path(path_type=Path), default=None, help="Run directory (checkpoints, metrics, final model, run card).")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last completed epoch, with its saved settings.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the run card as JSON.")
@click.pass_context
def train_detect(ctx, detector, data, images_root, val, val_images_root, val_fraction, epochs, batch, lr, image_size, weights,
                 train_backbone, steps_per_epoch, no_flip, seed, run_dir, resume, json_path) -> None:
    """Fine-tune an EfficientDet on a COCO detection set; the held-out mAP goes into the run card."""
    from rich.console import Console

    from edgeeff import report
    from edgeeff.train.detect_loop import DetectTrainConfig, prepare_detect_run, train_prepared

    if run_dir is None:
        raise EdgeeffError("give --out RUN_DIR (where checkpoints, metrics, the final model and the run card go)")
    if resume:
        refuse_settings_on_resume(ctx, DETECT_SETTINGS)
    elif data is None:
        raise EdgeeffError("give --data: a COCO detection JSON (edgeeff's generator writes one as annotations.json) or a Pascal VOC folder")
    check_report_paths(json_path)
    config = None if resume else DetectTrainConfig(
        detector=detector, dataset=str(data), images_root=str(images_root) if images_root else None,
        val_dataset=str(val) if val else None, val_images_root=str(val_images_root) if val_images_root else None,
        val_fraction=val_fraction, epochs=epochs, batch=batch, learning_rate=lr, freeze_backbone=not train_backbone,
        image_size=image_size, weights=weights, steps_per_epoch=steps_per_epoch, flip=not no_flip, seed=seed)
    prepared = prepare_detect_run(config, run_dir, resume)  # bad input fails here, before TensorFlow starts
    quiet_tensorflow_import()
    try:
        card = train_prepared(prepared, console=Console(stderr=True))
    except KeyboardInterrupt:
        fail(f"interrupted; {run_dir} keeps the last completed epoch: continue with edgeeff train-detect --resume --out {run_dir}", 130)
    rows = [{"field": k, "value": card[k]} for k in ("detector", "image_size", "epochs", "started_from", "freeze_backbone",
                                                     "train_images", "held_out_images", "map", "ap50", "ap75")]
    report.print_table(rows, [("field", "field"), ("value", "value")], title=f"Trained a detector for {card['num_classes']} categories")
    if json_path:
        report.write_json(json_path, [card])
    click.echo(f"run: {run_dir}")


if __name__ == "__main__":  # pragma: no cover
    main()
