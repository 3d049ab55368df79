"""The kit's command line on a device (``python edgeeff-kit.pyz probe | measure JOB | predict
JOB``) and its wire protocol: JSON lines and length-prefixed numpy frames over the SSH pipes."""

from __future__ import annotations

import io
import json
import os
import struct
import sys
from typing import Iterator

from edgeeff.kit.core import RunnerError, Schedule, load_runner, measure, np  # np is None where numpy is missing: probe still answers
from edgeeff.kit.probe import probe

def _frames_in(stream) -> Iterator[bytes]:
    """Length-prefixed frames (8-byte big-endian length, then the bytes); a zero length ends."""
    while True:
        head = stream.read(8)
        if len(head) < 8:
            return
        (size,) = struct.unpack(">Q", head)
        if size == 0:
            return
        yield stream.read(size)


def write_frame(stream, payload: bytes) -> None:
    stream.write(struct.pack(">Q", len(payload)))
    stream.write(payload)
    stream.flush()


def array_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def array_from(payload: bytes):
    return np.load(io.BytesIO(payload), allow_pickle=False)


def main(argv: list[str]) -> int:
    """``probe [WORKDIR]``; ``measure JOB_JSON`` prints one JSON line; ``predict JOB_JSON`` answers
    each framed batch on stdin with a framed batch of logits on stdout (after one JSON line that
    describes the runner). Errors: one line on stderr, exit 3."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not argv:
        print("usage: edgeeff-kit.pyz probe [WORKDIR] | measure JOB | predict JOB", file=sys.stderr)
        return 2
    try:
        if argv[0] == "probe":
            print(json.dumps(probe(argv[1] if len(argv) > 1 else None)))
            return 0
        job = json.loads(argv[1])
        if argv[0] == "measure":
            row = measure(job["module"], job["path"], job["resolution"], job.get("threads"), job.get("batch", 1),
                          Schedule(**job.get("schedule", {})), job.get("seed", 0), job.get("accelerator", "cpu"),
                          job.get("precision", "f32"), job.get("prefer"), job.get("adapt"))
            print(json.dumps(row), flush=True)
            return 0
        if argv[0] == "predict":
            runner = load_runner(job["module"], job["path"], job.get("threads"), job.get("accelerator", "cpu"),
                                 job.get("precision", "f32"), job.get("prefer"), adapt=job.get("adapt"))
            out = sys.stdout.buffer
            write_frame(out, json.dumps(runner.describe()).encode())
            for payload in _frames_in(sys.stdin.buffer):
                write_frame(out, array_bytes(runner.predict(array_from(payload))))
            return 0
    except RunnerError as exc:
        print(f"edgeeff-kit: error: {exc}", file=sys.stderr)
        return 3
    print(f"edgeeff-kit: unknown command {argv[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
