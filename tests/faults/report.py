"""The fault report: the figures the fault tests appended to $PAGEMILL_FAULT_REPORT, as the
Markdown table of tests/faults/README.md.

    PAGEMILL_FAULT_REPORT=faults.jsonl pytest tests/faults -m faults
    python -m tests.faults.report faults.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

_COLUMNS = (
    ("fault", lambda f: f["test"].replace("_", " ")),
    ("documents", lambda f: f["pushed"]),
    ("lost", lambda f: f["lost"]),
    ("duplicated", lambda f: f["duplicate_documents"] + f["duplicate_results"]),
    ("failed", lambda f: f.get("failed", 0)),
    ("dead-lettered", lambda f: f.get("dead_letters", "-")),
    ("paid twice", lambda f: f.get("paid_twice", "-")),
    # Calls cut off by a kill (rows left `started`): the provider may have billed them.
    ("cut off", lambda f: f.get("cut_off_calls", 0)),
    ("model calls", lambda f: f["model_requests"]),
    ("outage", lambda f: f"{f['outage_s']:g} s" if "outage_s" in f else "-"),
    ("worker exits", lambda f: f.get("process_crashes", 0)),
    ("seconds", lambda f: f["seconds"]),
)


def table(figures: list[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(name for name, _ in _COLUMNS) + " |",
        "|" + "|".join("---" for _ in _COLUMNS) + "|",
    ]
    for entry in figures:
        lines.append("| " + " | ".join(str(cell(entry)) for _, cell in _COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    figures = [json.loads(line) for line in Path(argv[1]).read_text().splitlines() if line.strip()]
    # The last run of each test, in the order they ran.
    latest = {entry["test"]: entry for entry in figures}
    print(table(list(latest.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
