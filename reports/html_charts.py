"""Plotly figures for the HTML report: pure functions from numbers to figures.

One colour family per kind of memory, the same in every chart: weights blue, gradients orange,
optimizer green, activations purple, overhead grey; each named term is a shade of its family.
Methods have their own colour-blind-safe colours (Okabe-Ito) and marker shapes. Every axis that
carries memory says GiB (2^30 bytes). Text that came from the user (model and GPU names) is
HTML-escaped before it reaches a figure: plotly renders a subset of HTML in its labels.
"""

from __future__ import annotations

import math
import zlib

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..planner.methods import METHOD_KEYS, method_title
from ..planner.units import GIB, gib
from .html_page import esc

FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif"

FAMILY_SHADES = {
    "weights": ("#08306b", "#2171b5", "#4292c6", "#6baed6", "#9ecae1", "#c6dbef"),
    "grads": ("#a63603", "#e6550d", "#fd8d3c", "#fdae6b"),
    "optimizer": ("#00441b", "#238b45", "#41ab5d", "#74c476", "#a1d99b"),
    "activations": ("#3f007d", "#54278f", "#6a51a3", "#807dba", "#9e9ac8", "#b4b1d6", "#cbc9e2", "#7a0177", "#ae017e", "#dd3497"),
    "overhead": ("#252525", "#636363", "#969696", "#bdbdbd"),
}
FAMILY_ORDER = ("weights", "experts", "grads", "optimizer", "activations", "overhead")
FAMILY_TITLES = {"weights": "Weights", "grads": "Gradients", "optimizer": "Optimizer", "activations": "Activations", "overhead": "Overhead"}
OTHER_COLOR = "#8c6d31"

# Every term the estimator emits, in the order it stacks them: a term keeps its shade in every chart.
TERM_SHADE = {
    "weights/base": 0, "weights/quant_constants": 1, "weights/unquantized": 2, "weights/adapter": 3,
    "weights/autocast_copies": 4,
    "grads/trainable": 0, "grads/lm_head": 2,
    "optimizer/states": 0, "optimizer/paged_states": 2, "optimizer/step_temporaries": 3,
    "activations/inputs": 6, "activations/logits": 0, "activations/checkpoint_inputs": 2, "activations/layer": 4,
    "activations/layers": 1, "activations/attention_scores": 7, "activations/last_layer": 5,
    "activations/transient": 3, "activations/dora_weight_norm": 8,
    "overhead/cublas_workspace": 2, "overhead/allocator_slack": 3, "overhead/cuda_context": 1,
}

# colour-blind-safe (Okabe-Ito) colours and marker shapes, given out in the method registry's order
PALETTE = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
SYMBOLS = ("square", "circle", "diamond", "triangle-up", "x", "star", "cross", "hexagon")
SOURCE_SYMBOLS = {"cpu": "circle", "trace": "square", "cuda": "diamond"}
GPU_DASHES = ("dash", "dot", "dashdot", "longdash", "longdashdot", "solid")
GPU_LINE = "#3a3a3a"


def term_sort_key(term_name: str) -> int:
    """Family order: weights, gradients, optimizer, activations, overhead, then anything else."""
    fam = family(term_name)
    return FAMILY_ORDER.index(fam) if fam in FAMILY_ORDER else len(FAMILY_ORDER)


def family(term_name: str) -> str:
    head = term_name.split("/", 1)[0]
    return head if head in FAMILY_SHADES else "other"


def term_color(term_name: str) -> str:
    """The term's shade of its family colour (stable: the same term, the same colour, in every chart)."""
    fam = family(term_name)
    if fam == "other":
        return OTHER_COLOR
    shades = FAMILY_SHADES[fam]
    index = TERM_SHADE.get(term_name)
    if index is None:  # a term this table does not know yet still gets a stable shade of its family
        index = zlib.crc32(term_name.encode()) % len(shades)
    return shades[index % len(shades)]


