"""Thin adapters from a :class:`CalibrationSource` to each backend's calibration interface.

Each takes an optional ``progress(done, total)`` callback, called once per calibration array (one per
view of each image, see ``source.VIEWS``) in every pass the backend makes over the data, so a progress bar can follow the long step.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from edgeeff.calibration.source import CalibrationSource

Progress = Callable[[int, int], None]


def _counted(source: CalibrationSource, progress: Progress | None) -> Iterator[np.ndarray]:
    total = len(source)
    for done, batch in enumerate(source, 1):
        if progress:
            progress(done, total)
        yield batch


def tflite_representative_dataset(source: CalibrationSource, progress: Progress | None = None) -> Callable[[], Iterator[list[np.ndarray]]]:
    """``converter.representative_dataset``: a generator function of single-input lists."""

    def generate() -> Iterator[list[np.ndarray]]:
        for batch in _counted(source, progress):
            yield [batch]

    return generate


def ort_reader(source: CalibrationSource, input_name: str, progress: Progress | None = None):
    """An onnxruntime ``CalibrationDataReader`` (its one method: ``get_next``)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = _counted(source, progress)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

        def rewind(self) -> None:
            self._it = _counted(source, progress)

    return _Reader()


def nncf_dataset(source: CalibrationSource, progress: Progress | None = None):
    """``nncf.Dataset`` over the source; preprocessing is already applied, so the transform only counts."""
    import nncf

    items = list(source)
    total = len(items)
    seen = [0]

    def transform(batch: np.ndarray) -> np.ndarray:
        seen[0] += 1
        if progress:
            progress((seen[0] - 1) % total + 1, total)
        return batch

    return nncf.Dataset(items, transform)
