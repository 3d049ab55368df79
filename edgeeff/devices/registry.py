"""The device registry: where a measurement runs. Two local entries (``cpu``, ``gpu``) are built in;
remote ones come from a devices file (TOML, one table per device), so adding a board is one entry:

    [devices.rpi]
    host = "raspberrypi.local"
    user = "pi"
    identity = "~/.ssh/id_ed25519"
    python = "/home/pi/edgeeff-venv/bin/python"
    runtime = "ai-edge-litert"        # preferred TFLite runtime (or tflite-runtime)
    accelerator = "cpu"               # or edgetpu, gpu, npu, cuda, tensorrt, ... (edgeeff.kit.core.ACCELERATOR_NAMES)

The file is ``--devices-file PATH``, else ``$EDGEEFF_DEVICES``, else
``$XDG_CONFIG_HOME/edgeeff/devices.toml`` (``~/.config/edgeeff/devices.toml``). No passwords: SSH
keys only, host keys checked against known_hosts.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from edgeeff.kit.core import ACCELERATOR_NAMES
from edgeeff.targets.tflite import TFLITE_RUNTIMES
from edgeeff.errors import EdgeeffError, unknown_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Device:
    name: str
    description: str = ""
    accelerator: str = "cpu"  # what a runner is asked for (edgeeff.kit.core.ACCELERATOR_NAMES)
    host: str | None = None  # None: this machine
    port: int = 22
    user: str | None = None
    identity: str | None = None  # private key file; else ssh's defaults and agent
    known_hosts: str | None = None  # else ssh's own (~/.ssh/known_hosts)
    python: str = "python3"
    runtime: str | None = None  # preferred TFLite runtime on the device
    workdir: str = ".cache/edgeeff"  # relative to the login directory, or absolute
    connect_timeout: float = 10.0
    run_timeout: float = 900.0
    cpu: str | None = None  # its int8 CPU profile (edgeeff.devices.cpu), recorded by `edgeeff devices check`
    emulated: bool = False  # an emulated board (``edgeeff devices emulate``): its arithmetic is the ARM build's, its timing is not

    @property
    def marks(self) -> dict:
        """What every row measured on this device must carry so it is not read as something it is not:
        an emulated board's latency is the emulator's, not the board's."""
        return {"emulated": True} if self.emulated else {}

    @property
    def caveat(self) -> str:
        """One line for titles and reports beside this device's rows (empty for a real device)."""
        return (f"{self.name} is emulated (qemu-user): outputs are the ARM build's own, latency is the emulator's, "
                "not a board's") if self.emulated else ""

    @property
    def remote(self) -> bool:
        return self.host is not None

    @property
    def address(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    @property
    def where(self) -> str:
        """Its address for a board, "local" for this machine."""
        return self.address if self.remote else "local"

    @property
    def interpreter(self) -> str:
        """The Python that runs the kit for it."""
        return self.python if self.remote else sys.executable

    @property
    def round_trip_note(self) -> str | None:
        """What a per-call time measured from this machine includes beyond the runtime."""
        return f"runtime ms on {self.name} include the round trip from this machine" if self.remote else None

    @property
    def shares_this_machine(self) -> bool:
        """Timed on this machine: measured one after another with this machine's other devices (two
        at once would slow each other); boards are measured concurrently."""
        return not self.remote

    @property
    def records_profile(self) -> bool:
        """Whether `devices check` writes its CPU profile into the devices file (a named board; this
        machine detects its own and an ssh:// one-off has no entry)."""
        return self.remote and not self.name.lower().startswith(SSH_SCHEME)

    def title_parts(self, info: dict) -> list[str]:
        """What a table title says of it beyond its name: a board's CPU and machine."""
        return [p for p in (info.get("cpu"), info.get("machine")) if p] if self.remote else []

    def connect(self, accept_new_host_key: bool = False):
        """This device's session (``probe``, ``measure``, ``runner``, ``provision``): over SSH for a
        board (``edgeeff.devices.ssh``), in this process for this machine (``edgeeff.devices.local``)."""
        if self.remote:
            from edgeeff.devices.ssh import SSHDevice

            return SSHDevice(self, accept_new_host_key)
        from edgeeff.devices.local import LocalSession

        return LocalSession(self)

    def runner(self, folder: Path, meta: dict, threads: int | None = None, accept_new_host_key: bool = False):
        """A runner (``predict``/``describe``/``close``) for an artifact folder on this device."""
        return self.connect(accept_new_host_key).runner(Path(folder), meta, threads)

    def cpu_profile(self):
        """The device's int8 CPU profile (``edgeeff.devices.cpu``): this machine's, or the one `devices check`
        recorded for a board (None until it has been checked)."""
        from edgeeff.devices.cpu import local_profile, named

        if not self.remote:
            return local_profile()
        return named(self.cpu) if self.cpu else None

    def check(self) -> None:
        """Fail with one line when a local device is not present, before any work is done. Remote
        devices are checked by connecting (``edgeeff.devices.ssh``)."""
        if not self.remote and self.accelerator == "gpu" and not gpu_backends():
            raise EdgeeffError("no GPU here: onnxruntime has no CUDA provider and OpenVINO lists no GPU device; use --device cpu "
                               "(or on a CUDA machine: pip install onnxruntime-gpu)")


def gpu_backends() -> list[str]:
    """Runtimes that can reach a GPU on this machine (without importing TensorFlow)."""
    found = []
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            found.append("onnxruntime-cuda")
    except ImportError:
        pass
    try:
        import openvino as ov

        if any(d.startswith("GPU") for d in ov.Core().available_devices):
            found.append("openvino-gpu")
    except ImportError:
        pass
    return found


LOCAL_DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device("cpu", "this machine's CPU (every runtime)", "cpu"),
        Device("gpu", "this machine's GPU: onnxruntime CUDA provider, OpenVINO GPU plugin", "gpu"),
    )
}


