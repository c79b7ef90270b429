"""Real `pagemill worker` processes for a test, and the JSON lines they log."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workers import devstack

Line = dict[str, Any]


def log_lines(process: devstack.Process) -> list[Line]:
    """The JSON lines the process logged so far (a line still being written is skipped)."""
    lines = []
    for raw in process.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


def logged(process: devstack.Process, text: str) -> list[Line]:
    return [line for line in log_lines(process) if text in line.get("message", "")]


@contextmanager
def worker(
    args: list[str], env: Mapping[str, str], log_dir: Path, name: str = "worker"
) -> Iterator[devstack.Process]:
    """`pagemill worker ARGS` with JSON logs, stopped (warm, then killed) when the block ends."""
    process = devstack.spawn(
        name, ["worker", *args], {"PAGEMILL_LOG_FORMAT": "json", **env}, log_dir
    )
    try:
        yield process
    finally:
        process.stop()


def wait_until(process: devstack.Process, done: Callable[[], bool], timeout: float = 25) -> None:
    """Wait for `done`; fail with the log's tail if the process dies or time runs out."""

    def check() -> bool:
        if done():
            return True
        assert process.alive(), f"{process.name} exited {process.popen.poll()}:\n{process.tail()}"
        return False

    assert devstack.wait_for(check, timeout, interval=0.2), process.tail()


def wait_until_exit(process: devstack.Process, timeout: float = 25) -> bool:
    return devstack.wait_for(lambda: not process.alive(), timeout)
