"""The atlas' figures and page, from ``atlas.json`` only.

* ``plots/atlas_heatmap.png``: the metrics by lowest layer (columns) and band width (rows);
* ``plots/atlas_gain_vs_separation.png``: alignment gained at the budget against the
  separation's AUC, one point per entry, with the correlation and its interval;
* ``atlas.html``: the recommendation, the ranked table and both figures.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from repe_tradeoff.reporting.plots import OKABE_ITO, _new_figure, render
from repe_tradeoff.runs import atomic_write, read_atlas
from repe_tradeoff.runs.schema.atlas import AtlasFile

HEATMAP_METRICS = (("alignment_gain_at_budget", "alignment gained at the budget"),
                   ("alignment_slope", "alignment slope at r = 0"),
                   ("helpfulness_curvature", "helpfulness r² coefficient"),
                   ("separation_effect", "separation (AUC, held-out pairs)"))


def heatmap_figure(atlas: AtlasFile):
    widths = sorted({e.width for e in atlas.entries})
    firsts = sorted({e.first for e in atlas.entries})
    fig = _new_figure(9.0, 1.2 + 1.1 * len(HEATMAP_METRICS) * max(1, len(widths)) ** 0.5)
    axes = fig.subplots(len(HEATMAP_METRICS), 1, squeeze=False)[:, 0]
    for ax, (metric, title) in zip(axes, HEATMAP_METRICS):
        grid = np.full((len(widths), len(firsts)), np.nan)
        for e in atlas.entries:
            value = getattr(e, metric).value
            if value is not None:
                grid[widths.index(e.width), firsts.index(e.first)] = value
        image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(widths)), [str(w) for w in widths])
        ax.set_xticks(range(len(firsts)), [str(f) for f in firsts], fontsize=7)
        ax.set_ylabel("band width")
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.9)
    axes[-1].set_xlabel("lowest steered layer (blank: no band there, or no budget crossing)")
    return fig


def scatter_figure(atlas: AtlasFile):
    fig = _new_figure(6.0, 4.2)
    ax = fig.subplots()
    colours = [OKABE_ITO[c] for c in ("blue", "orange", "green", "purple", "vermillion", "sky")]
    for k, width in enumerate(sorted({e.width for e in atlas.entries})):
        pts = [(e.separation_effect.value, e.alignment_gain_at_budget.value) for e in atlas.entries
               if e.width == width and e.separation_effect.value is not None
               and e.alignment_gain_at_budget.value is not None]
        if pts:
            x, y = zip(*pts)
            ax.scatter(x, y, s=18, color=colours[k % len(colours)], marker="os^Dv<"[k % 6],
                       label=f"width {width}")
    c = atlas.correlation
    said = (f"r = {c.r:.2f} [{c.low:.2f}, {c.high:.2f}], n = {c.n}" if c.r is not None
            else f"correlation undefined (n = {c.n})")
    ax.set_title(f"does a cleaner direction cost less? {said}", fontsize=9)
    ax.set_xlabel("separation of held-out pairs (AUC)")
    ax.set_ylabel(f"alignment gained at a helpfulness loss of {atlas.budget:g}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def _cell(est) -> str:
    if est.value is None:
        return "—"
    ci = f" [{est.low:.3g}, {est.high:.3g}]" if est.low is not None and est.high is not None else \
        (f" [{est.low:.3g}, ∞)" if est.low is not None else "")
    return f"{est.value:.3g}{ci}"


def page(atlas: AtlasFile, figures: list[tuple[str, str]]) -> str:
    cols = ("alignment_gain_at_budget", "norm_at_budget", "alignment_slope", "helpfulness_curvature",
            "spread", "drift", "separation_accuracy", "separation_effect")
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in ("rank", "layers", *cols))
    body = "".join(
        "<tr>" + f"<td>{e.rank or '—'}</td><td>{html.escape(e.layers)}</td>"
        + "".join(f"<td>{html.escape(_cell(getattr(e, c)))}</td>" for c in cols) + "</tr>"
        for e in atlas.entries)
    confirm = ""
    if atlas.confirmations:
        predicted = {e.layers: e for e in atlas.entries}
        lines = "".join(
            f"<tr><td>{html.escape(c.layers)}</td>"
            + "".join(f"<td>{html.escape(_cell(getattr(predicted[c.layers], m)))}</td><td>{html.escape(_cell(getattr(c, m)))}</td>"
                      for m in ("alignment_slope", "norm_at_budget", "alignment_gain_at_budget"))
            + f"<td>{html.escape(c.run)}</td></tr>" for c in atlas.confirmations)
        how = {"bracket": "norms around each entry's predicted norm at the budget", "auto": "automatic grid"}
        said = how.get(atlas.confirm_plan or "auto", atlas.confirm_plan)
        items = "all items" if atlas.confirm_items is None else f"{atlas.confirm_items} items per task"
        confirm = (f"<h2>Predicted beside measured (sweeps: {html.escape(str(said))}; {items})</h2>"
                   "<table><tr><th>layers</th>"
                   "<th>slope, atlas</th><th>slope, sweep</th><th>norm at budget, atlas</th>"
                   "<th>norm at budget, sweep</th><th>gain, atlas</th><th>gain, sweep</th><th>run</th></tr>"
                   f"{lines}</table>")
    imgs = "".join(f'<figure><img src="{html.escape(src)}" alt="{html.escape(cap)}" style="max-width:100%">'
                   f"<figcaption>{html.escape(cap)}</figcaption></figure>" for src, cap in figures)
    n = ", ".join(f"{k}: {v}" for k, v in atlas.n_items.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Layer atlas: {html.escape(atlas.model)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head><body>
<h1>Layer atlas: {html.escape(atlas.behavior)} against {html.escape(atlas.helpfulness_task)}</h1>
<p><b>{html.escape(atlas.recommendation)}</b></p>
<p>Model {html.escape(atlas.model)}; {atlas.method} directions from {atlas.n_pairs} pairs ({atlas.n_heldout_pairs} held out
for separation); items {html.escape(n)}; probe ±{atlas.probe_fraction:g} × each layer's residual norm; budget
{atlas.budget:g}; 95 % bootstrap intervals over items ({atlas.n_boot} replicates). Norms are in units of each
steered layer's residual norm; the norm at the budget is searched out to 64 probe steps (— beyond).</p>
{imgs}<h2>Ranked by alignment gained at the budget</h2><table><tr>{head}</tr>{body}</table>{confirm}
</body></html>
"""


def build_atlas_report(atlas_dir: Path | str) -> Path:
    """Draw the figures and write ``atlas.html`` of an atlas folder."""
    atlas_dir = Path(atlas_dir)
    atlas = read_atlas(atlas_dir)
    plots = atlas_dir / "plots"
    figures = []
    for name, fig, caption in (
            ("atlas_heatmap", heatmap_figure(atlas), "The atlas by lowest layer and band width"),
            ("atlas_gain_vs_separation", scatter_figure(atlas), "Alignment gained at the budget against separation")):
        render(fig, name, plots, ("png",), caption)
        figures.append((f"plots/{name}.png", caption))
    path = atlas_dir / "atlas.html"
    atomic_write(path, page(atlas, figures))
    return path
