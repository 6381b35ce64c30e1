/**
 * One sweep point under one design, as a pool task (src/sweep/pool.ts): loads the scenario with the
 * point's parameters, runs it through the scenario runner (the one copy of the model, through its public
 * API) and returns a plain-data summary. Deterministic: the output depends only on the input (the
 * scenario's seed, or the sweep's --seed, drives every random choice). Model-only file.
 */
import { loadScenario } from '../scenario/library.ts';
import { designById } from '../scenario/designs.ts';
import { runScenario, type RunAudit, type RunResult } from '../scenario/runner.ts';
import type { GridPoint } from './grid.ts';
import type { SweepPoint } from './schema.ts';

export interface PointInput {
  /** index of the grid point (the same for every design of that point) */
  point: number;
  file: string;
  params: GridPoint;
  /** the loader's string form of params (numbers in decimal) */
  rawParams: Record<string, string>;
  design: string;
  audit: RunAudit;
  seed?: number;
}

/** Totals worth keeping: the non-zero ones (a sweep's JSON would otherwise be mostly zeros). */
function nonZero(t: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(t).filter(([, v]) => v !== 0));
}

export function summarise(input: PointInput, r: RunResult): SweepPoint {
  const t = r.totals;
  return {
    point: input.point,
    params: input.params,
    design: input.design,
    verdict: r.verdict,
    violations: r.violations.length,
    invariants: [...new Set(r.violations.map((v) => v.id))].sort(),
    errors: r.errors,
    missing: r.missing,
    vcpus: r.vcpus,
    modelledNs: r.modelled.totalNs,
    modelled: r.modelled.rows.map((row) => ({ item: row.item, count: row.count, totalNs: row.totalNs })),
    sptesZapped: (t['sptes_zapped_4k'] ?? 0) + (t['sptes_zapped_2m'] ?? 0) + (t['sptes_zapped_1g'] ?? 0),
    refaults: t['refaults'] ?? 0,
    tlbFlushIpis: t['tlb_flush_ipis'] ?? 0,
    remoteTlbFlushes: t['remote_tlb_flush'] ?? 0,
    totals: nonZero(t),
  };
}

export default async function pointTask(input: PointInput): Promise<SweepPoint> {
  const loaded = loadScenario(input.file, input.rawParams);
  if (!loaded.ok) throw new Error(loaded.error);
  const sc = input.seed === undefined ? loaded.scenario : { ...loaded.scenario, seed: input.seed };
  const d = designById(input.design);
  if (!d) throw new Error(`unknown design '${input.design}'`);
  return summarise(input, await runScenario(sc, d, { audit: input.audit }));
}
