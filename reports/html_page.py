"""A self-contained HTML page: plotly.js inline once, then sections of charts, each with its numbers.

Nothing is loaded from anywhere else: the page opens offline, from a mail attachment or a USB
stick. Every string that reaches the HTML goes through `esc` here (model names, paths
and GPU names come from the user); figures carry their own text as JSON, which plotly writes
with `<` escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, an optional tooltip (exact bytes), and a CSS class (num, ok, bad)."""

    text: str
    title: str | None = None
    cls: str = ""


@dataclass(frozen=True)
class Table:
    """A plain table: the exact numbers behind a chart. Cells are strings or `Cell`s."""

    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    caption: str = ""
    numeric: tuple[bool, ...] = ()  # per column: right-aligned, tabular figures (default: all but the first)


@dataclass(frozen=True)
class Chart:
    """One figure with the table of its numbers under it."""

    figure: object  # a plotly.graph_objects.Figure
    table: Table | None = None
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A heading, a few paragraphs, charts (each with its table), then any further tables."""

    heading: str
    paragraphs: tuple[str, ...] = ()
    charts: tuple[Chart, ...] = ()
    tables: tuple[Table, ...] = ()
    details: tuple[tuple[str, Table], ...] = ()  # (summary line, table): collapsed on screen, opened for print
    anchor: str = ""
    facts: tuple[tuple[str, str], ...] = ()  # key/value lines shown as a definition list
    bullets: tuple[str, ...] = ()  # a list after the facts (e.g. the reasons for a choice)


# quotes as numeric references: safe inside attributes, and decoded by plotly, whose labels take
# &lt; &gt; &amp; and numeric references but show &quot; literally
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})


def spoken_list(names) -> str:
    """"T4", "T4 and L4", "T4, L4 and A100": names as a title reads them."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def esc(text) -> str:
    """Escape any value for HTML text and attribute positions, and for plotly's labels."""
    return str(text).translate(_ESCAPES)


def _anchor(section: Section, index: int) -> str:
    if section.anchor:
        return "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in section.anchor.lower())
    return f"section-{index + 1}"


def _cell_html(cell, numeric: bool) -> str:
    if not isinstance(cell, Cell):
        cell = Cell(str(cell))
    classes = [c for c in (cell.cls, "num" if numeric else "") if c]
    attrs = f' class="{esc(" ".join(classes))}"' if classes else ""
    if cell.title:
        attrs += f' title="{esc(cell.title)}"'
    return f"<td{attrs}>{esc(cell.text)}</td>"


def render_table(table: Table) -> str:
    numeric = table.numeric or tuple(i > 0 for i in range(len(table.columns)))
    num_class = ' class="num"'
    head = "".join(
        f'<th scope="col"{num_class if numeric[i] else ""}>{esc(name)}</th>' for i, name in enumerate(table.columns)
    )
    body = "\n".join(
        "<tr>" + "".join(_cell_html(cell, numeric[i] if i < len(numeric) else False) for i, cell in enumerate(row)) + "</tr>"
        for row in table.rows
    )
    caption = f"<caption>{esc(table.caption)}</caption>" if table.caption else ""
    return f'<div class="table-wrap"><table>{caption}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'


def render_figure(figure, div_id: str) -> str:
    """One figure as a div and its Plotly.newPlot call (plotly.js itself is on the page once)."""
    height = figure.layout.height or 520
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_height=f"{height}px",
        default_width="100%",
        config={"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg", "filename": div_id}},
    )


