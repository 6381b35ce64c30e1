/**
 * The report's charts as Vega-Lite specs, from normalised results (report_data.ts):
 *   sweep    — modelled cost, SPTEs zapped, refaults and TLB-flush IPIs against each swept parameter,
 *              one line per design, marker shape = checker verdict; log (or symlog, when zeros occur)
 *              axes when a range spans two decades or more;
 *   compare  — the same four per design as bars (modelled cost stacked by cost item), verdicts as labels;
 *   replay   — observed (kernel) against modelled counts;
 *   trace    — faults, zaps and flushes over the modelled clock, one row per vCPU / MMU thread.
 * Every chart's subtitle says costs are modelled and where their sources are. Reads results only.
 */
import type { ParamAxis } from '../sweep/grid.ts';
import type { SweepPoint } from '../sweep/schema.ts';
import type { ReportDoc, TimelineDoc } from './report_data.ts';
import type { TraceEvent } from './chrome_trace.ts';

export type VlSpec = Record<string, unknown>;

export interface Chart {
  /** file-name safe id (SVG file name, DOM id) */
  id: string;
  title: string;
  spec: VlSpec;
  /** marks the chart must draw: one per datum of its main layer (the browser test checks it) */
  expectedMarks: number;
}

export const MODELLED_NOTE =
  'costs are modelled (counts × per-event costs, sources in docs/cost-model.md), not measured';
const COUNT_NOTE = 'counts from the model; ' + MODELLED_NOTE;
const VERDICTS = ['ok', 'violations', 'unchecked', 'missing-features', 'error'];
const SHAPES = ['circle', 'cross', 'square', 'triangle-up', 'diamond'];
const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';

interface Metric {
  key: 'modelledMs' | 'sptesZapped' | 'refaults' | 'tlbFlushIpis';
  id: string;
  what: string;
  axis: string;
}

const METRICS: Metric[] = [
  { key: 'modelledMs', id: 'modelled', what: 'modelled cost', axis: 'modelled time (ms)' },
  { key: 'sptesZapped', id: 'zapped', what: 'leaf SPTEs zapped', axis: 'leaf SPTEs zapped' },
  { key: 'refaults', id: 'refaults', what: 'refaults', axis: 'refaults' },
  { key: 'tlbFlushIpis', id: 'ipis', what: 'TLB-flush IPIs', axis: 'TLB-flush IPIs' },
];

/** linear, log (all positive, ≥ 2 decades) or symlog (zeros present, ≥ 2 decades). */
export function scaleFor(values: readonly number[]): 'linear' | 'log' | 'symlog' {
  const pos = values.filter((v) => v > 0);
  if (pos.length < 2 || Math.max(...pos) / Math.min(...pos) < 100) return 'linear';
  return pos.length === values.length ? 'log' : 'symlog';
}

/** A Vega expression: 1073741824 → "1G" (binary suffixes, as the -p spec was typed). */
export const SIZE_LABEL =
  ['T', 'G', 'M', 'K']
    .map(
      (u, i) =>
        `datum.value >= ${2 ** (40 - 10 * i)} ? format(datum.value / ${2 ** (40 - 10 * i)}, '~g') + '${u}' : `,
    )
    .join('') + "format(datum.value, '~g')";

const safeId = (s: string): string => s.replace(/[^A-Za-z0-9_-]+/g, '_');

function row(p: SweepPoint, axes: ParamAxis[]): Record<string, unknown> {
  const r: Record<string, unknown> = {
    design: p.design,
    verdict: p.verdict,
    violations: p.violations,
    modelledMs: p.modelledNs / 1e6,
    sptesZapped: p.sptesZapped,
    refaults: p.refaults,
    tlbFlushIpis: p.tlbFlushIpis,
  };
  for (const a of axes) r[a.name] = p.params[a.name];
  return r;
}

/**
 * Designs whose runs agree at every point (same counts, cost and verdict) share one series, labelled
 * "quirk = vm-type = slot-flag", so no line hides another of the same values.
 */
