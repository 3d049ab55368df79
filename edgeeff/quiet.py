"""Mute native libraries' chatter on file descriptor 2 around calls that are known to print it
(TensorFlow's converter: "fully_quantize: ...", the TFLite runtime: "Created TensorFlow Lite
XNNPACK delegate"). Python-level errors still surface as exceptions; EDGEEFF_DEBUG=1 shows all."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    if os.environ.get("EDGEEFF_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
