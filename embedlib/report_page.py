"""The report's static page: PNG plots (matplotlib) and index.html, from report.json's figures.

Plots are drawn on ``matplotlib.figure.Figure`` objects (the Agg canvas), never through
pyplot, so rendering needs no display and changes no global matplotlib state.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>embedlib report {dt}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em auto; max-width: 1250px; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} h2 {{ border-bottom: 1px solid #ccc; margin-top: 1.6em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
img {{ max-width: 100%; display: block; margin: 0.5em 0; }}
.note {{ background: #fff6d6; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; }}
.meta {{ color: #666; }}
</style></head>
<body>
<h1>embedlib run report: {dt}</h1>
<p class="meta">generated {generated_at} from the tables (config: {config});
every figure is in <a href="report.json">report.json</a></p>
{body}
</body></html>
"""


def render(figures: dict, folder: Path) -> Path:
    """Write the PNG plots and index.html of ``figures`` into ``folder``; the page's path."""
    sections = (_version_section, _cosine_section, _trend_section, _churn_section, _sequence_section,
                _training_section, _hit_rate_section, _change_section)
    body = "\n".join(section(figures, folder) for section in sections)
    page = folder / "index.html"
    page.write_text(PAGE.format(dt=html.escape(figures["dt"]), generated_at=html.escape(figures["generated_at"]),
                                config=html.escape(str(figures["config"])), body=body))
    return page


def _version_section(figures: dict, folder: Path) -> str:
    version = figures["version"]
    if _missing(version):
        return "<h2>Version</h2>" + _note(_missing(version))
    info = {k: version[k] for k in ("parent_dt", "root_reason", "mode", "dim", "code_version", "created_at")}
    info.update({f"{side} rows (carried)": f"{s['rows']} ({s['carried']})" for side, s in version["sides"].items()})
    return "<h2>Version</h2>" + _table(info)


