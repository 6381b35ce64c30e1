/**
 * The invariant checker: watches VMs, checks every guest access against the reference semantics, runs
 * the structural audits at named audit points (or after every step and access), and records each
 * violation with the invariant ID, the runner's step label, the gfn/pfn and the trace that led there.
 * The catalogue of IDs and their kernel sources of truth is docs/invariants.md.
 *
 * Kernel counterpart: none — it plays the part of the kernel's WARN_ON/KVM_BUG_ON/CONFIG_KVM_PROVE_MMU
 * checks, but from outside, comparing the model with what the kernel's code promises.
 * It only reads model state. The one thing it installs is a trace tap on each watched VM's MMU and TDP
 * engine (`trace`), which composes with any sink set before or after it (e.g. the Chrome trace lane).
 */
import type { Kvm, Vm } from '../kvm/kvm_main.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { VmState } from '../kvm/vm_state.ts';
import type { AccessKind, AccessResult } from '../kvm/api_types.ts';
import type { X86Mmu } from '../x86/mmu/mmu.ts';
import type { FaultTraceNumbers, MmuTraceEvent, TdpTraceRecorder } from '../x86/mmu/mmu_trace.ts';
import { auditGfn, auditSptes, type MirrorLeaf, type Report } from './audit_mmu.ts';
import { auditRoots, auditTlbs, auditTlbsAtGfn } from './audit_tlb.ts';
import { checkAccess, GmemFiles, TdxTracker } from './audit_vm.ts';
import { auditShadow } from './audit_shadow.ts';
import { AuditDelta } from './audit_delta.ts';
import { TRACE_RING_CACHE, TraceRing } from './trace_ring.ts';

/**
 * 'off': nothing. 'points': every access against the reference, whole-VM audits at the runner's audit
 * points. 'full': also a whole-VM audit at the end of every step and, after every access, an audit of
 * that gfn's translations (SPTE leafs in every root, reachable TLB entries).
 */
export type AuditLevel = 'off' | 'points' | 'full';

export interface Violation {
  /** invariant ID, e.g. 'INV-ZAP-001' (docs/invariants.md) */
  id: string;
  /** the runner's label of the step during which it was found */
  step: string;
  message: string;
  gfn?: number;
  pfn?: number;
  /** the most recent trace lines (oldest first) when it was found */
  trace: string[];
}

export interface CheckerOptions {
  audit?: AuditLevel;
  /** trace lines kept for violations (default 64) */
  traceDepth?: number;
  /** stop recording after this many violations (default 1000) */
  maxViolations?: number;
  /**
   * Whole-VM audits walk only the page tables whose findings can have changed since the last audit
   * (audit_delta.ts; default true). The findings are the same either way: every finding is reported once.
   */
  incremental?: boolean;
}

interface Watched {
  vm: VmState;
  gmem: GmemFiles;
  tdx: TdxTracker;
  /** what changed since the last whole-VM audit (audit_delta.ts) */
  delta: AuditDelta;
  /** the per-access checks' report sink (made once, not per access) */
  access: Report;
}

type Sink = (ev: { name: string }) => void;

/** Where a tapped object keeps its sinks (a symbol: not state, not enumerated). */
const TAP = Symbol('checker trace tap');
interface Tap {
  mine: Sink;
  other: Sink | undefined;
  both: Sink;
}
type Tapped = { [TAP]: Tap };

/**
 * The one getter/setter pair every tapped object shares. V8 keeps an object's properties fast only while
 * an accessor is added with the pair its map's transition already has: a pair of closures per tap sent
 * every MMU after the first into dictionary mode ("TransitionToDifferentAccessor"), and turning an own
 * data property into an accessor does so always; the guest-access fast path then paid a dictionary
 * lookup (a LoadIC miss handler) for each of its loads from the MMU (~4% of compare vsm-permission-split).
 */
const TAP_ACCESSORS = {
  configurable: true,
  enumerable: true,
  // (alone, ours is the sink itself: one call less per event, and its FaultTraceNumbers are seen)
  get(this: Tapped): Sink {
    const t = this[TAP];
    return t.other === undefined ? t.mine : t.both;
  },
  set(this: Tapped, s: Sink | undefined): void {
    // (ours, as the getter hands it out alone, set back: ours alone again)
    const t = this[TAP];
    if (s !== t.both) t.other = s === t.mine ? undefined : s;
  },
};

/** Tap obj.trace: our sink runs first, then whatever sink is (or later gets) installed there. */
function tapTrace(obj: object, mine: Sink): void {
  const o = obj as Partial<Tapped> & { trace?: Sink };
  const other = o.trace;
  // (the MMUs declare trace without a field; a sink set on one before the watch is carried over and its
  // own property deleted first: reconfiguring it into an accessor would always normalise the object, while
  // deleting the property added last, as such a late set's is, only rolls V8's map back)
  if (Object.prototype.hasOwnProperty.call(o, 'trace')) delete o.trace;
  const t: Tap = {
    mine,
    other,
    both: (ev) => {
      t.mine(ev);
      t.other?.(ev);
    },
  };
  o[TAP] = t;
  Object.defineProperty(o, 'trace', TAP_ACCESSORS);
}

