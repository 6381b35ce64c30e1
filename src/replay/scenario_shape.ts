/**
 * What a trace gives the replayed scenario as a whole, before its events are walked in order
 * (to_scenario.ts's Converter): the VMM's memory as regions (every host range a memslot call named,
 * page-aligned, merged where ranges overlap or touch), one VM per traced KVM_CREATE_VM with its traced
 * vCPUs (at least one of each), and the one kind of kernel event the guest accesses are taken from.
 * Model-only file (no kernel counterpart).
 */
import type { Scenario } from '../scenario/schema.ts';
import type { CreateVmEvent, TraceEvent } from './events.ts';
import { EventTable, FAULT_TPS, KINDS, K_FAULT, K_MEMSLOT, V_SIZE, V_UA } from './event_table.ts';
import type { ConvertOptions } from './to_scenario.ts';

const PAGE = 4096;
/** Hva is 47 bits (4-level host paging, types/addr.ts): a traced range past it has no host mapping to give */
const HVA_LIMIT = 2 ** 47;
/** The kernel events guest accesses can come from, most precise first. */
export const FAULT_SOURCES = [
  'kvm_mmu_set_spte',
  'kvm_tdp_mmu_spte_changed',
  'kvm_mmu_spte_requested',
  'kvm_page_fault',
] as const;

/** A host range the scenario declares as a region. */
export interface Extent {
  start: number;
  end: number;
  name: string;
}

/** The host ranges memslot calls named, page-aligned and merged, named hva0, hva1, … */
export function extents(tb: EventTable): Extent[] {
  const r: [number, number][] = [];
  for (let i = 0; i < tb.n; i++) {
    if (tb.kind[i] !== K_MEMSLOT) continue;
    const size = tb.num(i, V_SIZE, 'size');
    const ua = tb.num(i, V_UA, 'ua');
    if (size > 0 && ua > 0 && ua + size <= HVA_LIMIT)
      r.push([Math.floor(ua / PAGE) * PAGE, Math.ceil((ua + size) / PAGE) * PAGE]);
  }
  r.sort((a, b) => a[0] - b[0]);
  const out: Extent[] = [];
  for (const [s, e] of r) {
    const last = out.at(-1);
    if (last && s <= last.end) last.end = Math.max(last.end, e);
    else out.push({ start: s, end: e, name: `hva${out.length}` });
  }
  return out;
}

/** Choose the fault source: the highest-priority event kind present in the trace. */
export function faultSourceOf(tb: EventTable, tdp: boolean): string | null {
  const seen = new Set<string>();
  // a column row's tracepoint is its ref (an index in FAULT_TPS): one bit each, no string per row
  let bits = 0;
  for (let i = 0; i < tb.n; i++) {
    if (tb.kind[i] !== K_FAULT) continue;
    if (tb.isBoxed(i)) seen.add(tb.faultTp(i));
    else bits |= 1 << tb.ref[i]!;
  }
  FAULT_TPS.forEach((tp, k) => {
    if (bits & (1 << k)) seen.add(tp);
  });
  for (const s of FAULT_SOURCES) if (seen.has(s) && (s !== 'kvm_page_fault' || tdp)) return s;
  return null;
}

/** The events of one kind (the rare, boxed ones: VM and vCPU creation). */
function eventsOf<K extends TraceEvent['kind']>(tb: EventTable, kind: K): Extract<TraceEvent, { kind: K }>[] {
  const code = KINDS.indexOf(kind);
  const out: Extract<TraceEvent, { kind: K }>[] = [];
  for (let i = 0; i < tb.n; i++)
    if (tb.kind[i] === code) out.push(tb.event(i) as Extract<TraceEvent, { kind: K }>);
  return out;
}

/** The scenario: one VM per traced KVM_CREATE_VM (at least one), every VM declaring the host regions. */
export function scenarioOf(tb: EventTable, ext: Extent[], opts: ConvertOptions): Scenario {
  const created: CreateVmEvent[] = eventsOf(tb, 'createVm').filter((e) => e.ret === 0);
  const vcpuEvents = eventsOf(tb, 'createVcpu');
  const vmCount = Math.max(1, created.length);
  const regions = [
    ...ext.map((x) => ({
      name: x.name,
      gpa: 0,
      size: x.end - x.start,
      present: false,
      backing: opts.backing ?? '4k',
    })),
    // guest accesses are addressed as offset = gpa from a region declared at gpa 0
    { name: 'gpa', gpa: 0, size: PAGE, present: false },
  ];
  const vms = Array.from({ length: vmCount }, (_, v) => {
    const c = created.find((e) => e.kind === 'createVm' && e.vm === v);
    const vcpus = vcpuEvents.filter((e) => e.ret === 0 && e.vm === v).length;
    return { name: `vm${v}`, type: c?.kind === 'createVm' ? c.type : 0, vcpus: Math.max(1, vcpus), regions };
  });
  return {
    name: opts.name,
    description: 'replayed from a trace',
    ...(opts.host ? { host: opts.host } : {}),
    vms,
    timeline: [],
  } as Scenario;
}
