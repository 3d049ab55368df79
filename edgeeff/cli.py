"""The ``edgeeff`` command: thin click commands over the library; no logic of its own.

Exit codes: 0 ok, 1 a check fell short, 2 bad input or could not run. Errors are one line on
stderr, never a traceback (set EDGEEFF_DEBUG=1 to see one).
"""

from __future__ import annotations

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
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            except ImportError as exc:
                os.dup2(saved, 2)
                fail(f"TensorFlow is not importable ({exc}); reinstall: pip install -e .")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"edgeeff: error: {message}", err=True)
    sys.exit(code)


class Group(click.Group):
    """Turns project errors into one line and an exit code."""

    def invoke(self, ctx):
        if ctx.protected_args and ctx.protected_args[0] not in ("targets", "split"):
            quiet_tensorflow_import()
        try:
            return super().invoke(ctx)
        except EdgeeffError as exc:
            if os.environ.get("EDGEEFF_DEBUG"):
                raise
            fail(str(exc), exc.exit_code)
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
        missing = spec.missing()
        rows.append({
            "target": spec.name, "backend": spec.backend, "precision": spec.precision,
            "options": ", ".join("--" + o.replace("_", "-") for o in spec.options) or "-",
            "installed": not missing,
            "install": f'pip install "edgeeff[{spec.extra}]"' if missing else "-",
        })
    report.print_table(rows, [("target", "target"), ("precision", "precision"), ("options", "options"),
                              ("installed", "installed"), ("install", "to install")], title="Targets")
    if json_path:
        report.write_json(json_path, rows)


@main.command()
@click.option("--variant", default="lite0", show_default=True, help="Variant name or phi=X (overrides: NAME:resolution=R).")
@click.option("--target", "target", default="tflite-int8", show_default=True, help="See `edgeeff targets`.")
@click.option("--weights", default=None, help="imagenet, a card name, a file, or none. Default: the variant's first real weights, else none.")
@click.option("--out", type=click.Path(file_okay=False), default="edgeeff-out", show_default=True, help="Folder for artifacts.")
@click.option("--calibration", type=click.Path(), default=None, help="Calibration images (folder or label<TAB>path list). Default: the embedded photos.")
@click.option("--calibration-count", type=int, default=None, help="Number of calibration images (seeded choice). Default 200.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--images", type=click.Path(), default=None, help="Validation images (kept disjoint from calibration).")
@click.option("--io-dtype", type=click.Choice(["int8", "uint8"]), default=None, help="tflite-int8 input/output type (default int8).")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default=None, help="onnx-int8 only (default minmax).")
@click.option("--preset", type=click.Choice(["performance", "mixed"]), default=None, help="openvino-int8 only (default performance).")
@click.option("--fast-bias-correction/--bias-correction", default=None, help="openvino-int8 only (default fast).")
@click.option("--force", is_flag=True, help="Convert again even if an identical artifact exists.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the metadata as JSON.")
def convert(variant, target, weights, out, calibration, calibration_count, seed, images, io_dtype, calibration_method,
            preset, fast_bias_correction, force, json_path) -> None:
    """Convert a variant to a deployment target, calibrated on real images, validated against Keras."""
    from rich.console import Console

    from edgeeff import report
    from edgeeff.convert import convert as run_convert
    from edgeeff.variants import resolve

    console = Console(stderr=True)
    if weights is None:
        weights = default_weights(resolve(variant))
    options = {"io_dtype": io_dtype, "calibration_method": calibration_method, "preset": preset,
               "fast_bias_correction": fast_bias_correction}
    with console.status("converting") as status:
        meta = run_convert(variant, target, weights=weights, out=out, calibration=calibration,
                           calibration_count=calibration_count, seed=seed, images=images, force=force,
                           options={k: v for k, v in options.items() if v is not None},
                           progress=lambda msg: status.update(msg))
    if meta.get("calibration"):
        for warning in meta["calibration"].get("warnings", []):
            console.print(f"[yellow]warning:[/] {warning}")
    val = meta["validation"]
    row = {
        "target": meta["target"], "variant": meta["variant"], "weights": meta["weights"]["label"],
        "size_mb": round(meta["size_bytes"] / 1e6, 2), "seconds": meta["conversion_seconds"],
        "images": val["images"], "agreement": val["top1_agreement"], "cosine": val["mean_cosine"],
        "max_abs_diff": val["max_abs_diff"], "reused": bool(meta.get("reused")),
        "fully_integer": meta["conversion"].get("fully_integer"), "path": meta.get("path", str(Path(out))),
    }
    report.print_table([row], [("target", "target"), ("variant", "variant"), ("weights", "weights"), ("size_mb", "MB"),
                               ("seconds", "convert s"), ("images", "val images"), ("agreement", "top-1 agreement"),
                               ("cosine", "cosine"), ("max_abs_diff", "max |dp|"), ("fully_integer", "full int"),
                               ("reused", "reused")], title="Validation against the Keras model")
    click.echo(f"artifact: {row['path']}")
    if json_path:
        report.write_json(json_path, [row], metadata=meta)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--fraction", type=float, default=0.4, show_default=True, help="Share that goes to the first list.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--first", "first_path", type=click.Path(dir_okay=False), required=True, help="List file for the first part (e.g. calibration).")
@click.option("--second", "second_path", type=click.Path(dir_okay=False), required=True, help="List file for the rest (e.g. evaluation).")
def split(source: Path, fraction: float, seed: int, first_path: str, second_path: str) -> None:
    """Split a labelled image folder into two disjoint label<TAB>path lists (seeded, stable)."""
    from edgeeff import fsio
    from edgeeff.data import split as split_samples, list_samples
    from edgeeff.labels import imagenet_classes

    classes = imagenet_classes()
    a, b = split_samples(list_samples(source), fraction, seed)
    for path, part in ((first_path, a), (second_path, b)):
        lines = [f"{classes[s.label][0] if s.label is not None else '-'}\t{s.path.resolve()}" for s in part]
        fsio.write_text(path, "\n".join(lines) + "\n")
    click.echo(f"{len(a)} -> {first_path}, {len(b)} -> {second_path}")


if __name__ == "__main__":  # pragma: no cover
    main()