/** Add our recorder to the TDP engine's, keeping any that is already there. */
function addRecorder(tdp: { recorder: TdpTraceRecorder | undefined }, mine: TdpTraceRecorder): void {
  const other = tdp.recorder;
  tdp.recorder =
    other === undefined
      ? mine
      : {
          spteChanged: (...a) => {
            mine.spteChanged(...a);
            other.spteChanged(...a);
          },
          sptesFrozen: (...a) => {
            mine.sptesFrozen(...a);
            other.sptesFrozen(...a);
          },
          event: (ev) => {
            mine.event(ev);
            other.event(ev);
          },
          // (numeric table events only where both take them: else the engine builds the object for both)
          ...(mine.spPage !== undefined && other.spPage !== undefined
            ? {
                spPage: (...a: Parameters<NonNullable<TdpTraceRecorder['spPage']>>) => {
                  mine.spPage!(...a);
                  other.spPage!(...a);
                },
              }
            : {}),
        };
}

/**
 * The TDP engine's tracepoints for one VM: SPTE changes stored as numbers (and noted for the next
 * incremental audit), the rest as (rare) event objects. A class, not an object of closures made per
 * watched VM: the engine's hot paths (a zap's SPTE changes, a teardown's frozen runs) call these through
 * the recorder, and code the JIT optimized with one VM's closures inlined was thrown away when that VM's
 * checker was collected (a 'weak objects' deopt per design of a compare); prototype methods are the same
 * functions for every checker.
 */
class CheckerRecorder implements TdpTraceRecorder {
  constructor(
    private readonly delta: AuditDelta,
    private readonly ring: TraceRing,
  ) {}

  spteChanged(
    asId: number,
    gfn: number,
    level: number,
    oldLo: number,
    oldHi: number,
    newLo: number,
    newHi: number,
  ): void {
    this.delta.noteSpte(gfn, level, oldLo, newLo, newHi);
    this.ring.spteChanged(asId, gfn, level, oldLo, oldHi, newLo, newHi);
  }

  sptesFrozen(asId: number, gfn: number, level: number, count: number, oldLo: number, oldHi: number): void {
    this.delta.noteSpteRun(gfn, level, count);
    this.ring.sptesFrozen(asId, gfn, level, count, oldLo, oldHi);
  }

  event(ev: MmuTraceEvent): void {
    if (ev.name === 'kvm_mmu_split_huge_page' && ev.errno === 0) this.delta.noteSplit(ev.gfn, ev.level);
    this.ring.line(ev);
  }

  spPage(get: boolean, mmuValidGen: number, gfn: number, role: number, rootCount: number): void {
    this.ring.spPage(get, mmuValidGen, gfn, role, rootCount);
  }
}

export class Checker {
  readonly violations: Violation[] = [];
  readonly audit: AuditLevel;
  private readonly maxViolations: number;
  private step = 'setup';
  /** Recent trace entries, formatted only when a violation copies them. */
  private readonly ring: TraceRing;
  private readonly watched: Watched[] = [];
  /** structural findings already reported (a stale SPTE would otherwise be reported at every point) */
  private readonly seen = new Set<string>();
  private auditing = false;
  private readonly incremental: boolean;
  /** Whole-VM audits whose SPTE walk skipped unchanged tables (the rest walked everything). */
  incrementalAudits = 0;
  /** Whole-VM audits whose TLB audit checked only entries over changed gfns (tlb_seen.ts). */
  incrementalTlbAudits = 0;
  private exempt: ((id: string, gfn: number | undefined) => boolean) | undefined = undefined;

  constructor(
    readonly kvm: Kvm,
    opts: CheckerOptions = {},
  ) {
    const audit = opts.audit ?? 'points';
    if (audit !== 'off' && audit !== 'points' && audit !== 'full')
      throw new TypeError(`audit must be 'off', 'points' or 'full' (got '${String(audit)}')`);
    this.audit = audit;
    this.ring = new TraceRing(Math.max(0, Math.floor(opts.traceDepth ?? 64)));
    this.maxViolations = opts.maxViolations ?? 1000;
    this.incremental = opts.incremental ?? true;
  }

  /** Start checking this VM (idempotent). */
  watch(vm: Vm): void {
    if (this.watched.some((w) => w.vm === vm)) return;
    const delta = new AuditDelta();
    const access = this.reporter(vm, false);
    this.watched.push({ vm, gmem: new GmemFiles(), tdx: new TdxTracker(), delta, access });
    if (this.audit === 'off') return;
    const mmu = vm.mmu as Partial<X86Mmu>;
    const ring = this.ring;
    const sink: Sink = (ev) => {
      // every root is about to be invalidated and zapped: the next audit is a whole one (audit_dirty.ts)
      if (ev.name === 'kvm_mmu_zap_all_fast') delta.noteZapAll();
      ring.line(ev);
    };
    // the fault path's two per-fault tracepoints, as the ring keeps them, without their objects (the
    // ring's own methods: one function per method for every checker, not closures made per watch, so
    // the model's code optimized for one VM's checker still fits the next VM's; see CheckerRecorder)
    const faultNumbers: FaultTraceNumbers = ring;
    Object.assign(sink, { faultNumbers });
    tapTrace(mmu, sink);
    if (mmu.tdp !== undefined) addRecorder(mmu.tdp, new CheckerRecorder(delta, ring));
    // Learn the VM's current guest_memfd bindings now, so a later use-after-free is recognised.
    this.watched[this.watched.length - 1]!.gmem.refresh(vm);
  }

