/**
 * Turns a merged trace into a scenario the scenario runner executes under every design (one copy of the
 * MMU, driven through the public API, priced by the same cost model):
 * * the VMM's memory becomes regions: every host range a memslot call named, page-aligned and merged
 *   where ranges overlap or touch, mmapped by the runner; memslot calls become raw `memslot` steps with
 *   the traced slot, flags, gpa, size and the hva's offset in its region;
 * * guest accesses come from one kind of kernel event (kvm_mmu_set_spte, else kvm_tdp_mmu_spte_changed,
 *   else kvm_mmu_spte_requested, else kvm_page_fault on a TDP host, where its address is a gpa), or, with
 *   none, from the `--touch N` working-set model (assumed, not traced): before each memslot call and at
 *   the end, a seeded working set of N pages is written in every writable slot;
 * * kvm_unmap_hva_range becomes a host `swapOut` of the pieces that back a present memslot (the VMM's own
 *   heap is invalidated too and is not guest memory); the VMA stays, as after MADV_DONTNEED or reclaim;
 * * KVM_ENABLE_CAP(DISABLE_QUIRKS2) keeps its bits except SLOT_ZAP_ALL, which is what the designs vary:
 *   the call only tells which design the traced kernel ran.
 * Each memslot call opens a segment (one top-level step), so per-step counts line up with the kernel
 * events of the same segment. Impossible events (a DELETE of a slot never created, a fault no slot covers)
 * are reported and left out. Model-only file.
 */
import type { Scenario, Step } from '../scenario/schema.ts';
import { uapi } from '../index.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../uapi/kvm_x86.ts';
import type { FaultEvent, MemslotEvent, TraceEvent } from './events.ts';

const PAGE = 4096;
export const FAULT_SOURCES = ['kvm_mmu_set_spte', 'kvm_tdp_mmu_spte_changed', 'kvm_mmu_spte_requested', 'kvm_page_fault'] as const;

export interface TouchModel {
  /** pages written per writable slot before each memslot call and at the end */
  pages: number;
}

export interface Segment {
  /** index into the merged events of the call that opened it (-1: before the first call) */
  at: number;
  t: number;
  label: string;
  observed: Record<ObservedKey, number>;
}

export type ObservedKey = 'zapAllFast' | 'shadowZapped' | 'shadowCreated' | 'leafZapped' | 'faults' | 'unmaps';

export interface Conversion {
  scenario: Scenario;
  segments: Segment[];
  /** merged index → the memslot event, for answer comparison */
  calls: Map<number, MemslotEvent>;
  tracedDesign: 'quirk' | 'quirk-off';
  faultSource: string;
  impossible: string[];
  notes: string[];
  t0: number;
}

interface Extent {
  start: number;
  end: number;
  name: string;
}

