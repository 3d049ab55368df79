"""What a device is: CPU model and features, cores, OS, runtimes, disk, temperature. Runs on the
device inside the kit file (standard library only)."""

from __future__ import annotations

import os
import platform
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

from edgeeff.kit.core import KIT_VERSION

RUNTIME_DISTRIBUTIONS = ("numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "onnxruntime-gpu", "openvino")


def _cpuinfo() -> dict[str, str]:
    """/proc/cpuinfo's first value of each field, keys lower-cased."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def _cpuinfo_is_foreign(fields: dict[str, str]) -> bool:
    """An aarch64 process reading an x86 kernel's cpuinfo: user-mode emulation (qemu-user) passes the
    host's file through, so its "model name" and "flags" describe the host, not this CPU."""
    return platform.machine() in ("aarch64", "arm64") and "flags" in fields and "features" not in fields


def cpu_model() -> str:
    """x86 names its CPU in "model name"; ARM boards in "Hardware" or "Model" (a Pi: "Raspberry Pi 4 Model B")."""
    fields = _cpuinfo()
    if _cpuinfo_is_foreign(fields):
        return f"emulated {platform.machine()}"  # the model name there is the host's
    for key in ("model name", "hardware", "model", "cpu model"):
        if fields.get(key) and not fields[key].isdigit():
            return fields[key]
    return platform.processor() or platform.machine()


# Linux arm64 hardware capability bits (arch/arm64/include/uapi/asm/hwcap.h): the names the kernel
# prints in /proc/cpuinfo "Features". asimd = NEON, asimddp = SDOT/UDOT, i8mm = SMMLA/USMMLA (int8 kernels).
ARM64_HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 "
               "asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
ARM64_HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm bf16 "
                "dgh rng bti mte ecv afp rpres mte3 sme sme_i16i64 sme_f64f64 sme_i8i32 sme_f16f32 sme_b16f32 sme_f32f32 sme_fa64 "
                "wfxt ebf16 sve_ebf16").split()
AT_HWCAP, AT_HWCAP2 = 16, 26


def _auxv_hwcaps() -> tuple[int, int] | None:
    """AT_HWCAP and AT_HWCAP2 from /proc/self/auxv (pairs of native words): what the kernel, or an
    emulator, tells this very process its CPU can do; runtimes choose their kernels from the same words."""
    raw = None
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return None
    size = struct.calcsize("@L")
    words = struct.unpack(f"@{len(raw) // size}L", raw[: len(raw) // size * size])
    pairs = dict(zip(words[0::2], words[1::2]))
    return pairs.get(AT_HWCAP, 0), pairs.get(AT_HWCAP2, 0)


def cpu_features() -> tuple[list[str], str]:
    """The CPU features the kernel reports and where they were read: /proc/cpuinfo "Features" on an
    ARM kernel; on aarch64 without it (user-mode emulation) the auxiliary vector's hardware caps,
    decoded to the kernel's names; x86's "flags" otherwise."""
    fields = _cpuinfo()
    if "features" in fields:
        return fields["features"].split(), "/proc/cpuinfo Features"
    if platform.machine() in ("aarch64", "arm64"):
        caps = _auxv_hwcaps()
        if caps is not None:
            names = [n for bit, n in enumerate(ARM64_HWCAP) if caps[0] >> bit & 1]
            names += [n for bit, n in enumerate(ARM64_HWCAP2) if caps[1] >> bit & 1]
            return names, "AT_HWCAP/AT_HWCAP2 (/proc/self/auxv)"
    if "flags" in fields:
        return fields["flags"].split(), "/proc/cpuinfo flags"
    return [], "not reported"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def probe(workdir: str | None = None) -> dict:
    """What a device is: CPU, cores, OS, architecture, the CPU features the kernel reports (on ARM
    asimd, asimddp, i8mm decide which int8 kernels run), Python, runtimes present, free disk, and on a
    Raspberry Pi the SoC temperature and the firmware's throttling flags."""
    from importlib import metadata

    runtimes = {}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            runtimes[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    where = Path(workdir).expanduser() if workdir else Path.home()
    while not where.exists() and where != where.parent:
        where = where.parent
    disk = shutil.disk_usage(where)
    features, features_source = cpu_features()
    info: dict[str, Any] = {
        "kit_version": KIT_VERSION,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "distribution": (_read("/etc/os-release") or "").split("PRETTY_NAME=")[-1].split("\n")[0].strip('"') or None,
        "machine": platform.machine(),
        "cpu_features": features,
        "cpu_features_source": features_source,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "runtimes": runtimes,
        "free_disk_gb": round(disk.free / 1e9, 2),
        "memory_total_mb": None,
        "board": (_read("/proc/device-tree/model") or "").rstrip("\x00") or None,
    }
    meminfo = _read("/proc/meminfo")
    if meminfo:
        info["memory_total_mb"] = round(int(meminfo.splitlines()[0].split()[1]) / 1024)
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    if temp and temp.lstrip("-").isdigit():
        info["temperature_c"] = int(temp) / 1000
    if shutil.which("vcgencmd"):  # Raspberry Pi firmware: throttled=0x0 means no throttling, ever
        import subprocess

        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True).stdout.strip()
        info["throttled"] = out.split("=", 1)[-1] or None
    return info
