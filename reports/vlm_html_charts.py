"""Plotly figures for VLM pages: component bars per stage, the resolution sweep, both stages' losses.

Components keep one colour everywhere (Okabe-Ito, colour-blind safe): vision tower orange,
projector pink, LLM blue, optimizer states green, overhead grey. Every axis that carries
memory says GiB (2^30 bytes); user text is escaped before it reaches a figure.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..planner.units import gib
from .html_charts import GPU_DASHES, GPU_LINE, _base_layout, _gpu_lines, gpu_label, method_color
from .html_page import esc

PARTS = ("vision", "projector", "llm", "optimizer", "overhead")
PART_TITLES = {"vision": "vision tower", "projector": "projector", "llm": "LLM", "optimizer": "optimizer states", "overhead": "overhead (CUDA, allocator)"}
PART_COLORS = {"vision": "#E69F00", "projector": "#CC79A7", "llm": "#0072B2", "optimizer": "#009E73", "overhead": "#969696"}
STAGE_COLORS = {1: "#D55E00", 2: "#0072B2"}
STAGE_SYMBOLS = {1: "circle", 2: "square"}


def part_of(term_name: str) -> str:
    """The component a term belongs to (`vision/...`, `llm/...`); optimizer and overhead are shared."""
    head = term_name.split("/", 1)[0]
    return head if head in PARTS else "overhead"


def parts_at_peak(breakdown) -> dict[str, int]:
    """Bytes per component at the peak phase; they sum to the device-used peak."""
    totals = dict.fromkeys(PARTS, 0)
    for name, n_bytes in breakdown.at_peak().items():
        totals[part_of(name)] += n_bytes
    return totals


def components_figure(labels: list[str], parts: list[dict[str, int]], gpus, title: str, subtitle: str = "",
                      limit: tuple[int, str] | None = None) -> go.Figure:
    """One stacked bar per (stage, method): the components at that stage's peak, each GPU's memory a line.

    `labels` are plain text (escaped here); `parts[i]` maps each of PARTS to bytes; `limit`
    (bytes, plain-text label) draws a recommendation's fit limit under the GPU's memory.
    """
    fig = go.Figure()
    x = [esc(label) for label in labels]
    for part in PARTS:
        values = [p.get(part, 0) for p in parts]
        if not any(values):
            continue
        fig.add_trace(go.Bar(
            name=PART_TITLES[part], x=x, y=[gib(v) for v in values],
            marker={"color": PART_COLORS[part], "line": {"color": "white", "width": 0.5}},
            customdata=[[f"{v:,}"] for v in values],
            hovertemplate=f"<b>{esc(PART_TITLES[part])}</b> · %{{x}}<br>%{{customdata[0]}} bytes = %{{y:.3f}} GiB<extra></extra>",
        ))
    totals = [sum(p.values()) for p in parts]
    for label, total in zip(x, totals):
        fig.add_annotation(x=label, y=gib(total), yanchor="bottom", showarrow=False, text=f"<b>{gib(total):.1f} GiB</b>", font={"size": 13})
    _gpu_lines(fig, gpus)
    if limit is not None:
        fig.add_hline(y=gib(limit[0]), line={"color": "#b2182b", "width": 1.4, "dash": "dot"},
                      annotation={"text": esc(limit[1]), "font": {"size": 12, "color": "#b2182b"}, "bgcolor": "rgba(255,255,255,0.88)"},
                      annotation_position="top left")
    top = max([gib(t) for t in totals] + [gib(g.total_bytes) for g in gpus] + [1.0])
    _base_layout(fig, title, 600, subtitle)
    fig.update_layout(
        barmode="stack", bargap=0.35,
        legend={"title": {"text": "component (at the peak)"}, "traceorder": "normal"},
        yaxis={"title": {"text": "memory at the peak, GiB (2^30 bytes)"}, "range": [0, top * 1.12], "rangemode": "tozero"},
        xaxis={"title": {"text": "training stage · LLM method"}},
    )
    return fig


def resolution_figure(sizes: list[str], tokens: list[int], series: list[tuple[str, int, str, list]], gpus, current: str | None,
                      title: str, subtitle: str = "") -> go.Figure:
    """Top: image tokens per example against image size; bottom: the device-used peak per series, GPU lines.

    `sizes` are labels like 448x448 (the x axis, in order); `series` holds (plain-text name, stage,
    method, bytes per size or None where the estimate could not be made): the method sets the
    colour, the stage the dash (stage 1 dotted); `current` marks the size asked for.
    """
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.32, 0.68], vertical_spacing=0.07)
    fig.add_trace(go.Scatter(
        name="image tokens per example", x=sizes, y=tokens, mode="lines+markers", line={"color": "#000000", "width": 2},
        marker={"size": 8}, hovertemplate="%{x}<br>%{y:,} image tokens<extra></extra>", legendgroup="tokens",
    ), row=1, col=1)
    for name, stage, method, points in series:
        fig.add_trace(go.Scatter(
            name=esc(name), x=sizes, y=[None if p is None else gib(p) for p in points], mode="lines+markers",
            line={"color": method_color(method), "width": 2.4, "dash": "dot" if stage == 1 else "solid"},
            marker={"symbol": STAGE_SYMBOLS.get(stage, "circle"), "size": 8, "color": method_color(method)},
            customdata=[["-" if p is None else f"{p:,}"] for p in points],
            hovertemplate=f"<b>{esc(name)}</b><br>%{{x}}<br>%{{customdata[0]}} bytes = %{{y:.2f}} GiB<extra></extra>",
            legendgroup="peaks",
        ), row=2, col=1)
    for i, gpu in enumerate(sorted(gpus, key=lambda g: g.total_bytes)):
        y = gib(gpu.total_bytes)
        fig.add_trace(go.Scatter(
            name=gpu_label(gpu), x=[sizes[0], sizes[-1]], y=[y, y], mode="lines+text", legendgroup="gpus",
            line={"color": GPU_LINE, "width": 1.6, "dash": GPU_DASHES[i % len(GPU_DASHES)]},
            text=["", gpu_label(gpu)], textposition="top left", textfont={"size": 12, "color": GPU_LINE},  # at the right end: the lines start low
            hovertemplate=f"{gpu_label(gpu)}<br>{gpu.total_bytes:,} bytes<extra></extra>",
        ), row=2, col=1)
    if current in sizes:
        fig.add_vline(x=sizes.index(current), line={"color": "#5b6574", "width": 1.2, "dash": "dot"},
                      annotation={"text": f"this run ({esc(current)})", "font": {"size": 12}}, annotation_position="top left")
    _base_layout(fig, title, 720, subtitle)
    peaks = [gib(p) for *_, points in series for p in points if p] + [gib(g.total_bytes) for g in gpus]
    fig.update_layout(hovermode="closest", legend={"tracegroupgap": 12})
    fig.update_yaxes(title_text="image tokens", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="device used, GiB (2^30 bytes)", range=[0, max(peaks + [1.0]) * 1.12], row=2, col=1)
    fig.update_xaxes(title_text="image size, pixels (width x height), as given to the processor", type="category", row=2, col=1)
    return fig


def stage_loss_figure(curves: dict[int, list[tuple[int, float]]], title: str, subtitle: str = "") -> go.Figure:
    """Both stages' training loss on one step axis: stage 2's steps follow stage 1's, a line between them."""
    fig = go.Figure()
    offset = 0
    for stage in sorted(curves):
        curve = curves[stage]
        if not curve:
            continue
        if offset:
            fig.add_vline(x=offset + 0.5, line={"color": GPU_LINE, "width": 1.2, "dash": "dot"},
                          annotation={"text": f"stage {stage} starts", "font": {"size": 12, "color": GPU_LINE}}, annotation_position="top right")
        fig.add_trace(go.Scatter(
            name=f"stage {stage}", x=[offset + step for step, _ in curve], y=[loss for _, loss in curve],
            mode="lines+markers" if len(curve) <= 60 else "lines",
            line={"color": STAGE_COLORS.get(stage, GPU_LINE), "width": 2.2}, marker={"symbol": STAGE_SYMBOLS.get(stage, "circle"), "size": 6},
            customdata=[[step] for step, _ in curve],
            hovertemplate=f"stage {stage}, its step %{{customdata[0]:,}}<br>loss %{{y:.4f}}<extra></extra>",
        ))
        offset += curve[-1][0]
    _base_layout(fig, title, 420, subtitle)
    fig.update_layout(
        xaxis={"title": {"text": "optimizer step (stage 2 continues after stage 1)"}, "tickformat": ",d"},
        yaxis={"title": {"text": "loss (cross-entropy, nats per token)"}},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        hovermode="closest",
    )
    return fig
