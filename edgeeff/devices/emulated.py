"""An emulated board on this machine: ``edgeeff devices emulate rpi``.

No Raspberry Pi can be reached from the machines edgeeff is developed on, but an aarch64 userland
can: Debian's arm64 packages (Raspberry Pi OS is Debian bookworm) in a root folder, with every
aarch64 program in it run by qemu-user through binfmt_misc. The host's own OpenSSH server, started
on a free 127.0.0.1 port with its own config, keys and ``ChrootDirectory`` set to that root, makes it
an SSH device like a board: ``python3``, the venv's python and the device kit are ARM binaries, so
LiteRT and onnxruntime run their ARM builds (NEON, dot-product int8 kernels) on the emulated CPU.
Their outputs are the ARM build's own; their timing is qemu's, not a board's, and the device entry
says ``emulated = true`` so every row measured there says so too.

Everything lives in one cache folder (``~/.cache/edgeeff/emulated/NAME``, or ``$EDGEEFF_EMULATED_CACHE``):
``root/`` (the aarch64 root), ``wheels/`` (aarch64 wheels fetched on the host) and ``ssh/`` (keys,
sshd config, pid file). Each is built in a temp folder beside its place and renamed in, so an
interrupted build leaves nothing that a later run would take for finished. The runtimes are
installed by the same path as a real board's (``edgeeff devices setup`` with a wheelhouse), pinned
to the versions installed on this host, so device-vs-host comparisons differ by CPU build only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgeeff.errors import EdgeeffError, lookup

SSHD = Path("/usr/sbin/sshd")
BINFMT = Path("/proc/sys/fs/binfmt_misc")


@dataclass(frozen=True)
class Board:
    """An emulated board: which Debian root, which qemu, which wheels."""

    name: str
    description: str
    debian_arch: str
    suite: str
    binfmt: str  # binfmt_misc entry of Debian's qemu-user-static
    wheel_platforms: tuple[str, ...]
    python_version: str  # the suite's python3, which the wheels must fit
    qemu_cpu: str  # the CPU qemu emulates (QEMU_CPU in every session): its features pick the runtimes' kernels
    # What the root needs beyond Debian's Essential set: python3 and its venv module (pip comes from
    # ensurepip's bundled wheel), libstdc++6 (the runtimes' wheels link it; Essential lacks it), procps for
    # pkill (a run past its timeout is killed on the device).
    # No apt, no ca-certificates, no python3-pip: nothing in the root downloads, and every maintainer
    # script runs under qemu (ca-certificates' alone takes minutes).
    packages: tuple[str, ...] = ("python3", "python3-venv", "libstdc++6", "procps")
    runtimes: tuple[str, ...] = ("numpy", "ai-edge-litert", "onnxruntime")
    venv: str = "/root/edgeeff-venv"  # inside the root


BOARDS = {
    # Raspberry Pi 5: Cortex-A76, so NEON and the dot product (asimddp) but no i8mm and no SVE, as on the
    # board. qemu's default "max" CPU reports SVE2, i8mm and SME, which would send the runtimes down
    # kernels a Pi never runs. (--cpu cortex-a72 for a Pi 4: NEON without the dot product.)
    "rpi": Board("rpi", "emulated Raspberry Pi 5: Debian 12 bookworm arm64 (Raspberry Pi OS's base), Cortex-A76 under qemu-user",
                 "arm64", "bookworm", "qemu-aarch64",
                 ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"), "3.11",
                 "cortex-a76"),
}


def get_board(name: str) -> Board:
    return lookup(BOARDS, name, "emulated board")


def default_cache(board: Board) -> Path:
    base = os.environ.get("EDGEEFF_EMULATED_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "edgeeff" / "emulated") / board.name


# --------------------------------------------------------------------------- prerequisites


def missing_prerequisite(board: Board, cache: Path) -> str | None:
    """The first thing this machine lacks to run the board, as one line naming the fix; None if nothing."""
    if os.geteuid() != 0:
        return "emulating a board needs root (mmdebstrap, chroot, mounting /proc): run it as root or with sudo"
    if not BINFMT.joinpath("status").exists():
        return f"binfmt_misc is not mounted: mount -t binfmt_misc binfmt_misc {BINFMT}"
    entry = BINFMT / board.binfmt
    if not entry.exists():
        return f"no {board.binfmt} in binfmt_misc: apt-get install qemu-user-static binfmt-support, then update-binfmts --enable {board.binfmt}"
    text = entry.read_text()
    if not text.startswith("enabled"):
        return f"{board.binfmt} is registered but disabled: update-binfmts --enable {board.binfmt}"
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        return (f"{board.binfmt} is registered without the F flag, so a chroot cannot reach qemu: use Debian's qemu-user-static "
                f"(update-binfmts --disable {board.binfmt}; update-binfmts --enable {board.binfmt})")
    if not SSHD.is_file() or not shutil.which("ssh-keygen"):
        return "OpenSSH is not installed: apt-get install openssh-server openssh-client"
    if not (cache / "root").is_dir() and not shutil.which("mmdebstrap"):
        return "mmdebstrap is not installed (it builds the arm64 root): apt-get install mmdebstrap"
    return None


def emulated_cpus(board: Board) -> list[str]:
    """The CPU models this machine's qemu offers for the board (``qemu -cpu help``)."""
    interpreter = next((line.split(None, 1)[1].strip() for line in (BINFMT / board.binfmt).read_text().splitlines()
                        if line.startswith("interpreter")), None)
    done = subprocess.run([os.path.realpath(interpreter), "-cpu", "help"], capture_output=True, text=True) if interpreter else None
    return [line.split()[0] for line in done.stdout.splitlines()[1:] if line.startswith("  ")] if done else []  # exits 1 after listing