def method_color(method: str) -> str:
    return PALETTE[METHOD_KEYS.index(method) % len(PALETTE)] if method in METHOD_KEYS else "#555555"


def method_symbol(method: str) -> str:
    return SYMBOLS[METHOD_KEYS.index(method) % len(SYMBOLS)] if method in METHOD_KEYS else "circle"


def gpu_label(gpu) -> str:
    return f"{esc(gpu.name)} · {gib(gpu.total_bytes):.1f} GiB"


def _base_layout(fig: go.Figure, title: str, height: int, subtitle: str = "") -> go.Figure:
    """Shared look; the title (and subtitle) are plain text, escaped here."""
    title_spec = {"text": esc(title), "x": 0.01, "xanchor": "left", "font": {"size": 17}}
    if subtitle:
        title_spec["subtitle"] = {"text": esc(subtitle), "font": {"size": 13, "color": "#5b6574"}}
    fig.update_layout(
        template="plotly_white",
        title=title_spec,
        height=height,
        font={"family": FONT, "size": 13, "color": "#1d2430"},
        margin={"l": 70, "r": 30, "t": 70, "b": 60},
        hoverlabel={"font": {"family": FONT, "size": 12}, "align": "left"},
    )
    return fig


def _gpu_lines(fig: go.Figure, gpus) -> None:
    """Each GPU's memory as a labelled horizontal line (linear axes only: shapes on a log axis take log10 values)."""
    for i, gpu in enumerate(sorted(gpus, key=lambda g: g.total_bytes)):
        fig.add_hline(
            y=gib(gpu.total_bytes),
            line={"color": GPU_LINE, "width": 1.6, "dash": GPU_DASHES[i % len(GPU_DASHES)]},
            annotation={"text": f"{gpu_label(gpu)}", "font": {"size": 12, "color": GPU_LINE}, "bgcolor": "rgba(255,255,255,0.88)",
                        "bordercolor": "#c3cad4", "borderwidth": 1, "borderpad": 2},
            annotation_position="top left",
        )


def methods_figure(methods: list[str], terms: list[dict], totals: dict[str, int], peak_phases: dict[str, str], gpus, title: str, subtitle: str = "") -> go.Figure:
    """Stacked bars of the named terms at each method's peak, with each GPU's memory as a line.

    `terms`: one dict per term, {"name", "bytes": {method: n}, "notes": {method: text}} (bytes
    counted at that method's peak); `totals`: device-used bytes per method.
    """
    fig = go.Figure()
    x = [method_title(m) for m in methods]
    seen_families = set()
    for term in sorted(terms, key=lambda t: term_sort_key(t["name"])):
        values = [term["bytes"].get(m, 0) for m in methods]
        if not any(values):
            continue
        fam = family(term["name"])
        custom = [[f"{v:,}", esc(term["notes"].get(m, "")) or "-", peak_phases.get(m, "")] for m, v in zip(methods, values)]
        fig.add_trace(go.Bar(
            name=term["name"],
            x=x,
            y=[gib(v) for v in values],
            marker={"color": term_color(term["name"]), "line": {"color": "white", "width": 0.5}},
            legendgroup=fam,
            legendgrouptitle={"text": FAMILY_TITLES.get(fam, fam)} if fam not in seen_families else None,
            customdata=custom,
            hovertemplate=(
                "<b>%{fullData.name}</b> · %{x}<br>%{customdata[0]} bytes = %{y:.3f} GiB"
                "<br>%{customdata[1]}<br>peak phase: %{customdata[2]}<extra></extra>"
            ),
        ))
        seen_families.add(fam)
    top = max([gib(totals[m]) for m in methods] + [gib(g.total_bytes) for g in gpus] + [1.0])
    for m, label in zip(methods, x):
        fig.add_annotation(
            x=label, y=gib(totals[m]), yanchor="bottom", showarrow=False,
            text=f"<b>{gib(totals[m]):.1f} GiB</b>", font={"size": 13},
        )
    _gpu_lines(fig, gpus)
    _base_layout(fig, title, 720, subtitle)
    fig.update_layout(
        barmode="stack",
        bargap=0.35,
        legend={"title": {"text": "term (at the peak)"}, "traceorder": "grouped", "groupclick": "toggleitem",
                "font": {"size": 12}, "tracegroupgap": 8},
        yaxis={"title": {"text": "memory at the peak, GiB (2^30 bytes)"}, "range": [0, top * 1.12], "rangemode": "tozero"},
        xaxis={"title": {"text": "fine-tuning method"}},
    )
    return fig


