"""``edgeeff devices setup NAME``: install what the device kit needs into the device's venv over SSH,
prove it imports, and report the versions, so nobody types the ``pip install`` line on a board by hand.

* The venv is the one the device entry's ``python`` points into (``.../bin/python``); it is created
  with ``python3 -m venv`` when missing. A venv being created carries a marker file until its
  packages import, so an interrupted setup is removed and redone, never half-used.
* A board with network runs ``pip install`` from PyPI. ``wheelhouse`` is for devices without it (the
  emulated Pi, a board behind a firewall): the host's wheels are uploaded over SSH (cached on the
  device by content, like artifacts) and installed with ``--no-index``.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

from edgeeff.errors import EdgeeffError

DEFAULT_PACKAGES = ("numpy", "ai-edge-litert", "onnxruntime")

# What each distribution is imported as: setup imports them on the device before it says "done".
IMPORTS = {"numpy": "numpy", "ai-edge-litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter",
           "onnxruntime": "onnxruntime", "openvino": "openvino"}

PARTIAL = ".edgeeff-partial"


class SetupError(EdgeeffError):
    """Setup ran but the device still cannot run the kit (exit 1: a check that falls short)."""

    exit_code = 1


def venv_of(device) -> str:
    """The venv folder that holds the device's python, or one line saying how to give it one."""
    match = re.fullmatch(r"(.+)/bin/python(3(\.\d+)?)?", device.python)
    if not match:
        raise EdgeeffError(f"{device.name}: python = {device.python!r} is not a venv's python, and setup installs into a venv only: "
                           f"point the entry at one, e.g. edgeeff devices add {device.name} --host {device.host} "
                           f"--python /home/USER/edgeeff-venv/bin/python --replace (setup creates it)")
    return match.group(1)


def distribution_name(requirement: str) -> str:
    """``onnxruntime==1.32.0`` -> ``onnxruntime`` (for the import check)."""
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def setup_script(venv: str, requirements: list[str], find_links: str | None) -> str:
    """The shell script run on the device. Failures print ``edgeeff-setup: error: ...`` (one line) and exit 3."""
    v = shlex.quote(venv)
    index = f"--no-index --find-links {shlex.quote(find_links)} " if find_links else ""
    modules = [IMPORTS[distribution_name(r)] for r in requirements if distribution_name(r) in IMPORTS]
    check = f"import {', '.join(modules)}" if modules else "pass"
    fail = 'echo "edgeeff-setup: error: $1" >&2; exit 3'
    return "\n".join([
        f"fail() {{ {fail}; }}",
        f"V={v}",
        f'if [ -e "$V/{PARTIAL}" ]; then rm -rf "$V"; fi  # an earlier setup was interrupted',
        'if [ ! -x "$V/bin/python" ]; then',
        "  command -v python3 >/dev/null || fail 'no python3 on the device: install it (sudo apt install python3 python3-venv)'",
        f'  mkdir -p "$V" && touch "$V/{PARTIAL}" || fail "cannot create $V on the device: choose another python path"',
        '  python3 -m venv "$V" >/dev/null 2>&1 || { rm -rf "$V"; fail "python3 -m venv failed: install the venv module (sudo apt install python3-venv)"; }',
        "fi",
        f'"$V/bin/python" -m pip install --disable-pip-version-check -q {index}{" ".join(map(shlex.quote, requirements))} 2>&1 | tail -5 >&2',
        'test "${PIPESTATUS[0]}" = 0 || { [ -e "$V/' + PARTIAL + '" ] && rm -rf "$V"; fail "pip install failed on the device (its last lines are above)"; }',
        f'err=$("$V/bin/python" -c {shlex.quote(check)} 2>&1) || {{ [ -e "$V/{PARTIAL}" ] && rm -rf "$V"; '
        'fail "the installed packages do not import on the device: $(echo "$err" | tail -1)"; }',
        f'rm -f "$V/{PARTIAL}"',
    ])


def upload_wheelhouse(remote, wheelhouse: Path) -> str:
    """The host's wheels on the device (``WORKDIR/cache/wheels-<sha>/``, skipped when already there)."""
    wheels = sorted(Path(wheelhouse).glob("*.whl"))
    if not wheels:
        raise EdgeeffError(f"--wheelhouse {wheelhouse} holds no .whl files: fill it with pip download --platform ... --only-binary=:all:")
    key = hashlib.sha256("".join(f"{p.name}:{p.stat().st_size}" for p in wheels).encode()).hexdigest()[:16]
    return remote.put([(p.name, p) for p in wheels], f"wheels-{key}")


def setup(remote, requirements: list[str] | None = None, wheelhouse: Path | None = None, say=lambda text: None) -> dict:
    """Install ``requirements`` into the device's venv (creating it), check they import, and return the
    kit's probe of the device afterwards. ``remote`` is an ``edgeeff.devices.ssh.SSHDevice``."""
    from edgeeff.devices.ssh import RemoteError

    requirements = list(requirements or DEFAULT_PACKAGES)
    venv = venv_of(remote.device)
    find_links = None
    if wheelhouse is not None:
        say(f"copying the wheels in {wheelhouse} to {remote.device.name}")
        find_links = upload_wheelhouse(remote, Path(wheelhouse))
    say(f"installing {', '.join(requirements)} into {venv} on {remote.device.name}")
    try:
        remote.run(f"bash -c {shlex.quote(setup_script(venv, requirements, find_links))}", timeout=max(remote.device.run_timeout, 1800))
    except RemoteError as exc:
        text = str(exc)
        if "edgeeff-setup: error:" in text:
            raise SetupError(f"{remote.device.name}: {text.split('edgeeff-setup: error:', 1)[1].strip()}") from None
        raise
    say(f"probing {remote.device.name}")
    info = remote.probe()
    missing = [r for r in map(distribution_name, requirements) if r not in info.get("runtimes", {})]
    if missing:
        raise SetupError(f"{remote.device.name}: installed, but the kit's probe does not see {', '.join(missing)} in {info.get('python_executable')}")
    return info
