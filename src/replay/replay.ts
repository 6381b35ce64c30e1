/**
 * `zaplab replay`: read traces, merge them, replay them through the scenario runner under every design
 * (the same runs, table and cost model as `compare`), and hold the model to the trace:
 * * answers: every traced memslot call must get the same answer (0 or the errno) from the model
 *   configured as the traced host, under the design the traced kernel ran;
 * * observed vs modelled, for that design and per segment (a memslot call and what followed it until the
 *   next): zap-all-fast events, shadow pages zapped and created, leaf SPTEs zapped, faults, unmaps — each
 *   difference listed with its time and the memslot call that opened the segment.
 * Model-only file.
 */
import { compareScenario, type RunAudit, type RunResult } from '../scenario/runner.ts';
import { resolveHostConfig } from '../kvm/host_profile.ts';
import { kvmOptionsFor } from '../scenario/designs.ts';
import { ERRNO } from '../uapi/errno.ts';
import type { Scenario } from '../scenario/schema.ts';
import type { ParseReport, TraceEvent } from './events.ts';
import { EventTable } from './event_table.ts';
import { callText, toScenario, type ObservedKey, type TouchModel } from './to_scenario.ts';

export interface ReplayOptions {
  name?: string;
  host?: Scenario['host'];
  touch?: TouchModel;
  backing?: '4k' | 'thp';
  audit?: RunAudit;
  onDesign?: (i: number, n: number, id: string) => void;
}

export interface Disagreement {
  t: number;
  where: string;
  call: string;
  traced: string;
  model: string;
}

export interface ObservedRow {
  what: string;
  key: ObservedKey;
  observed: number;
  modelled: number;
}

export interface Difference {
  t: number;
  what: string;
  observed: number;
  modelled: number;
  call: string;
}

export interface ReplayResult {
  scenario: string;
  runs: RunResult[];
  skipped: { id: string; why: string }[];
  tracedDesign: string;
  faultSource: string;
  answers: { compared: number; disagreements: Disagreement[] };
  observed: { design: string; rows: ObservedRow[]; differences: Difference[] };
  impossible: string[];
  notes: string[];
  inputs: ParseReport[];
  events: number;
}

/** How each observed kernel count is read from a run's per-step counts. */
const MODELLED: { key: ObservedKey; what: string; from: (c: Record<string, number>) => number }[] = [
  {
    key: 'zapAllFast',
    what: 'zap-all-fast (kvm_mmu_zap_all_fast)',
    from: (c) => c['memslot_zap_all_fast'] ?? 0,
  },
  {
    key: 'shadowZapped',
    what: 'shadow pages zapped (kvm_mmu_prepare_zap_page)',
    from: (c) => c['mmu_shadow_zapped'] ?? 0,
  },
  {
    key: 'shadowCreated',
    what: 'shadow pages created (kvm_mmu_get_page new)',
    from: (c) => c['mmu_cache_miss'] ?? 0,
  },
  {
    key: 'leafZapped',
    what: 'leaf SPTEs zapped (kvm_tdp_mmu_spte_changed)',
    from: (c) => (c['sptes_zapped_4k'] ?? 0) + (c['sptes_zapped_2m'] ?? 0) + (c['sptes_zapped_1g'] ?? 0),
  },
  { key: 'faults', what: 'faults (fault source events)', from: (c) => c['vcpu.pf_fixed'] ?? 0 },
  {
    key: 'unmaps',
    what: 'unmaps of slot memory (kvm_unmap_hva_range, per slot)',
    from: (c) => c['host_swapOut'] ?? 0,
  },
];

const errnoName = (n: number): string =>
  n === 0 ? '0' : (Object.entries(ERRNO).find(([, v]) => v === -n)?.[0] ?? `errno ${-n}`);

/** Replay merged events: mergeStreams' table (no object per event), or events as objects. */
export async function replayEvents(
  events: TraceEvent[] | EventTable,
  inputs: ParseReport[],
  opts: ReplayOptions = {},
): Promise<ReplayResult> {
  const table = events instanceof EventTable ? events : EventTable.fromEvents(events);
  const host = opts.host ?? {};
  const tdp = resolveHostConfig(kvmOptionsFor({ host } as Scenario)).tdp;
  const conv = toScenario(table, {
    name: opts.name ?? 'replay',
    host,
    tdp,
    ...(opts.touch ? { touch: opts.touch } : {}),
    ...(opts.backing ? { backing: opts.backing } : {}),
  });
  const { runs, skipped } = await compareScenario(conv.scenario, {
    audit: opts.audit ?? 'points',
    ...(opts.onDesign ? { onDesign: opts.onDesign } : {}),
  });
  const traced = runs.find((r) => r.design === conv.tracedDesign) ?? runs[0]!;
  const rel = (t: number): string => `t+${((t - conv.t0) / 1e6).toFixed(6)}s`;

  // answers: the runner records a rejected call as "<segment>[0] @<index>: CODE message"
  const modelErr = new Map<number, string>();
  for (const e of traced.errors) {
    const m = /@(\d+): (E[A-Z0-9]+) /.exec(e);
    if (m) modelErr.set(Number(m[1]), m[2]!);
  }
  const disagreements: Disagreement[] = [];
  for (const [i, call] of conv.calls) {
    const model = modelErr.get(i) ?? '0';
    const want = errnoName(call.ret);
    if (model !== want)
      disagreements.push({
        t: call.t,
        where: `${call.src}:${call.line} ${rel(call.t)}`,
        call: callText(call),
        traced: want,
        model,
      });
  }

  // observed vs modelled per segment (steps[0] is the runner's setup)
  const rows: ObservedRow[] = MODELLED.map((m) => ({ what: m.what, key: m.key, observed: 0, modelled: 0 }));
  const differences: Difference[] = [];
  conv.segments.forEach((seg, k) => {
    const counts = traced.steps[k + 1]?.counts ?? {};
    for (const [j, m] of MODELLED.entries()) {
      const o = seg.observed[m.key];
      const v = m.from(counts);
      rows[j]!.observed += o;
      rows[j]!.modelled += v;
      if (o !== v)
        differences.push({
          t: seg.t,
          what: m.what,
          observed: o,
          modelled: v,
          call: `${rel(seg.t)} ${seg.label.replace(/^t\+\S+ /, '')}`,
        });
    }
  });
  return {
    scenario: conv.scenario.name,
    runs,
    skipped,
    tracedDesign: traced.design,
    faultSource: conv.faultSource,
    answers: { compared: conv.calls.size, disagreements },
    observed: { design: traced.design, rows, differences },
    impossible: conv.impossible,
    notes: conv.notes,
    inputs,
    events: table.n,
  };
}