export function seriesLabels(points: readonly SweepPoint[]): Map<string, string> {
  const sig = new Map<string, string[]>();
  for (const p of points) {
    const v = `${p.point}:${p.modelledNs}:${p.sptesZapped}:${p.refaults}:${p.tlbFlushIpis}:${p.verdict}:${p.violations}`;
    sig.set(p.design, [...(sig.get(p.design) ?? []), v]);
  }
  const groups = new Map<string, string[]>();
  for (const [d, v] of sig) groups.set(v.join('|'), [...(groups.get(v.join('|')) ?? []), d]);
  const out = new Map<string, string>();
  for (const ds of groups.values()) for (const d of ds) out.set(d, ds.join(' = '));
  return out;
}

/** Lines per design against one swept axis; other multi-valued axes split the lines (dashes). */
function sweepChart(doc: ReportDoc, axis: ParamAxis, m: Metric): Chart {
  const others = doc.axes.filter((a) => a !== axis && a.values.length > 1);
  const series = seriesLabels(doc.points);
  const first = new Set<string>();
  // one marker per (series, point): the designs a series merges have the same values there
  const pts = doc.points.filter((p) => {
    const k = `${series.get(p.design)}@${p.point}`;
    return first.has(k) ? false : (first.add(k), true);
  });
  const values = pts.map((p) => {
    const r = row(p, doc.axes);
    r['design'] = series.get(p.design) ?? p.design;
    r['others'] = others.map((a) => `${a.name}=${String(p.params[a.name])}`).join(' ');
    return r;
  });
  // ticks at the swept values; sizes typed with a suffix (1G..1T) labelled as sizes, not byte counts
  const ticks = { values: axis.values, ...(/\d[KMGT]/i.test(axis.spec) ? { labelExpr: SIZE_LABEL } : {}) };
  const x = axis.numeric
    ? {
        field: axis.name,
        type: 'quantitative',
        scale: { type: scaleFor(axis.values as number[]) === 'linear' ? 'linear' : 'log', base: 2 },
        axis: ticks,
        title: axis.name,
      }
    : { field: axis.name, type: 'ordinal', sort: axis.values, title: axis.name };
  if (axis.numeric && scaleFor(axis.values as number[]) === 'linear')
    delete (x.scale as Record<string, unknown>)['base'];
  const y = {
    field: m.key,
    type: 'quantitative',
    title: m.axis,
    scale: { type: scaleFor(values.map((v) => v[m.key] as number)) },
  };
  const tooltip = [
    { field: 'design' },
    ...doc.axes.map((a) => ({ field: a.name })),
    { field: m.key, title: m.axis },
    { field: 'verdict' },
    { field: 'violations' },
  ];
  const title = `${m.what} vs ${axis.name} (${doc.scenario})`;
  return {
    id: safeId(`${m.id}-vs-${axis.name}`),
    title,
    expectedMarks: values.length,
    spec: {
      $schema: SCHEMA,
      title: {
        text: title,
        subtitle: [
          m.key === 'modelledMs' ? MODELLED_NOTE : COUNT_NOTE,
          'one line per design (designs with identical results share a line); marker shape = checker verdict',
        ],
      },
      width: 560,
      height: 260,
      data: { values },
      encoding: { x, y, color: { field: 'design', type: 'nominal', title: 'design' } },
      layer: [
        {
          mark: { type: 'line', strokeWidth: 1.5 },
          encoding: others.length
            ? { strokeDash: { field: 'others', type: 'nominal', title: others.map((a) => a.name).join(' ') } }
            : {},
        },
        {
          mark: { type: 'point', filled: true, size: 60 },
          encoding: {
            shape: {
              field: 'verdict',
              type: 'nominal',
              title: 'checker verdict',
              scale: { domain: VERDICTS, range: SHAPES },
            },
            tooltip,
          },
        },
      ],
    },
  };
}