def _cosine_section(figures: dict, folder: Path) -> str:
    cosine = figures["cosine"]
    title = "<h2>Same-id cosine to the previous version</h2>"
    if _missing(cosine):
        return title + _note(_missing(cosine))
    edges = np.asarray(cosine["edges"])
    hists = {name: np.asarray(cosine[name]["counts"]) for name in ("raw", "stabilized") if not _missing(cosine[name])}
    # Zoom on the range that holds 99% of the stabilized cosines (fine bins).
    share = np.cumsum(hists["stabilized"]) / max(hists["stabilized"].sum(), 1)
    lo = min(int(np.searchsorted(share, 0.01)), len(edges) - 2)
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_all, ax_zoom = fig.subplots(1, 2)
    factor = max(1, (len(edges) - 1) // 40)
    coarse_edges = np.append(edges[:-1][::factor], edges[-1])
    for name, color in (("raw", "tab:red"), ("stabilized", "tab:blue")):
        if name not in hists:
            continue
        label = f"{name}: mean {_fmt(cosine[name]['mean'])}, {cosine[name]['rows']} items"
        ax_all.stairs(np.add.reduceat(hists[name], np.arange(0, len(hists[name]), factor)), coarse_edges,
                      fill=True, alpha=0.45, color=color, label=label)
        ax_zoom.stairs(hists[name][lo:], edges[lo:], fill=True, alpha=0.45, color=color, label=name)
    ax_all.set(xlabel=f"cosine of an item's vector to its vector in {cosine['parent_dt']}", ylabel="items",
               title="whole range")
    ax_all.legend(loc="upper left")
    ax_zoom.set(xlim=(edges[lo], 1.0), xlabel="cosine", title="zoom: 99% of the stabilized items")
    notes = _note(f"raw: {_missing(cosine['raw'])}") if _missing(cosine["raw"]) else ""
    return title + notes + _image(fig, folder, "cosine.png") + _table(cosine["registry"], "registry metric")


def _trend_section(figures: dict, folder: Path) -> str:
    trends = figures["trends"]
    title = "<h2>Quality over past versions</h2>"
    if not trends["dt"]:
        return title + _note("no registered version up to this dt")
    panels = [("same-id cosine", [("cosine_stabilized_mean", "stabilized mean"),
                                  ("cosine_stabilized_p5", "stabilized p5"), ("cosine_raw_mean", "raw mean")]),
              ("score max rel. error", [("score_max_rel_err", "score error")])]
    fig = Figure(figsize=(10, 5.2), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True)
    x = np.arange(len(trends["dt"]))
    for ax, (label, series) in zip(axes, panels):
        for key, name in series:
            ax.plot(x, _floats(trends[key]), marker="o", label=name)
        for i in np.flatnonzero(trends["root"]):
            ax.axvline(i, color="grey", linestyle=":", linewidth=1)
        ax.set_ylabel(label)
        if len(series) > 1:
            ax.legend(loc="lower left", fontsize="small")
    axes[-1].set_yscale("log")
    _date_ticks(axes[-1], trends["dt"])
    note = "<p class=\"meta\">dotted lines: root versions (no parent, so no cosine)</p>"
    return title + note + _image(fig, folder, "trends.png")


def _churn_section(figures: dict, folder: Path) -> str:
    churn, trends = figures["churn"], figures["trends"]
    k = trends["overlap_k"]
    title = "<h2>Neighbour churn to the previous version</h2>"
    out = title + (_note(_missing(churn)) if _missing(churn) else "")
    overlap, share = _floats(trends[f"neighbour_overlap_at_{k}"]), _floats(trends["neighbour_churn_share"])
    if np.isfinite(overlap).any() or np.isfinite(share).any():
        fig = Figure(figsize=(10, 3.2), layout="constrained")
        ax = fig.subplots()
        x = np.arange(len(trends["dt"]))
        ax.plot(x, overlap, marker="o", label=f"overlap@{k}: mean share of neighbours kept")
        ax.plot(x, share, marker="o", color="tab:red", label="churn: share of items that kept less than half")
        for i in np.flatnonzero(trends["root"]):
            ax.axvline(i, color="grey", linestyle=":", linewidth=1)
        ax.set(ylim=(0, 1), ylabel="share", title="over past versions (dotted: roots)")
        ax.legend(loc="lower left", fontsize="small")
        _date_ticks(ax, trends["dt"])
        out += _image(fig, folder, "churn.png")
    if _missing(churn):
        return out
    out += _table({"parent": churn["parent_dt"], f"neighbour overlap@{k}": churn["overlap"],
                   "share of items that kept less than half their neighbours": churn["churn_share"],
                   "items queried (neighbours searched among all shared ids)": churn["queries"]})
    if not churn["most_changed"]:
        return out
    head = (f"<tr><th>item</th><th>overlap@{k}</th><th>neighbours in {html.escape(churn['parent_dt'])}</th>"
            f"<th>neighbours in {html.escape(figures['dt'])}</th></tr>")
    rows = "".join(f"<tr><td>{html.escape(str(m['id']))}</td><td>{_fmt(m['overlap'])}</td>"
                   f"<td>{_neighbours(m['before'], m['after'])}</td>"
                   f"<td>{_neighbours(m['after'], m['before'])}</td></tr>" for m in churn["most_changed"])
    return (out + "<p class=\"meta\">the queried items whose neighbourhoods changed most, nearest first; "
            "bold: also among the other version's neighbours</p>" + f"<table>{head}{rows}</table>")


def _neighbours(ids: list, other: list) -> str:
    kept = set(other)
    return ", ".join(f"<b>{html.escape(str(i))}</b>" if i in kept else html.escape(str(i)) for i in ids)


def _sequence_section(figures: dict, folder: Path) -> str:
    seq = figures["sequences"]
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_len, ax_pop, ax_drop = fig.subplots(1, 3)
    length, popularity, dropped = seq["length"], seq["popularity"], seq["dropped"]
    if not _placeholder(ax_len, length):
        ax_len.bar(length["n_items"], length["sequences"], width=1.0, color="tab:blue")
        ax_len.set(xlabel="items per sequence", ylabel="sequences", title="sequence length")
    if not _placeholder(ax_pop, popularity):
        ax_pop.loglog(popularity["rank"], popularity["n_events"], color="tab:green")
        ax_pop.set(xlabel="item rank", ylabel="events", title="item popularity")
    if not _placeholder(ax_drop, dropped):
        reasons = list(dropped)
        ax_drop.barh(reasons, [dropped[r] for r in reasons], color="tab:red")
        ax_drop.invert_yaxis()
        ax_drop.set(xlabel="rows", title="rows dropped by reason")
    info = dict(seq.get("counts") or {})
    if not _missing(popularity):
        info.update({f"popularity: {k}": popularity[k]
                     for k in ("items", "events", "top_1pct_share", "top_10pct_share")})
    return "<h2>Sequences</h2>" + _image(fig, folder, "sequences.png") + _table(info)


def _training_section(figures: dict, folder: Path) -> str:
    training = figures["training"]
    title = "<h2>Training</h2>"
    if _missing(training):
        return title + _note(_missing(training))
    losses = training["epoch_losses"]
    fig = Figure(figsize=(10 if losses else 7, 3.4), layout="constrained")
    axes = fig.subplots(1, 2 if losses else 1, squeeze=False)[0]
    trend = training["trend"]
    axes[0].bar(np.arange(len(trend["dt"])), _floats(trend["words_per_second"]), color="tab:purple")
    axes[0].set(ylabel="words/s", title="training throughput")
    _date_ticks(axes[0], trend["dt"])
    if losses:
        axes[1].plot(np.arange(1, len(losses) + 1), _floats(losses), marker="o")
        axes[1].set(xlabel="epoch", ylabel="loss", title="training loss")
    note = "" if losses else "<p class=\"meta\">loss: not recorded by the trainer</p>"
    return title + _image(fig, folder, "training.png") + note + _table(training["run"])


def _hit_rate_section(figures: dict, folder: Path) -> str:
    hit = figures["hit_rate"]
    title = "<h2>Next-day hit rate</h2>"
    if _missing(hit):
        return title + _note(_missing(hit))
    head = (f"<p class=\"meta\">the parent version {html.escape(str(hit['version']))} on this dt's "
            f"{html.escape(_fmt(hit['pairs']))} next-item pairs, next to the baselines</p>")
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{_fmt(v['hr'])}</td><td>{_fmt(v['ndcg'])}</td></tr>"
                   for name, v in hit["rows"].items())
    return title + head + f"<table><tr><th></th><th>HR@k</th><th>NDCG@k</th></tr>{rows}</table>"