def check_prerequisites(board: Board, cache: Path) -> None:
    why = missing_prerequisite(board, cache)
    if why:
        raise EdgeeffError(why)


# --------------------------------------------------------------------------- building the pieces


def _staged(cache: Path, name: str, build, say, mode: int = 0o755) -> Path:
    """``cache/name``, built by ``build(staging)`` in a temp folder beside it and renamed into place;
    a failed or interrupted build removes its temp folder. Root-owned and not writable by others
    (``mode``), as sshd's ChrootDirectory requires of every component of the root's path."""
    final = cache / name
    if final.is_dir():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f".{name}-*"):  # an earlier run killed mid-build (a live one's pid is in the name)
        if not Path(f"/proc/{stale.name.rsplit('-', 1)[-1]}").exists():
            _remove_tree(stale)
    staging = cache / f".{name}-{os.getpid()}"
    staging.mkdir(mode=0o700)
    try:
        build(staging, say)
        os.chmod(staging, mode)
        staging.rename(final)
    except BaseException:
        _remove_tree(staging)
        raise
    return final


def _remove_tree(path: Path) -> None:
    """rm -rf that refuses to descend into a mounted /proc or /dev (never unlink the host's nodes)."""
    for mount in _mounts_under(path):
        subprocess.run(["umount", "-l", mount], check=False)
    shutil.rmtree(path, ignore_errors=True)


def _run(cmd: list[str], what: str, fix: str, timeout: float = 3600) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise EdgeeffError(f"{what} failed ({lines[-1].strip()[:200] if lines else f'exit {done.returncode}'}): {fix}")


def build_root(board: Board):
    def build(staging: Path, say) -> None:
        say(f"building the {board.debian_arch} Debian {board.suite} root with mmdebstrap (a few minutes)")
        _run(["mmdebstrap", "--quiet", "--variant=essential", f"--arch={board.debian_arch}", f"--include={','.join(board.packages)}",
              "--aptopt=APT::Install-Recommends \"false\"",  # python3.11 recommends ca-certificates: minutes of qemu
              "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
              "--dpkgopt=path-exclude=/usr/share/locale/*", board.suite, str(staging)], "mmdebstrap",
             "check that Debian's mirror (deb.debian.org) is reachable and qemu-user-static is enabled")
    return build


