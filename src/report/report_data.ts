/**
 * The documents `zaplab report` reads, recognised by shape and normalised for the charts: a sweep
 * (`sweep --json`, schema zaplab-sweep/1), a compare (`compare --json`; `replay --json` is the same shape
 * plus a `replay` section with observed-vs-modelled rows), and a Chrome trace (`--trace`, traceEvents)
 * for the per-vCPU timeline. Anything else is a clear error naming the file. Reads results only.
 */
import type { ParamAxis } from '../sweep/grid.ts';
import { SWEEP_SCHEMA, type SweepPoint, type SweepResult } from '../sweep/schema.ts';
import type { RunResult } from '../scenario/runner.ts';
import type { TraceEvent } from './chrome_trace.ts';
import { DEFAULT_COSTS, type CostConstant } from '../metrics/cost.ts';

export interface ObservedRow {
  what: string;
  observed: number;
  modelled: number;
}

export interface ReportDoc {
  kind: 'sweep' | 'compare' | 'replay';
  scenario: string;
  axes: ParamAxis[];
  points: SweepPoint[];
  /** per-design modelled cost rows (compare/replay only: a single point) */
  costRows: { design: string; item: string; totalNs: number }[];
  /** replay only: the traced design's kernel counts against the model's */
  observed?: { design: string; rows: ObservedRow[] };
  costs: Record<string, CostConstant>;
  meta: { label: string; value: string }[];
}

export interface TimelineDoc {
  kind: 'trace';
  events: TraceEvent[];
}

export class ReportInputError extends Error {}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** A compare/replay run as a sweep point (the one point, index 0, no parameters). */
export function runToPoint(r: RunResult): SweepPoint {
  const t = r.totals ?? {};
  return {
    point: 0,
    params: {},
    design: r.design,
    verdict: r.verdict,
    violations: r.violations?.length ?? 0,
    invariants: [...new Set((r.violations ?? []).map((v) => v.id))].sort(),
    errors: r.errors ?? [],
    missing: r.missing ?? [],
    vcpus: r.vcpus,
    modelledNs: r.modelled?.totalNs ?? 0,
    modelled: (r.modelled?.rows ?? []).map((x) => ({ item: x.item, count: x.count, totalNs: x.totalNs })),
    sptesZapped: (t['sptes_zapped_4k'] ?? 0) + (t['sptes_zapped_2m'] ?? 0) + (t['sptes_zapped_1g'] ?? 0),
    refaults: t['refaults'] ?? 0,
    tlbFlushIpis: t['tlb_flush_ipis'] ?? 0,
    remoteTlbFlushes: t['remote_tlb_flush'] ?? 0,
    totals: t,
  };
}

function fromSweep(d: SweepResult): ReportDoc {
  return {
    kind: 'sweep',
    scenario: d.scenario.name,
    axes: d.axes,
    points: d.points,
    costRows: [],
    costs: d.costModel.constants,
    meta: [
      {
        label: 'scenario',
        value: `${d.scenario.name} (${d.scenario.file}, sha256 ${d.scenario.sha256.slice(0, 12)}…, seed ${d.scenario.seed})`,
      },
      { label: 'grid', value: d.axes.map((a) => `${a.name}=${a.spec}`).join(' ') || '(one point)' },
      { label: 'designs', value: d.designs.join(', ') },
      { label: 'host', value: JSON.stringify(d.host.options) },
      { label: 'zaplab', value: `${d.zaplab}, audit ${d.audit}` },
      ...(d.failures.length
        ? [{ label: 'failed runs', value: d.failures.map((f) => `${f.design}: ${f.error}`).join('; ') }]
        : []),
    ],
  };
}

function fromCompare(d: Record<string, unknown>, file: string): ReportDoc {
  const runs = d['runs'] as RunResult[];
  for (const [i, r] of runs.entries())
    if (!isObj(r) || typeof r.design !== 'string' || !isObj(r.totals) || !isObj(r.modelled))
      throw new ReportInputError(
        `${file}: runs[${i}]: expected a run with design, totals and modelled (compare --json)`,
      );
  const replay = isObj(d['replay']) ? d['replay'] : undefined;
  const obs =
    replay && isObj(replay['observed'])
      ? (replay['observed'] as { design: string; rows: ObservedRow[] })
      : undefined;
  return {
    kind: replay ? 'replay' : 'compare',
    scenario: String(d['scenario'] ?? '?'),
    axes: [],
    points: runs.map(runToPoint),
    costRows: runs.flatMap((r) =>
      r.modelled.rows.map((x) => ({ design: r.design, item: x.item, totalNs: x.totalNs })),
    ),
    ...(obs
      ? {
          observed: {
            design: obs.design,
            rows: obs.rows.map((x) => ({ what: x.what, observed: x.observed, modelled: x.modelled })),
          },
        }
      : {}),
    costs: { ...DEFAULT_COSTS },
    meta: [
      { label: 'scenario', value: String(d['scenario'] ?? '?') },
      { label: 'designs', value: runs.map((r) => r.design).join(', ') },
      ...(replay
        ? [
            {
              label: 'replay',
              value: `traced design ${String(replay['tracedDesign'] ?? '?')}, ${String(replay['events'] ?? '?')} events`,
            },
          ]
        : []),
    ],
  };
}

/** Recognise one parsed JSON document. */
export function readDoc(json: unknown, file: string): ReportDoc | TimelineDoc {
  if (!isObj(json))
    throw new ReportInputError(
      `${file}: expected a JSON object (sweep --json, compare --json, replay --json or a --trace file)`,
    );
  if (json['schema'] === SWEEP_SCHEMA) {
    if (!Array.isArray(json['points']) || !Array.isArray(json['axes']))
      throw new ReportInputError(`${file}: ${SWEEP_SCHEMA} document without points/axes`);
    return fromSweep(json as unknown as SweepResult);
  }
  if (typeof json['schema'] === 'string' && String(json['schema']).startsWith('zaplab-sweep/'))
    throw new ReportInputError(
      `${file}: sweep schema ${String(json['schema'])} is not supported (this zaplab reads ${SWEEP_SCHEMA})`,
    );
  if (Array.isArray(json['runs'])) return fromCompare(json, file);
  if (Array.isArray(json['traceEvents']))
    return { kind: 'trace', events: json['traceEvents'] as TraceEvent[] };
  throw new ReportInputError(
    `${file}: not a zaplab result (expected "schema": "${SWEEP_SCHEMA}", a "runs" array or "traceEvents")`,
  );
}
