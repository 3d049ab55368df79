"""Devices: the registry (local CPU, GPU, SSH boards, the emulated Pi), CPU profiles, provisioning."""
