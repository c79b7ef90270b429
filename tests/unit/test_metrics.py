"""Metrics across processes: forked processes' samples all count, killed ones leave no live
gauge behind, and the directory is set before anything is recorded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO

# Runs in a fresh interpreter: the multiprocess directory must be chosen before the first metric
# exists, and the test process may have made its metrics already.
_FORKS = textwrap.dedent(
    """
    import os, signal, sys
    from decimal import Decimal
    from pathlib import Path

    from prometheus_client import CollectorRegistry, generate_latest

    from pipeline import metrics
    from pipeline.domain import CallOutcome, CallRecord, Usage

    directory = Path(sys.argv[1])
    (directory / "counter_999999.db").parent.mkdir(parents=True, exist_ok=True)
    (directory / "counter_999999.db").write_bytes(b"stale file of an earlier run")
    metrics.use_directory(directory, clean=True)

    def work():
        metrics.document_finished("done", "invoice", 2)
        metrics.calls_recorded([
            CallRecord(provider="anthropic", model="m", attempt=1, outcome=CallOutcome.OK,
                       latency_ms=1500, usage=Usage(input_tokens=100, output_tokens=10),
                       cost_usd=Decimal("0.00045")),
            CallRecord(provider="anthropic", model="m", attempt=2, outcome=CallOutcome.STARTED,
                       latency_ms=0, usage=Usage(), cost_usd=None),
        ])

    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    children = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:
            work()
            if n == 2:  # killed mid-call: never says it is gone
                with metrics.call_in_flight("anthropic"):
                    os.kill(os.getpid(), signal.SIGKILL)
            if n == 3:  # alive and mid-call while the parent collects
                with metrics.call_in_flight("anthropic"):
                    os.write(ready_w, b"x")
                    os.read(hold_r, 1)
            metrics.process_exited(os.getpid())
            os._exit(0)
        children.append(pid)
    os.read(ready_r, 1)
    for pid in children[:3]:
        os.waitpid(pid, 0)
    registry = CollectorRegistry()
    registry.register(metrics.RecordedMetrics())
    sys.stdout.write(generate_latest(registry).decode())
    os.write(hold_w, b"x")
    os.waitpid(children[3], 0)
    """
)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_every_forked_process_counts_and_a_killed_one_leaves_no_call_in_flight(
    tmp_path: Path,
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FORKS, str(tmp_path / "metrics")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    samples = _samples(out)
    model = {"provider": "anthropic", "model": "m"}
    finished = _value(samples, "pagemill_documents_finished_total", status="done", schema="invoice")
    assert finished == 4
    assert _value(samples, "pagemill_pages_total", schema="invoice") == 8
    assert _value(samples, "pagemill_tokens_total", kind="input", **model) == 400
    assert _value(samples, "pagemill_tokens_total", kind="output", **model) == 40
    cost = _value(samples, "pagemill_cost_usd_total", **model)
    assert cost is not None and abs(cost - 4 * 0.00045) < 1e-12
    # The started row is not a completed call: four calls, all "ok", one per process.
    assert _value(samples, "pagemill_model_call_seconds_count", outcome="ok", **model) == 4
    assert _value(samples, "pagemill_model_call_seconds_count", outcome="started", **model) is None
    assert (
        _value(samples, "pagemill_model_call_seconds_bucket", le="2.0", outcome="ok", **model) == 4
    )
    assert (
        _value(samples, "pagemill_model_call_seconds_bucket", le="1.0", outcome="ok", **model) == 0
    )
    # The live process's call counts; the killed one's does not linger.
    assert _value(samples, "pagemill_calls_in_flight", provider="anthropic") == 1
    # The stale file of an earlier run was cleaned away, not summed in.
    assert not (tmp_path / "metrics" / "counter_999999.db").exists()


_TOO_LATE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pipeline import metrics

    metrics.dead_lettered("bad_input")
    try:
        metrics.use_directory(Path(sys.argv[1]), clean=True)
    except RuntimeError as exc:
        print("refused:", exc)
    """
)


def test_the_directory_cannot_be_set_after_metrics_exist(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _TOO_LATE, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.startswith("refused: metrics were created before")


def test_ocr_steps_are_the_steps_ocr_times() -> None:
    # pipeline.metrics names them without importing OCR (OpenCV, Tesseract) into every process.
    from pipeline import metrics, ocr

    assert metrics.OCR_STEPS == ocr.STEPS