/** compare/replay: one bar per design (modelled cost stacked by cost item), the verdict above it. */
function compareCharts(doc: ReportDoc): Chart[] {
  const values = doc.points.map((p) => ({
    ...row(p, []),
    label: p.verdict === 'violations' ? `✗ ${p.violations}` : p.verdict,
  }));
  const order = doc.points.map((p) => p.design);
  const x = { field: 'design', type: 'nominal', sort: order, title: 'design', axis: { labelAngle: -20 } };
  const charts: Chart[] = [];
  const cost = doc.costRows.map((c) => ({ design: c.design, item: c.item, ms: c.totalNs / 1e6 }));
  charts.push({
    id: 'modelled-by-design',
    title: `modelled cost by design (${doc.scenario})`,
    expectedMarks: cost.length,
    spec: {
      $schema: SCHEMA,
      title: {
        text: `modelled cost by design (${doc.scenario})`,
        subtitle: [MODELLED_NOTE, 'stacked by cost item'],
      },
      width: 560,
      height: 260,
      data: { values: cost },
      mark: 'bar',
      encoding: {
        x,
        y: { field: 'ms', type: 'quantitative', aggregate: 'sum', title: 'modelled time (ms)' },
        color: { field: 'item', type: 'nominal', title: 'cost item' },
        tooltip: [{ field: 'design' }, { field: 'item' }, { field: 'ms', title: 'ms (modelled)' }],
      },
    },
  });
  for (const m of METRICS.slice(1)) {
    const title = `${m.what} by design (${doc.scenario})`;
    charts.push({
      id: `${m.id}-by-design`,
      title,
      expectedMarks: values.length,
      spec: {
        $schema: SCHEMA,
        title: { text: title, subtitle: [COUNT_NOTE, 'label = checker verdict'] },
        width: 560,
        height: 220,
        data: { values },
        encoding: { x, y: { field: m.key, type: 'quantitative', title: m.axis } },
        layer: [
          {
            mark: 'bar',
            encoding: {
              color: { field: 'design', type: 'nominal', sort: order, legend: null },
              tooltip: [{ field: 'design' }, { field: m.key, title: m.axis }, { field: 'verdict' }],
            },
          },
          { mark: { type: 'text', dy: -6 }, encoding: { text: { field: 'label' } } },
        ],
      },
    });
  }
  return charts;
}

function observedChart(doc: ReportDoc): Chart[] {
  if (!doc.observed) return [];
  const values = doc.observed.rows.flatMap((r) => [
    { what: r.what, source: 'observed (kernel trace)', count: r.observed },
    { what: r.what, source: `modelled (${doc.observed!.design})`, count: r.modelled },
  ]);
  const title = `observed vs modelled counts (${doc.scenario})`;
  return [
    {
      id: 'observed-vs-modelled',
      title,
      expectedMarks: values.length,
      spec: {
        $schema: SCHEMA,
        title: {
          text: title,
          subtitle: ['kernel counts from the trace against the model replaying it; ' + MODELLED_NOTE],
        },
        width: 560,
        data: { values },
        mark: 'bar',
        encoding: {
          y: { field: 'what', type: 'nominal', title: null },
          yOffset: { field: 'source' },
          x: { field: 'count', type: 'quantitative', title: 'count' },
          color: { field: 'source', type: 'nominal', title: null },
          tooltip: [{ field: 'what' }, { field: 'source' }, { field: 'count' }],
        },
      },
    },
  ];
}

/** The charts for one results document. */
export function chartsFor(doc: ReportDoc): Chart[] {
  if (doc.kind !== 'sweep') return [...compareCharts(doc), ...observedChart(doc)];
  const swept = doc.axes.filter((a) => a.values.length > 1);
  if (swept.length === 0)
    return compareCharts({
      ...doc,
      costRows: doc.points.flatMap((p) =>
        p.modelled.map((c) => ({ design: p.design, item: c.item, totalNs: c.totalNs })),
      ),
    });
  return swept.flatMap((a) => METRICS.map((m) => sweepChart(doc, a, m)));
}