def default_devices_file() -> Path:
    if os.environ.get("EDGEEFF_DEVICES"):
        return Path(os.environ["EDGEEFF_DEVICES"]).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "edgeeff" / "devices.toml"


_TYPES = {f.name: f.type for f in fields(Device)}
_NUMBERS = {"port": int, "connect_timeout": float, "run_timeout": float}
_FLAGS = {"emulated"}


def _entry(name: str, table: dict, source: Path) -> Device:
    if not isinstance(table, dict):
        raise EdgeeffError(f"{source}: [devices.{name}] must be a table of settings")
    unknown = sorted(set(table) - set(_TYPES) - {"name"})
    if unknown:
        known = ", ".join(k for k in _TYPES if k != "name")
        raise EdgeeffError(f"{source}: [devices.{name}] has unknown key(s) {', '.join(unknown)}; known: {known}")
    if name in LOCAL_DEVICES:
        raise EdgeeffError(f"{source}: [devices.{name}] clashes with the built-in local device {name!r}; choose another name")
    if not table.get("host"):
        raise EdgeeffError(f"{source}: [devices.{name}] needs host = \"...\" (an address or an ~/.ssh/config alias)")
    values = {}
    for key, value in table.items():
        if key in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise EdgeeffError(f"{source}: [devices.{name}] {key} must be a positive number, got {value!r}")
            value = _NUMBERS[key](value)
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise EdgeeffError(f"{source}: [devices.{name}] {key} must be true or false, got {value!r}")
        elif not isinstance(value, str):
            raise EdgeeffError(f"{source}: [devices.{name}] {key} must be a string, got {value!r}")
        values[key] = value
    if values.get("accelerator", "cpu") not in ACCELERATOR_NAMES:
        raise EdgeeffError(f"{source}: [devices.{name}] accelerator {values['accelerator']!r} is unknown; known: {', '.join(ACCELERATOR_NAMES)}")
    if values.get("cpu") is not None:
        from edgeeff.devices.cpu import PROFILES

        if values["cpu"] not in PROFILES:
            raise EdgeeffError(f"{source}: [devices.{name}] cpu {values['cpu']!r} is unknown; known: {', '.join(PROFILES)}")
    if values.get("runtime") not in (None, *TFLITE_RUNTIMES):
        raise EdgeeffError(f"{source}: [devices.{name}] runtime must be one of {', '.join(TFLITE_RUNTIMES)}")
    workdir = values.get("workdir")
    if workdir and workdir.startswith("~/"):
        values["workdir"] = workdir[2:]  # ssh commands start in the login directory
    values.setdefault("description", f"{values.get('user', '') + '@' if values.get('user') else ''}{values['host']} over SSH")
    return Device(name=name, **values)


