/**
 * The sweep result document (`zaplab sweep --json`), schema "zaplab-sweep/1", documented in
 * docs/sweep.md. One document carries what is needed to compare it with a later run: the zaplab
 * version, the scenario file's SHA-256, the host options, the grid, the cost model's constants with their
 * sources, and one entry per (grid point, design). Model-only file.
 */
import type { Verdict, RunAudit } from '../scenario/runner.ts';
import type { GridPoint, ParamAxis } from './grid.ts';
import type { CostConstant } from '../metrics/cost.ts';

export const SWEEP_SCHEMA = 'zaplab-sweep/1';

export interface SweepPoint {
  /** index of the grid point (axes' product, first axis slowest) */
  point: number;
  params: GridPoint;
  design: string;
  verdict: Verdict;
  violations: number;
  /** distinct invariant IDs violated (docs/invariants.md) */
  invariants: string[];
  errors: string[];
  missing: string[];
  vcpus: number;
  /** modelled nanoseconds (docs/cost-model.md), never a measurement */
  modelledNs: number;
  modelled: { item: string; count: number; totalNs: number }[];
  /** leaf SPTEs zapped (4K + 2M + 1G) */
  sptesZapped: number;
  refaults: number;
  /** TLB-flush IPIs sent (one per vCPU per remote flush) */
  tlbFlushIpis: number;
  remoteTlbFlushes: number;
  /** every non-zero counter of the run (kernel stat names, model counters, `vcpu.*` sums) */
  totals: Record<string, number>;
}

export interface SweepFailure {
  point: number;
  params: GridPoint;
  design: string;
  error: string;
}

export interface SweepResult {
  schema: typeof SWEEP_SCHEMA;
  zaplab: string;
  scenario: { name: string; description: string; file: string; sha256: string; seed: number };
  /** the scenario's host section as Kvm options, and the host configuration they resolve to */
  host: { options: Record<string, unknown>; resolved: Record<string, unknown> };
  axes: ParamAxis[];
  /** designs run (in DESIGNS order); per-point designs the VM types rule out are in `skipped` */
  designs: string[];
  skipped: { point: number; design: string; why: string }[];
  audit: RunAudit;
  costModel: { label: string; doc: string; constants: Record<string, CostConstant> };
  /** sorted by point, then design */
  points: SweepPoint[];
  /** tasks that threw (a point the model cannot run at all); sorted like points */
  failures: SweepFailure[];
  /** the only fields that differ between two runs of the same sweep */
  run: { workers: number; elapsedMs: number };
}
