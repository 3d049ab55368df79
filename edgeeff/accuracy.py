"""``edgeeff eval``'s job: open what is scored (an artifact folder, a bare model file or a Keras
variant) on a device, score it on the images against its fp32 reference with the one scorer
(``edgeeff.evaluate.score_pair``), and return the row with what it was measured on. The CLI only
parses and renders."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeeff.artifact import artifact_task
from edgeeff.errors import EdgeeffError


@dataclass
class AccuracyJob:
    artifact: Path | None = None
    variant: str | None = None
    weights: str | None = None
    images: Path | None = None
    reference: str = "keras"
    preprocessing: str | None = None
    labels_path: str | None = None
    limit: int | None = None
    batch: int = 32
    threads: int | None = None
    compare_local: bool = False
    accept_new_host_key: bool = False

    def check(self, device) -> None:
        """Refuse combinations that cannot run, before anything is loaded."""
        if self.variant is not None and device.name != "cpu":
            raise EdgeeffError("--device applies to converted artifacts; a Keras --variant runs here")
        refusal = device.connect(self.accept_new_host_key).compare_local_refusal() if self.compare_local else None
        if refusal:
            raise EdgeeffError(refusal)
        if self.variant is not None and self.preprocessing is not None:
            raise EdgeeffError("--preprocessing is for a bare model file; a --variant brings its weights' own card")


@dataclass
class AccuracyResult:
    row: dict
    result: dict
    source: dict
    names: list | None = None
    meta: dict = field(default_factory=dict)
    local: dict | None = None  # --compare-local: the device against this machine's CPU, image by image
    runner: dict | None = None
    local_runner: dict | None = None


def run_accuracy(job: AccuracyJob, device, progress_console=None, before_loading=lambda: None) -> AccuracyResult:
    """``before_loading`` runs once the inputs are known good and before a runtime or TensorFlow loads
    (the CLI quiets TensorFlow's import there, so bad input fails fast)."""
    from rich.console import Console
    from rich.progress import Progress

    from edgeeff import report
    from edgeeff.data.images import Sample, bundled_photos, list_samples
    from edgeeff.data.preprocess import PreprocessCard
    from edgeeff.evaluate import score_pair
    from edgeeff.predict import read_labels

    if job.artifact is not None and artifact_task(job.artifact) == "detect":
        from edgeeff.detect_eval import run_detect_eval

        done = run_detect_eval(job, device, progress_console, before_loading)
        return AccuracyResult(done.row, done.details, done.source, None, done.meta, runner=done.runner)
    names = read_labels(job.labels_path) if job.labels_path else None
    samples = list_samples(job.images) if job.images is not None else [Sample(p, None) for p in bundled_photos()]
    samples = samples[:job.limit] if job.limit else samples
    source = {"images": str(Path(job.images).resolve()) if job.images is not None else "embedded photos (edgeeff/data/assets/photos)",
              "image_count": len(samples)}
    runner, local_runner, paired, meta = None, None, None, {}
    scratch = tempfile.TemporaryDirectory(prefix="edgeeff-model-")
    try:
        if job.artifact is not None:
            from edgeeff.artifact import read_metadata, reference_model, resolve_artifact
            from edgeeff.fsio import sha256_of

            folder = resolve_artifact(job.artifact, Path(scratch.name), job.preprocessing)
            meta = read_metadata(folder)
            before_loading()
            runner = device.runner(folder, meta, job.threads, job.accept_new_host_key)
            name = f"{meta['variant'] or Path(job.artifact).name} {meta['target']}" + (f" on {device.name}" if device.name != "cpu" else "")
            predict = runner.predict
            if job.compare_local:
                from edgeeff.devices.registry import LOCAL_DEVICES
                from edgeeff.evaluate import PairedOutputs

                local_runner = LOCAL_DEVICES["cpu"].runner(folder, meta, job.threads)
                predict = paired = PairedOutputs(runner.predict, local_runner.predict)
            resolution, card = meta["preprocessing"]["resolution"], PreprocessCard.from_dict(meta["preprocessing"])
            ref_model = reference_model(meta) if job.reference == "keras" else None
            source.update(artifact=str(Path(job.artifact).resolve()), artifact_sha256=sha256_of(folder / meta["artifact"]),
                          target=meta["target"], weights=report.weights_text(meta["weights"]["label"]),
                          assumed=(meta.get("imported") or {}).get("assumed", []))
        else:
            from edgeeff.api import build
            from edgeeff.model.variants import resolve

            v = resolve(job.variant)
            before_loading()
            model = build(v, weights=job.weights, classifier_activation=None)
            name = f"{v.name} keras ({report.weights_text(model.edgeeff_weights.label)})"
            predict = lambda x: model.predict(x, verbose=0)  # noqa: E731
            resolution, card, ref_model = v.resolution, model.edgeeff_weights.preprocessing, None
            source.update(variant=v.name, weights=report.weights_text(model.edgeeff_weights.label))
        ref = (lambda x: ref_model.predict(x, verbose=0)) if ref_model is not None else None
        with Progress(console=progress_console or Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"evaluating {name}", total=len(samples))
            result = score_pair(predict, ref, samples, resolution, card, job.batch, progress=lambda n: bar.update(task, advance=n))
        described = runner.describe() if runner is not None else None
        local_described = local_runner.describe() if local_runner is not None else None
    finally:
        for opened in (runner, local_runner):
            if hasattr(opened, "close"):
                opened.close()
        scratch.cleanup()
    row = {"model": name, "images": result["images"], "unreadable": result["unreadable"], "top1_ties": result["top1_ties"],
           **device.marks}
    if job.artifact is not None:
        from edgeeff.devices.cpu import recipe_note

        profile = device.cpu_profile()
        row.update(cpu_profile=profile.name if profile else None, converted_for=(meta.get("cpu_profile") or {}).get("name"))
        note = recipe_note(meta, profile)
        if note:
            row["note"] = note
    for key in ("top1", "top1_ci95", "top5", "reference_top1", "top1_agreement", "mean_cosine", "mean_kl"):
        if key in result:
            row[key] = [float(v) for v in result[key]] if key == "top1_ci95" else result[key]
    local = paired.summary(result["files"]) if paired is not None else None
    if local is not None:
        row.update(local_agreement=local["top1_agreement"], local_identical=local["identical_outputs"], local_cosine=local["mean_cosine"])
    return AccuracyResult(row, result, source, names, meta, local, described, local_described)
