"""What every benchmark shares: the table of ratios it prints, and how it reads a process's
peak memory."""

from __future__ import annotations


def print_ratios(rows):
    """Print ``(id, measure, ratio, goal, times)`` rows; ``ratio`` a number or ready text."""
    width = max(len(r[1]) for r in rows)
    print(f"{'id':<3} {'measure':<{width}}  {'ratio':>7}  {'goal':<8} times")
    for ident, measure, ratio, goal, times in rows:
        text = f"{ratio:.3f}" if isinstance(ratio, float) else ratio
        print(f"{ident:<3} {measure:<{width}}  {text:>7}  {goal:<8} {times}")


def rss_kb(key="VmHWM:", reset=False):
    """This process's resident size in KiB from /proc/self/status (Linux): ``"VmHWM:"``, its
    peak, or ``"VmRSS:"``, now. ``reset`` first sets the peak back to the current size.

    Not ``getrusage``'s ``ru_maxrss``: a child started by a big parent reports at least
    the parent's size there (Linux keeps the peak of the memory it had before ``exec``),
    which hid P9's two figures under one 2.5 GB parent. VmHWM is the process's own.
    """
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))
