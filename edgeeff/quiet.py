"""Mute native libraries' chatter on file descriptor 2 around calls that are known to print it.
The function lives in the device kit (it runs on devices too); this name stays for the CLI."""

from edgeeff.devicekit import native_stderr_muted

__all__ = ["native_stderr_muted"]
