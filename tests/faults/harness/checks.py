"""What fault tests assert: the invariants every test keeps, and the checks outage tests add."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.faults.harness.figures import Figures

if TYPE_CHECKING:
    from tests.faults.harness.stack import FaultStack


def check_invariants(figures: Figures) -> None:
    """What every fault test promises, whatever the fault."""
    assert figures["lost"] == 0, f"documents without a final state: {figures}"
    assert figures["duplicate_documents"] == 0, f"an object became two documents: {figures}"
    assert figures["duplicate_results"] == 0, f"more than one result row: {figures}"
    assert figures["missing_results"] == 0, f"a done document without its result: {figures}"
    assert figures["failed_without_category"] == 0, f"failed without a category: {figures}"
    assert figures["duplicate_paid_calls"] == 0, f"a second successful model call: {figures}"
    assert figures["requests_after_finish"] == 0, f"a model call for finished work: {figures}"


def no_crashes(stack: FaultStack) -> None:
    """Every process reconnected by itself: none died (the harness would have restarted it, as
    compose's restart policy does, and recorded it here), and certainly none ended with 0."""
    assert not stack.crashes, f"a process died instead of reconnecting: {stack.crashes}"


def no_waiting_failures(figures: Figures) -> None:
    """What an outage must never do: fail a document or dead-letter it."""
    assert figures["failed"] == 0, f"a document failed during an outage: {figures}"
    assert figures["dead_letters"] == 0, f"an outage made a dead letter: {figures}"
    assert figures["done"] == figures["pushed"], figures
    assert figures["paid_twice"] == 0, f"a page paid for twice: {figures}"


def no_leftover_files(stack: FaultStack) -> None:
    """The processes' temporary directory holds nothing they left behind (such as the beat's
    schedule files, `pagemill-beat-<pid>.*`, that every start used to leave in /tmp)."""
    left = sorted(p.name for p in stack.tmp_dir.iterdir()) if stack.tmp_dir.exists() else []
    assert not [name for name in left if name.startswith("pagemill")], left


def log_lines(stack: FaultStack, marker: str) -> int:
    """Lines containing `marker` over every process's log."""
    total = 0
    for process in stack.processes:
        try:
            text_ = process.log_path.read_text(errors="replace")
        except OSError:
            continue
        total += sum(1 for line in text_.splitlines() if marker in line)
    return total
