"""The table every benchmark prints: one row per ratio, with its goal and the times behind it."""

from __future__ import annotations


def print_ratios(rows):
    """Print ``(id, measure, ratio, goal, times)`` rows; ``ratio`` a number or ready text."""
    width = max(len(r[1]) for r in rows)
    print(f"{'id':<3} {'measure':<{width}}  {'ratio':>7}  {'goal':<8} times")
    for ident, measure, ratio, goal, times in rows:
        text = f"{ratio:.3f}" if isinstance(ratio, float) else ratio
        print(f"{ident:<3} {measure:<{width}}  {text:>7}  {goal:<8} {times}")