def _change_section(figures: dict, folder: Path) -> str:
    changes = figures["changes"]
    title = "<h2>Items carried, evicted and in the delta</h2>"
    if _missing(changes):
        return title + _note(_missing(changes))
    kinds = ("carried", "new", "moved", "evicted")
    sides = sorted(set(changes["delta"]) | set(changes["carried"]))
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_now, ax_trend = fig.subplots(1, 2)
    width = 0.8 / max(len(sides), 1)
    for j, side in enumerate(sides):
        values = [changes["carried"].get(side, 0)] + [changes["delta"].get(side, {}).get(k, 0) for k in kinds[1:]]
        bars = ax_now.bar(np.arange(len(kinds)) + j * width, values, width, label=side)
        ax_now.bar_label(bars, fontsize="small")
    ax_now.set_xticks(np.arange(len(kinds)) + width * (len(sides) - 1) / 2, kinds)
    ax_now.set(ylabel="rows", title=f"this version ({figures['dt']})")
    ax_now.legend()
    trend = changes["trend"]
    for kind in kinds:
        ax_trend.plot(np.arange(len(trend["dt"])), _floats(trend[kind]), marker="o", label=kind)
    ax_trend.set(ylabel="item rows", title="item side over versions")
    ax_trend.legend(fontsize="small")
    _date_ticks(ax_trend, trend["dt"])
    rows = {f"{side} {k}": v for side, d in changes["delta"].items() for k, v in sorted(d.items())}
    return title + _image(fig, folder, "changes.png") + _table(rows, "delta rows")


def _missing(figure) -> str | None:
    return figure.get("missing") if isinstance(figure, dict) else None


def _placeholder(ax, figure) -> bool:
    """Write why on ``ax`` when ``figure`` is missing; whether it was."""
    why = _missing(figure)
    if why:
        ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, fontsize="small")
        ax.set_axis_off()
    return bool(why)


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _date_ticks(ax, dts: list) -> None:
    step = max(1, len(dts) // 12)
    ax.set_xticks(np.arange(0, len(dts), step), dts[::step], rotation=30, ha="right")


def _image(fig: Figure, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=90)
    return f'<img src="{name}" alt="{name}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _table(values: dict, header: str = "") -> str:
    head = f"<tr><th colspan=2>{html.escape(header)}</th></tr>" if header else ""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in values.items())
    return f"<table>{head}{rows}</table>"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)