def _log_value_ticks(low: float, high: float) -> dict:
    """Ticks at 1, 2, 5 x 10^k between low and high, labelled in full (plotly's 'D2' labels '2' for 20)."""
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 8)):
        ticks = [
            mantissa * 10.0**exponent
            for exponent in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
            for mantissa in mantissas
            if low <= mantissa * 10.0**exponent <= high
        ]
        if len(ticks) >= 4:
            break
    return {"tickvals": ticks, "ticktext": [f"{v:g}" for v in ticks]}


def _log2_ticks(values: list[int]) -> dict:
    return {"type": "log", "tickvals": values, "ticktext": [f"{v:,}" for v in values]}


def sweep_figure(label: str, values: list[int], series: dict[str, list[int | None]], gpus, current: int | None, title: str, subtitle: str = "") -> go.Figure:
    """Predicted device-used peak against one setting: one line per method, each GPU's memory as a line.

    `series`: method -> bytes per value (None where the estimate could not be made). Everything
    is drawn as traces (no shapes), so a log axis places the GPU lines where their GiB say.
    """
    fig = go.Figure()
    plotted = []
    for method, points in series.items():
        ys = [None if p is None else gib(p) for p in points]
        plotted += [y for y in ys if y]
        custom = [["-" if p is None else f"{p:,}"] for p in points]
        fig.add_trace(go.Scatter(
            name=method_title(method), x=values, y=ys, mode="lines+markers", legendgroup="methods",
            legendgrouptitle={"text": "method"} if not fig.data else None,
            line={"color": method_color(method), "width": 2.5},
            marker={"symbol": method_symbol(method), "size": 9, "color": method_color(method)},
            customdata=custom,
            hovertemplate=f"<b>{esc(method_title(method))}</b><br>{esc(label)} %{{x:,}}<br>%{{customdata[0]}} bytes = %{{y:.2f}} GiB<extra></extra>",
        ))
    if current is not None and current in values:
        at = values.index(current)
        ring_y = [gib(points[at]) for points in series.values() if points[at] is not None]
        fig.add_trace(go.Scatter(
            name=f"this run ({current:,})", x=[current] * len(ring_y), y=ring_y, mode="markers", legendgroup="run",
            marker={"symbol": "circle-open", "size": 20, "color": "#1d2430", "line": {"width": 2}}, hoverinfo="skip",
        ))
    for i, gpu in enumerate(sorted(gpus, key=lambda g: g.total_bytes)):
        y = gib(gpu.total_bytes)
        fig.add_trace(go.Scatter(
            name=gpu_label(gpu), x=[values[0], values[-1]], y=[y, y], mode="lines+text", legendgroup="gpus",
            legendgrouptitle={"text": "GPU memory"} if i == 0 else None,
            line={"color": GPU_LINE, "width": 1.6, "dash": GPU_DASHES[i % len(GPU_DASHES)]},
            text=[gpu_label(gpu), ""], textposition="top right", textfont={"size": 12, "color": GPU_LINE},
            hovertemplate=f"{gpu_label(gpu)}<br>{gpu.total_bytes:,} bytes<extra></extra>",
        ))
    everything = plotted + [gib(g.total_bytes) for g in gpus]
    log_y = bool(everything) and max(everything) / max(min(everything), 1e-6) > 6
    _base_layout(fig, title, 480, subtitle)
    y_title = "predicted peak (device used), GiB" + (", log scale" if log_y else "")
    yaxis = {"title": {"text": y_title}, "type": "log" if log_y else "linear"}
    if log_y:
        low, high = min(everything) / 1.15, max(everything) * 1.15
        yaxis.update(range=[math.log10(low), math.log10(high)], **_log_value_ticks(low, high))
    else:
        yaxis["rangemode"] = "tozero"
    fig.update_layout(
        xaxis={"title": {"text": label + " (log scale)"}, **_log2_ticks(values)},
        yaxis=yaxis,
        legend={"groupclick": "toggleitem", "tracegroupgap": 12},
        hovermode="closest",
    )
    return fig