def render_section(section: Section, index: int) -> str:
    anchor = _anchor(section, index)
    parts = [f'<section id="{esc(anchor)}">', f"<h2>{esc(section.heading)}</h2>"]
    parts += [f"<p>{esc(p)}</p>" for p in section.paragraphs]
    if section.facts:
        parts.append('<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in section.facts) + "</dl>")
    if section.bullets:
        parts.append('<ul class="bullets">' + "".join(f"<li>{esc(b)}</li>" for b in section.bullets) + "</ul>")
    for number, chart in enumerate(section.charts):
        parts.append('<figure class="chart">')
        parts.append(render_figure(chart.figure, f"{anchor}-chart-{number + 1}"))
        if chart.caption:
            parts.append(f"<figcaption>{esc(chart.caption)}</figcaption>")
        parts.append("</figure>")
        if chart.table is not None:
            parts.append(render_table(chart.table))
    parts += [render_table(table) for table in section.tables]
    for summary, table in section.details:
        parts.append(f"<details><summary>{esc(summary)}</summary>{render_table(table)}</details>")
    parts.append("</section>")
    return "\n".join(parts)


CSS = """
:root { --ink: #1d2430; --muted: #5b6574; --rule: #d8dde4; --zebra: #f5f7fa; --ok: #1b7837; --bad: #b2182b; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0 auto; max-width: 1180px; padding: 24px 28px 48px; color: var(--ink); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.65rem; line-height: 1.25; margin: 0 0 .3rem; overflow-wrap: anywhere; }
h2 { font-size: 1.3rem; margin: 2.4rem 0 .6rem; padding-top: .6rem; border-top: 2px solid var(--rule); }
p { margin: .4rem 0 .8rem; max-width: 78ch; }
.subtitle { color: var(--muted); margin-top: 0; overflow-wrap: anywhere; }
nav.toc { margin: 1rem 0 0; padding: .6rem .9rem; background: var(--zebra); border-radius: 6px; }
nav.toc ol { margin: .2rem 0; padding-left: 1.4rem; }
nav.toc a { color: #1f5fa8; text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1.2rem; margin: .6rem 0 1rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
ul.bullets { margin: .2rem 0 1rem; padding-left: 1.3rem; max-width: 90ch; }
ul.bullets li { margin: .15rem 0; }
figure.chart { margin: 1rem 0 .4rem; border: 1px solid var(--rule); border-radius: 6px; padding: 4px; }
figcaption { color: var(--muted); font-size: .9rem; padding: .2rem .6rem .4rem; }
.table-wrap { overflow-x: auto; margin: .4rem 0 1.4rem; }
table { border-collapse: collapse; font-size: .88rem; min-width: 50%; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; caption-side: top; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
thead th { background: #eef1f5; border-bottom: 2px solid #c3cad4; white-space: nowrap; }
tbody tr:nth-child(even) { background: var(--zebra); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.ok { color: var(--ok); font-weight: 600; }
td.bad { color: var(--bad); font-weight: 600; }
td.strong { font-weight: 600; }
details { margin: .2rem 0 1.4rem; }
summary { cursor: pointer; color: #1f5fa8; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; border-top: 1px solid var(--rule); padding-top: .6rem; }
@media (max-width: 700px) { body { padding: 12px; } dl.facts { grid-template-columns: 1fr; } }
@media print {
  @page { size: A4; margin: 12mm; }
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav.toc, .modebar-container { display: none !important; }
  h2 { break-after: avoid; }
  figure.chart, .table-wrap, tr { break-inside: avoid; }
  figure.chart { border: none; }
  .table-wrap { overflow: visible; }
  table { font-size: 8pt; }
  thead th { white-space: normal; }
  th, td { padding: .15rem .35rem; }
  tbody tr:nth-child(even) { background: #f3f3f3; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
}
"""

# Charts are drawn at the screen's width; for print they are redrawn at the paper's width, and
# collapsed tables are opened so that nothing is missing from the paper copy.
PRINT_SCRIPT = """
(function () {
  function plots() { return Array.prototype.slice.call(document.querySelectorAll('.js-plotly-plot')); }
  window.addEventListener('beforeprint', function () {
    document.querySelectorAll('details').forEach(function (d) { d.setAttribute('open', ''); });
    plots().forEach(function (p) { Plotly.relayout(p, {width: 690}); });
  });
  window.addEventListener('afterprint', function () {
    plots().forEach(function (p) { Plotly.relayout(p, {width: null, autosize: true}); });
  });
})();
"""


def render_page(title: str, sections, subtitle: str = "", footer: str = "") -> str:
    """The whole report as one HTML string: plotly.js embedded once, inline; no external requests."""
    from plotly.offline import get_plotlyjs

    sections = [s for s in sections if s is not None]
    toc = "".join(
        f'<li><a href="#{esc(_anchor(s, i))}">{esc(s.heading)}</a></li>' for i, s in enumerate(sections)
    )
    body = "\n".join(render_section(section, i) for i, section in enumerate(sections))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    footer_text = footer or "vramplan report"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="vramplan">
<title>{esc(title)}</title>
<style>{CSS}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script>{get_plotlyjs()}</script>
</head>
<body>
<header>
<h1>{esc(title)}</h1>
{f'<p class="subtitle">{esc(subtitle)}</p>' if subtitle else ''}
<nav class="toc" aria-label="Contents"><ol>{toc}</ol></nav>
</header>
<main>
{body}
</main>
<footer>{esc(footer_text)} · generated {esc(generated)} · self-contained: plotly.js is embedded, the page needs no network.</footer>
<script>{PRINT_SCRIPT}</script>
</body>
</html>
"""
