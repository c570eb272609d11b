"""A workflow's DAG as inline SVG: layered left to right, no JavaScript, no layout library.

Why by hand: the graphs drawn whole are small (at most Settings.graph_max_jobs jobs; larger workflows arrive
collapsed to one node per app), so a longest-path layering plus a few barycentre sweeps to untangle edges is
enough, runs in microseconds, and needs no front-end build. Colours come from the page's stylesheet through
the `s-STATE` classes, the same as every badge. Every node links to what it stands for.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from html import escape
from urllib.parse import urlencode

from sluice.api.views import Graph
from sluice.states import State

PAD = 16


def layer_of(nodes: Sequence[Hashable], edges: Sequence[tuple[Hashable, Hashable]]) -> dict[Hashable, int]:
    """Each node's column: 0 for roots, else one more than its deepest parent. Edges closing a cycle (app
    graphs can have them: a sim job feeding an ana job feeding a sim job) are ignored for the layering."""
    kids: dict[Hashable, list[Hashable]] = defaultdict(list)
    indeg = dict.fromkeys(nodes, 0)
    for p, c in edges:
        if p in indeg and c in indeg and p != c:
            kids[p].append(c)
            indeg[c] += 1
    layer = dict.fromkeys(nodes, 0)
    done: set[Hashable] = set()
    ready = [n for n in nodes if indeg[n] == 0]
    while len(done) < len(nodes):
        if not ready:  # a cycle: release the first node still waiting
            ready = [next(n for n in nodes if n not in done)]
        n = ready.pop(0)
        if n in done:
            continue
        done.add(n)
        for c in kids[n]:
            if c in done:
                continue
            layer[c] = max(layer[c], layer[n] + 1)
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    return layer


def order(nodes: Sequence[Hashable], edges: Sequence[tuple[Hashable, Hashable]],
          layer: dict[Hashable, int], sweeps: int = 4) -> list[list[Hashable]]:
    """Nodes per column, ordered to cross fewer edges: each column sorted by the mean row of its neighbours
    in the column before (then after), a few times over."""
    cols: list[list[Hashable]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in nodes:
        cols[layer[n]].append(n)
    ups: dict[Hashable, list[Hashable]] = defaultdict(list)
    downs: dict[Hashable, list[Hashable]] = defaultdict(list)
    for p, c in edges:
        if p in layer and c in layer and p != c:
            ups[c].append(p)
            downs[p].append(c)
    for i in range(sweeps):
        rng, near = (range(1, len(cols)), ups) if i % 2 == 0 else (range(len(cols) - 2, -1, -1), downs)
        for k in rng:
            pos = {n: j for col in cols for j, n in enumerate(col)}
            cols[k] = _by_mean(cols[k], near, pos)
    return cols


def _by_mean(col: list[Hashable], near: dict[Hashable, list[Hashable]], pos: dict[Hashable, int]
             ) -> list[Hashable]:
    def key(item: tuple[int, Hashable]) -> float:
        j, n = item
        rows = [pos[m] for m in near[n] if m in pos]
        return sum(rows) / len(rows) if rows else float(j)

    return [n for _, n in sorted(enumerate(col), key=key)]


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _place(cols: list[list[Hashable]], w: int, h: int, gx: int, gy: int
           ) -> tuple[dict[Hashable, tuple[float, float]], int, int]:
    tallest = max((len(c) for c in cols), default=0)
    height = PAD * 2 + tallest * (h + gy) - gy
    xy: dict[Hashable, tuple[float, float]] = {}
    for k, col in enumerate(cols):
        top = PAD + (tallest - len(col)) * (h + gy) / 2
        for j, n in enumerate(col):
            xy[n] = (PAD + k * (w + gx), top + j * (h + gy))
    width = PAD * 2 + len(cols) * (w + gx) - gx
    return xy, max(width, 2 * PAD), max(height, 2 * PAD)


def _edge(a: tuple[float, float], b: tuple[float, float], w: int, h: int, cls: str = "edge",
          stroke: float = 1.4) -> str:
    x1, y1 = a[0] + w, a[1] + h / 2
    x2, y2 = b[0], b[1] + h / 2
    dx = max(30.0, abs(x2 - x1) / 2)
    return (f'<path class="{cls}" d="M{x1:.1f},{y1:.1f} C{x1 + dx:.1f},{y1:.1f} {x2 - dx:.1f},{y2:.1f} '
            f'{x2:.1f},{y2:.1f}" stroke-width="{stroke:.1f}" marker-end="url(#arrow)"/>')


def _frame(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" '
            'markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
            '<path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>'
            + "".join(body) + "</svg>")


def render(g: Graph) -> str:
    """The graph as one <svg> element (a string of markup, every text escaped)."""
    return _collapsed(g) if g.collapsed else _whole(g)


def _whole(g: Graph) -> str:
    """Jobs with edges layered left to right; jobs without any below them in a compact grid (a column of a
    hundred independent jobs would make the graph a hundred boxes tall)."""
    w, h, gx, gy = 150, 42, 64, 12
    edges = [(e["parent"], e["child"]) for e in g.edges]
    linked = {x for e in edges for x in e}
    ids = [n["id"] for n in g.nodes if n["id"] in linked]
    cols = order(ids, edges, layer_of(ids, edges))
    xy, width, height = _place(cols, w, h, gx, gy) if ids else ({}, 0, 0)
    alone = [n["id"] for n in g.nodes if n["id"] not in linked]
    body = [_edge(xy[p], xy[c], w, h) for p, c in edges if p in xy and c in xy]
    if alone:
        per_row = min(len(alone), max(6, len(cols)), 8)
        top = height - PAD + 34 if ids else PAD
        for k, n in enumerate(alone):
            xy[n] = (PAD + (k % per_row) * (w + 16), top + (k // per_row) * (h + gy))
        width = max(width, 2 * PAD + per_row * (w + 16) - 16)
        height = int(top + -(-len(alone) // per_row) * (h + gy) - gy + PAD)
        if ids:
            body.append(f'<text class="elabel" x="{PAD}" y="{top - 10:.0f}">{len(alone)} '
                        f'job{"s" if len(alone) > 1 else ""} without dependencies</text>')
    for n in g.nodes:
        x, y = xy[n["id"]]
        st = escape(str(n["state"]))
        tip = escape(f"#{n['id']} {n['name']} ({n['app']}): {n['state']}")
        body.append(f'<a href="/jobs/{int(n["id"])}"><g class="node s-{st}" transform="translate({x:.1f},{y:.1f})">'
                    f'<title>{tip}</title><rect width="{w}" height="{h}" rx="7"/>'
                    f'<text x="10" y="17" class="name">{escape(_cut(str(n["name"]), 19))}</text>'
                    f'<text x="10" y="33" class="sub">{st.lower().replace("_", " ")}</text></g></a>')
    return _frame(width, height, body, f"workflow {g.workflow}: {len(g.nodes)} jobs")


def _collapsed(g: Graph) -> str:
    w, h, gx, gy = 230, 84, 110, 18
    names = [n["id"] for n in g.nodes]
    edges = [(e["parent"], e["child"]) for e in g.edges]
    cols = order(names, edges, layer_of(names, edges))
    xy, width, height = _place(cols, w, h, gx, gy)
    body, within = [], {e["parent"]: e["count"] for e in g.edges if e["parent"] == e["child"]}
    for e in g.edges:
        p, c, cnt = e["parent"], e["child"], int(e["count"])
        if p == c or p not in xy or c not in xy:
            continue
        body.append(_edge(xy[p], xy[c], w, h, "edge heavy", min(6.0, 1.2 + math.log10(max(cnt, 1)))))
        (x1, y1), (x2, y2) = xy[p], xy[c]
        body.append(f'<text class="elabel" x="{(x1 + w + x2) / 2:.1f}" y="{(y1 + y2) / 2 + h / 2 - 6:.1f}" '
                    f'text-anchor="middle">{cnt:,}</text>')
    for n in g.nodes:
        x, y = xy[n["id"]]
        total = max(1, int(n["total"]))
        href = "/jobs?" + urlencode({"workflow": g.workflow, "app": n["app"]})
        bar, bx = [], 10.0
        for s in State:
            k = int(n["counts"].get(s.value, 0))
            if not k:
                continue
            bw = max(2.0, (w - 20) * k / total)
            bar.append(f'<rect class="seg s-{s.value}" x="{bx:.1f}" y="42" width="{bw:.1f}" height="12">'
                       f'<title>{s.value}: {k:,}</title></rect>')
            bx += bw
        loop = f' · {within[n["id"]]:,} edges within' if n["id"] in within else ""
        top = sorted(((int(k), st) for st, k in n["counts"].items() if k), reverse=True)[:3]
        most = ", ".join(f"{k:,} {st.lower().replace('_', ' ').removeprefix('job ')}" for k, st in top)
        body.append(f'<a href="{escape(href)}"><g class="node group" transform="translate({x:.1f},{y:.1f})">'
                    f'<title>{escape(str(n["app"]))}: {total:,} jobs</title><rect width="{w}" height="{h}" rx="9"/>'
                    f'<text x="10" y="19" class="name">{escape(_cut(str(n["app"]), 24))}</text>'
                    f'<text x="10" y="35" class="sub">{total:,} jobs{escape(loop)}</text>{"".join(bar)}'
                    f'<text x="10" y="72" class="sub">{escape(_cut(most, 40))}</text></g></a>')
    return _frame(width, height, body, f"workflow {g.workflow}: {len(g.nodes)} apps")
