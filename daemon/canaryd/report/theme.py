"""The pages' shell: one inline stylesheet with light and dark themes; no script, font or external file."""

from __future__ import annotations

from .svg import e

# What a browser may load for these pages: nothing but their own inline styles. A string that slipped
# past escaping still could not run a script or fetch anything.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; " \
                          "form-action 'none'"
# frame-ancestors counts only as a header (a <meta> one is ignored, with a console warning).
HEADER_POLICY = CONTENT_SECURITY_POLICY + "; frame-ancestors 'none'"

CSS = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1d2330; --muted: #5d6677; --line: #d7dce4;
  --panel: #f5f7fa; --canary: #d9480f; --stable: #1c64c8; --limit: #b0001e; --weight: #2f3b52;
  --pass: #1f7a3a; --fail: #b0001e; --warn: #9a6700; --band: rgba(217, 72, 15, 0.16);
  --m1: #d9480f; --m2: #7048e8; --m3: #0c8599; --m4: #c2255c; --m5: #5c940d; --m6: #495057; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #12161d; --fg: #e3e8ef; --muted: #9aa5b5; --line: #2c3442; --panel: #1a2029;
    --canary: #ff8a4c; --stable: #6ea8fe; --limit: #ff6b81; --weight: #c9d3e3; --pass: #5ad17f;
    --fail: #ff6b81; --warn: #f2c94c; --band: rgba(255, 138, 76, 0.2);
    --m1: #ff8a4c; --m2: #b197fc; --m3: #66d9e8; --m4: #f783ac; --m5: #a9e34b; --m6: #ced4da; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 16px 20px 40px; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
h1 { font-size: 22px; margin: 4px 0; } h2 { font-size: 16px; margin: 22px 0 6px; }
a { color: var(--stable); }
.muted, .tick, .unit { color: var(--muted); fill: var(--muted); }
.summary { display: flex; flex-wrap: wrap; gap: 8px 22px; margin: 8px 0; }
.summary b { font-weight: 600; }
.why { background: var(--panel); border-left: 4px solid var(--muted); padding: 8px 12px; margin: 10px 0; }
.why.rollback { border-color: var(--fail); } .why.promoted, .why.advance { border-color: var(--pass); }
.why ul { margin: 4px 0 0; padding-left: 20px; }
figure { margin: 0 0 6px; } figcaption { color: var(--muted); font-size: 12.5px; }
svg { width: 100%; height: auto; display: block; font-size: 11px; overflow: visible; }
svg .axis { stroke: var(--muted); } svg .grid { stroke: var(--line); stroke-width: 0.6; }
svg polyline { fill: none; stroke-width: 1.8; stroke-linejoin: round; }
svg .weight { stroke: var(--weight); stroke-width: 2.2; }
svg .canary { stroke: var(--canary); } svg .stable { stroke: var(--stable); }
svg .canary-dot, svg .canary.lone { fill: var(--canary); stroke: none; }
svg .stable.lone { fill: var(--stable); stroke: none; }
svg .band { fill: var(--band); stroke: none; }
svg .limit { stroke: var(--limit); stroke-dasharray: 6 4; stroke-width: 1.4; }
svg .alpha { stroke: var(--limit); stroke-dasharray: 2 3; stroke-width: 1.6; }
svg .label { fill: var(--fg); font-size: 11px; }
svg .canary-text { fill: var(--canary); } svg .stable-text { fill: var(--stable); }
svg .limit-text, svg .alpha-text { fill: var(--limit); }
svg .marker path { fill: var(--weight); stroke: var(--bg); stroke-width: 1; }
svg .marker-advance path, svg .marker-promote path { fill: var(--pass); }
svg .marker-pause path, svg .marker-alert path { fill: var(--warn); }
svg .marker-rollback path { fill: none; stroke: var(--fail); stroke-width: 3; }
svg .marker-rollback .marker-text { fill: var(--fail); font-weight: 600; }
svg .crossing circle { fill: none; stroke: var(--fail); stroke-width: 2; }
svg .crossing-text { fill: var(--fail); font-weight: 600; }
""" + "".join(f"svg .m{i} {{ stroke: var(--m{i}); }} svg .m{i}-text {{ fill: var(--m{i}); }} "
              f"svg .m{i}.lone {{ fill: var(--m{i}); }}\n" for i in range(1, 7)) + """
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12.5px; color: var(--muted); margin: 2px 0 0; }
.sw { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 5px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.fail td { background: var(--band); } .v-fail { color: var(--fail); font-weight: 600; }
.v-pass { color: var(--pass); } .v-warn { color: var(--warn); font-weight: 600; }
.phase { font-weight: 600; } .phase-rolled_back { color: var(--fail); } .phase-succeeded { color: var(--pass); }
.empty { color: var(--muted); font-style: italic; padding: 12px 0; }
"""


def document(title: str, body: str) -> str:
    """A complete page; `title` is escaped here, `body` is HTML built from escaped parts."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">"
            "<meta name=\"color-scheme\" content=\"light dark\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n")
