"""Shared fixtures: the real ImageNet sample in ../shared and helpers to run the CLI for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEFF_SHARED", REPO.parent / "shared"))
SAMPLE = SHARED / "data" / "imagenet-sample"


QUICK_TIMEOUT = 300  # seconds for a test not marked slow (pyproject's timeout = 900 is for the slow ones)


def pytest_collection_modifyitems(config, items):
    """Tiers: a test that uses the loopback sshd is a ``device`` test; one not marked slow gets the
    quick tier's tighter timeout unless it sets its own."""
    for item in items:
        if {"sshd", "devices_file"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.device)
        if item.get_closest_marker("slow") is None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(QUICK_TIMEOUT))


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """The 500 real ImageNet photos, sorted by name. In CI their absence is a failure, not a skip."""
    folder = SAMPLE / "images"
    if not folder.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{folder} is missing: CI must have ../shared beside the checkout")
        pytest.skip(f"{folder} not present (developer machine without ../shared)")
    return sorted(p for p in folder.iterdir() if p.is_file())


@pytest.fixture(scope="session")
def few_images(sample_images) -> list[Path]:
    return sample_images[::125]  # 4 real photos spread over the class range


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed CLI in a fresh process, exactly as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgeeff.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )


def noise_photos(folder: Path, count: int, size: int) -> Path:
    """``count`` seeded uniform-noise PNGs in ``folder`` (made here): calibrating on them gives activation
    ranges no real photo has, the broken artifact that validation must refuse."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"noise{i:02d}.png")
    return folder


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    err = result.stderr.strip()
    assert result.returncode == code, f"exit {result.returncode}, stderr: {err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("edgeeff: error:")]
    assert len(lines) == 1, err[-2000:]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
