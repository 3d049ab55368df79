"""Remote devices over SSH, proven against a real OpenSSH server on 127.0.0.1 (Debian's
openssh-server, which .ci/run installs): host and user keys are generated for the test, sshd runs
on a free port, and the "device" is this machine's Python reached through it. A second entry points
at a Python without any runtime. Fault tests: refused port, unknown host key, wrong key, a runner
killed mid-run, a full disk and a read-only working directory on the device."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli

TINY = "lite0:width=0.25,depth=0.25,resolution=64"
QUICK = ["--rounds", "1", "--warmup-runs", "2", "--warmup-seconds", "0", "--min-runs", "5", "--min-seconds", "0"]
SSHD = Path("/usr/sbin/sshd")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1:PORT accepting one generated user key; yields its settings."""
    if not SSHD.is_file() or shutil.which("ssh") is None:
        message = "openssh-server/openssh-client not installed (apt install openssh-server openssh-client)"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run must install it")
        pytest.skip(message)
    root = tmp_path_factory.mktemp("sshd")
    host_key = _keygen(root / "host_ed25519")
    user_key = _keygen(root / "user_ed25519")
    other_key = _keygen(root / "stranger_ed25519")
    (root / "authorized_keys").write_text((root / "user_ed25519.pub").read_text())
    port = _free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"PidFile {root / 'sshd.pid'}", "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "LogLevel ERROR", "",
    ]))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"sshd did not start: {proc.stdout.read().decode()[-500:]}")
            time.sleep(0.2)
    host_pub = (root / "host_ed25519.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    bare = root / "bare-python"  # a Python on the "device" with no numpy and no runtime
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(bare)], check=True)
    yield {"root": root, "port": port, "user_key": user_key, "other_key": other_key, "bare_python": bare / "bin" / "python"}
    proc.terminate()
    proc.wait(timeout=10)


