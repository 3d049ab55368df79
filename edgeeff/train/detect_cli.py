"""``edgeeff train-detect``: the click command over :func:`edgeeff.train.detect_loop.train_detector`.

Kept beside the loop rather than folded into ``edgeeff train`` as ``--task detect``: the two share
only ``--out``, ``--resume``, ``--epochs`` and ``--batch``; a detector takes a COCO file, not a class
folder, and none of the progressive-learning options apply, so one command with both sets would
accept options it must then refuse. Register it on the group with
``main.add_command(train_detect)``; the group's error handling turns project errors into one line.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeeff.errors import EdgeeffError

DETECT_SETTINGS = ("detector", "data", "images_root", "val", "val_images_root", "val_fraction", "epochs", "batch", "lr",
                   "image_size", "weights", "train_backbone", "steps_per_epoch", "no_flip", "seed")


@click.command(name="train-detect")
@click.option("--detector", default="efficientdet-lite0", show_default=True, help="Detector name (edgeeff models lists them).")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="COCO detection JSON to train on.")
@click.option("--images-root", type=click.Path(path_type=Path), default=None, help="Folder the JSON's file_name entries are under (default: the JSON's folder).")
@click.option("--val", type=click.Path(path_type=Path), default=None, help="Held-out COCO JSON (default: a seeded split of --data).")
@click.option("--val-images-root", type=click.Path(path_type=Path), default=None, help="Images folder of --val (default: its JSON's folder).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Share of --data held out when there is no --val.")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lr", type=float, default=0.08, show_default=True, help="Peak learning rate per 64 images (scaled linearly with --batch).")
@click.option("--image-size", type=click.IntRange(64), default=None, help="Train and score at this input size instead of the detector's.")
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
    from edgeeff.cli import check_report_paths, fail, quiet_tensorflow_import
    from edgeeff.train.detect_loop import DetectTrainConfig, prepare_detect_run, train_prepared

    if run_dir is None:
        raise EdgeeffError("give --out RUN_DIR (where checkpoints, metrics, the final model and the run card go)")
    if resume:
        given = [name for name in DETECT_SETTINGS if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise EdgeeffError(f"--resume continues with the run's saved settings; drop --{given[0].replace('_', '-')}")
    elif data is None:
        raise EdgeeffError("give --data FILE: a COCO detection JSON (edgeeff's generator writes one as annotations.json)")
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
