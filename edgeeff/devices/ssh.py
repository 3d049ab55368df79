"""Devices reached over SSH: the OpenSSH client carries the device kit (``edgeeff.kit.core``, one
file), the artifacts and the results; nothing else needs installing on the device.

* Host keys are checked against known_hosts (``StrictHostKeyChecking=yes``); ``accept_new_host_key``
  lets ssh add a key it has never seen (``accept-new``), never a changed one. ``BatchMode``: keys or
  an agent only, never a password prompt.
* Artifacts are cached on the device by content hash (``WORKDIR/cache/<sha>/``), written to a temp
  name and renamed, so a second bench copies nothing and an interrupted copy leaves nothing behind.
* Every run carries a job id on its command line, so a run that times out is killed on the device
  too; eval streams batches through stdin, so no image data is left on the device.
* ssh's failures become one actionable line (:func:`classify`).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import uuid
from dataclasses import asdict
from pathlib import Path

from edgeeff.kit import core as kit_core
from edgeeff.kit import wire as kit_wire
from edgeeff.kit.bundle import FILE_NAME as KIT_FILE, kit_bytes
from edgeeff.artifact import read_metadata
from edgeeff.devices.registry import Device
from edgeeff.errors import EdgeeffError
from edgeeff.fsio import sha256_of


class RemoteError(EdgeeffError):
    """The device could not be reached or could not run the job."""


class ConnectError(RemoteError):
    """The device could not be reached at all (nothing ran)."""


# ssh's own messages -> what the user should do. First match wins; {d} is the device.
_SSH_FAULTS = (
    ("Connection refused", ConnectError, "{d.name}: connection refused at {d.host}:{d.port}: is sshd running there, and is the port right?"),
    ("Could not resolve hostname", ConnectError, "{d.name}: cannot resolve host {d.host!r}: check host in the devices file"),
    ("timed out", ConnectError, "{d.name}: no answer from {d.host}:{d.port} within {d.connect_timeout:.0f} s: is the device on and reachable?"),
    ("No route to host", ConnectError, "{d.name}: no route to {d.host}: is the device on this network?"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", ConnectError,
     "{d.name}: the host key of {d.host}:{d.port} has CHANGED since it was recorded (reinstalled device, or someone in between): "
     "verify it, then remove the old key with ssh-keygen -R '[{d.host}]:{d.port}'"),
    ("Host key verification failed", ConnectError,
     "{d.name}: the host key of {d.host}:{d.port} is not in {known_hosts}: check its fingerprint (ssh-keyscan -p {d.port} {d.host}), "
     "then add it there, or rerun with --accept-new-host-key"),
    ("Permission denied (publickey", ConnectError,
     "{d.name}: {d.address} refused the key{identity}: add its public key to ~/.ssh/authorized_keys on the device "
     "(ssh-copy-id{copy_id} -p {d.port} {login})"),
    ("Connection closed", RemoteError, "{d.name}: the connection to {d.host} dropped"),
    ("closed by remote host", RemoteError, "{d.name}: the connection to {d.host} dropped"),
    ("Broken pipe", RemoteError, "{d.name}: the connection to {d.host} dropped"),
)

# The device's shell's messages when writing there fails.
_WRITE_FAULTS = (
    ("No space left on device", "{d.name}: the device's disk is full at {d.workdir}: free space there, or set workdir in the devices file"),
    ("Read-only file system", "{d.name}: {d.workdir} is read-only on the device: set workdir to a writable folder in the devices file"),
    ("Permission denied", "{d.name}: no permission to write {d.workdir} on the device: set workdir to a writable folder in the devices file"),
)


def classify(device: Device, stderr: str, code: int) -> RemoteError:
    """One line for one failure; the last line of stderr where nothing known matches."""
    login = f"{device.user + '@' if device.user else ''}{device.host}"
    context = {"d": device, "known_hosts": device.known_hosts or "~/.ssh/known_hosts", "login": login,
               "identity": f" {device.identity}" if device.identity else "",
               "copy_id": f" -i {device.identity}" if device.identity else ""}
    for needle, kind, message in _SSH_FAULTS:
        if needle in stderr:
            return kind(message.format(**context))
    for needle, message in _WRITE_FAULTS:
        if needle in stderr:
            return RemoteError(message.format(**context))
    if code in (137, -9) or "Killed" in stderr:
        return RemoteError(f"{device.name}: the runner was killed on the device (signal 9: out of memory, or killed by hand)")
    if code > 128 and code != 255:
        return RemoteError(f"{device.name}: the runner died on the device (signal {code - 128})")
    kit_lines = [line.strip() for line in stderr.splitlines() if line.startswith("edgeeff-kit: error:")]
    if kit_lines:  # the kit's own verdict, whatever the runtime printed after it
        return RemoteError(f"{device.name}: {kit_lines[-1]}")
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("Warning: Permanently added")]
    return RemoteError(f"{device.name}: {lines[-1][:240] if lines else f'exit {code}'}")


class SSHDevice:
    """One remote device: runs commands, keeps the kit and artifacts cached there, measures."""

    def __init__(self, device: Device, accept_new_host_key: bool = False) -> None:
        if not device.remote:
            raise EdgeeffError(f"{device.name} is a local device, not an SSH one")
        if device.identity and not Path(device.identity).expanduser().is_file():
            raise ConnectError(f"{device.name}: identity file {device.identity} does not exist: fix identity in the devices file")
        if device.known_hosts and not Path(device.known_hosts).expanduser().parent.is_dir():
            raise ConnectError(f"{device.name}: known_hosts {device.known_hosts}: its folder does not exist")
        self.device = device
        self.accept_new = accept_new_host_key
        self.kit_path: str | None = None
        self.uploaded_bytes = 0

    # -- plumbing

    def ssh_command(self) -> list[str]:
        d = self.device
        cmd = ["ssh", "-p", str(d.port), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(d.connect_timeout)}",
               "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new else 'yes'}", "-o", "LogLevel=ERROR",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
        if d.identity:
            cmd += ["-i", str(Path(d.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if d.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={Path(d.known_hosts).expanduser()}"]
        if d.user:
            cmd += ["-l", d.user]
        return cmd + [d.host]

    def run(self, command: str, data: bytes | Path | None = None, timeout: float | None = None, job: str | None = None) -> str:
        """Run a shell command on the device (``data``: its stdin, bytes or a file streamed from
        disk); its stdout, or a classified RemoteError."""
        timeout = timeout or self.device.run_timeout
        try:
            if isinstance(data, Path):
                with data.open("rb") as stream:
                    done = subprocess.run(self.ssh_command() + [command], stdin=stream, capture_output=True, timeout=timeout)
            else:
                done = subprocess.run(self.ssh_command() + [command], input=data, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            if job:
                self.kill(job)
            raise RemoteError(f"{self.device.name}: the run took longer than {timeout:.0f} s (run_timeout) and was stopped on the device") from None
        except FileNotFoundError:
            raise ConnectError("the OpenSSH client (ssh) is not installed here: apt install openssh-client") from None
        if done.returncode != 0:
            raise classify(self.device, done.stderr.decode(errors="replace"), done.returncode)
        return done.stdout.decode(errors="replace")

    def kill(self, job: str) -> None:
        """Best effort: end a job left running on the device (its id is on its command line)."""
        try:
            subprocess.run(self.ssh_command() + [f"pkill -f {shlex.quote(job)} || true"], capture_output=True, timeout=30)
        except (subprocess.TimeoutExpired, OSError):
            pass

    def _dir(self, *parts: str) -> str:
        return "/".join([self.device.workdir.rstrip("/"), *parts])

    def put(self, items: list[tuple[str, bytes | Path]], key: str) -> str:
        """Copy files into ``WORKDIR/cache/<key>/`` unless already complete there; the folder path.
        Each file goes to a temp name and is renamed; a failed copy removes the folder."""
        folder = self._dir("cache", key)
        q = shlex.quote(folder)
        if self.run(f"test -f {q}/.complete && echo yes || echo no", timeout=self.device.connect_timeout + 30).strip() == "yes":
            return folder
        try:
            for filename, data in items:
                name = shlex.quote(filename)
                self.run(f"mkdir -p {q} && cat > {q}/.{name}.part && mv {q}/.{name}.part {q}/{name}", data=data)
                self.uploaded_bytes += data.stat().st_size if isinstance(data, Path) else len(data)
            self.run(f"touch {q}/.complete")
        except RemoteError:
            try:
                self.run(f"rm -rf {q}", timeout=self.device.connect_timeout + 30)
            except RemoteError:
                pass
            raise
        return folder

    def ensure_kit(self) -> str:
        if self.kit_path is None:
            source = kit_bytes()
            digest = hashlib.sha256(source).hexdigest()[:16]
            folder = self.put([(KIT_FILE, source)], f"kit-{digest}")
            self.kit_path = f"{folder}/{KIT_FILE}"
        return self.kit_path

    def kit_command(self, args: list[str]) -> tuple[str, str]:
        """The shell command that runs the kit on the device, and the job id it carries (for pkill)."""
        job = f"edgeeff-job-{uuid.uuid4().hex[:12]}"
        return " ".join([shlex.quote(self.device.python), shlex.quote(self.ensure_kit()), *map(shlex.quote, args), job]), job

    def kit(self, args: list[str], timeout: float | None = None) -> str:
        command, job = self.kit_command(args)
        return self.run(command, timeout=timeout, job=job)

    def job_for(self, folder: Path, meta: dict, threads: int | None, precision: str | None) -> dict:
        """What the kit needs to load an artifact here: uploads it (cached) and names the runtime settings."""
        from edgeeff.targets.base import get_target

        return {"module": get_target(meta["target"]).module_name, "path": self.upload_artifact(Path(folder), meta), "threads": threads,
                "accelerator": self.device.accelerator, "precision": precision, "prefer": self.device.runtime,
                "adapt": meta.get("input_adapter")}

    # -- what the CLI asks for

    def probe(self) -> dict:
        try:
            out = self.kit(["probe", self.device.workdir], timeout=self.device.connect_timeout + 60)
        except RemoteError as exc:
            raise _python_hint(self.device, exc) from None
        return json.loads(out.strip().splitlines()[-1])

    def upload_artifact(self, folder: Path, meta: dict) -> str:
        """The artifact's files on the device (cached by content); the model file's remote path."""
        files = artifact_files(folder, meta)
        key = hashlib.sha256("".join(sha256_of(p) for p in files).encode()).hexdigest()[:24]
        return f"{self.put([(p.name, p) for p in files], key)}/{meta['artifact']}"

    def runner(self, folder: Path, meta: dict, threads: int | None = None) -> "RemoteRunner":
        return RemoteRunner(self, Path(folder), meta, threads)

    def provision(self, packages, wheelhouse, say) -> dict:
        """`devices setup`: a venv with numpy and the runtimes on the board (``edgeeff.devices.provision``)."""
        from edgeeff.devices import provision

        provision.venv_of(self.device)
        return provision.setup(self, packages, wheelhouse, say)

    def compare_local_refusal(self) -> str | None:
        return None

    def measure(self, folder: Path, threads: int | None, batch: int, schedule: kit_core.Schedule, precision: str | None) -> dict:
        """The device kit's ``measure`` on the device, in a fresh process; a failure becomes a row."""
        meta = read_metadata(folder)
        try:
            job = {**self.job_for(folder, meta, threads, precision), "resolution": meta["preprocessing"]["resolution"], "batch": batch,
                   "schedule": asdict(schedule)}
            row = json.loads(self.kit(["measure", json.dumps(job)]).strip().splitlines()[-1])
        except RemoteError as exc:
            return {"error": str(_python_hint(self.device, exc))}
        return {"target": meta["target"], "variant": meta.get("variant"), **row, "size_bytes": meta["size_bytes"]}