  /**
   * The properties, per object, of the checker's caches (what the next audit may skip), which say
   * nothing about the VM or the findings: state hashes leave them out. `into` gets them added.
   */
  cacheKeys(into: Map<object, ReadonlySet<PropertyKey>>): Map<object, ReadonlySet<PropertyKey>> {
    into.set(this.ring, TRACE_RING_CACHE);
    for (const w of this.watched) {
      w.delta.cacheKeys(into);
      w.gmem.cacheKeys(into);
    }
    return into;
  }

  /** The runner names the current step; with audit 'full' the step just finished is audited first. */
  setStep(label: string): void {
    if (this.audit === 'full') this.runAudits('postStep');
    this.step = String(label);
    if (this.audit !== 'off') this.ring.line(`--- step ${this.step}`);
  }

  /** Every guest access, with what it produced. */
  onAccess(
    vcpu: Vcpu,
    gpa: number,
    kind: AccessKind,
    result: AccessResult,
    opts?: { private?: boolean },
  ): void {
    if (this.audit === 'off') return;
    this.ring.access(vcpu.vcpuId, gpa, kind, result);
    let report: Report | undefined;
    for (const w of this.watched) if (w.vm === vcpu.vm) report = w.access;
    checkAccess(vcpu.vm, vcpu, gpa, kind, result, opts, report ?? this.reporter(vcpu.vm, false));
    // 'full': the access can only have changed the translations of its own gfn, so audit those now
    // (the whole-VM audit follows at the end of the step).
    if (this.audit === 'full') {
      const report = this.reporter(vcpu.vm, true, 'postAccess');
      const hwGfn = Math.floor(gpa / 4096);
      const memo = auditGfn(vcpu.vm, report, hwGfn);
      if (memo !== null) auditTlbsAtGfn(vcpu.vm, report, hwGfn, memo);
    }
  }

  /**
   * A named audit point: 'postMemslotUpdate', 'postNotifier', 'postStep', … `exempt` drops the findings
   * a caller knows to be legitimate at this point (neither reported nor remembered as seen, so the same
   * finding is reported where it is not exempt).
   */
  auditPoint(name: string, exempt?: (id: string, gfn: number | undefined) => boolean): void {
    if (this.audit === 'off') return;
    this.exempt = exempt;
    try {
      this.runAudits(String(name));
    } finally {
      this.exempt = undefined;
      // what was set aside must be looked at again: the next audit may not skip its tables
      if (exempt !== undefined) for (const w of this.watched) w.delta.invalidate();
    }
  }

  private runAudits(point: string): void {
    if (this.auditing) return;
    this.auditing = true;
    try {
      for (const w of this.watched) this.auditVm(w, point);
    } finally {
      this.auditing = false;
    }
  }

  private auditVm(w: Watched, point: string): void {
    const report = this.reporter(w.vm, true, point);
    const mirror: MirrorLeaf[] = [];
    auditRoots(w.vm, report);
    const filter = w.delta.begin(w.vm);
    if (filter !== null && this.incremental) this.incrementalAudits++;
    const only = this.incremental ? filter : null;
    // nothing below the roots changed: every leaf finding would be a repeat
    if (only === null || only.clean !== true) auditSptes(w.vm, report, mirror, only, w.delta.leafs);
    auditShadow(w.vm, report);
    const tlb = only === null ? null : w.delta.tlb;
    if (tlb !== null) this.incrementalTlbAudits++;
    auditTlbs(w.vm, report, tlb, tlb === null ? null : w.delta.tlbDelta);
    w.gmem.audit(w.vm, report);
    if (w.vm.info.hasMirroredTdp) w.tdx.audit(w.vm, mirror, report);
  }

  private reporter(vm: VmState, dedupe: boolean, point?: string): Report {
    return (id, message, gfn, pfn) => {
      if (this.violations.length >= this.maxViolations) return;
      if (this.exempt !== undefined && this.exempt(id, gfn)) return;
      if (dedupe) {
        const key = `${vm.id}|${id}|${gfn ?? ''}|${pfn ?? ''}|${message}`;
        if (this.seen.has(key)) return;
        this.seen.add(key);
      }
      const v: Violation = {
        id,
        step: this.step,
        message: `VM ${vm.id}${point ? ` at ${point}` : ''}: ${message}`,
        trace: this.recentTrace(),
      };
      if (gfn !== undefined) v.gfn = gfn;
      if (pfn !== undefined) v.pfn = pfn;
      this.violations.push(v);
    };
  }

  /** The last traceDepth trace lines, oldest first (a frozen run counts one line per SPTE). */
  recentTrace(): string[] {
    return this.ring.recent();
  }
}