def pinned_runtimes(board: Board) -> list[str]:
    """The board's runtimes at the versions installed here (so device vs host differ by CPU build only);
    unpinned where this host has none."""
    from importlib import metadata

    pins = []
    for name in board.runtimes:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def fetch_wheels(board: Board):
    def build(staging: Path, say) -> None:
        say(f"downloading {board.python_version} aarch64 wheels of {', '.join(pinned_runtimes(board))} from PyPI")
        platforms = [a for p in board.wheel_platforms for a in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(staging), *platforms,
              "--only-binary=:all:", "--python-version", board.python_version, "--implementation", "cp", *pinned_runtimes(board)],
             "pip download of the aarch64 wheels", "check that PyPI is reachable (pip config list) and the versions exist for aarch64")
    return build


def make_keys(staging: Path, say) -> None:
    say("generating the host key and the user key")
    for name in ("host_ed25519", "user_ed25519"):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"edgeeff-emulated-{name}", "-f", str(staging / name)],
             "ssh-keygen", "apt-get install openssh-client")
    (staging / "authorized_keys").write_text((staging / "user_ed25519.pub").read_text())


# --------------------------------------------------------------------------- the running sshd


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    try:
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return []
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


# Device nodes programs in the root need (ssh sessions, Python's os.urandom): bound from the host one by one.
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def mount_inside(root: Path) -> None:
    """/proc (CPU features, memory, the kit's probe) and the few /dev nodes, unless already mounted."""
    mounted = set(_mounts_under(root))
    proc = root / "proc"
    if str(proc) not in mounted:
        _run(["mount", "-t", "proc", "proc", str(proc)], "mounting /proc in the root", "run as root")
    for node in DEV_NODES:
        target = root / "dev" / node
        if str(target) in mounted:
            continue
        if not target.exists():
            target.touch()
        _run(["mount", "--bind", f"/dev/{node}", str(target)], f"binding /dev/{node} into the root", "run as root")


def unmount_inside(root: Path) -> None:
    for mount in _mounts_under(root):
        subprocess.run(["umount", mount], check=False, capture_output=True)


def _port_answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sshd_pid(keys: Path) -> int | None:
    """The pid of this board's sshd if it runs (its pid file names a live sshd started with our config)."""
    try:
        pid = int((keys / "sshd.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()  # sshd rewrites it: "sshd: /usr/sbin/sshd -f CONFIG ... [listener]"
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(keys / "sshd_config").encode() in cmdline else None


def configured_port(keys: Path) -> int | None:
    try:
        return next(int(line.split()[1]) for line in (keys / "sshd_config").read_text().splitlines() if line.startswith("Port "))
    except (OSError, StopIteration, ValueError):
        return None


def sshd_config(root: Path, keys: Path, port: int, cpu: str) -> str:
    return "\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {keys / 'host_ed25519'}", f"AuthorizedKeysFile {keys / 'authorized_keys'}",
        f"PidFile {keys / 'sshd.pid'}", f"ChrootDirectory {root}", f"SetEnv QEMU_CPU={cpu}", "AllowUsers root",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "StrictModes no", "X11Forwarding no", "AllowTcpForwarding no", "PrintMotd no", "LogLevel ERROR", "",
    ])


def start_sshd(root: Path, keys: Path, cpu: str, say) -> int:
    """This board's sshd on 127.0.0.1 (the port it had, unless taken), chrooted into the root, every
    session run on the emulated ``cpu``; its port. A running one with the same settings is kept."""
    pid, port = sshd_pid(keys), configured_port(keys)
    if pid and port and _port_answers(port):
        if (keys / "sshd_config").read_text() == sshd_config(root, keys, port, cpu):
            return port
        _stop_pid(pid)  # another --cpu: restart on the same port
    if port is None or _port_answers(port):
        port = _free_port()
    say(f"starting sshd on 127.0.0.1:{port} (chroot {root}, {cpu})")
    mount_inside(root)
    config = sshd_config(root, keys, port, cpu)
    from edgeeff import fsio

    fsio.write_text(keys / "sshd_config", config)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    log = keys / "sshd.log"
    _run([str(SSHD), "-f", str(keys / "sshd_config"), "-E", str(log)], "starting sshd",
         f"see {log}; is /usr/sbin/sshd Debian's openssh-server?", timeout=30)
    deadline = time.time() + 20
    while not _port_answers(port):
        if time.time() > deadline:
            raise EdgeeffError(f"sshd did not answer on 127.0.0.1:{port} within 20 s: see {log}")
        time.sleep(0.2)
    host = (keys / "host_ed25519.pub").read_text().split()
    fsio.write_text(keys / "known_hosts", f"[127.0.0.1]:{port} {host[0]} {host[1]}\n")
    return port


