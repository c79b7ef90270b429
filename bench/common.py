"""What the benchmarks share: process-tree CPU and memory from /proc, synthetic invoices whose
answers the fake provider knows, percentiles, tables and result files.

CPU and memory are read from /proc (Linux), so no extra dependency is needed:

* CPU of a process tree = utime + stime + cutime + cstime of every live process in it. A child
  that exited and was reaped moves its time into its parent's cutime/cstime, so nothing is lost
  as long as the root is alive when we read.
* Memory: PSS (proportional set size, /proc/PID/smaps_rollup) summed over the tree, sampled about
  once a second: forked pool children share the parent's pages, so summing RSS would count
  those pages once per child. VmHWM (the kernel's own peak RSS of one process) is read at the end.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
# The shared samples, next to the repository when present (relative: no machine paths).
SAMPLES_DIR = REPO_ROOT.parent / "shared" / "samples" / "docs"

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# --- synthetic invoices the fake provider can answer ------------------------------------------

INVOICE_NUMBER = re.compile(r"INV-\d{4}-(\d+)")


def items_for(seed: int) -> int:
    """Line items on the invoice with this seed: 3 to 12, so one A4 page (25 rows) holds them."""
    return 3 + seed % 10


def invoice_pdf(seed: int) -> bytes:
    from pipeline.synthetic import make_invoice, render_pdf

    return render_pdf(make_invoice(seed, items=items_for(seed)))


@cache
def invoice_fields(seed: int) -> dict[str, Any]:
    from pipeline.synthetic import make_invoice

    return make_invoice(seed, items=items_for(seed)).expected()


# --- /proc ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    cpu_ticks: int  # utime + stime + cutime + cstime
    own_ticks: int  # utime + stime: this process alone


def _read_stat(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm is in parentheses and may contain spaces or parentheses itself.
    open_, close = raw.index("("), raw.rindex(")")
    comm = raw[open_ + 1 : close]
    rest = raw[close + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
    ppid = int(rest[1])
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    own = int(rest[11]) + int(rest[12])
    return Proc(pid=pid, ppid=ppid, comm=comm, cpu_ticks=ticks, own_ticks=own)


def snapshot() -> dict[int, Proc]:
    procs: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = _read_stat(int(entry.name))
            if proc is not None:
                procs[proc.pid] = proc
    return procs


def tree(root: int, procs: dict[int, Proc]) -> list[int]:
    """`root` and all its descendants that are alive in `procs`."""
    if root not in procs:
        return []
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_seconds(pids: Iterable[int], procs: dict[int, Proc]) -> float:
    return sum(procs[p].cpu_ticks for p in pids if p in procs) / _CLK_TCK


def pss_kb(pid: int) -> int:
    """Proportional set size; falls back to RSS when smaps_rollup is unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KB
    except OSError:
        return 0


def hwm_kb(pid: int) -> int:
    """The process's peak resident set size (VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy seconds, total seconds) over all cores since boot, from /proc/stat. Busy leaves
    out idle, iowait and steal (time the hypervisor gave to someone else)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    not_busy = values[3] + values[4] + values[7]
    total = sum(values)
    return (total - not_busy) / _CLK_TCK, total / _CLK_TCK


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- CPU accounting in groups ---------------------------------------------------------------


@dataclass
class Group:
    """A named set of process trees (roots), or a matcher over all processes (services)."""

    name: str
    roots: list[int] = field(default_factory=list)
    match: Any = None  # callable(pid, comm) -> bool, for processes we did not start
    own_only: bool = False  # the roots alone, without their children

    def pids(self, procs: dict[int, Proc]) -> list[int]:
        if self.match is not None:
            return [p.pid for p in procs.values() if self.match(p.pid, p.comm)]
        found: list[int] = []
        for root in self.roots:
            found.extend(tree(root, procs))
        return found


@dataclass
class CpuReading:
    at: float
    groups: dict[str, float]
    machine_busy: float
    machine_total: float


def read_cpu(groups: Sequence[Group]) -> CpuReading:
    procs = snapshot()
    busy, total = machine_cpu()
    return CpuReading(
        at=time.monotonic(),
        groups={
            g.name: (
                sum(procs[r].own_ticks for r in g.roots if r in procs) / _CLK_TCK
                if g.own_only
                else cpu_seconds(g.pids(procs), procs)
            )
            for g in groups
        },
        machine_busy=busy,
        machine_total=total,
    )


def cpu_delta(start: CpuReading, end: CpuReading) -> dict[str, float]:
    """Seconds of CPU per group between two readings, plus machine busy and wall seconds.

    A service matcher sees processes come and go (Postgres backends); a group whose CPU went
    down counts as 0 rather than negative."""
    out = {name: max(0.0, end.groups[name] - start.groups.get(name, 0.0)) for name in end.groups}
    out["machine busy"] = end.machine_busy - start.machine_busy
    out["wall"] = end.at - start.at
    return out


class MemorySampler(threading.Thread):
    """Peak PSS of each group's process trees, sampled every `interval` seconds."""

    def __init__(self, groups: Sequence[Group], interval: float = 1.0) -> None:
        super().__init__(name="memory-sampler", daemon=True)
        self.groups = list(groups)
        self.interval = interval
        self.peak_pss_kb: dict[str, int] = {g.name: 0 for g in self.groups}
        self.peak_hwm_kb: dict[str, int] = {g.name: 0 for g in self.groups}
        self._halt = threading.Event()

    def sample(self) -> None:
        procs = snapshot()
        for group in self.groups:
            pids = group.pids(procs)
            total = sum(pss_kb(p) for p in pids)
            self.peak_pss_kb[group.name] = max(self.peak_pss_kb[group.name], total)
            hwm = max((hwm_kb(p) for p in pids), default=0)
            self.peak_hwm_kb[group.name] = max(self.peak_hwm_kb[group.name], hwm)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.sample()


def postgres_backends(database: str) -> Any:
    """Matcher for the Postgres backends connected to `database` (their process title names it)."""
    marker = f" {database} "

    def match(pid: int, comm: str) -> bool:
        return comm.startswith("postgres") and marker in cmdline(pid)

    return match


def redis_server(port: int) -> Any:
    marker = f":{port}"

    def match(pid: int, comm: str) -> bool:
        return comm.startswith("redis-server") and marker in cmdline(pid)

    return match


# --- numbers and output ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pastes into the README as is)."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def reproduce_line(module: str, argv: Sequence[str]) -> str:
    return "reproduce: " + " ".join(
        [".venv/bin/python", "-m", module, *(shlex.quote(a) for a in argv)]
    )


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Figures as JSON under bench/results/ (ignored by git)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