def runners_under(workdir: Path) -> list[int]:
    """Pids of device-kit measure runs started from this workdir: the test's own, never another user's."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if f"{workdir}/cache/" in line and "edgeeff-kit.pyz measure" in line:
            found.append(proc.info["pid"])
    return found


def host_key_type(sshd: dict) -> str:
    return (sshd["root"] / "host_ed25519.pub").read_text().split()[1]


def _entry(name: str, sshd: dict, **changes) -> str:
    values = {"host": "127.0.0.1", "port": sshd["port"], "user": os.environ.get("USER") or "root",
              "identity": str(sshd["user_key"]), "known_hosts": str(sshd["root"] / "known_hosts"), "python": sys.executable,
              "workdir": str(sshd["root"] / "work" / name), "connect_timeout": 5, **changes}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
    return f"[devices.{name}]\n{body}\n"


@pytest.fixture(scope="module")
def devices_file(sshd):
    path = sshd["root"] / "devices.toml"
    path.write_text("\n".join([
        _entry("loopback", sshd, runtime="ai-edge-litert"),
        _entry("bare", sshd, python=str(sshd["bare_python"])),
        _entry("refused", sshd, port=_free_port()),
        _entry("stranger", sshd, known_hosts=str(sshd["root"] / "empty_known_hosts")),
        _entry("wrongkey", sshd, identity=str(sshd["other_key"])),
        _entry("slow", sshd),
    ]))
    (sshd["root"] / "empty_known_hosts").write_text("")
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    done = run_cli("bench", "--variant", TINY, "--weights", "none", "--targets", "tflite-fp32,onnx-fp32", "--out", str(out), *QUICK)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.slow
def test_bench_through_ssh_returns_real_figures_and_caches_artifacts(devices_file, artifacts, tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    for report in (first, second):
        done = run_cli("bench", "--device", "loopback", "--devices-file", str(devices_file), "--variant", TINY, "--weights", "none",
                       "--targets", "tflite-fp32,onnx-fp32", "--out", str(artifacts), *QUICK, "--json", str(report))
        assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(first.read_text())
    rows = {r["target"]: r for r in data["rows"]}
    for row in rows.values():
        assert row["device"] == "loopback" and row["median_ms"] > 0 and row["init_ms"] > 0 and row["peak_rss_mb"] > 20
    assert rows["tflite-fp32"]["runtime"] == "ai-edge-litert" and rows["onnx-fp32"]["executed_on"] == "CPU"
    info = data["devices"]["loopback"]
    assert info["cores"] == os.cpu_count() and "ai-edge-litert" in info["runtimes"] and info["uploaded_bytes"] > 0
    assert json.loads(second.read_text())["devices"]["loopback"]["uploaded_bytes"] == 0  # cached by content on the device


@pytest.mark.slow
def test_eval_on_the_device_matches_the_local_runtime(devices_file, artifacts, few_images, tmp_path):
    folder = next(artifacts.glob("*tflite-fp32"))
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"-\t{p}\n" for p in few_images))
    results = {}
    for device in ("cpu", "loopback"):
        report = tmp_path / f"{device}.json"
        done = run_cli("eval", str(folder), "--device", device, "--devices-file", str(devices_file), "--images", str(listing),
                       "--batch", "3", "--json", str(report))
        assert done.returncode == 0, done.stderr[-2000:]
        results[device] = json.loads(report.read_text())
    remote = results["loopback"]
    assert remote["runner"]["device"] == "loopback" and remote["rows"][0]["images"] == len(few_images)
    assert remote["rows"][0]["top1_agreement"] == 1.0 and remote["rows"][0]["mean_cosine"] > 0.99999
    assert remote["details"]["predicted"] == results["cpu"]["details"]["predicted"]


def test_devices_list_and_check(devices_file):
    listed = run_cli("devices", "list", "--devices-file", str(devices_file))
    assert listed.returncode == 0 and "loopback" in listed.stdout and "bare" in listed.stdout
    checked = run_cli("devices", "check", "loopback", "--devices-file", str(devices_file))
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "ai-edge-litert" in checked.stdout and "free disk" in checked.stdout
    bare = run_cli("devices", "check", "bare", "--devices-file", str(devices_file))
    assert bare.returncode == 1 and "-m pip install numpy ai-edge-litert" in bare.stderr


@pytest.mark.slow
def test_a_device_without_a_runtime_fails_with_the_pip_command(devices_file, artifacts, tmp_path):
    """Two devices at once (concurrently): one row per device and target; the bare one fails alone."""
    report = tmp_path / "rows.json"
    done = run_cli("bench", "--device", "loopback,bare", "--devices-file", str(devices_file), "--variant", TINY, "--weights", "none",
                   "--targets", "tflite-fp32", "--out", str(artifacts), *QUICK, "--json", str(report))
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("edgeeff:")]
    assert len(lines) == 1 and "-m pip install numpy ai-edge-litert" in lines[0] and "Traceback" not in done.stderr
    rows = {r["device"]: r for r in json.loads(report.read_text())["rows"]}
    assert rows["loopback"]["median_ms"] > 0 and "pip install" in rows["bare"]["error"]


@pytest.mark.slow
def test_a_run_past_its_timeout_is_stopped_on_the_device(sshd, artifacts, tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_text(_entry("hasty", sshd, run_timeout=4))
    report = tmp_path / "rows.json"
    done = run_cli("bench", "--device", "hasty", "--devices-file", str(devices), "--variant", TINY, "--weights", "none",
                   "--targets", "tflite-fp32", "--out", str(artifacts), "--rounds", "1", "--warmup-runs", "2", "--warmup-seconds", "0",
                   "--min-runs", "5", "--min-seconds", "30", "--json", str(report))
    assert done.returncode == 1
    assert "longer than 4 s" in json.loads(report.read_text())["rows"][0]["error"]
    time.sleep(1)
    assert runners_under(sshd["root"] / "work" / "hasty") == []  # killed there too


@pytest.mark.slow
@pytest.mark.parametrize("entry, needle", [
    ("refused", "connection refused"),
    ("stranger", "--accept-new-host-key"),
    ("wrongkey", "refused the key"),
])
def test_connection_faults_are_one_line(devices_file, artifacts, entry, needle):
    done = run_cli("bench", "--device", entry, "--devices-file", str(devices_file), "--variant", TINY, "--weights", "none",
                   "--targets", "tflite-fp32", "--out", str(artifacts), *QUICK)
    assert_one_line_error(done, needle)


@pytest.mark.parametrize("accept_new", [False, True])
def test_a_changed_host_key_is_refused_even_with_accept_new(sshd, tmp_path, accept_new):
    """known_hosts holds another ed25519 key for this host:port (a reinstalled device, or someone in
    between): refused with one line that says CHANGED and how to remove the old key; never overwritten."""
    known = tmp_path / "known_hosts"
    impostor = (sshd["root"] / "stranger_ed25519.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{sshd['port']} {impostor[0]} {impostor[1]}\n")
    recorded = known.read_text()
    devices = tmp_path / "devices.toml"
    devices.write_text(_entry("moved", sshd, known_hosts=str(known)))
    done = run_cli("devices", "check", "moved", "--devices-file", str(devices), *(["--accept-new-host-key"] if accept_new else []))
    assert_one_line_error(done, "host key", "has CHANGED", f"ssh-keygen -R '[127.0.0.1]:{sshd['port']}'")
    assert known.read_text() == recorded


@pytest.mark.slow
def test_a_missing_python_on_the_device_names_the_setting(sshd, artifacts, tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_text(_entry("nopython", sshd, python="/opt/no-such-python/bin/python3"))
    checked = run_cli("devices", "check", "nopython", "--devices-file", str(devices))
    assert_one_line_error(checked, "python '/opt/no-such-python/bin/python3' not found on the device", "set python in the devices file")
    done = run_cli("bench", "--device", "nopython", "--devices-file", str(devices), "--variant", TINY, "--weights", "none",
                   "--targets", "tflite-fp32", "--out", str(artifacts), *QUICK)
    assert_one_line_error(done, "python '/opt/no-such-python/bin/python3' not found on the device", "set python in the devices file")


def test_accepting_a_new_host_key_records_it(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    devices = tmp_path / "devices.toml"
    devices.write_text(_entry("fresh", sshd, known_hosts=str(known)))
    assert_one_line_error(run_cli("devices", "check", "fresh", "--devices-file", str(devices)), "not in")
    done = run_cli("devices", "check", "fresh", "--devices-file", str(devices), "--accept-new-host-key")
    assert done.returncode == 0, done.stderr[-2000:]
    assert host_key_type(sshd) in known.read_text()  # ssh may hash the host name, not the key
    again = run_cli("devices", "check", "fresh", "--devices-file", str(devices))  # now known: no flag needed
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.slow
def test_a_runner_killed_mid_run_is_a_failed_row_and_the_run_goes_on(devices_file, artifacts, tmp_path):
    report = tmp_path / "rows.json"
    workdir = devices_file.parent / "work" / "slow"  # the "slow" entry's own workdir: only its runners are killed
    killed = []

    def kill_first_runner():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            found = runners_under(workdir)
            if found:
                time.sleep(1.0)  # let it load and start timing
                for pid in found:
                    os.kill(pid, signal.SIGKILL)
                killed.extend(found)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_first_runner)
    killer.start()
    done = run_cli("bench", "--device", "slow", "--devices-file", str(devices_file), "--variant", TINY, "--weights", "none",
                   "--targets", "tflite-fp32,onnx-fp32", "--out", str(artifacts), "--rounds", "1", "--warmup-runs", "2",
                   "--warmup-seconds", "0", "--min-runs", "5", "--min-seconds", "6", "--json", str(report))
    killer.join()
    assert killed and done.returncode == 1, done.stderr[-2000:]
    rows = {r["target"]: r for r in json.loads(report.read_text())["rows"]}
    assert "killed" in rows["tflite-fp32"]["error"] and rows["onnx-fp32"]["median_ms"] > 0
    # uploads go to WORKDIR/cache/<sha>/.NAME.part and are renamed: every file arrived whole, no .part is left
    uploaded = sorted(p.name for p in workdir.glob("cache/*/*"))
    assert "edgeeff-kit.pyz" in uploaded and any(name.endswith(".tflite") for name in uploaded), uploaded
    assert not [p for p in workdir.rglob("*") if p.name.endswith(".part")], uploaded


@pytest.fixture
def mounted(tmp_path):
    """A tmpfs mounted with the given options (root in CI); unmounted afterwards."""
    mounts = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"cannot mount a tmpfs in CI: {done.stderr.strip()}")
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", str(where)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("options, needle", [("size=256k", "disk is full"), ("ro,size=1m", "read-only")])
def test_device_storage_faults(sshd, artifacts, mounted, tmp_path, options, needle):
    workdir = mounted("device-work", options)
    devices = tmp_path / "devices.toml"
    devices.write_text(_entry("cramped", sshd, workdir=str(workdir)))
    report = tmp_path / "rows.json"
    done = run_cli("bench", "--device", "cramped", "--devices-file", str(devices), "--variant", TINY, "--weights", "none",
                   "--targets", "tflite-fp32", "--out", str(artifacts), *QUICK, "--json", str(report))
    assert done.returncode in (1, 2), done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("edgeeff:")]
    assert len(lines) == 1 and needle in lines[0], done.stderr[-2000:]
    leftovers = [p for p in workdir.rglob("*") if p.is_file() and p.name != "edgeeff-kit.pyz" and p.name != ".complete"]
    assert leftovers == []  # a failed copy leaves nothing half-written on the device


# --- accelerators: real code paths; what this machine lacks fails with one line naming the install


def test_edge_tpu_target_needs_its_compiler(tmp_path):
    if shutil.which("edgetpu_compiler"):
        pytest.skip("edgetpu_compiler is installed here: the refusal cannot be shown")
    done = run_cli("convert", "--variant", TINY, "--weights", "none", "--target", "tflite-edgetpu", "--out", str(tmp_path))
    assert_one_line_error(done, "edgetpu_compiler", "coral.ai")
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_missing_accelerators_name_what_to_install(artifacts):
    from edgeeff.kit.core import RunnerError, load_runner

    tflite = next(artifacts.glob("*tflite-fp32")) / "model.tflite"
    onnx = next(artifacts.glob("*onnx-fp32")) / "model.onnx"
    cases = [("tflite", tflite, "edgetpu", "libedgetpu1-std"), ("onnx", onnx, "cuda", "pip install onnxruntime-gpu"),
             ("onnx", onnx, "openvino-ep", "pip install onnxruntime-openvino"), ("tflite", tflite, "gpu", "cannot use accelerator 'gpu'")]
    import openvino as ov

    if "NPU" not in ov.Core().available_devices:
        xml = tflite  # never reached: OpenVINO refuses the device before reading a model
        cases.append(("openvino", xml, "npu", "OpenVINO has no NPU device here"))
    for backend, path, accelerator, needle in cases:
        with pytest.raises(RunnerError, match=None) as caught:
            load_runner(f"edgeeff.targets.{backend}", path, accelerator=accelerator)
        assert needle in str(caught.value), (accelerator, str(caught.value))


# onnxruntime-gpu's own words when its CUDA provider cannot start, as an H100 machine without the CUDA
# libraries on the loader path printed them (recorded, since CI has no GPU): the session then runs on the CPU.
CUDA_FAILURE_LOG = [
    "\x1b[1;31m2026-11-27 11:56:03.236566902 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] "
    "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() "
    "[ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: "
    "libcublasLt.so.13: cannot open shared object file: No such file or directory",
    "\x1b[0;93m2026-11-27 11:56:03.236639729 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 CreateExecutionProviderFactoryInstance] "
    "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*.\x1b[m",
]
TENSORRT_FAILURE_LOG = [
    "*************** EP Error ***************",
    "EP Error /onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc:729 void onnxruntime::python::"
    "RegisterTensorRTPluginsAsCustomOps(PySessionOptions&, const onnxruntime::ProviderOptions&) Please install TensorRT libraries "
    "as mentioned in the GPU requirements page, make sure they're in the PATH or LD_LIBRARY_PATH, and that your GPU is supported.",
    " when using ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']",
    "Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.",
]


def test_a_provider_that_fails_to_start_is_explained_by_its_own_log():
    from edgeeff.targets.onnx import provider_failure

    assert provider_failure(CUDA_FAILURE_LOG) == ": libcublasLt.so.13: cannot open shared object file: No such file or directory"
    assert provider_failure(TENSORRT_FAILURE_LOG).startswith(": Please install TensorRT libraries")
    assert provider_failure(["Failed to create CUDAExecutionProvider. Require cuDNN 9.*"]).startswith(": Failed to create CUDA")
    assert provider_failure(["unrelated"]) == ""


def test_native_stderr_is_captured_and_restored():
    import ctypes

    from edgeeff.kit.core import native_stderr_captured

    libc = ctypes.CDLL(None)
    with native_stderr_captured() as log:
        libc.write(2, b"from native code\n", 17)
    assert log == ["from native code"]
    assert os.fstat(2).st_ino != 0  # fd 2 is back and usable


def test_peak_memory_of_a_child_is_its_own_not_its_parents():
    """ru_maxrss survives fork+exec: a measuring process started by a parent holding 400 MB would
    report 400 MB. The kit reads VmHWM instead."""
    code = ("import subprocess, sys\n"
            "ballast = bytearray(400 * 2**20)\n"
            "ballast[::4096] = b'x' * len(ballast[::4096])\n"
            "print(subprocess.run([sys.executable, '-c', 'from edgeeff.kit.core import peak_rss_mb; print(peak_rss_mb())'],"
            " capture_output=True, text=True, check=True).stdout)")
    child_mb = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 5 < child_mb < 200, child_mb


@pytest.mark.slow
def test_onnx_node_placement_is_read_from_the_runtime_profile(artifacts):
    from edgeeff.targets.onnx import OnnxRunner

    runner = OnnxRunner(next(artifacts.glob("*onnx-fp32")) / "model.onnx", threads=1)
    placement = runner.node_placement()
    assert set(placement) == {"CPUExecutionProvider"} and placement["CPUExecutionProvider"] > 10


@pytest.mark.slow
def test_a_device_entry_accelerator_is_used_for_real(sshd, artifacts, tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_text(_entry("coral", sshd, accelerator="edgetpu"))
    report = tmp_path / "rows.json"
    done = run_cli("bench", "--device", "coral", "--devices-file", str(devices), "--variant", TINY, "--weights", "none",
                   "--targets", "tflite-fp32", "--out", str(artifacts), *QUICK, "--json", str(report))
    assert done.returncode == 1
    assert "libedgetpu1-std" in json.loads(report.read_text())["rows"][0]["error"]


def test_devices_file_bad_input(tmp_path):
    cases = {
        "[devices.rpi]\nhost = 'pi'\nportt = 22\n": "unknown key(s) portt",
        "[devices.rpi]\nuser = 'pi'\n": "needs host",
        "[devices.rpi]\nhost = 'pi'\naccelerator = 'tpu'\n": "accelerator 'tpu' is unknown",
        "[devices.cpu]\nhost = 'pi'\n": "clashes with the built-in",
        "[devices.rpi]\nhost = 'pi'\nport = 'x'\n": "port must be a positive number",
        "[devices.rpi\n": "not valid TOML",
    }
    for text, needle in cases.items():
        path = tmp_path / "devices.toml"
        path.write_text(text)
        assert_one_line_error(run_cli("devices", "list", "--devices-file", str(path)), needle)
    assert_one_line_error(run_cli("devices", "list", "--devices-file", str(tmp_path / "nope.toml")), "does not exist")
    path.write_text("[devices.rpi]\nhost = 'pi'\n")
    assert_one_line_error(run_cli("bench", "--device", "rpj", "--devices-file", str(path)), "did you mean 'rpi'")