def _stop_pid(pid: int) -> None:
    os.kill(pid, 15)
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)


def stop(board: Board, cache: Path) -> list[str]:
    """Stop the board's sshd and unmount what was mounted in its root; what was done (empty: nothing ran)."""
    done = []
    keys = cache / "ssh"
    pid = sshd_pid(keys)
    if pid:
        _stop_pid(pid)
        done.append(f"stopped sshd (pid {pid})")
    mounts = _mounts_under(cache / "root") if (cache / "root").is_dir() else []
    if mounts:
        unmount_inside(cache / "root")
        done.append(f"unmounted {len(mounts)} mount(s) in {cache / 'root'}")
    return done


# --------------------------------------------------------------------------- one command


def device_settings(board: Board, cache: Path, port: int) -> dict:
    keys = cache / "ssh"
    return {"host": "127.0.0.1", "port": port, "user": "root", "identity": str(keys / "user_ed25519"),
            "known_hosts": str(keys / "known_hosts"), "python": f"{board.venv}/bin/python", "runtime": "ai-edge-litert",
            "workdir": "/root/.cache/edgeeff", "connect_timeout": 30, "run_timeout": 7200, "emulated": True,
            "description": board.description}


def up(board: Board, name: str, cache: Path, devices_file: str | Path | None, say=lambda text: None, cpu: str | None = None) -> dict:
    """Build what is missing (root, wheels, keys), start sshd if it is not running, write the device
    entry and install the runtimes if the venv is not there yet. Returns timings and the probe."""
    from edgeeff.devices.registry import read_table, add_device, default_devices_file, get_device

    check_prerequisites(board, cache)
    cpu = cpu or board.qemu_cpu
    known = emulated_cpus(board)
    if known and cpu not in known:
        raise EdgeeffError(f"--cpu {cpu!r} is not a CPU this qemu emulates; choose one of {', '.join(known)}")
    path = Path(devices_file).expanduser() if devices_file else default_devices_file()
    existing = read_table(path).get("devices", {}).get(name)
    if existing is not None and existing.get("emulated") is not True:
        raise EdgeeffError(f"{path} already has a real device {name!r}: give the emulated one another name (--name {name}-emu)")
    timings = {}
    started = time.perf_counter()
    root = _staged(cache, "root", build_root(board), say)
    timings["root_s"] = round(time.perf_counter() - started, 1)
    mark = time.perf_counter()
    wheels = _staged(cache, "wheels", fetch_wheels(board), say)
    timings["wheels_s"] = round(time.perf_counter() - mark, 1)
    keys = _staged(cache, "ssh", make_keys, say, mode=0o700)
    mark = time.perf_counter()
    port = start_sshd(root, keys, cpu, say)
    timings["sshd_s"] = round(time.perf_counter() - mark, 1)
    settings = device_settings(board, cache, port)
    if cpu != board.qemu_cpu:
        settings["description"] = f"{board.description.split(',')[0]}, {cpu} under qemu-user (--cpu)"
    add_device(name, settings, path, replace=True)
    device = get_device(name, path)
    from edgeeff.devices import provision
    from edgeeff.devices.ssh import SSHDevice

    remote = SSHDevice(device)
    mark = time.perf_counter()
    venv = root / board.venv.lstrip("/")
    if not (venv / "bin" / "python").exists() or (venv / provision.PARTIAL).exists():
        info = provision.setup(remote, pinned_runtimes(board), wheels, say)
    else:
        say(f"probing {name}")
        info = remote.probe()
    timings["provision_s"] = round(time.perf_counter() - mark, 1)
    timings["total_s"] = round(time.perf_counter() - started, 1)
    return {"device": device, "devices_file": str(path), "cache": str(cache), "port": port, "qemu_cpu": cpu, "timings": timings, "probe": info,
            "wheels": sorted(p.name for p in wheels.glob("*.whl"))}
