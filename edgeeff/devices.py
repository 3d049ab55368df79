"""The device registry: where a measurement runs. A device is one entry; the SSH issue adds remote
entries from ``devices.toml`` beside these two local ones."""

from __future__ import annotations

from dataclasses import dataclass

from edgeeff.errors import EdgeeffError, lookup


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    accelerator: str  # what a runner is asked for: "cpu" or "gpu"

    def check(self) -> None:
        """Fail with one line when the device is not present, before any work is done."""
        if self.accelerator == "gpu" and not gpu_backends():
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


DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device("cpu", "this machine's CPU (every runtime)", "cpu"),
        Device("gpu", "this machine's GPU: onnxruntime CUDA provider, OpenVINO GPU plugin", "gpu"),
    )
}


def get_device(name: str) -> Device:
    return lookup(DEVICES, name, "device")
