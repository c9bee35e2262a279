"""The page around the front plot's SVG (:func:`autoprune.tracking.ui.front_plot_html` fills it in).

Styles, the heading, the plot, a details line, the front's table and a few lines of script
(hovering a point shows its details, a click pins them). MLflow shows the page in a sandboxed
iframe: it needs nothing from the network, and the SVG's ``<title>`` hovers work without the script.

Placeholders: ``heading`` (HTML-escaped), ``n_front`` and ``n_points`` (front and complete
trials), ``width`` and ``height`` (the SVG's), ``svg`` (its content), ``rows`` (the table's rows).
"""

from string import Template

__all__ = ["FRONT_PAGE"]

FRONT_PAGE = Template(
    """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${heading}</title>
<style>
body { font: 13px sans-serif; margin: 8px; color: #222; }
svg text { font-size: 11px; fill: #444; }
.grid { stroke: #eee; } .axis { stroke: #888; }
.dense { stroke: #1f77b4; stroke-dasharray: 5 4; } .dense-label { fill: #1f77b4; }
.front-line { fill: none; stroke: #d62728; stroke-width: 1.5; }
circle.trial { fill: #bbb; } circle.front { fill: #d62728; cursor: pointer; }
circle:hover, circle.pinned { stroke: #000; stroke-width: 2; }
table { border-collapse: collapse; margin-top: 6px; } td, th { padding: 2px 8px; text-align: right; border-bottom: 1px solid #eee; }
#info { min-height: 1.4em; margin: 4px 0; }
</style></head><body>
<div id="front-plot"><b>${heading}</b> &mdash; ${n_front} front trials of ${n_points} complete (hover or click a point)
<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="Pareto front">${svg}</svg>
<div id="info"></div>
<table><tr><th>trial</th><th>val acc</th><th>test acc</th><th>size (B)</th><th>of dense</th><th>latency (ms)</th></tr>${rows}</table></div>
<script>
document.querySelectorAll("circle").forEach(function (c) {
  c.addEventListener("mouseenter", function () { document.getElementById("info").textContent = c.dataset.label; });
  c.addEventListener("click", function () {
    document.querySelectorAll("circle.pinned").forEach(function (p) { p.classList.remove("pinned"); });
    c.classList.add("pinned");
    document.getElementById("info").textContent = "pinned: " + c.dataset.label;
  });
});
</script></body></html>
"""
)