FIT_COLORSCALE = [
    [0.0, "#8e0b1e"], [0.499, "#f4b6b0"],  # does not fit: the further over, the darker red
    [0.501, "#cfead0"], [1.0, "#14692f"],  # fits: the more headroom, the darker green
]


def fit_matrix_figure(model_labels: list[str], gpus, methods: list[str], headroom: dict[tuple[int, str, str], int | None], title: str, subtitle: str = "") -> go.Figure:
    """Headroom heatmap: one panel per GPU, models down, methods across; red does not fit, green fits.

    `headroom[(model_index, gpu_key, method)]` is GPU memory minus the predicted device-used peak
    (bytes; negative: does not fit; None: no estimate).
    """
    fig = make_subplots(
        rows=1, cols=len(gpus), shared_yaxes=True, horizontal_spacing=0.025,
        subplot_titles=[gpu_label(g) for g in gpus],
    )
    limit = max(gib(g.total_bytes) for g in gpus) / 2
    x = [method_title(m) for m in methods]
    for col, gpu in enumerate(gpus, start=1):
        z, text, custom = [], [], []
        for i, _ in enumerate(model_labels):
            row_z, row_text, row_custom = [], [], []
            for method in methods:
                value = headroom.get((i, gpu.key, method))
                if value is None:
                    row_z.append(None)
                    row_text.append("")
                    row_custom.append(["no estimate", "-"])
                    continue
                g = gib(value)
                row_z.append(g)
                row_text.append(f"{'✓' if value >= 0 else '✗'} {g:+.1f}")
                row_custom.append(["fits" if value >= 0 else "does not fit", f"{value:,}"])
            z.append(row_z)
            text.append(row_text)
            custom.append(row_custom)
        fig.add_trace(go.Heatmap(
            z=z, x=x, y=[esc(label) for label in model_labels], text=text, texttemplate="%{text}", textfont={"size": 12},
            customdata=custom, colorscale=FIT_COLORSCALE, zmid=0, zmin=-limit, zmax=limit,
            xgap=2, ygap=2, showscale=col == len(gpus),
            colorbar={"title": {"text": "headroom<br>GiB", "side": "top"}, "thickness": 14, "len": 0.9},
            hovertemplate=f"<b>%{{y}}</b> · %{{x}} on {esc(gpu.name)}<br>%{{customdata[0]}}: headroom %{{z:+.2f}} GiB<br>(%{{customdata[1]}} bytes)<extra></extra>",
        ), row=1, col=col)
    height = max(360, 120 + 46 * len(model_labels))
    _base_layout(fig, title, height, subtitle)
    fig.update_layout(margin={"l": 230, "r": 30, "t": 100, "b": 50})
    fig.update_yaxes(autorange="reversed", tickfont={"size": 12})
    fig.update_xaxes(side="bottom", tickfont={"size": 12})
    for annotation in fig.layout.annotations:
        annotation.font = {"size": 13}
    return fig


