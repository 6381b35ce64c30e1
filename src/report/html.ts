/**
 * The report as one self-contained HTML file that opens offline: vega, vega-lite and vega-embed are
 * inlined from their npm builds (no CDN, no fetch; the page makes no network request), the charts'
 * data is inlined in their specs, and the cost model's constants with their sources are a section of
 * the page that every chart links to. Rendered with the SVG renderer so marks are DOM nodes.
 * `window.zaplabReport.ready` resolves to the marks each chart drew (the browser test reads it).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Chart } from './charts.ts';
import type { ReportDoc } from './report_data.ts';
import type { CostConstant } from '../metrics/cost.ts';
import { fmtModelled } from '../metrics/cost.ts';

const require = createRequire(import.meta.url);

/** The minified browser build of a package, read from beside its entry point. */
function browserBuild(pkg: 'vega' | 'vega-lite' | 'vega-embed'): string {
  return readFileSync(join(dirname(require.resolve(pkg)), `${pkg}.min.js`), 'utf8');
}

/** Text safe inside <script>: no "</script", no line separators that end a JS string. */
const scriptSafe = (s: string): string =>
  s
    .replace(/<\/(script)/gi, '<\\/$1')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export interface HtmlReport {
  title: string;
  docs: ReportDoc[];
  charts: Chart[];
}

function metaTable(docs: ReportDoc[]): string {
  const rows = docs.flatMap((d) =>
    d.meta.map((m) => `<tr><th>${esc(m.label)}</th><td>${esc(m.value)}</td></tr>`),
  );
  return rows.length ? `<table class="meta">${rows.join('')}</table>` : '';
}

function costTable(costs: Record<string, CostConstant>): string {
  const rows = Object.entries(costs).map(
    ([k, c]) =>
      `<tr><td><code>${esc(k)}</code></td><td class="n">${esc(fmtModelled(c.ns))}</td><td>${esc(c.source)}</td></tr>`,
  );
  return `<table class="costs"><tr><th>constant</th><th>per event</th><th>source</th></tr>${rows.join('')}</table>`;
}

const STYLE = `body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}.note{background:#fff7e0;border-left:4px solid #e0a000;padding:8px 12px;margin:12px 0}
figure{margin:20px 0;border-top:1px solid #ddd;padding-top:12px}figcaption{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
td.n{text-align:right;white-space:nowrap}table.meta th{background:#f4f4f4;white-space:nowrap}code{font-size:12px}`;

/** The page script: embed every chart, count the marks each drew, expose both for tests. */
const BOOT = `(function(){
  var specs = JSON.parse(document.getElementById('zaplab-specs').textContent);
  function count(node){
    var n = 0;
    (function walk(s){
      if (!s) return;
      if (s.marktype && s.role === 'mark' && (s.marktype === 'symbol' || s.marktype === 'rect')) n += s.items.length;
      (s.items || []).forEach(function(it){ (it.items || []).forEach(walk); });
    })(node);
    return n;
  }
  var ready = Promise.all(specs.map(function(c){
    return vegaEmbed('#chart-' + c.id, c.spec, { renderer: 'svg', actions: false }).then(function(r){
      return { id: c.id, marks: count(r.view.scenegraph().root), expected: c.expectedMarks };
    });
  }));
  ready.catch(function(e){ console.error('zaplab report: ' + (e && e.message || e)); });
  window.zaplabReport = { ready: ready };
})();`;

/** The whole page. */
export function renderHtml(r: HtmlReport): string {
  const figures = r.charts
    .map(
      (c) =>
        `<figure id="fig-${c.id}"><div id="chart-${c.id}"></div><figcaption>${esc(c.title)}. Costs are modelled, not measured: see <a href="#cost-model">the cost model and its sources</a> (docs/cost-model.md).</figcaption></figure>`,
    )
    .join('\n');
  const costs = r.docs[0]?.costs ?? {};
  const specs = r.charts.map((c) => ({ id: c.id, spec: c.spec, expectedMarks: c.expectedMarks }));
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(r.title)}</title><style>${STYLE}</style></head>
<body>
<h1>${esc(r.title)}</h1>
<p class="note">Every time in this report is <b>modelled</b> — counts from the model × per-event costs — <b>not measured</b>. Each constant and its source (published figure, derivation, host measurement or labelled assumption) is listed <a href="#cost-model">below</a>, as in docs/cost-model.md.</p>
${metaTable(r.docs)}
${figures}
<h2 id="cost-model">Cost model (docs/cost-model.md)</h2>
<p>modelled time = Σ count × per-event cost. Sources: [P] published, [D] derived, [M] measured on the development host, [U] a labelled assumption.</p>
${costTable(costs)}
<script>${scriptSafe(browserBuild('vega'))}</script>
<script>${scriptSafe(browserBuild('vega-lite'))}</script>
<script>${scriptSafe(browserBuild('vega-embed'))}</script>
<script type="application/json" id="zaplab-specs">${scriptSafe(JSON.stringify(specs).replace(/</g, '\\u003c'))}</script>
<script>${BOOT}</script>
</body></html>
`;
}
