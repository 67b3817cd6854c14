"""How the report page looks: its HTML shell and styles, the filter script, and the SVG score charts."""

import html

BINS = 20  # histogram bars per language


def escape(value) -> str:
    """Any value as HTML text; None as nothing."""
    return html.escape("" if value is None else str(value))


def histograms(histogram: dict) -> str:
    """One bar chart per language: captions (y) per score bin (x), both axes labelled with their range."""
    charts = []
    left, width, height = 40, BINS * 12, 100
    lo, hi = histogram["lo"], histogram["hi"]
    for lang, counts in sorted(histogram["counts"].items()):
        top = max(counts) or 1
        bars = "".join(
            f'<rect x="{left + i * 12}" y="{height - height * n / top:.1f}" width="10" '
            f'height="{height * n / top:.1f}"><title>{n} captions</title></rect>'
            for i, n in enumerate(counts)
        )
        axes = (f'<path class=axis d="M{left - 2} 0 V{height} H{left + width}"/>'
                f'<text x="{left - 4}" y="10" text-anchor="end">{top}</text>'
                f'<text x="{left - 4}" y="{height}" text-anchor="end">0</text>'
                f'<text x="12" y="{height / 2}" transform="rotate(-90 12 {height / 2})" text-anchor="middle">'
                f'captions</text><text x="{left}" y="{height + 14}">{lo:.2f}</text>'
                f'<text x="{left + width}" y="{height + 14}" text-anchor="end">{hi:.2f}</text>'
                f'<text x="{left + width / 2}" y="{height + 30}" text-anchor="middle">score</text>')
        charts.append(f'<figure class=chart><svg viewBox="0 0 {left + width + 4} {height + 34}" '
                      f'width="{left + width + 4}" height="{height + 34}" role="img" aria-label="scores '
                      f'{escape(lang)}">{axes}{bars}</svg><figcaption>{escape(lang)}: {sum(counts)} captions, scores '
                      f"{lo:.2f} to {hi:.2f}</figcaption></figure>")
    return "".join(charts) or "<p>No scores yet.</p>"


FILTER_SCRIPT = """<script>
const form = document.getElementById("filter");
function applyFilter() {
  const lang = form.lang.value, text = form.text.value.trim().toLowerCase();
  const minScore = parseFloat(form.minscore.value);
  const cards = document.querySelectorAll(".card");
  let shown = 0;
  for (const card of cards) {
    let any = false;
    for (const li of card.querySelectorAll("li")) {
      const ok = (!lang || li.dataset.lang === lang)
        && (!text || li.querySelector(".caption").textContent.toLowerCase().includes(text))
        && (isNaN(minScore) || parseFloat(li.dataset.score) >= minScore)
        && (!form.wrong.checked || li.dataset.wrong === "1");
      li.hidden = !ok;
      any = any || ok;
    }
    card.hidden = !any;
    shown += any ? 1 : 0;
  }
  document.getElementById("shown").textContent = `${shown} of ${cards.length} shown`;
}
form.addEventListener("input", applyFilter);
applyFilter();
</script>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
.gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1em; }}
.card {{ margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: .5em; }}
.card img {{ display: block; max-width: 100%; margin: 0 auto; }}
.card ul {{ list-style: none; padding: 0; margin: .3em 0 0; overflow-wrap: anywhere; }}
.card code {{ font-size: 11px; word-break: break-all; color: #666; }}
.missing {{ height: 120px; background: #eee; display: grid; place-items: center; color: #888; }}
.chart {{ display: inline-block; margin: 0 2em 1em 0; }}
.chart rect {{ fill: #4a7bd0; }} .chart text {{ font-size: 11px; fill: #444; }}
.chart .axis {{ stroke: #444; fill: none; }} .filter label {{ margin-right: 1em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ddd; padding: .2em .5em; text-align: left; }}
</style></head>
<body>
{body}
</body></html>
"""