def trust_figure(points: list[dict], title: str, subtitle: str = "") -> go.Figure:
    """Estimated against measured peak allocated, per method and source, with y = x and ±5 % bands.

    Top: estimate vs measurement on log-log axes (on the dashed line the estimate is exact).
    Bottom: the same runs' error in % of measured, where the ±5 % band is wide enough to read.
    `points`: {"method", "source", "estimated_bytes", "measured_bytes", "label"} per measured run.
    """
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.66, 0.34], vertical_spacing=0.06)
    values = [gib(p[k]) for p in points for k in ("estimated_bytes", "measured_bytes")]
    low, high = min(values) / 1.4, max(values) * 1.4
    band = [low, high]
    band_style = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip"}
    fig.add_trace(go.Scatter(x=band, y=[v * 0.95 for v in band], showlegend=False, legendgroup="band", **band_style), row=1, col=1)
    fig.add_trace(go.Scatter(x=band, y=[v * 1.05 for v in band], fill="tonexty", fillcolor="rgba(120,130,145,0.22)",
                             name="within ±5 % of measured", legendgroup="band", **band_style), row=1, col=1)
    fig.add_trace(go.Scatter(x=band, y=[-5, -5], showlegend=False, legendgroup="band", **band_style), row=2, col=1)
    fig.add_trace(go.Scatter(x=band, y=[5, 5], fill="tonexty", fillcolor="rgba(120,130,145,0.22)", showlegend=False,
                             legendgroup="band", **band_style), row=2, col=1)
    exact = {"mode": "lines", "line": {"color": "#3a3a3a", "width": 1.2, "dash": "dash"}, "hoverinfo": "skip", "legendgroup": "exact"}
    fig.add_trace(go.Scatter(x=band, y=band, name="estimate = measured", **exact), row=1, col=1)
    fig.add_trace(go.Scatter(x=band, y=[0, 0], showlegend=False, **exact), row=2, col=1)
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        groups.setdefault((p["source"], p["method"]), []).append(p)
    order = list(METHOD_KEYS)
    errors = []
    for (source, method), group in sorted(groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]) if kv[0][1] in order else 9)):
        pct = [100.0 * (p["estimated_bytes"] - p["measured_bytes"]) / p["measured_bytes"] for p in group]
        errors += pct
        custom = [[esc(p["label"]), f"{p['estimated_bytes']:,}", f"{p['measured_bytes']:,}", f"{e:+.1f}"] for p, e in zip(group, pct)]
        marker = {"color": method_color(method), "symbol": SOURCE_SYMBOLS.get(source, "circle-open"), "size": 10,
                  "line": {"color": "white", "width": 1}, "opacity": 0.9}
        hover = ("<b>%{fullData.name}</b><br>%{customdata[0]}<br>estimated %{customdata[1]} B<br>measured %{customdata[2]} B"
                 "<br>error %{customdata[3]} %<extra></extra>")
        name = f"{method_title(method)} · {source}"
        measured = [gib(p["measured_bytes"]) for p in group]
        fig.add_trace(go.Scatter(name=name, x=measured, y=[gib(p["estimated_bytes"]) for p in group], mode="markers", marker=marker,
                                 customdata=custom, hovertemplate=hover, legendgroup=name), row=1, col=1)
        fig.add_trace(go.Scatter(name=name, x=measured, y=pct, mode="markers", marker=marker, customdata=custom,
                                 hovertemplate=hover, legendgroup=name, showlegend=False), row=2, col=1)
    _base_layout(fig, title, 760, subtitle)
    axis = {"type": "log", "range": [math.log10(low), math.log10(high)], **_log_value_ticks(low, high)}
    reach = max([abs(e) for e in errors] + [5.0]) * 1.25
    fig.update_xaxes(**axis)
    fig.update_xaxes(title={"text": "measured peak allocated, GiB (2^30 bytes), log scale"}, row=2, col=1)
    fig.update_yaxes(title={"text": "estimated, GiB (log scale)"}, row=1, col=1, **axis)
    fig.update_yaxes(title={"text": "error, % of measured"}, row=2, col=1, range=[-reach, reach], ticksuffix=" %", zeroline=False)
    fig.update_layout(legend={"title": {"text": "method · source"}, "traceorder": "normal"})
    return fig


# --- recommend and run pages ------------------------------------------------------------------

SEGMENT_COLORS = {"allocated": "#2171b5", "slack": "#969696", "outside": "#525252"}