function extents(ev: TraceEvent[]): Extent[] {
  const r = ev
    .filter((e): e is MemslotEvent => e.kind === 'memslot' && e.size > 0 && e.ua > 0)
    .map((e) => [Math.floor(e.ua / PAGE) * PAGE, Math.ceil((e.ua + e.size) / PAGE) * PAGE] as [number, number])
    .sort((a, b) => a[0] - b[0]);
  const out: Extent[] = [];
  for (const [s, e] of r) {
    const last = out.at(-1);
    if (last && s <= last.end) last.end = Math.max(last.end, e);
    else out.push({ start: s, end: e, name: `hva${out.length}` });
  }
  return out;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

export function callText(e: MemslotEvent): string {
  const what = e.size === 0 ? 'DELETE' : 'SET';
  return `${what} slot ${e.slot} gpa ${hex(e.gpa)} size ${hex(e.size)}${e.flags ? ` flags ${hex(e.flags)}` : ''}${e.implied ? ' (implied)' : ''}`;
}

interface Live {
  gpa: number;
  size: number;
  ua: number;
  flags: number;
}

/** Choose the fault source: the highest-priority event kind present in the trace. */
function faultSourceOf(ev: TraceEvent[], tdp: boolean): string | null {
  const seen = new Set(ev.filter((e): e is FaultEvent => e.kind === 'fault').map((e) => e.tp));
  for (const s of FAULT_SOURCES) if (seen.has(s) && (s !== 'kvm_page_fault' || tdp)) return s;
  return null;
}

export function toScenario(
  ev: TraceEvent[],
  opts: { name: string; host: Scenario['host']; tdp: boolean; touch?: TouchModel; backing?: '4k' | 'thp' },
): Conversion {
  const ext = extents(ev);
  const regionOf = (ua: number): { name: string; offset: number } | undefined => {
    const x = ext.find((x) => ua >= x.start && ua < x.end);
    return x && { name: x.name, offset: ua - x.start };
  };
  const vmCount = Math.max(1, ev.filter((e) => e.kind === 'createVm' && e.ret === 0).length);
  const vcpus = Array.from({ length: vmCount }, (_, v) => Math.max(1, ev.filter((e) => e.kind === 'createVcpu' && e.ret === 0 && e.vm === v).length));
  const regions = [...ext.map((x) => ({ name: x.name, gpa: 0, size: x.end - x.start, present: false, backing: opts.backing ?? '4k' })),
    // guest accesses are addressed as offset = gpa from a region declared at gpa 0
    { name: 'gpa', gpa: 0, size: PAGE, present: false }];
  const types = Array.from({ length: vmCount }, (_, v) => ev.find((e) => e.kind === 'createVm' && e.vm === v && e.ret === 0));
  const sc: Scenario = {
    name: opts.name,
    description: 'replayed from a trace',
    ...(opts.host ? { host: opts.host } : {}),
    vms: types.map((c, v) => ({ name: `vm${v}`, type: c && c.kind === 'createVm' ? c.type : 0, vcpus: vcpus[v]!, regions })),
    timeline: [],
  } as Scenario;
  // On a shadow-paging host a guest access is a virtual address walked through the guest's own page
  // tables, which no trace carries: faults are counted as observed but not replayed there.
  const fs = faultSourceOf(ev, opts.tdp);
  const drive = opts.tdp;
  const out: Conversion = {
    scenario: sc, segments: [], calls: new Map(), tracedDesign: 'quirk', impossible: [], notes: [],
    faultSource: fs ?? (opts.touch ? `assumed (--touch ${opts.touch.pages}: a seeded working set of ${opts.touch.pages} pages written in every writable slot before each memslot call and at the end)` : 'none in the trace'),
    t0: ev.find((e) => !Number.isNaN(e.t))?.t ?? 0,
  };
  const live: Map<number, Live>[] = Array.from({ length: vmCount }, () => new Map());
  const vcpuOfTid = new Map<number, number>();
  let undecodedCaps = 0;
  let seg: Segment = { at: -1, t: out.t0, label: 'before the first memslot call', observed: zero() };
  let steps: Step[] = [];
  const close = (): void => {
    if (steps.length === 0 && seg.at === -1) return;
    sc.timeline.push({ label: seg.label, repeat: 1, steps } as Step);
    out.segments.push(seg);
  };
  const touch = (): void => {
    if (!opts.touch || fs || !drive) return;
    for (const s of live[0]!.values()) {
      if (s.flags & uapi.KVM_MEM_READONLY) continue;
      steps.push({ access: { region: 'gpa', offset: s.gpa, length: s.size, workingSet: opts.touch.pages, kind: 'write', vcpus: [0] } } as Step);
    }
  };
  const where = (e: TraceEvent): string => `${e.src}:${e.line} t+${((e.t - out.t0) / 1e6).toFixed(6)}s`;
  for (let i = 0; i < ev.length; i++) {
    const e = ev[i]!;
    const vm = 'vm' in e ? e.vm : 0;
    const slots = live[vm] ?? live[0]!;
    switch (e.kind) {
      case 'memslot': {
        touch();
        close();
        seg = { at: i, t: e.t, label: `t+${((e.t - out.t0) / 1e6).toFixed(6)}s ${callText(e)}`, observed: zero() };
        steps = [];
        if (e.size === 0 && !slots.has(e.slot))
          out.impossible.push(`${where(e)}: DELETE of slot ${e.slot}, which no traced call created (replayed: the model answers it)`);
        const r = e.size > 0 && e.ua > 0 ? regionOf(e.ua) : undefined;
        steps.push({
          label: `@${i}`, vm: `vm${vm}`,
          memslot: { slot: e.slot & 0xffff, as: e.slot >>> 16, gpa: e.gpa, size: e.size, flags: e.flags, ...(r ? { region: r.name, offset: r.offset } : {}) },
        } as Step);
        out.calls.set(i, e);
        if (e.ret === 0) {
          if (e.size === 0) slots.delete(e.slot);
          else slots.set(e.slot, { gpa: e.gpa, size: e.size, ua: e.ua, flags: e.flags });
        }
        break;
      }
      case 'enableCap': {
        if (e.cap === uapi.KVM_CAP.KVM_CAP_DISABLE_QUIRKS2 && e.args && e.ret === 0) {
          const a0 = e.args[0] ?? 0;
          if (a0 & KVM_X86_QUIRK_SLOT_ZAP_ALL) out.tracedDesign = 'quirk-off';
          const rest = a0 & ~KVM_X86_QUIRK_SLOT_ZAP_ALL;
          if (rest) steps.push({ vm: `vm${vm}`, enableCap: e.cap, args: [rest] } as Step);
        } else if (e.cap === undefined) undecodedCaps++;
        break;
      }
      case 'fault': {
        if (e.tp !== fs) break;
        seg.observed.faults++;
        const gpa = e.gfn * PAGE;
        const covered = [...live[0]!.values()].some((s) => gpa >= s.gpa && gpa < s.gpa + s.size);
        if (!covered) {
          out.impossible.push(`${where(e)}: ${e.tp} on gfn ${hex(e.gfn)}, which no memslot covers (not replayed)`);
          break;
        }
        if (!drive) break;
        let v = vcpuOfTid.get(e.tid);
        if (v === undefined) vcpuOfTid.set(e.tid, (v = vcpuOfTid.size % vcpus[0]!));
        steps.push({ access: { region: 'gpa', offset: gpa, length: PAGE, kind: e.write ? 'write' : 'read', vcpus: [v] } } as Step);
        break;
      }
      case 'unmap': {
        let hit = false;
        for (const s of live[0]!.values()) {
          const a = Math.max(e.start, s.ua);
          const b = Math.min(e.end, s.ua + s.size);
          if (a >= b) continue;
          const r = regionOf(a)!;
          steps.push({ host: { event: 'swapOut', region: r.name, offset: r.offset, length: b - a } } as Step);
          hit = true;
        }
        if (hit) seg.observed.unmaps++;
        break;
      }
      case 'zapAllFast':
        seg.observed.zapAllFast++;
        break;
      case 'prepareZapPage':
        seg.observed.shadowZapped++;
        break;
      case 'getPage':
        if (e.created) seg.observed.shadowCreated++;
        break;
      case 'leafZap':
        seg.observed.leafZapped++;
        break;
      default:
        break;
    }
  }
  touch();
  close();
  if (undecodedCaps)
    out.notes.push(`${undecodedCaps} KVM_ENABLE_CAP calls not decoded by the tracer: assumed not to disable KVM_X86_QUIRK_SLOT_ZAP_ALL (the zap-all-fast count checks it)`);
  if (!drive && (fs || opts.touch))
    out.notes.push('shadow-paging host (tdp off): guest accesses need the guest page tables, which traces do not carry; faults are counted, not replayed');
  if (vmCount > 1) out.notes.push('kernel tracepoints carry no VM id: faults and unmaps are replayed on vm0');
  return out;
}

function zero(): Record<ObservedKey, number> {
  return { zapAllFast: 0, shadowZapped: 0, shadowCreated: 0, leafZapped: 0, faults: 0, unmaps: 0 };
}
