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
 * are reported and left out. The regions, VMs and fault source come from the trace as a whole
 * (scenario_shape.ts); this file walks its events in order. Model-only file.
 */
import type { Scenario, Step } from '../scenario/schema.ts';
import { uapi } from '../index.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../uapi/kvm_x86.ts';
import type { EnableCapEvent, MemslotEvent, TraceEvent, UnmapEvent } from './events.ts';
import { B_CREATED, B_WRITE, EventTable, KINDS, SOURCES } from './event_table.ts';
import { extents, faultSourceOf, scenarioOf, type Extent } from './scenario_shape.ts';

const PAGE = 4096;
export { FAULT_SOURCES } from './scenario_shape.ts';

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

export type ObservedKey =
  'zapAllFast' | 'shadowZapped' | 'shadowCreated' | 'leafZapped' | 'faults' | 'unmaps';

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

export interface ConvertOptions {
  name: string;
  host: Scenario['host'];
  /** the traced host has TDP (guest accesses are gpas) */
  tdp: boolean;
  touch?: TouchModel;
  backing?: '4k' | 'thp';
}

export function toScenario(ev: TraceEvent[] | EventTable, opts: ConvertOptions): Conversion {
  return new Converter(ev instanceof EventTable ? ev : EventTable.fromEvents(ev), opts).run();
}

class Converter {
  private readonly ext: Extent[];
  private readonly out: Conversion;
  private readonly fs: string | null;
  /** On a shadow-paging host a guest access is a virtual address walked through the guest's own page
   * tables, which no trace carries: faults are counted as observed but not replayed there. */
  private readonly drive: boolean;
  private readonly live: Map<number, Live>[];
  private readonly vcpuOfTid = new Map<number, number>();
  private undecodedCaps = 0;
  private seg: Segment;
  private steps: Step[] = [];

  constructor(
    private readonly tb: EventTable,
    private readonly opts: ConvertOptions,
  ) {
    this.ext = extents(tb);
    const sc = scenarioOf(tb, this.ext, opts);
    this.fs = faultSourceOf(tb, opts.tdp);
    this.drive = opts.tdp;
    let t0 = 0;
    for (let i = 0; i < tb.n; i++) {
      if (Number.isNaN(tb.t[i]!)) continue;
      t0 = tb.t[i]!;
      break;
    }
    const touch = opts.touch
      ? `assumed (--touch ${opts.touch.pages}: a seeded working set of ${opts.touch.pages} pages written in every writable slot before each memslot call and at the end)`
      : 'none in the trace';
    this.out = {
      scenario: sc,
      segments: [],
      calls: new Map(),
      tracedDesign: 'quirk',
      impossible: [],
      notes: [],
      faultSource: this.fs ?? touch,
      t0,
    };
    this.live = sc.vms.map(() => new Map());
    this.seg = { at: -1, t: t0, label: 'before the first memslot call', observed: zero() };
  }

  run(): Conversion {
    for (let i = 0; i < this.tb.n; i++) this.event(i);
    this.touch();
    this.close();
    const { out, opts } = this;
    if (this.undecodedCaps)
      out.notes.push(
        `${this.undecodedCaps} KVM_ENABLE_CAP calls not decoded by the tracer: assumed not to disable KVM_X86_QUIRK_SLOT_ZAP_ALL (the zap-all-fast count checks it)`,
      );
    if (!this.drive && (this.fs || opts.touch))
      out.notes.push(
        'shadow-paging host (tdp off): guest accesses need the guest page tables, which traces do not carry; faults are counted, not replayed',
      );
    if (this.live.length > 1)
      out.notes.push('kernel tracepoints carry no VM id: faults and unmaps are replayed on vm0');
    return out;
  }

  /** Row i: the hot kinds read from their columns, the rare ones as their event objects. */
  private event(i: number): void {
    const o = this.seg.observed;
    const tb = this.tb;
    switch (KINDS[tb.kind[i]!]) {
      case 'memslot':
        return this.memslot(tb.event(i) as MemslotEvent, i);
      case 'enableCap':
        return this.enableCap(tb.event(i) as EnableCapEvent);
      case 'fault':
        return this.fault(i);
      case 'unmap': {
        const e = tb.event(i) as UnmapEvent;
        return this.unmap(e.start, e.end);
      }
      case 'zapAllFast':
        o.zapAllFast++;
        return;
      case 'prepareZapPage':
        o.shadowZapped++;
        return;
      case 'getPage':
        if (tb.flag(i, B_CREATED, 'created')) o.shadowCreated++;
        return;
      case 'leafZap':
        o.leafZapped++;
        return;
      default:
        return;
    }
  }

  private rel(t: number): string {
    return `t+${((t - this.out.t0) / 1e6).toFixed(6)}s`;
  }

  private where(e: TraceEvent): string {
    return `${e.src}:${e.line} ${this.rel(e.t)}`;
  }

  private whereRow(i: number): string {
    const tb = this.tb;
    return `${SOURCES[tb.src[i]!]}:${tb.line[i]} ${this.rel(tb.t[i]!)}`;
  }

  private regionOf(ua: number): { name: string; offset: number } | undefined {
    const x = this.ext.find((x) => ua >= x.start && ua < x.end);
    return x && { name: x.name, offset: ua - x.start };
  }

  /** Close the open segment as one top-level step. */
  private close(): void {
    if (this.steps.length === 0 && this.seg.at === -1) return;
    this.out.scenario.timeline.push({ label: this.seg.label, repeat: 1, steps: this.steps } as Step);
    this.out.segments.push(this.seg);
  }

