/**
 * The checker's ring of recent trace entries: what a violation carries as "the trace that led there".
 * Hot entries (SPTE changes, runs of SPTEs frozen by handle_removed_pt, guest accesses) are kept as
 * numbers in typed arrays and formatted only when a violation copies the ring; rare ones (tracepoint
 * objects, step markers) as a copy of the object or string.
 *
 * Kernel counterpart: none — the lines read like the kernel's `kvm_tdp_mmu_spte_changed` tracepoint
 * (arch/x86/kvm/mmu/mmutrace.h), one per SPTE, a frozen run included.
 */
import type { AccessKind, AccessResult } from '../kvm/api_types.ts';
import { FROZEN_SPTE_HI, FROZEN_SPTE_LO, spteValue } from '../x86/mmu/spte.ts';
import { PAGES_PER_LEVEL } from '../x86/mmu/tdp_iter.ts';

/**
 * Kinds of ring entries: a string or event object, an SPTE change kept as numbers, a guest access, a run
 * of SPTE changes to FROZEN_SPTE (TdpTraceRecorder.sptesFrozen: one entry, one line per SPTE).
 */
const ENTRY_OBJECT = 0;
const ENTRY_SPTE = 1;
const ENTRY_ACCESS = 2;
const ENTRY_FROZEN_RUN = 3;
/** the MMU's per-fault tracepoints, kept as numbers (two per fault: no object copied per fault) */
const ENTRY_PAGE_FAULT = 4;
const ENTRY_SPTE_REQUESTED = 5;
/** a TDP table's kvm_mmu_get_page (created) or kvm_mmu_prepare_zap_page (TdpTraceRecorder.spPage) */
const ENTRY_SP_PAGE = 6;
/** numbers per ring entry */
const NUMS = 7;

const hexKey = /gfn|pfn|gpa|spte|addr|start|end/i;

/** TraceRing's cache of its last formatted lines (what state hashes leave out: Checker.cacheKeys). */
export const TRACE_RING_CACHE: ReadonlySet<PropertyKey> = new Set(['writes', 'lines', 'linesAt']);

export function formatEvent(ev: Record<string, unknown>): string {
  let s = String(ev.name);
  for (const [k, v] of Object.entries(ev)) {
    if (k === 'name') continue;
    const val =
      typeof v === 'bigint'
        ? '0x' + v.toString(16)
        : typeof v === 'number' && hexKey.test(k) && v >= 0
          ? '0x' + v.toString(16)
          : String(v);
    s += ` ${k}=${val}`;
  }
  return s;
}

export class TraceRing {
  /** `kinds` says how to read slot i, `nums` holds its numbers, `objs`/`strs` its object or strings. */
  private readonly kinds: Uint8Array;
  private readonly nums: Float64Array;
  private readonly objs: unknown[];
  private readonly strs: string[];
  private pos = 0;
  private len = 0;
  /**
   * Entries written so far, and the lines recent() last formatted with the count they were made at: the
   * violations one audit finds all carry the same trace (an audit writes no entry), so the lines are
   * formatted once and copied (vfio-2019 reports hundreds per audit, 64 lines each).
   */
  private writes = 0;
  private lines: string[] = [];
  private linesAt = -1;

  constructor(readonly depth: number) {
    this.kinds = new Uint8Array(depth);
    this.nums = new Float64Array(depth * NUMS);
    this.objs = new Array<unknown>(depth).fill(null);
    this.strs = new Array<string>(depth).fill('');
  }

  /** Claim the next slot for an entry of `kind`; -1 when the ring is disabled (depth 0). */
  private next(kind: number): number {
    if (this.depth === 0) return -1;
    const i = this.pos;
    this.writes++;
    this.kinds[i] = kind;
    this.pos = i + 1 === this.depth ? 0 : i + 1;
    if (this.len < this.depth) this.len++;
    return i;
  }

  /** A numeric entry of `kind`: up to seven numbers (SPTE changes and frozen runs). */
  private put(
    kind: number,
    a: number,
    b: number,
    c: number,
    d: number,
    e: number,
    f: number,
    g: number,
  ): void {
    const i = this.next(kind);
    if (i < 0) return;
    const n = this.nums;
    const o = i * NUMS;
    n[o] = a;
    n[o + 1] = b;
    n[o + 2] = c;
    n[o + 3] = d;
    n[o + 4] = e;
    n[o + 5] = f;
    n[o + 6] = g;
  }

  /**
   * A tracepoint object or a line; a copy, since tracepoint objects may be reused by the emitter. The two
   * a fault fires (kvm_page_fault, kvm_mmu_spte_requested) are kept as their numbers, in the order of
   * their fields (kvm_trace.ts#KvmTraceEvent), and printed as the copy would be.
   */
  line(entry: unknown): void {
    if (typeof entry === 'object' && entry !== null) {
      const name = (entry as { name?: unknown }).name;
      if (name === 'kvm_page_fault') {
        const e = entry as { vcpuId: number; gpa: number; errorCode: number };
        return this.pageFault(e.vcpuId, e.gpa, e.errorCode);
      }
      if (name === 'kvm_mmu_spte_requested') {
        const e = entry as { gfn: number; pfn: number; level: number };
        return this.spteRequested(e.gfn, e.pfn, e.level);
      }
    }
    const i = this.next(ENTRY_OBJECT);
    if (i >= 0) this.objs[i] = typeof entry === 'object' && entry !== null ? { ...entry } : entry;
  }

  /** kvm_page_fault (the MMU sink's FaultTraceNumbers, or its event object). */
  pageFault(vcpuId: number, gpa: number, errorCode: number): void {
    this.put(ENTRY_PAGE_FAULT, vcpuId, gpa, errorCode, 0, 0, 0, 0);
  }