def alternatives_figure(labels: list[str], methods: list[str], allocated: list[int], reserved: list[int], device_used: list[int],
                        gpu_name: str, gpu_bytes: int, limit_bytes: int, margin_text: str, title: str, subtitle: str = "") -> go.Figure:
    """Each alternative's predicted device used, split into what makes it up, against the GPU and the margin line.

    Horizontal bars, best first (top): peak allocated (live tensors), reserved minus allocated (the
    caching allocator's slack), device used minus reserved (outside torch's allocator). A solid line
    marks the GPU's memory, a dashed one the fit limit the margin leaves. `labels` are plain text.
    """
    fig = go.Figure()
    y = [esc(label) for label in labels]
    parts = (
        ("allocated", "peak allocated (live tensors)", allocated),
        ("slack", "allocator slack (reserved − allocated)", [max(0, r - a) for r, a in zip(reserved, allocated)]),
        ("outside", "outside the allocator (CUDA context, paged states)", [max(0, d - max(r, a)) for d, r, a in zip(device_used, reserved, allocated)]),
    )
    for key, name, values in parts:
        fig.add_trace(go.Bar(
            name=name, y=y, x=[gib(v) for v in values], orientation="h",
            marker={"color": SEGMENT_COLORS[key], "line": {"color": "white", "width": 0.5}},
            customdata=[[f"{v:,}", method_title(m)] for v, m in zip(values, methods)],
            hovertemplate=f"<b>%{{y}}</b><br>{esc(name)}: %{{customdata[0]}} bytes = %{{x:.2f}} GiB<extra></extra>",
        ))
    for label, total, live in zip(y, device_used, allocated):  # the total, written inside the blue part
        fig.add_annotation(x=gib(live), y=label, xanchor="right", xshift=-6, showarrow=False,
                           text=f"<b>{gib(total):.2f} GiB</b>", font={"size": 12, "color": "white"})
    top = max([gib(d) for d in device_used] + [gib(gpu_bytes)]) * 1.04
    # both lines are labelled above the plot, right-aligned on their line, one above the other: never on a bar
    for x, dash, text, shift in (
        (gib(limit_bytes), "dash", f"fit limit ({esc(margin_text)}): {gib(limit_bytes):.2f} GiB", 0),
        (gib(gpu_bytes), "solid", f"{esc(gpu_name)}: {gib(gpu_bytes):.2f} GiB", 22),
    ):
        fig.add_vline(x=x, line={"color": GPU_LINE, "width": 1.6, "dash": dash})
        fig.add_annotation(x=x, xref="x", y=1.0, yref="paper", yanchor="bottom", xanchor="right", yshift=shift + 2, showarrow=False,
                           text=f"{text} {'┆' if dash == 'dash' else '│'}", font={"size": 12, "color": GPU_LINE})
    height = max(380, 230 + 52 * len(labels))
    _base_layout(fig, title, height, subtitle)
    fig.update_layout(
        barmode="stack", bargap=0.3,
        margin={"l": 330, "r": 30, "t": 140, "b": 100},
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.0, "x": 0, "traceorder": "normal", "title": {"text": ""}},
        xaxis={"title": {"text": "predicted device used, GiB (2^30 bytes)"}, "range": [0, top]},
        yaxis={"autorange": "reversed", "tickfont": {"size": 12}},
    )
    return fig


