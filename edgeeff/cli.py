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

from edgeeff.errors import EdgeeffError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not ours to print


def quiet_tensorflow_import() -> None:
    """Import TensorFlow with file descriptor 2 muted: its absl start-up lines ignore
    TF_CPP_MIN_LOG_LEVEL and would bury our one-line errors. Import failures still surface."""
    if "tensorflow" in sys.modules or os.environ.get("EDGEEFF_DEBUG"):
        return
    from edgeeff.devicekit import native_stderr_muted

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
    """Refuse before any work when a report (--json, --plot, ...) could not be written at the end."""
    for path in paths:
        if path and not Path(path).resolve().parent.is_dir():
            raise EdgeeffError(f"cannot write {path}: its folder does not exist")


def fail(message: str, code: int = 2) -> None:
    click.echo(f"edgeeff: error: {message}", err=True)
    sys.exit(code)


class Group(click.Group):
    """Turns project errors into one line and an exit code."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in ("targets", "split", "devices", "train"):  # train imports it after checking its input
            quiet_tensorflow_import()  # before the command imports it, so its start-up lines stay muted
        return super().resolve_command(ctx, args)

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
    """The variant's first real weights that need no network, if its architecture is the registered one."""
    from edgeeff.variants import VARIANTS
    from edgeeff.weights.cards import cards_for

    member = VARIANTS.get(variant.member)
    same_shape = member is not None and (member.width, member.depth) == (variant.width, variant.depth)
    cards = [c for c in cards_for(variant.member) if c.kind != "keras-imagenet"]
    return cards[0].name if same_shape and cards else "none"


QUANTIZER_OPTIONS = (
    click.option("--io-dtype", type=click.Choice(["int8", "uint8"]), default=None, help="tflite-int8 input/output type (default int8)."),
    click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default=None,
                 help="onnx-int8 only (default minmax)."),
    click.option("--quant-types", type=click.Choice(["u8u8", "u8s8", "s8s8", "u8s8-reduced"]), default=None,
                 help="onnx-int8 only: activation/weight types (default u8s8-reduced: 7-bit weights, no int16 "
                      "saturation on CPUs without VNNI, int8 kernels kept)."),
    click.option("--preset", type=click.Choice(["performance", "mixed"]), default=None, help="openvino-int8 only (default performance)."),
    click.option("--overflow-fix", type=click.Choice(["enable", "first_layer_only", "disable"]), default=None,
                 help="openvino-int8 only: 7-bit weights against saturation without VNNI (default enable)."),
    click.option("--fast-bias-correction/--bias-correction", default=None, help="openvino-int8 only (default fast)."),
)


def quantizer_options(command):
    """The int8 quantizer's own settings, shared by convert and sensitivity: a ranking measured under
    other settings than the conversion it steers ranks the wrong errors."""
    for option in reversed(QUANTIZER_OPTIONS):
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
    from edgeeff.data import bundled_photos

    return [p for p in bundled_photos() if p.name in ("grace_hopper.jpg", "flower.jpg", "china.jpg")]


@click.group(cls=Group)
@click.version_option(package_name="edgeeff")
def main() -> None:
    """EfficientNet from one Keras definition to measured edge deployments."""


@main.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
@click.option("--variant", "names", multiple=True, help="Only these variants (repeatable).")
def models(json_path: str | None, names: tuple[str, ...]) -> None:
    """Every named variant: resolution, width/depth, parameters, multiply-adds, real weights."""
    from rich.progress import Progress

    from edgeeff import catalog, report
    from edgeeff.variants import resolve

    selected = [resolve(n).name for n in names] or None
    with Progress(transient=True) as progress:
        task = progress.add_task("counting", total=len(selected or catalog.VARIANTS))
        rows = catalog.model_rows(selected, progress=lambda n: progress.update(task, advance=1, description=f"building {n}"))
    columns = [
        ("variant", "variant"), ("family", "family"), ("resolution", "res"), ("width", "width"),
        ("depth", "depth"), ("dropout", "dropout"), ("params", "params"), ("gmacs", "GMACs"), ("weights", "real weights"),
    ]
    report.print_table(rows, columns, title="EfficientNet family (MACs computed from the built model)")
    if json_path:
        report.write_json(json_path, rows)


