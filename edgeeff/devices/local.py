"""This machine as a device (``cpu``, ``gpu``): the same session interface as a board over SSH
(``edgeeff.devices.ssh.SSHDevice``), so callers never ask which one they hold."""

from __future__ import annotations

from pathlib import Path

from edgeeff.errors import EdgeeffError


class LocalSession:
    """Probe, measure and run artifacts here; nothing to upload, nothing to provision."""

    uploaded_bytes = None  # nothing travels

    def __init__(self, device) -> None:
        self.device = device

    def probe(self) -> dict:
        from edgeeff.kit.probe import probe

        return probe()

    def measure(self, folder: Path, threads: int | None, batch: int, schedule, precision: str | None) -> dict:
        """One artifact in a fresh process of its own (``edgeeff.measure``), as a board's kit does."""
        from edgeeff.measure import measure_in_subprocess

        return measure_in_subprocess(folder, threads, batch, schedule, device=self.device.accelerator, precision=precision)

    def runner(self, folder: Path, meta: dict, threads: int | None = None):
        from edgeeff.artifact import open_artifact

        return open_artifact(folder, threads, device=self.device.accelerator)[1]

    def provision(self, packages, wheelhouse, say) -> dict:
        raise EdgeeffError(f"{self.device.name} is this machine: setup is for devices reached over SSH (here: pip install -e '.[all]')")

    def compare_local_refusal(self) -> str | None:
        return "--compare-local compares a remote device with this machine: add --device NAME (a device reached over SSH)"
