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
        if ctx.protected_args and ctx.protected_args[0] not in ("targets",):
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


def bundled_images() -> list[Path]:
    from importlib import resources

    folder = resources.files("edgeeff.assets")
    return [Path(str(folder.joinpath(n))) for n in ("grace_hopper.jpg", "flower.jpg", "china.jpg")]


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


if __name__ == "__main__":  # pragma: no cover
    main()