@main.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X.")
@click.option("--weights", default=None, help="imagenet, a card name (lite0-pypi), a file, or none. Default: the variant's first real weights.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
def predict(images: tuple[Path, ...], variant: str, weights: str | None, top: int, json_path: str | None) -> None:
    """Top-k ImageNet classes for IMAGES (default: the photos that ship with edgeeff)."""
    from edgeeff import report
    from edgeeff.api import build
    from edgeeff.predict import predict_images
    from edgeeff.variants import resolve
    from edgeeff.weights.cards import cards_for

    v = resolve(variant)
    if weights is None:
        cards = cards_for(v.member)
        if not cards:
            raise EdgeeffError(f"{v.name} has no real weights card; pass --weights PATH (or --weights none for random)")
        weights = cards[0].name
    paths = list(images) or bundled_images()
    model = build(v, weights=weights)
    rows = predict_images(model, paths, top=top)
    report.print_table(
        rows,
        [("file", "image"), ("rank", "#"), ("synset", "synset"), ("name", "class"), ("probability", "probability")],
        title=f"{v.name} with {model.edgeeff_weights.label} weights",
    )
    if json_path:
        report.write_json(json_path, rows, variant=v.name, weights=model.edgeeff_weights.label)


@main.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
def targets(json_path: str | None) -> None:
    """Every conversion target, whether its backend is installed, and the pip command if not."""
    from edgeeff import report
    from edgeeff.targets.base import TARGETS

    rows = []
    for spec in TARGETS.values():
        missing, tools = spec.missing(), spec.missing_tools()
        rows.append({
            "target": spec.name, "backend": spec.backend, "precision": spec.precision,
            "options": ", ".join("--" + o.replace("_", "-") for o in spec.options) or "-",
            "installed": not missing and not tools,
            "install": f'pip install "edgeeff[{spec.extra}]"' if missing else (f"{tools[0][0]}: {tools[0][1]}" if tools else "-"),
            "runs_on": spec.accelerator or "cpu/gpu",
        })
    report.print_table(rows, [("target", "target"), ("precision", "precision"), ("options", "options"),
                              ("installed", "installed"), ("install", "to install")], title="Targets")
    if json_path:
        report.write_json(json_path, rows)


@main.group()
def devices() -> None:
    """Devices a bench can run on: this machine's CPU/GPU and boards reached over SSH (devices.toml)."""


@devices.command(name="list")
@click.option("--devices-file", type=click.Path(dir_okay=False), default=None, help="Devices TOML (default: ~/.config/edgeeff/devices.toml).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
def devices_list(devices_file: str | None, json_path: str | None) -> None:
    """Every device: name, where it is, the Python it uses, its accelerator."""
    from edgeeff import report
    from edgeeff.devices import default_devices_file, load_devices

    rows = [{"device": d.name, "where": d.address if d.remote else "local", "python": d.python if d.remote else sys.executable,
             "accelerator": d.accelerator, "runtime": d.runtime or "-", "description": d.description}
            for d in load_devices(devices_file).values()]
    report.print_table(rows, [("device", "device"), ("where", "where"), ("accelerator", "accelerator"), ("python", "python"),
                              ("runtime", "TFLite runtime")],
                       title=f"Devices (file: {devices_file or default_devices_file()})")
    if json_path:
        report.write_json(json_path, rows)


@devices.command(name="check")
@click.argument("name")
@click.option("--devices-file", type=click.Path(dir_okay=False), default=None, help="Devices TOML (default: ~/.config/edgeeff/devices.toml).")
@click.option("--accept-new-host-key", is_flag=True, help="Let ssh record the host key of a device it has never seen (never a changed one).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
def devices_check(name: str, devices_file: str | None, accept_new_host_key: bool, json_path: str | None) -> None:
    """Connect and report CPU, cores, OS, architecture, Python, runtimes, free disk, temperature."""
    from edgeeff import devicekit, report
    from edgeeff.devices import get_device

    device = get_device(name, devices_file)
    device.check()
    if device.remote:
        from edgeeff.remote import SSHDevice

        info = SSHDevice(device, accept_new_host_key).probe()
    else:
        info = devicekit.probe()
    runtimes = info.get("runtimes", {})
    rows = [{"field": k, "value": v} for k, v in (
        ("device", f"{device.name} ({device.address if device.remote else 'local'})"), ("cpu", info.get("cpu")),
        ("cores", info.get("cores")), ("machine", info.get("machine")), ("os", info.get("os")),
        ("distribution", info.get("distribution")), ("board", info.get("board")), ("python", f"{info.get('python')} ({info.get('python_executable')})"),
        ("memory", f"{info.get('memory_total_mb')} MB"), ("free disk", f"{info.get('free_disk_gb')} GB"),
        ("temperature", f"{info['temperature_c']:.1f} C" if "temperature_c" in info else None),
        ("throttled", info.get("throttled")), ("accelerator", device.accelerator),
        *((f"runtime {r}", runtimes.get(r) or "not installed") for r in ("numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "openvino")),
    ) if v is not None]
    report.print_table(rows, [("field", "field"), ("value", "value")], title=f"Device {device.name}")
    if json_path:
        report.write_json(json_path, [info], device=device.name)
    if "numpy" not in runtimes or not (set(runtimes) - {"numpy"}):
        what = "numpy" if "numpy" not in runtimes else "a runtime"
        click.echo(f"edgeeff: {device.name} has no {what} yet: on the device run {device.python} -m pip install numpy ai-edge-litert", err=True)
        sys.exit(1)


@main.command()
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X (overrides: NAME:resolution=R).")
@click.option("--target", "target", default="tflite-int8", show_default=True, help="See `edgeeff targets`.")
@click.option("--weights", default=None, help="imagenet, a card name, a file, or none. Default: the variant's first real weights, else none.")
@click.option("--out", type=click.Path(file_okay=False), default="edgeeff-out", show_default=True, help="Folder for artifacts.")
@click.option("--calibration", type=click.Path(), default=None, help="Calibration images (folder or label<TAB>path list). Default: the embedded photos.")
@click.option("--calibration-count", type=int, default=None, help="Number of calibration images (seeded choice). Default 128.")
@click.option("--calibration-views", type=click.IntRange(1, 12), default=None,
              help="Views per calibration image (whole photo, crops, mirrored). Default: 12 below 50 images, else 1.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--images", type=click.Path(), default=None, help="Validation images (kept disjoint from calibration).")
@quantizer_options
@click.option("--float-blocks", default=None, help="int8 targets: keep these blocks in float (e.g. stem,block1a,head; see `edgeeff sensitivity`); a block includes its SE part unless -blockX_se is listed too; one convolution by its layer name (block1a_dwconv) keeps only it.")
@click.option("--max-drop", type=float, default=None, help="int8 targets: keep the fewest blocks in float until the top-1 drop vs fp32 on --images is at most this many points (then a float neighbour or a single convolution where that also runs faster).")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None, help="int8 targets: ... until top-1 agreement with fp32 on --images is at least this (0-1).")
@click.option("--sensitivity", "sensitivity_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="With --max-drop/--min-agreement: the block ranking from `edgeeff sensitivity --json` (else measured now).")
@click.option("--force", is_flag=True, help="Convert again even if an identical artifact exists.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the metadata as JSON.")
def convert(variant, target, weights, out, calibration, calibration_count, calibration_views, seed, images, float_blocks, max_drop,
            min_agreement, sensitivity_path, force, json_path, **quantizer) -> None:
    """Convert a variant to a deployment target, calibrated on real images, validated against Keras."""
    from rich.console import Console

    from edgeeff.convert import convert as run_convert
    from edgeeff.variants import resolve

    console = Console(stderr=True)
    if weights is None:
        weights = default_weights(resolve(variant))
    options = chosen_options(quantizer)
    if float_blocks:
        options["float_blocks"] = [b.strip() for b in float_blocks.split(",") if b.strip()]
    budgeted = max_drop is not None or min_agreement is not None
    if sensitivity_path and not budgeted:
        raise EdgeeffError("--sensitivity ranks blocks for --max-drop/--min-agreement; give one of them")
    if budgeted and float_blocks:
        raise EdgeeffError("--float-blocks and --max-drop/--min-agreement are alternatives: the budget chooses the blocks")
    if budgeted and images is None:
        raise EdgeeffError("--max-drop/--min-agreement need --images: the evaluation images the budget is measured on")
    if max_drop is not None and max_drop < 0:
        raise EdgeeffError("--max-drop must be >= 0 (top-1 points)")
    with step_progress(console) as say:
        if budgeted:
            from edgeeff import sensitivity as sens

            ranking = None
            if sensitivity_path:
                try:
                    ranking = json.loads(Path(sensitivity_path).read_text())["ranking"]
                except (ValueError, KeyError, TypeError):
                    raise EdgeeffError(f"{sensitivity_path} is not an `edgeeff sensitivity --json` report (no ranking)") from None
            from edgeeff.convert import check_writable

            check_writable(Path(out))
            root, cleanup = sens.trial_root(Path(out))
            try:
                trials = sens.Trials(variant, target, weights, images, calibration, calibration_count, seed, options, root, say,
                                     calibration_views)
                meta = sens.within_budget(trials, Path(out), max_drop, min_agreement, ranking)
            finally:
                cleanup()
        else:
            meta = run_convert(variant, target, weights=weights, out=out, calibration=calibration,
                               calibration_count=calibration_count, calibration_views=calibration_views, seed=seed, images=images,
                               force=force, options=options, progress=say)
    if meta.get("calibration"):
        for warning in meta["calibration"].get("warnings", []):
            console.print(f"[yellow]warning:[/] {warning}")
    from edgeeff import report

    val = meta["validation"]
    row = {
        "target": meta["target"], "variant": meta["variant"], "weights": meta["weights"]["label"],
        "size_mb": round(meta["size_bytes"] / 1e6, 2), "seconds": meta["conversion_seconds"],
        "images": val["images"], "agreement": val["top1_agreement"], "cosine": val["mean_cosine"],
        "max_rel_diff": val["max_rel_diff"], "reused": bool(meta.get("reused")),
        "fully_integer": meta["conversion"].get("fully_integer"), "path": meta.get("path", str(Path(out))),
    }
    labels = [("target", "target"), ("variant", "variant"), ("weights", "weights"), ("size_mb", "size (MB)"),
              ("seconds", "conversion (s)"), ("fully_integer", "full integer"), ("images", "validation images"),
              ("agreement", "top-1 agreement with Keras"), ("cosine", "mean cosine of logits"),
              ("max_rel_diff", "max relative logit difference"), ("reused", "reused existing artifact")]
    shown = dict(row, agreement=f"{round(row['agreement'] * row['images'])}/{row['images']} ({row['agreement']:.1%})")
    summary = [{"field": label, "value": shown[key]} for key, label in labels if shown.get(key) is not None]
    for key, label in (("top1_keras", "top-1 Keras"), ("top1_artifact", "top-1 artifact")):
        if key in val:
            summary.append({"field": label, "value": val[key]})
    report.print_table(summary, [("field", "field"), ("value", "value")], title="Validation against the Keras model")
    if meta.get("budget"):
        b = meta["budget"]
        steps = [{"step": st.get("step", ""), "float": ", ".join(st["float_blocks"]) or "-", "drop": st.get("drop_points"),
                  "agreement": st["agreement"], "meets": "yes" if st.get("meets") else "no", "median_ms": st["median_ms"],
                  "side_by_side": (f"{st['side_by_side_ms'][0]:.2f} vs {st['side_by_side_ms'][1]:.2f}: "
                                   f"{'faster, kept' if st.get('faster') else 'not faster'}"
                                   if all(st.get("side_by_side_ms") or [None]) else None)}
                 for st in b["steps"]]
        report.print_table(steps, [("step", "step"), ("float", "blocks in float"), ("drop", "top-1 drop (pts)"),
                                   ("agreement", "agreement"), ("meets", "meets budget"), ("median_ms", "median ms"),
                                   ("side_by_side", "ms side by side (this vs before)")],
                           title="Budget search (each step a real conversion, measured)")
        from edgeeff.sensitivity import settings_text

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
    click.echo(f"artifact: {row['path']}")
    if json_path:
        report.write_json(json_path, [row], metadata=meta)


@main.command()
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X.")
@click.option("--weights", default=None, help="Default: the variant's first real weights, else none.")
@click.option("--target", default="onnx-int8", show_default=True, help="An int8 target: tflite-int8, onnx-int8, openvino-int8.")
@click.option("--images", type=click.Path(), required=True, help="Evaluation images (kept disjoint from calibration).")
@click.option("--calibration", type=click.Path(), default=None, help="Calibration images (default: the embedded photos).")
@click.option("--calibration-count", type=int, default=None, help="Calibration images used (seeded choice). Default 128.")
@click.option("--blocks", default=None, help="Only these blocks (comma-separated); default every block, stem and head.")
@click.option("--mode", type=click.Choice(["keep-float", "quantize-alone"]), default="keep-float", show_default=True,
              help="keep-float: all int8 but the block (error it removes); quantize-alone: only the block int8 (error it causes).")
@click.option("--seed", type=int, default=0, show_default=True)
@quantizer_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Rows and ranking as JSON (input for convert --sensitivity).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Bar chart PNG of the SNR change per block.")
def sensitivity(variant, weights, target, images, calibration, calibration_count, blocks, mode, seed, json_path, plot_path,
                **quantizer) -> None:
    """Per-block int8 sensitivity: agreement, cosine and SNR of the logits against fp32, by Keras block name."""
    from rich.console import Console

    from edgeeff import blockmap, report
    from edgeeff import sensitivity as sens
    from edgeeff.api import build
    from edgeeff.variants import resolve

    v = resolve(variant)
    weights = weights or default_weights(v)
    check_report_paths(json_path, plot_path)
    options = chosen_options(quantizer)
    model = build(v, weights=weights, classifier_activation=None)
    units = blockmap.check_units(model, blocks.split(",")) if blocks else blockmap.units(model)
    del model
    root, cleanup = sens.trial_root(None)
    try:
        with step_progress(Console(stderr=True)) as say:
            trials = sens.Trials(v.name, target, weights, images, calibration, calibration_count, seed, options, root, say)
            result = sens.sensitivity(trials, units, mode)
    finally:
        cleanup()
    base = result["plain_int8"]
    title = (f"{v.name} ({weights}) {target}, {mode}: plain int8 agreement {base['agreement']:.1%}, cosine {base['cosine']:.4f}, "
             f"SNR {base['snr_db']:.1f} dB on {base['images']} images")
    report.print_table(result["rows"], [("block", "block"), ("agreement", "agreement"), ("cosine", "cosine"), ("snr_db", "SNR dB"),
                                        ("delta_agreement", "d agreement"), ("delta_snr_db", "d SNR dB")], title=title)
    click.echo(f"most sensitive first: {', '.join(result['ranking'][:8])}")
    if json_path:
        report.write_json(json_path, result["rows"], ranking=result["ranking"], plain_int8=base, mode=mode, target=target,
                          variant=v.name, weights=weights, options=options)
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

    from edgeeff import report, sweep
    from edgeeff import sensitivity as sens
    from edgeeff.data import list_samples
    from edgeeff.variants import resolve

    v = resolve(variant)
    weights = weights or default_weights(v)
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
    check_report_paths(json_path, plot_path)
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


@main.command(name="eval")
@click.argument("artifact", required=False, type=click.Path(path_type=Path))
@click.option("--variant", default=None, help="Evaluate this Keras variant instead of an artifact.")
@click.option("--weights", default=None, help="With --variant: weights (default: the variant's first real weights).")
@click.option("--images", type=click.Path(), default=None,
              help="Labelled images: a folder (synset in the file name) or a label<TAB>path list. Default: the embedded photos (no labels: agreement only).")
@click.option("--reference", type=click.Choice(["keras", "none"]), default="keras", show_default=True,
              help="What an artifact is compared with: the Keras fp32 model of the same variant and weights.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images.")
@click.option("--batch", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="Runtime threads (default: all cores).")
@click.option("--show", type=click.IntRange(0), default=10, show_default=True, help="Disagreements to list.")
@click.option("--device", "device_name", default="cpu", show_default=True,
              help="Where the artifact runs: cpu, gpu or a device from the devices file (images are preprocessed here and sent in batches).")
@click.option("--devices-file", type=click.Path(dir_okay=False), default=None, help="Devices TOML (default: ~/.config/edgeeff/devices.toml).")
@click.option("--accept-new-host-key", is_flag=True, help="Let ssh record the host key of a device it has never seen.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results as JSON.")
def evaluate(artifact, variant, weights, images, reference, limit, batch, threads, show, device_name, devices_file, accept_new_host_key,
             json_path) -> None:
    """Top-1/top-5 of an artifact (or a Keras variant), and its agreement with the fp32 reference."""
    from rich.console import Console
    from rich.progress import Progress

    from edgeeff import report
    from edgeeff.data import Sample, bundled_photos, list_samples
    from edgeeff.evaluate import score_pair
    from edgeeff.labels import imagenet_classes
    from edgeeff.preprocess import PreprocessCard

    from edgeeff.devices import get_device

    if (artifact is None) == (variant is None):
        raise EdgeeffError("give an artifact folder or --variant (one of them)")
    device = get_device(device_name, devices_file)
    device.check()
    if variant is not None and device.name != "cpu":
        raise EdgeeffError("--device applies to converted artifacts; a Keras --variant runs here")
    runner = None
    if artifact is not None:
        from edgeeff.artifact import open_artifact, read_metadata, reference_model

        if device.remote:
            from edgeeff.remote import RemoteRunner, SSHDevice

            meta = read_metadata(artifact)
            runner = RemoteRunner(SSHDevice(device, accept_new_host_key), Path(artifact), meta, threads)
        else:
            meta, runner = open_artifact(artifact, threads, device=device.accelerator)
        name = f"{meta['variant']} {meta['target']}" + (f" on {device.name}" if device.name != "cpu" else "")
        predict = runner.predict
        resolution, card = meta["preprocessing"]["resolution"], PreprocessCard.from_dict(meta["preprocessing"])
        ref_model = reference_model(meta) if reference == "keras" else None
    else:
        from edgeeff.api import build
        from edgeeff.variants import resolve

        v = resolve(variant)
        model = build(v, weights=weights or default_weights(v), classifier_activation=None)
        name = f"{v.name} keras ({model.edgeeff_weights.label})"
        predict = lambda x: model.predict(x, verbose=0)  # noqa: E731
        resolution, card, ref_model = v.resolution, model.edgeeff_weights.preprocessing, None
    samples = list_samples(images) if images is not None else [Sample(p, None) for p in bundled_photos()]
    samples = samples[:limit] if limit else samples
    ref = (lambda x: ref_model.predict(x, verbose=0)) if ref_model is not None else None
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"evaluating {name}", total=len(samples))
        try:
            result = score_pair(predict, ref, samples, resolution, card, batch, progress=lambda n: bar.update(task, advance=n))
        finally:
            if hasattr(runner, "close"):
                runner.close()
    row = {"model": name, "images": result["images"], "unreadable": result["unreadable"]}
    for key in ("top1", "top5", "reference_top1", "top1_agreement", "mean_cosine", "mean_kl"):
        if key in result:
            row[key] = result[key]
    if "top1_ci95" in result:
        row["top1_ci95"] = "[{:.1%}, {:.1%}]".format(*result["top1_ci95"])
    columns = [(k, h) for k, h in (("model", "model"), ("images", "images"), ("top1", "top-1"), ("top1_ci95", "top-1 95% CI"),
                                   ("top5", "top-5"), ("reference_top1", "fp32 top-1"), ("top1_agreement", "agreement"),
                                   ("mean_cosine", "cosine"), ("mean_kl", "KL"), ("unreadable", "unreadable")) if k in row]
    report.print_table([row], columns, title="Accuracy")
    classes = imagenet_classes()
    dis = result.get("disagreements", [])
    if dis and show:
        rows = [{"file": d["file"], "artifact": classes[d["artifact"]][1], "reference": classes[d["reference"]][1]} for d in dis[:show]]
        report.print_table(rows, [("file", "image"), ("artifact", "artifact says"), ("reference", "fp32 says")],
                           title=f"{len(dis)} disagreement(s) with the fp32 reference" + (f" (first {show})" if len(dis) > show else ""))
    if json_path:
        per_image = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in result.items()}
        report.write_json(json_path, [row], details=per_image, runner=runner.describe() if runner is not None else None)


@main.command()
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X.")
@click.option("--weights", default=None, help="Default: the variant's first real weights, else none.")
@click.option("--targets", "target_names", default="all", show_default=True, help="Comma-separated targets, or all.")
@click.option("--device", "device_name", default="cpu", show_default=True,
              help="cpu, gpu, or a device from the devices file (`edgeeff devices list`); several, comma-separated, run concurrently.")
@click.option("--devices-file", type=click.Path(dir_okay=False), default=None, help="Devices TOML (default: ~/.config/edgeeff/devices.toml).")
@click.option("--accept-new-host-key", is_flag=True, help="Let ssh record the host key of a device it has never seen (never a changed one).")
@click.option("--images", type=click.Path(), default=None, help="Labelled images for top-1 and agreement (validation set).")
@click.option("--calibration", type=click.Path(), default=None, help="Calibration images for int8 targets (default: embedded photos).")
@click.option("--out", type=click.Path(file_okay=False), default="edgeeff-out", show_default=True, help="Artifact folder (reused).")
@click.option("--threads", type=click.IntRange(1), default=None, help="Runtime threads (default: all cores).")
@click.option("--batch", type=click.IntRange(1, 1024), default=1, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 100), default=3, show_default=True, help="Interleaved rounds (fresh process each).")
@click.option("--warmup-runs", type=click.IntRange(0), default=10, show_default=True)
@click.option("--warmup-seconds", type=float, default=1.0, show_default=True)
@click.option("--min-runs", type=click.IntRange(1), default=50, show_default=True)
@click.option("--min-seconds", type=float, default=3.0, show_default=True)
@click.option("--openvino-precision", type=click.Choice(["f32", "default"]), default="f32", show_default=True,
              help="OpenVINO INFERENCE_PRECISION_HINT: f32, or the plugin's default (bf16 on CPUs that have it).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Rows as JSON.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Rows as CSV.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Rows as a Markdown table.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Accuracy vs latency (Pareto) PNG.")
def bench(variant, weights, target_names, device_name, devices_file, accept_new_host_key, images, calibration, out, threads, batch, rounds, warmup_runs, warmup_seconds,
          min_runs, min_seconds, openvino_precision, seed, json_path, csv_path, markdown_path, plot_path) -> None:
    """Latency, init time, memory and size of every target, measured side by side in fresh processes."""
    from rich.console import Console

    from edgeeff import bench as bench_lib
    from edgeeff import fsio, report
    from edgeeff.devices import get_device
    from edgeeff.measure import Schedule
    from edgeeff.targets.base import TARGETS, get_target
    from edgeeff.variants import resolve

    devices = [get_device(n.strip(), devices_file) for n in device_name.split(",") if n.strip()]
    if not devices or len({d.name for d in devices}) != len(devices):
        raise EdgeeffError("--device needs distinct device names, e.g. --device rpi or --device rpi,gateway")
    for device in devices:
        device.check()
    if target_names.strip().lower() == "all":  # every target some chosen device can run
        names = [t for t, spec in TARGETS.items() if any(bench_lib.target_fits_device(spec, d.accelerator) is None for d in devices)]
    else:
        names = [get_target(t).name for t in target_names.split(",") if t.strip()]
    if warmup_seconds < 0 or min_seconds < 0:
        raise EdgeeffError("--warmup-seconds and --min-seconds must be >= 0")
    check_report_paths(json_path, csv_path, markdown_path, plot_path)
    v = resolve(variant)
    weights = weights or default_weights(v)
    console = Console(stderr=True)
    schedule = Schedule(warmup_runs, warmup_seconds, min_runs, min_seconds)
    precision = None if openvino_precision == "default" else openvino_precision
    with step_progress(console) as say:
        artifacts = bench_lib.ensure_artifacts(v.name, weights, names, Path(out), images, calibration, seed, say)
        results = bench_lib.measure_on_devices(devices, artifacts, threads, batch, rounds, schedule, precision, say,
                                               accept_new_host_key=accept_new_host_key)
    rows = [row for device_rows, _ in results.values() for row in device_rows]
    infos = {name: info for name, (_, info) in results.items()}
    unreachable = [info["error"] for info in infos.values() if "error" in info]
    if len(unreachable) == len(devices) and any(d.remote for d in devices):
        raise EdgeeffError(unreachable[0] if len(unreachable) == 1 else "; ".join(unreachable))
    columns = [("device", "device"), ("target", "target"), ("top1", "top-1"), ("agreement", "agreement"), ("size_mb", "MB"),
               ("init_ms", "init ms"), ("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("speedup_vs_fp32", "x fp32"),
               ("executed_on", "ran on"), ("executed_precision", "ran as"), ("error", "error")]
    columns = [c for c in columns if c[0] not in ("top1", "error") or any(r.get(c[0]) is not None for r in rows)]
    if len(devices) == 1:
        columns = [c for c in columns if c[0] != "device"]
    where = ", ".join(d.name + (f" ({infos[d.name].get('cpu')}, {infos[d.name].get('machine')})" if d.remote and "cpu" in infos[d.name] else "")
                      for d in devices)
    title = f"{v.name} ({weights}) on {where}, batch {batch}, {rounds} interleaved rounds"
    report.print_table(rows, columns, title=title)
    for name, info in infos.items():
        if "uploaded_bytes" in info:
            console.print(f"{name}: copied {info['uploaded_bytes'] / 1e6:.2f} MB to the device (artifacts cached there by content)")
    for row in rows:
        if "error" in row:
            click.echo(f"edgeeff: {row['target']} on {row['device']}: {row['error']}", err=True)
    if json_path:
        report.write_json(json_path, rows, variant=v.name, weights=weights, devices=infos, schedule=schedule.__dict__)
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
    """CI gate: fail (exit 1) when quantization costs more top-1 than the budget or the baseline allows."""
    from rich.console import Console

    from edgeeff import fsio, gate, report

    if config_path is None:
        config_path = Path("edgeeff.toml") if Path("edgeeff.toml").is_file() else Path("pyproject.toml")
    config = gate.load_config(config_path)
    baseline = None if update_baseline else gate.read_baseline(config.baseline)
    console = Console(stderr=True)
    with step_progress(console) as say:
        result = gate.run_gate(config, baseline, progress=say)
    failures, notes = gate.judge(config, result, baseline)
    rows = [{"pair": f"{r['variant']} {r['target']}", "top1": f"{r['fp32_top1']:.1%} -> {r['quantized_top1']:.1%}",
             "drop": f"{r['drop_points']:+.2f}", "ci": "[{:+.2f}, {:+.2f}]".format(*r["drop_ci95_points"]),
             "p": f"{r['mcnemar_p']:.2f}", "agreement": f"{r['agreement']:.1%}",
             "baseline": "-" if r.get("baseline_drop_points") is None else f"{r['baseline_drop_points']:+.2f}"} for r in result["rows"]]
    report.print_table(rows, [("pair", "variant target"), ("top1", "top-1 fp32 -> int8"), ("drop", "drop pts"),
                              ("ci", "paired 95% CI"), ("p", "McNemar p"), ("agreement", "agree"), ("baseline", "baseline drop")],
                       title=f"Quantization gate ({len(result['rows'])} pairs, {result['rows'][0]['images'] if result['rows'] else 0} images)")
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
    from edgeeff.train import TrainConfig, prepare_run, train as run_train

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
        given = [name for name in TRAIN_SETTINGS if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise EdgeeffError(f"--resume continues with the run's saved settings; drop --{given[0].replace('_', '-')}")
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
    from edgeeff.data import list_samples, split as split_samples, write_list

    a, b = split_samples(list_samples(source), fraction, seed)
    for path, part in ((first_path, a), (second_path, b)):
        write_list(part, path)
    click.echo(f"{len(a)} -> {first_path}, {len(b)} -> {second_path}")


if __name__ == "__main__":  # pragma: no cover
    main()