class RemoteRunner:
    """A Runner (``predict``/``describe``) whose model runs on the device: batches go through ssh's
    stdin as framed .npy arrays and logits come back the same way, so eval needs no files there."""

    def __init__(self, remote: SSHDevice, folder: Path, meta: dict, threads: int | None = None, precision: str | None = "f32") -> None:
        self.remote = remote
        command, self.job_id = remote.kit_command(["predict", json.dumps(remote.job_for(folder, meta, threads, precision))])
        self.proc = subprocess.Popen(remote.ssh_command() + [command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.info = json.loads(self._read_frame().decode())

    def _failure(self) -> RemoteError:
        self.proc.kill()
        _, err = self.proc.communicate()
        return _python_hint(self.remote.device, classify(self.remote.device, err.decode(errors="replace"), self.proc.returncode))

    def _read_frame(self) -> bytes:
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise self._failure()
        size = int.from_bytes(head, "big")
        payload = self.proc.stdout.read(size)
        if len(payload) < size:
            raise self._failure()
        return payload

    def predict(self, batch):
        try:
            kit_wire.write_frame(self.proc.stdin, kit_wire.array_bytes(batch.astype("float32")))
        except (BrokenPipeError, OSError):
            raise self._failure() from None
        return kit_wire.array_from(self._read_frame())

    def describe(self) -> dict:
        return {**self.info, "device": self.remote.device.name}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write((0).to_bytes(8, "big"))
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.remote.kill(self.job_id)


def _python_hint(device: Device, exc: RemoteError) -> RemoteError:
    """Kit refusals name the pip command; say where to run it. A missing interpreter names the setting."""
    text = str(exc)
    if "not found" in text and device.python in text or "No such file or directory" in text and device.python in text:
        return RemoteError(f"{device.name}: python {device.python!r} not found on the device: set python in the devices file")
    if "edgeeff-kit: error:" in text:
        message = text.split("edgeeff-kit: error:", 1)[1].strip()
        message = message.replace("pip install", f"on the device run {device.python} -m pip install")
        return RemoteError(f"{device.name}: {message}")
    return exc


def artifact_files(folder: Path, meta: dict) -> list[Path]:
    """The model file and its companions (OpenVINO's .bin): files sharing its stem."""
    model = Path(folder) / meta["artifact"]
    stem = model.name.split(".")[0]
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.split(".")[0] == stem)