const KINDS: [RegExp, string][] = [
  [/^EPT violation$/, 'fault'],
  [/^TLB flush/, 'TLB flush'],
  [/^kvm_mmu_zap_all_fast$/, 'zap all (fast)'],
  [/^kvm_mmu_zap_memslot$/, 'precise zap'],
  [/^memslot /, 'memslot ioctl'],
  [/^fault retry$/, 'fault retry'],
];
const BINS = 120;

/**
 * A Chrome trace as binned counts: per process (design / VM) and thread (vCPU, MMU), events of each kind
 * per slice of the modelled clock. Binned so a 250k-event trace stays a small page.
 */
export function timelineChart(t: TimelineDoc, index = 0): Chart {
  const names = new Map<string, string>();
  for (const e of t.events)
    if (e.ph === 'M')
      names.set(`${e.pid}:${e.name === 'process_name' ? 'p' : e.tid}`, String(e.args?.['name'] ?? ''));
  const evs = t.events.filter((e: TraceEvent) => e.ph !== 'M');
  // each lane (design / VM) on its own clock from 0: the recorder runs them one after another
  const start = new Map<number, number>();
  const span = new Map<number, number>();
  for (const e of evs) start.set(e.pid, Math.min(start.get(e.pid) ?? Infinity, e.ts));
  for (const e of evs)
    span.set(e.pid, Math.max(span.get(e.pid) ?? 0, e.ts + (e.dur ?? 0) - start.get(e.pid)!));
  const width = Math.max(1e-3, ...span.values()) / BINS;
  const counts = new Map<
    string,
    { lane: string; thread: string; kind: string; t0: number; t1: number; n: number }
  >();
  for (const e of evs) {
    const kind = KINDS.find(([re]) => re.test(e.name))?.[1];
    if (!kind) continue;
    const lane = names.get(`${e.pid}:p`) ?? `pid ${e.pid}`;
    const thread = names.get(`${e.pid}:${e.tid}`) ?? `tid ${e.tid}`;
    const b = Math.min(BINS - 1, Math.floor((e.ts - start.get(e.pid)!) / width));
    const key = `${lane}\0${thread}\0${kind}\0${b}`;
    const c = counts.get(key) ?? {
      lane,
      thread,
      kind,
      t0: (b * width) / 1000,
      t1: ((b + 1) * width) / 1000,
      n: 0,
    };
    c.n++;
    counts.set(key, c);
  }
  const values = [...counts.values()];
  const title = 'faults, zaps and flushes per vCPU over the modelled clock';
  return {
    id: `timeline-${index}`,
    title,
    expectedMarks: values.length,
    spec: {
      $schema: SCHEMA,
      title: {
        text: title,
        subtitle: [
          'time axis = modelled clock from the start of each lane (each fault advances it by its modelled cost), not wall time; ' +
            MODELLED_NOTE,
        ],
      },
      data: { values },
      facet: { row: { field: 'lane', type: 'nominal', title: null } },
      spec: {
        width: 560,
        mark: 'bar',
        encoding: {
          x: { field: 't0', type: 'quantitative', title: 'modelled time (ms)' },
          x2: { field: 't1' },
          y: { field: 'thread', type: 'nominal', title: null },
          yOffset: { field: 'kind' },
          color: { field: 'kind', type: 'nominal', title: 'event' },
          opacity: {
            field: 'n',
            type: 'quantitative',
            scale: { type: 'log', range: [0.25, 1] },
            title: 'events per slice',
          },
          tooltip: [
            { field: 'lane' },
            { field: 'thread' },
            { field: 'kind' },
            { field: 'n', title: 'events' },
            { field: 't0', title: 'from (ms)' },
          ],
        },
      },
      resolve: { scale: { y: 'independent' } },
    },
  };
}
