"""The report's plots, PNG and SVG, drawn with matplotlib's Agg backend (no display needed on a login node).

`series(report)` says what each plot draws: pure data, which the tests check, and which `draw` puts on the
axes unchanged. Each line carries an SVG id (its series name) so the SVG can be read back and checked too.
matplotlib is imported only here, when plots are made: `sluice report --no-plots` and the rest of sluice never
pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.report import Report

Series = dict[str, tuple[list[float], list[float]]]
COLORS = {"finished": "#1f77b4", "rate": "#ff7f0e", "busy_nodes": "#2ca02c", "alloc_nodes": "#7f7f7f",
          "busy_cores": "#9467bd", "failed": "#d62728", "errors": "#e377c2", "time_in_state": "#17becf"}
PLOTS = ("throughput", "utilization", "states", "failures")


def time_unit(span_s: float) -> tuple[str, float]:
    """The x axis unit for a campaign this long: (name, seconds per unit)."""
    if span_s <= 2 * 3600:
        return "minutes", 60.0
    if span_s <= 3 * 86400:
        return "hours", 3600.0
    return "days", 86400.0


def series(r: Report) -> dict[str, Series]:
    """What each plot draws, by plot and series name: (x, y). Times are bin ends (cumulative counts) or bin
    middles (per-bin values), in time_unit() since the report's start; time in state is job-hours by state."""
    _, unit = time_unit(r.end - r.start)
    e = r.edges
    mids = [((a + b) / 2 - r.start) / unit for a, b in zip(e, e[1:], strict=False)]
    ends = [(b - r.start) / unit for b in e[1:]]
    width = (e[1] - e[0]) if len(e) > 1 else 1.0
    cumulative, total = [], 0
    for n in r.finished_per_bin:
        total += n
        cumulative.append(float(total))
    states = [s for s, v in r.time_in_state.items() if v > 0]
    return {
        "throughput": {"finished": ([0.0, *ends], [0.0, *cumulative]),
                       "rate": (mids, [n / width for n in r.finished_per_bin])},
        "utilization": {"busy_nodes": (mids, list(r.busy_nodes)), "alloc_nodes": (mids, list(r.alloc_nodes)),
                        "busy_cores": (mids, list(r.busy_cores))},
        "states": {"time_in_state": ([float(i) for i in range(len(states))],
                                     [r.time_in_state[s] / 3600 for s in states])},
        "failures": {"failed": (mids, [float(n) for n in r.failed_per_bin]),
                     "errors": (mids, [float(n) for n in r.errors_per_bin])},
    }


def draw(r: Report, out: Path) -> list[Path]:
    """Write each plot as out/<name>.png and out/<name>.svg; returns the files written."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    unit_name, _ = time_unit(r.end - r.start)
    data = series(r)
    states = [s for s, v in r.time_in_state.items() if v > 0]
    written: list[Path] = []
    plt.rcParams["svg.hashsalt"] = "sluice"  # the same report gives the same SVG
    for name in PLOTS:
        fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
        s = data[name]
        if name == "throughput":
            _line(ax, "finished", s, label="jobs finished (total)")
            ax.set_ylabel("jobs finished")
            ax2 = ax.twinx()
            _line(ax2, "rate", s, label="jobs finished per second")
            ax2.set_ylabel("per second")
            _legend(ax, ax2)
        elif name == "utilization":
            _line(ax, "alloc_nodes", s, label="nodes allocated", dashed=True)
            _line(ax, "busy_nodes", s, label="nodes busy")
            ax.set_ylabel("nodes")
            ax2 = ax.twinx()
            _line(ax2, "busy_cores", s, label="cores busy")
            lo, hi = ax.get_ylim()
            ax2.set_ylim(lo * r.cores_per_node, hi * r.cores_per_node)  # a node's cores level with the node
            ax2.set_ylabel(f"cores ({r.cores_per_node} a node)")
            _legend(ax, ax2)
        elif name == "states":
            xs, ys = s["time_in_state"]
            for x, y, st in zip(xs, ys, states, strict=True):
                (bar,) = ax.barh([x], [y], color=COLORS["time_in_state"])
                bar.set_gid(f"time_in_state-{st}")
            ax.set_yticks(xs, states)
            ax.invert_yaxis()
            ax.set_xlabel("job-hours" + (f" (estimated from {r.sampled:,} of {r.jobs:,} jobs)"
                                         if r.sampled < r.jobs else ""))
        else:
            _line(ax, "failed", s, label="jobs FAILED")
            _line(ax, "errors", s, label="run errors and timeouts")
            ax.set_ylabel("events per bin")
            ax.legend(loc="best")
        if name != "states":
            ax.set_xlabel(f"{unit_name} since {_when(r.start)}")
        ax.set_title(_title(name, r))
        # fixed margins: tight_layout measures every label again, a quarter of the drawing time
        fig.subplots_adjust(left=0.2 if name == "states" else 0.1, right=0.97 if name in ("states", "failures")
                            else 0.88, bottom=0.13, top=0.91)
        for ext in ("png", "svg"):
            path = out / f"{name}.{ext}"
            fig.savefig(path, format=ext, metadata={"Date": None} if ext == "svg" else None)
            written.append(path)
        plt.close(fig)
    return written


def _line(ax: Any, name: str, s: Series, *, label: str = "", dashed: bool = False) -> None:
    xs, ys = s[name]
    (ln,) = ax.plot(xs, ys, color=COLORS[name], label=label, linestyle="--" if dashed else "-", linewidth=1.5)
    ln.set_gid(name)


def _legend(ax: Any, ax2: Any) -> None:
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="best")


def _when(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _title(name: str, r: Report) -> str:
    scope = f" ({', '.join(r.workflows)})" if r.workflows else ""
    return {"throughput": "Throughput", "utilization": "Utilization", "states": "Time in each state",
            "failures": "Failures"}[name] + scope
