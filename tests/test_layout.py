"""The house rules the layout depends on, checked on the source (ARCHITECTURE.md's arrows)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("edgeeff", "targets", "calibration", "benchmarks", "tests") for p in (ROOT / folder).rglob("*.py")]


def imports_of(path: Path):
    """(line, module, name) of every ``from module import name`` in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def test_no_module_imports_a_private_name_from_another():
    found = [f"{path.relative_to(ROOT)}:{line}: from {module} import {name}"
             for path in SOURCES for line, module, name in imports_of(path)
             if name.startswith("_") and not name.startswith("__") and module.split(".")[0] in ("edgeeff", "targets", "calibration")]
    assert found == []


def test_the_arrows_that_must_never_exist():
    """The builder never imports a target; a target never imports the CLI; evaluate and measure do
    not name a backend; nothing imports benchmarks/."""
    def modules(path):
        return {module for _, module, _ in imports_of(path)} | {
            alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import) for alias in node.names}

    model = [p for p in (ROOT / "edgeeff" / "model").rglob("*.py")]
    assert model and not [p for p in model if any(m.startswith("edgeeff.targets") for m in modules(p))]
    targets = list((ROOT / "targets").glob("*.py"))
    assert targets and not [p for p in targets if any(m.startswith("edgeeff.cli") for m in modules(p))]
    for name in ("evaluate.py", "measure.py"):
        text = (ROOT / "edgeeff" / name).read_text()
        assert not any(f'"{backend}"' in text for backend in ("tflite", "onnx", "openvino", "keras")), name
    package = [p for folder in ("edgeeff", "targets", "calibration") for p in (ROOT / folder).rglob("*.py")]
    assert not [p for p in package if any(m.split(".")[0] == "benchmarks" for m in modules(p))]
    below_cli = [p for p in package if p.name != "cli.py"]
    assert not [p.relative_to(ROOT) for p in below_cli if "edgeeff.cli" in modules(p)]  # the CLI sits on top


def test_the_device_kit_imports_only_what_it_ships():
    """A board runs the kit without edgeeff installed: the kit's and the targets' modules may import
    at module level only the standard library, numpy (optional) and the modules the kit carries."""
    from edgeeff.kit.bundle import KIT_MODULES

    shipped = set(KIT_MODULES) | {f"edgeeff.targets.{p.stem}" for p in (ROOT / "targets").glob("*.py") if p.stem != "__init__"}
    offenders = []
    for path in [*(ROOT / "edgeeff" / "kit").glob("*.py"), *(ROOT / "targets").glob("*.py")]:
        if path.name == "bundle.py":  # builds the kit; not shipped
            continue
        for node in ast.parse(path.read_text()).body:  # module level only: functions import lazily
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("edgeeff", "tensorflow", "keras", "onnx",
                                                                                      "tf2onnx", "nncf", "PIL") and n not in shipped]
    assert offenders == []