def load_devices(devices_file: str | Path | None = None) -> dict[str, Device]:
    """The local devices plus the file's entries; an explicitly named file must exist."""
    devices = dict(LOCAL_DEVICES)
    path = Path(devices_file).expanduser() if devices_file else default_devices_file()
    if not path.is_file():
        if devices_file:
            raise EdgeeffError(f"devices file {path} does not exist")
        return devices
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EdgeeffError(f"{path} is not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"devices"})
    if extra:
        raise EdgeeffError(f"{path}: unknown top-level key(s) {', '.join(extra)}; devices go in [devices.NAME] tables")
    for name, table in data.get("devices", {}).items():
        devices[name] = _entry(name, table, path)
    return devices


DEVICES_HELP = "README.md, section Devices"
SSH_SCHEME = "ssh://"


def device_from_url(url: str) -> Device:
    """A one-off device from ``ssh://[user@]host[:port]`` (no file entry needed; keys and known_hosts as ssh's own)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port or 22
    except ValueError as exc:
        raise EdgeeffError(f"--device {url}: {exc}; write ssh://user@host or ssh://user@host:2222") from None
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.password:
        raise EdgeeffError(f"--device {url} is not ssh://[user@]host[:port] (no password, no path)")
    return Device(name=url, description=f"{url} (one-off, not in a devices file)", host=parts.hostname, port=port,
                  user=parts.username)


def get_device(name: str, devices_file: str | Path | None = None) -> Device:
    """A device by name, or a one-off ``ssh://user@host[:port]``; an unknown name says where devices
    come from and how to add one."""
    if name.strip().lower().startswith(SSH_SCHEME):
        return device_from_url(name.strip())
    known = load_devices(devices_file)
    if name.strip().lower() in known:
        return known[name.strip().lower()]
    suggested = [k for k, d in known.items() if d.remote or k == "cpu" or gpu_backends()]  # a GPU only where one is seen
    path = Path(devices_file).expanduser() if devices_file else default_devices_file()
    where = f"{path}" if path.is_file() else f"{path} (does not exist yet)"
    unknown = unknown_name(suggested, name, "device")
    raise type(unknown)(f"{unknown}. Devices file: {where}; add one with `edgeeff devices add {name.strip()} --host HOST --user USER`, "
                        f"or use --device ssh://USER@HOST for one run ({DEVICES_HELP})")


def usable_local_devices() -> list[Device]:
    """This machine's devices that can run something here: the CPU always, the GPU only where a runtime sees one."""
    return [d for d in LOCAL_DEVICES.values() if d.accelerator != "gpu" or gpu_backends()]


def read_table(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EdgeeffError(f"{path} is not valid TOML: {exc}") from None


def add_device(name: str, settings: dict, devices_file: str | Path | None = None, replace: bool = False) -> Path:
    """Validate one entry as the loader would, then write the whole file atomically (other entries kept)."""
    import tomli_w

    from edgeeff import fsio

    path = Path(devices_file).expanduser() if devices_file else default_devices_file()
    settings = {k: v for k, v in settings.items() if v is not None}
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise EdgeeffError(f"device name {name!r}: use letters, digits, - and _ (it is a TOML key and a --device value)")
    _entry(name, settings, path)  # the loader's own checks: unknown keys, types, accelerator, runtime
    if path.is_file():
        load_devices(path)  # refuse to rewrite a file that does not load as it is
    data = read_table(path)
    table = data.setdefault("devices", {})
    if name in table and not replace:
        raise EdgeeffError(f"{path} already has a device {name!r}; pass --replace to overwrite it, or choose another name")
    table[name] = settings
    fsio.write_text(path, tomli_w.dumps(data))
    return path


def record_cpu_profile(name: str, profile: str, devices_file: str | Path | None = None) -> bool:
    """Write a board's probed CPU profile into its entry (``convert --device NAME`` reads it); True if it changed."""
    path = Path(devices_file).expanduser() if devices_file else default_devices_file()
    entry = read_table(path).get("devices", {}).get(name)
    if entry is None or entry.get("cpu") == profile:
        return False
    add_device(name, {**entry, "cpu": profile}, path, replace=True)
    return True


def remove_device(name: str, devices_file: str | Path | None = None) -> Path:
    import tomli_w

    from edgeeff import fsio

    path = Path(devices_file).expanduser() if devices_file else default_devices_file()
    data = read_table(path)
    if name not in data.get("devices", {}):
        present = ", ".join(data.get("devices", {})) or "none"
        raise EdgeeffError(f"no device {name!r} in {path} (devices there: {present})")
    del data["devices"][name]
    fsio.write_text(path, tomli_w.dumps(data))
    return path
