"""Thin adapters from a :class:`CalibrationSource` to each backend's calibration interface."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from edgeeff.calibration.source import CalibrationSource


def tflite_representative_dataset(source: CalibrationSource, progress: Callable[[], None] | None = None) -> Callable[[], Iterator[list[np.ndarray]]]:
    """``converter.representative_dataset``: a generator function of single-input lists."""

    def generate() -> Iterator[list[np.ndarray]]:
        for batch in source:
            if progress:
                progress()
            yield [batch]

    return generate


def ort_reader(source: CalibrationSource, input_name: str, progress: Callable[[], None] | None = None):
    """An onnxruntime ``CalibrationDataReader`` (its one method: ``get_next``)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(source)

        def get_next(self):
            batch = next(self._it, None)
            if batch is None:
                return None
            if progress:
                progress()
            return {input_name: batch}

        def rewind(self) -> None:
            self._it = iter(source)

    return _Reader()


def nncf_dataset(source: CalibrationSource):
    """``nncf.Dataset`` over the source; the transform is identity (preprocessing already applied)."""
    import nncf

    return nncf.Dataset(list(source))
