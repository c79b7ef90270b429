"""The CPU ceiling measured in a run and the bound each set-up's throughput is held to."""

from __future__ import annotations

from typing import Any

from bench import common


def load_window(fig: dict[str, Any]) -> tuple[dict[str, float], float]:
    """CPU seconds per group and pages done over the whole load phase. (Not the steady window
    alone: when the provider is the bound, the prepare stage finishes early and the window
    would hold extract work only.)"""
    return fig["cpu s"], float(fig["pages"])


def accounted_groups(fig: dict[str, Any]) -> list[str]:
    """Every process group this benchmark accounts for (not the per-process detail rows)."""
    return [n for n in fig["cpu s"] if n not in ("machine busy", "wall") and ":" not in n]


def other_load(fig: dict[str, Any]) -> float:
    """Cores that processes outside this benchmark used during the load phase."""
    cpu, _ = load_window(fig)
    ours = sum(cpu.get(n, 0.0) for n in accounted_groups(fig))
    return max(0.0, cpu["machine busy"] - ours) / max(cpu["wall"], 1e-9)


def ceiling(fig: dict[str, Any], names: list[str], cores: float | None = None) -> float:
    """Pages/min if `names` had `cores` (default: every core) to themselves, at the CPU per page
    they used in the load phase."""
    cpu, pages = load_window(fig)
    used = sum(cpu.get(n, 0.0) for n in names)
    return (cores or common.cores()) * 60 * pages / used if used > 0 else float("nan")


def bound_of(fig: dict[str, Any]) -> tuple[str, float, float]:
    """(bound, its pages/min, throughput ÷ bound): the provider's bound (limit ÷ latency), the
    set-up's own (processes ÷ latency, naive), or the CPU ceiling measured in the same run,
    whichever is lowest. The CPU ceiling is what every process this benchmark runs (pipeline,
    fake provider, S3 server, Postgres, Redis, this driver) would do on the cores that were left
    to them: all cores minus what other jobs on the machine used meanwhile."""
    available = max(0.5, common.cores() - other_load(fig))
    cpu_ceiling = ceiling(fig, accounted_groups(fig), available)
    ideal = fig["ideal pages/min"]
    slots = fig.get("slots pages/min", ideal)
    if cpu_ceiling < min(ideal, slots):
        return "cpu", cpu_ceiling, fig["pages/min"] / cpu_ceiling
    if slots < ideal:  # fewer calls in flight than the provider allows: one per process
        return "concurrency", slots, fig["pages/min"] / slots
    return "provider", ideal, fig["pages/min"] / ideal
