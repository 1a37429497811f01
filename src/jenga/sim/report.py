"""Simulation reports as text tables and plots (for `jenga simulate`).

`format_reports` prints one row per allocator (utilisation is true need /
pool bytes when memory first refused in a step, sim/saturation.py: "mem
util" over memory-bound steps, "at fail" over failed allocations of running
requests only); `plot_reports` draws, per
allocator, memory held by each group over time (stacked) and the batch
size over time, into one PNG (matplotlib's Agg backend: no display).
"""

from __future__ import annotations

from pathlib import Path

from .simulate import Comparison, SimReport

GiB = float(1 << 30)


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.1f}"


def format_reports(reports: tuple[SimReport, ...] | list[SimReport], comparison: Comparison | None = None) -> str:
    """A fixed-width table of the reports' main numbers; with a comparison,
    a last column gives its reference allocator's speedup over each row."""
    head = (f"{'allocator':<10} {'done':>5} {'err':>4} {'time s':>9} {'req/s':>8} {'tok/s':>9} {'mem util':>8} "
            f"{'at fail':>8} {'decode bs':>9} {'hit rate':>8} {'preempt':>7} {'TTFT ms':>9} {'TPOT ms':>8}")
    if comparison:
        head += f" {comparison.reference + '/x':>10}"
    lines = [head]
    for r in reports:
        util = f"{100 * r.mem_util:.1f}%" + ("" if r.saturated else "*")
        fail = r.saturation.util_preempt
        fail_s = "n/a" if fail is None else f"{100 * fail:.1f}%"
        row = (f"{r.allocator:<10} {r.finished:>5} {r.rejected + r.errored:>4} {r.duration_s:>9.2f} "
               f"{r.throughput_rps:>8.3f} {r.throughput_tps:>9.1f} {util:>8} {fail_s:>8} {r.mean_decode_batch:>9.2f} "
               f"{100 * r.prefix_hit_rate:>7.1f}% {r.preemptions:>7} {_ms(r.mean_ttft_s):>9} {_ms(r.mean_tpot_s):>8}")
        if comparison:
            row += f" {comparison.speedups[r.allocator]:>10.2f}"
        lines.append(row)
    if any(not r.saturated for r in reports):
        lines.append("* memory never bound: utilisation is the mean over all steps")
    return "\n".join(lines)


def plot_reports(reports: tuple[SimReport, ...] | list[SimReport], path: str | Path, title: str = "") -> Path:
    """Write the memory-by-group and batch-size plots of `reports` (one
    column per allocator) to the PNG `path`; returns the path."""
    if not reports:
        raise ValueError("reports must not be empty")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    # every panel shares one time axis (allocators finish at different times:
    # the shorter runs end early on the same scale), each row its y axis
    fig, axes = plt.subplots(2, len(reports), figsize=(4.5 * len(reports), 6), squeeze=False, sharex=True,
                             sharey="row")
    for col, r in enumerate(reports):
        s = r.series
        mem, bs = axes[0][col], axes[1][col]
        per_group = [[u[g] / GiB for u in s.used_bytes] for g in range(len(s.group_labels))]
        if s.times:
            mem.stackplot(s.times, per_group, labels=[f"g{g} {lab}" for g, lab in enumerate(s.group_labels)],
                          step="post")
        mem.axhline(r.pool_bytes / GiB, color="black", linewidth=0.8, linestyle="--", label="pool")
        mem.set_title(f"{r.allocator} ({r.throughput_rps:.3f} req/s)", fontsize=10)
        if col == 0:
            mem.set_ylabel("GiB held")
            bs.set_ylabel("sequences per step")
        mem.legend(fontsize=7, loc="upper right")
        bs.step(s.times, s.batch, where="post", linewidth=0.8)
        bs.yaxis.set_major_locator(MaxNLocator(integer=True))   # a count: whole numbers only
        bs.set_xlabel("simulated time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
