"""edgeeff: the EfficientNet family from one Keras definition to measured edge deployments.

Importing this package is cheap: TensorFlow/Keras and every backend load only when used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgeeff.errors import EdgeeffError  # noqa: E402
from edgeeff.model.variants import list_variants, resolve  # noqa: E402


def build(*args, **kwargs):
    """See :func:`edgeeff.api.build` (imported lazily so ``import edgeeff`` does not load Keras)."""
    from edgeeff.api import build as _build

    return _build(*args, **kwargs)


__all__ = ["EdgeeffError", "build", "list_variants", "resolve", "__version__"]
