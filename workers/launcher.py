"""The default `pagemill worker`: both stages side by side, each on the pool that fits its work.

The prepare stage (render, OCR) is CPU-bound: a prefork pool, one process per core. The extract
stage (model calls) waits on the network: a threads pool, as many threads as calls the provider
allows in flight. One Celery worker with one pool cannot do both well (a prefork pool spends a
whole process per call in flight; a threads pool renders on one core), so this starts one worker
per stage and stops both when either ends, for a supervisor to restart the pair.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from workers import queues

_POLL_S = 0.5
_STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class StageWorker:
    name: str
    queues: tuple[str, ...]
    pool: str
    concurrency: int

    def argv(self, loglevel: str, beat: bool) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "workers",
            "worker",
            f"--queues={','.join(self.queues)}",
            f"--pool={self.pool}",
            f"--concurrency={self.concurrency}",
            f"--loglevel={loglevel}",
        ]
        return [*args, "--beat"] if beat else args


def plan(prepare_concurrency: int, extract_concurrency: int) -> list[StageWorker]:
    return [
        StageWorker(
            "prepare", (queues.PREPARE, queues.MAINTENANCE), "prefork", prepare_concurrency
        ),
        StageWorker("extract", (queues.EXTRACT,), "threads", extract_concurrency),
    ]


def run(workers: list[StageWorker], *, loglevel: str, beat: bool) -> int:
    """Start the stage workers and wait; returns the exit code of the first one to end."""
    children: list[tuple[StageWorker, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for _, child in children:
            if child.poll() is None:
                # Celery's warm shutdown. Always TERM: after a Ctrl-C the children got SIGINT
                # from the terminal already, and a second SIGINT would make it a cold shutdown.
                child.terminate()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index, stage in enumerate(workers):
            argv = stage.argv(loglevel, beat and index == 0)  # one beat for the pair
            children.append((stage, subprocess.Popen(argv)))
            print(
                f"pagemill worker: {stage.name} stage on {stage.pool} x{stage.concurrency} "
                f"(queues {', '.join(stage.queues)}), pid {children[-1][1].pid}",
                file=sys.stderr,
                flush=True,
            )
        while True:
            for stage, child in children:
                code = child.poll()
                if code is not None:
                    if not stopping:
                        print(
                            f"pagemill worker: the {stage.name} worker exited ({code}); "
                            "stopping the other",
                            file=sys.stderr,
                            flush=True,
                        )
                    _stop_all(children)
                    return exit_code(code, asked_to_stop=stopping)
            time.sleep(_POLL_S)
    finally:
        _stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_code(code: int, *, asked_to_stop: bool) -> int:
    """The pair's exit code. A stage worker that ended without being asked to is a failure,
    whatever its own code: a supervisor that restarts on failure must restart the pair. A
    child killed by a signal (negative code) exits as a shell would report it (128 + signal)."""
    if code < 0:
        return 128 - code
    if code == 0 and not asked_to_stop:
        return 1
    return code


def _stop_all(children: list[tuple[StageWorker, subprocess.Popen[bytes]]]) -> None:
    for _, child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for _, child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