  /** kvm_mmu_spte_requested (the MMU sink's FaultTraceNumbers, or its event object). */
  spteRequested(gfn: number, pfn: number, level: number): void {
    this.put(ENTRY_SPTE_REQUESTED, gfn, pfn, level, 0, 0, 0, 0);
  }

  spteChanged(
    asId: number,
    gfn: number,
    level: number,
    oldLo: number,
    oldHi: number,
    newLo: number,
    newHi: number,
  ) {
    this.put(ENTRY_SPTE, asId, gfn, level, oldLo, oldHi, newLo, newHi);
  }

  /**
   * kvm_mmu_get_page (created) when `get`, else kvm_mmu_prepare_zap_page, of a TDP table: printed as the
   * event object the engine would have built (its fields in their order, unsync false).
   */
  spPage(get: boolean, mmuValidGen: number, gfn: number, role: number, rootCount: number): void {
    this.put(ENTRY_SP_PAGE, get ? 1 : 0, mmuValidGen, gfn, role, rootCount, 0, 0);
  }

  /** `count` SPTEs of `level` from `gfn` on, each going from (oldLo, oldHi) to FROZEN_SPTE. */
  sptesFrozen(asId: number, gfn: number, level: number, count: number, oldLo: number, oldHi: number): void {
    this.put(ENTRY_FROZEN_RUN, asId, gfn, level, count, oldLo, oldHi, 0);
  }

  access(vcpuId: number, gpa: number, kind: AccessKind, result: AccessResult): void {
    const i = this.next(ENTRY_ACCESS);
    if (i < 0) return;
    const n = this.nums;
    const o = i * NUMS;
    n[o] = vcpuId;
    n[o + 1] = gpa;
    this.objs[i] = kind;
    this.strs[i] = result.exit;
    if (result.exit === 'none') {
      n[o + 2] = result.pfn;
      n[o + 3] = result.level;
      n[o + 4] = result.memtype;
    }
  }

  /** Line k of the run of SPTE changes to FROZEN_SPTE in slot i. */
  private formatFrozen(i: number, k: number): string {
    const n = this.nums;
    const o = i * NUMS;
    const level = n[o + 2]!;
    return formatEvent({
      name: 'kvm_tdp_mmu_spte_changed',
      asId: n[o],
      gfn: n[o + 1]! + k * PAGES_PER_LEVEL[level]!,
      level,
      oldSpte: spteValue(n[o + 4]!, n[o + 5]!),
      newSpte: spteValue(FROZEN_SPTE_LO, FROZEN_SPTE_HI),
    });
  }

  /** Slot i (not a frozen run) as the line it stands for. */
  private formatEntry(i: number): string {
    const n = this.nums;
    const o = i * NUMS;
    switch (this.kinds[i]) {
      case ENTRY_SPTE:
        return formatEvent({
          name: 'kvm_tdp_mmu_spte_changed',
          asId: n[o],
          gfn: n[o + 1],
          level: n[o + 2],
          oldSpte: spteValue(n[o + 3]!, n[o + 4]!),
          newSpte: spteValue(n[o + 5]!, n[o + 6]!),
        });
      case ENTRY_PAGE_FAULT:
        return formatEvent({ name: 'kvm_page_fault', vcpuId: n[o], gpa: n[o + 1], errorCode: n[o + 2] });
      case ENTRY_SPTE_REQUESTED:
        return formatEvent({ name: 'kvm_mmu_spte_requested', gfn: n[o], pfn: n[o + 1], level: n[o + 2] });
      case ENTRY_SP_PAGE: {
        const f = {
          mmuValidGen: n[o + 1],
          gfn: n[o + 2],
          role: n[o + 3],
          rootCount: n[o + 4],
          unsync: false,
        };
        return formatEvent(
          n[o] === 1
            ? { name: 'kvm_mmu_get_page', created: true, ...f }
            : { name: 'kvm_mmu_prepare_zap_page', ...f },
        );
      }
      case ENTRY_ACCESS: {
        const exit = this.strs[i]!;
        const r =
          exit === 'none' ? `none pfn=0x${n[o + 2]!.toString(16)} level=${n[o + 3]} mt=${n[o + 4]}` : exit;
        return `access vcpu${n[o]} ${String(this.objs[i])} gpa=0x${n[o + 1]!.toString(16)} → ${r}`;
      }
      default: {
        const e = this.objs[i];
        return typeof e === 'string' ? e : formatEvent(e as Record<string, unknown>);
      }
    }
  }

  /**
   * The last `depth` lines, oldest first, formatted. A frozen run stands for one line per SPTE, so the
   * entries are read newest first until that many lines are out (the ring keeps `depth` entries, each
   * at least one line: it always holds enough).
   */
  recent(): string[] {
    // (a new array each time: callers own what they get)
    if (this.linesAt !== this.writes) {
      this.lines = this.format();
      this.linesAt = this.writes;
    }
    return this.lines.slice();
  }

  /** recent() formatted from the entries (the cache's source). */
  private format(): string[] {
    const out: string[] = [];
    const depth = this.depth;
    for (let k = 0; k < this.len && out.length < depth; k++) {
      const i = (this.pos - 1 - k + depth) % depth;
      if (this.kinds[i] === ENTRY_FROZEN_RUN) {
        for (let c = this.nums[i * NUMS + 3]! - 1; c >= 0 && out.length < depth; c--)
          out.push(this.formatFrozen(i, c));
      } else out.push(this.formatEntry(i));
    }
    return out.reverse();
  }
}