def loss_figure(curve: list[tuple[int, float]], eval_loss: float | None, start_step: int, title: str, subtitle: str = "") -> go.Figure:
    """Training loss per optimizer step; the eval loss at the last step; a resumed run's restart marked."""
    fig = go.Figure()
    steps = [step for step, _ in curve]
    losses = [loss for _, loss in curve]
    fig.add_trace(go.Scatter(
        name="training loss", x=steps, y=losses, mode="lines+markers" if len(curve) <= 60 else "lines",
        line={"color": method_color("lora"), "width": 2.2}, marker={"size": 6},
        hovertemplate="step %{x:,}<br>loss %{y:.4f}<extra></extra>",
    ))
    if eval_loss is not None and steps:
        fig.add_trace(go.Scatter(
            name="eval loss (end of run)", x=[steps[-1]], y=[eval_loss], mode="markers",
            marker={"symbol": "diamond", "size": 13, "color": method_color("full"), "line": {"color": "white", "width": 1}},
            hovertemplate="eval loss %{y:.4f}<br>after step %{x:,}<extra></extra>",
        ))
    if 0 < start_step and steps and steps[0] <= start_step < steps[-1]:
        fig.add_vline(x=start_step + 0.5, line={"color": GPU_LINE, "width": 1.2, "dash": "dot"},
                      annotation={"text": f"resumed after step {start_step:,}", "font": {"size": 12, "color": GPU_LINE}},
                      annotation_position="top right")
    _base_layout(fig, title, 420, subtitle)
    fig.update_layout(
        xaxis={"title": {"text": "optimizer step"}, "tickformat": ",d", **({"dtick": 1} if len(steps) <= 12 else {})},
        yaxis={"title": {"text": "loss (cross-entropy, nats per token)"}},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        hovermode="closest",
    )
    return fig


def peak_figure(statistics: list[str], estimated: list[int | None], measured: list[int | None], gpu_name: str | None,
                gpu_bytes: int | None, title: str, subtitle: str = "", unit: str = "GiB") -> go.Figure:
    """The estimate made before the run against what was measured, statistic by statistic (GiB).

    Each statistic gets an 'estimated' and a 'measured' bar; the error in % of measured is written
    above the pair. The GPU's memory is a line when the run knows it. `statistics` are plain text.
    `unit`: GiB, or MiB for runs too small to read in GiB.
    """
    scale = float(GIB if unit == "GiB" else 1 << 20)
    digits = 3 if unit == "GiB" else 1

    def size(n_bytes):  # in this chart's unit
        return n_bytes / scale

    fig = go.Figure()
    x = [esc(s) for s in statistics]
    for name, values, color in (("estimated before the run", estimated, "#9ecae1"), ("measured", measured, "#08306b")):
        fig.add_trace(go.Bar(
            name=name, x=x, y=[None if v is None else size(v) for v in values],
            marker={"color": color, "line": {"color": "white", "width": 0.5}},
            customdata=[["not measured" if v is None else f"{v:,} bytes"] for v in values],
            text=["not measured" if v is None else f"{size(v):,.{digits}f} {unit}" for v in values], textposition="outside", cliponaxis=False,
            hovertemplate=f"<b>%{{x}}</b> · {esc(name)}<br>%{{customdata[0]}} = %{{y:.{digits}f}} {unit}<extra></extra>",
        ))
    top = max([size(v) for v in estimated + measured if v] + [size(gpu_bytes) if gpu_bytes else 0.0, 1e-3])
    for label, est, meas in zip(x, estimated, measured):
        if est and meas:
            error = 100.0 * (est - meas) / meas
            fig.add_annotation(x=label, y=max(size(est), size(meas)) + top * 0.1, showarrow=False, yanchor="bottom",
                               text=f"<b>error {error:+.1f} %</b>", font={"size": 13})
    if gpu_bytes:
        fig.add_hline(y=size(gpu_bytes), line={"color": GPU_LINE, "width": 1.6, "dash": "dash"},
                      annotation={"text": f"{esc(gpu_name or 'GPU')} · {size(gpu_bytes):,.2f} {unit}", "font": {"size": 12, "color": GPU_LINE}},
                      annotation_position="top left")
    _base_layout(fig, title, 440, subtitle)
    fig.update_layout(
        barmode="group", bargap=0.3, bargroupgap=0.08,
        yaxis={"title": {"text": f"peak memory, {unit} (2^{30 if unit == 'GiB' else 20} bytes)"}, "range": [0, top * 1.3], "rangemode": "tozero"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
    return fig
