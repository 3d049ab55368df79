"""Calibration data for post-training quantization: one re-iterable source, thin backend adapters.

The source knows images and the variant's preprocessing card, nothing about any backend; each
adapter (TFLite representative dataset, onnxruntime CalibrationDataReader, nncf.Dataset) is a few
lines over it, so every backend calibrates on exactly the same pixels.
"""

from edgeeff.calibration.source import (
    DEFAULT_COUNT,
    MIN_COUNT,
    WARN_BELOW,
    CalibrationError,
    CalibrationSource,
    from_images,
    from_samples,
)

__all__ = ["CalibrationSource", "CalibrationError", "from_images", "from_samples", "DEFAULT_COUNT", "MIN_COUNT", "WARN_BELOW"]
