"""The kit as one file for a device: a zipapp (``python edgeeff-kit.pyz probe | measure | predict``)
built from the kit's modules and the registered targets' own modules, which hold their runners.

A board gets exactly the code the laptop measures with, and needs only Python, numpy and a
runtime: the target modules import nothing heavy at module level (their export side imports
TensorFlow, tf2onnx, NNCF inside the functions that convert). The archive is deterministic (fixed
timestamps, sorted entries), so its content hash names its cache folder on the device.
"""

from __future__ import annotations

import importlib
import io
import zipfile
from pathlib import Path

# Modules every kit carries besides the target modules; ``edgeeff/__init__.py`` is replaced by an
# empty one (the real one imports the model builder, which needs TensorFlow).
KIT_MODULES = ("edgeeff.errors", "edgeeff.kit", "edgeeff.kit.core", "edgeeff.kit.probe", "edgeeff.kit.wire",
               "edgeeff.targets", "edgeeff.targets.base")
ENTRY = "import sys\n\nfrom edgeeff.kit.wire import main\n\nsys.exit(main(sys.argv[1:]))\n"
FILE_NAME = "edgeeff-kit.pyz"


def _source_path(module: str) -> tuple[str, Path]:
    """(path inside the archive, source file) of an importable module or package."""
    found = importlib.import_module(module)
    source = Path(found.__file__)
    inner = module.replace(".", "/") + ("/__init__.py" if source.name == "__init__.py" else ".py")
    return inner, source


def kit_bytes(target_modules: tuple[str, ...] | None = None) -> bytes:
    """The zipapp's bytes: the kit modules, the given target modules (default: every registered
    target's), empty ``__init__.py`` files for their parent packages, and ``__main__.py``."""
    if target_modules is None:
        from edgeeff.targets.base import TARGETS

        target_modules = tuple(sorted({spec.module_name for spec in TARGETS.values()}))
    files: dict[str, bytes] = {"__main__.py": ENTRY.encode(), "edgeeff/__init__.py": b""}
    for module in (*KIT_MODULES, *target_modules):
        inner, source = _source_path(module)
        files.setdefault(inner, source.read_bytes())
        parts = inner.split("/")[:-1]
        for depth in range(1, len(parts) + 1):  # a plug-in target outside edgeeff needs its packages
            files.setdefault("/".join(parts[:depth]) + "/__init__.py", b"")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()