  /** The --touch working set, written in every writable slot of vm0 (only when the trace has no faults). */
  private touch(): void {
    const t = this.opts.touch;
    if (!t || this.fs || !this.drive) return;
    for (const s of this.live[0]!.values()) {
      if (s.flags & uapi.KVM_MEM_READONLY) continue;
      this.steps.push({
        access: {
          region: 'gpa',
          offset: s.gpa,
          length: s.size,
          workingSet: t.pages,
          kind: 'write',
          vcpus: [0],
        },
      } as Step);
    }
  }

  private memslot(e: MemslotEvent, i: number): void {
    const slots = this.live[e.vm] ?? this.live[0]!;
    this.touch();
    this.close();
    this.seg = { at: i, t: e.t, label: `${this.rel(e.t)} ${callText(e)}`, observed: zero() };
    this.steps = [];
    if (e.size === 0 && !slots.has(e.slot))
      this.out.impossible.push(
        `${this.where(e)}: DELETE of slot ${e.slot}, which no traced call created (replayed: the model answers it)`,
      );
    const r = e.size > 0 && e.ua > 0 ? this.regionOf(e.ua) : undefined;
    if (e.size > 0 && e.ua > 0 && !r)
      this.out.notes.push(
        `${this.where(e)}: hva range 0x${e.ua.toString(16)}+0x${e.size.toString(16)} is past the 47-bit host; replayed with hva 0`,
      );
    const memslot = {
      slot: e.slot & 0xffff,
      as: e.slot >>> 16,
      gpa: e.gpa,
      size: e.size,
      flags: e.flags,
      ...(r ? { region: r.name, offset: r.offset } : {}),
    };
    this.steps.push({ label: `@${i}`, vm: `vm${e.vm}`, memslot } as Step);
    this.out.calls.set(i, e);
    if (e.ret !== 0) return;
    if (e.size === 0) slots.delete(e.slot);
    else slots.set(e.slot, { gpa: e.gpa, size: e.size, ua: e.ua, flags: e.flags });
  }

  /** DISABLE_QUIRKS2 keeps its bits but SLOT_ZAP_ALL, which only tells the design the kernel ran. */
  private enableCap(e: EnableCapEvent): void {
    if (e.cap === undefined) {
      this.undecodedCaps++;
      return;
    }
    if (e.cap !== uapi.KVM_CAP.KVM_CAP_DISABLE_QUIRKS2 || !e.args || e.ret !== 0) return;
    const a0 = e.args[0] ?? 0;
    if (a0 & KVM_X86_QUIRK_SLOT_ZAP_ALL) this.out.tracedDesign = 'quirk-off';
    const rest = a0 & ~KVM_X86_QUIRK_SLOT_ZAP_ALL;
    if (rest) this.steps.push({ vm: `vm${e.vm}`, enableCap: e.cap, args: [rest] } as Step);
  }

  private fault(i: number): void {
    const tb = this.tb;
    const tp = tb.faultTp(i);
    if (tp !== this.fs) return;
    this.seg.observed.faults++;
    const gfn = tb.gfn(i);
    const gpa = gfn * PAGE;
    let covered = false;
    for (const s of this.live[0]!.values()) if (gpa >= s.gpa && gpa < s.gpa + s.size) covered = true;
    if (!covered) {
      this.out.impossible.push(
        `${this.whereRow(i)}: ${tp} on gfn ${hex(gfn)}, which no memslot covers (not replayed)`,
      );
      return;
    }
    if (!this.drive) return;
    const tid = tb.tid[i]!;
    let v = this.vcpuOfTid.get(tid);
    if (v === undefined)
      this.vcpuOfTid.set(tid, (v = this.vcpuOfTid.size % this.out.scenario.vms[0]!.vcpus!));
    const kind = tb.flag(i, B_WRITE, 'write') ? 'write' : 'read';
    // Consecutive faults on consecutive pages by one vCPU are one range pattern: the same accesses in the
    // same order, one step instead of many (guests touch memory linearly far more often than not).
    const last = this.steps.at(-1) as
      | { access?: { offset: number; length: number; kind: string; vcpus: number[]; workingSet?: number } }
      | undefined;
    const a = last?.access;
    if (
      a &&
      a.workingSet === undefined &&
      a.kind === kind &&
      a.vcpus[0] === v &&
      a.offset + a.length === gpa
    ) {
      a.length += PAGE;
      return;
    }
    this.steps.push({ access: { region: 'gpa', offset: gpa, length: PAGE, kind, vcpus: [v] } } as Step);
  }

  /** The pieces of [start, end) that back a present slot of vm0 become host swapOut steps (counted per piece). */
  private unmap(start: number, end: number): void {
    for (const s of this.live[0]!.values()) {
      const a = Math.max(start, s.ua);
      const b = Math.min(end, s.ua + s.size);
      const r = a < b ? this.regionOf(a) : undefined;
      if (!r) continue;
      this.steps.push({
        host: { event: 'swapOut', region: r.name, offset: r.offset, length: b - a },
      } as Step);
      this.seg.observed.unmaps++;
    }
  }
}

function zero(): Record<ObservedKey, number> {
  return { zapAllFast: 0, shadowZapped: 0, shadowCreated: 0, leafZapped: 0, faults: 0, unmaps: 0 };
}
