/**
 * One execution of an explorer configuration on the model: builds the VM from the configuration's
 * scenario part (the scenario runner's own buildKvm/buildVm and steps), runs the setup timeline, then
 * runs the actors one atomic step at a time in the order the scheduler chooses, with the invariant
 * checker as the oracle after every step and a full audit at the end.
 *
 * Actors are generators over the model's public API (actors.ts). Where the kernel lets other threads in
 * inside one synchronous model call (a memslot ioctl: kvm_swap_active_memslots' waits, the resched points
 * of the memslot flush), the model calls a documented stepping hook (vm.onMemslotsWait,
 * vm.mmuLockContended / vm.onMmuLockDrop) and this engine runs other actors right there, re-entrantly,
 * until the scheduler resumes the suspended one. Such an actor can only be resumed while it is the
 * innermost suspended one; memslot ioctls serialize on slots_lock, so at most one is ever suspended.
 *
 * The oracle (see `transient`): the checker's audits assume a DELETE/MOVE's INVALID slot has been
 * flushed; between publishing the INVALID copy and the end of its flush the kernel legitimately still
 * maps the slot, so those reports are set aside for the slot's gfns in that window (and an access that
 * reached the old page then is linearized before the DELETE).
 *
 * Model-only file (no kernel counterpart).
 */
import { Checker, type Violation } from '../check/checker.ts';
import { expectedMemtype, referenceAccess, type Expected } from '../check/reference.ts';
import type { AccessKind, AccessResult } from '../kvm/api_types.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { Kvm, Vm } from '../index.ts';
import { buildKvm, buildVm } from '../scenario/runner.ts';
import { designById, type DesignSpec } from '../scenario/designs.ts';
import type { ExecCtx, VmCtx } from '../scenario/steps.ts';
import { execStep } from '../scenario/steps.ts';
import { newVfioCtx } from '../scenario/steps_vfio.ts';
import type { Step } from '../scenario/schema.ts';
import type { Choice, Controller, Ending, Footprint, Program } from './scheduler.ts';
import type { ExploreConfig } from './config.ts';
import { makeActor, GLOBAL, type ActorBody, type Pending } from './actors.ts';
import { snapshot, type Snapshot } from '../kvm/snapshot.ts';
import { stateHash } from '../kvm/state_hash.ts';

/** the checker's label of the step being run: names the last step, not the state */
const STEP_LABEL: ReadonlySet<PropertyKey> = new Set(['step']);
const TLB_WRITES: ReadonlySet<PropertyKey> = new Set(['writes']);

/** One executed step, for race diagrams and replays. */
export interface StepRecord {
  /** actor index (its column) */
  actor: number;
  /** the kernel function the step is in */
  fn: string;
  /** what the step did */
  what: string;
  /** the model's trace lines during the step (replays with traceSteps) */
  trace?: string[];
}

export interface ExploreViolation {
  id: string;
  message: string;
  gfn?: number;
  pfn?: number;
  /** index of the step after which it was found (its row in the race diagram); -1 = the final audit */
  step: number;
  trace: string[];
}

/** Thrown through the model to abandon an execution the scheduler cut. */
class Cut extends Error {}
/** Thrown through the model when the oracle found a violation. */
class Found extends Error {
  constructor(readonly v: ExploreViolation) {
    super(v.id);
  }
}

export interface ActorRt {
  idx: number;
  name: string;
  vcpu: number;
  gen: Generator<Pending, void, void>;
  pending: Pending | null;
  /** suspended inside a stepping hook (resuming returns from the hook) */
  inHook: boolean;
  /** SRCU read section id while inside one (kvm->srcu held across the fault path), 0 outside */
  srcu: number;
  /**
   * Where the actor stands when its pending step is the first of one of its steps (step index, and the
   * page of a multi-page access): its local state is then that position and nothing else. null inside a
   * step (a fault between its halves, a notifier between start and end): state hashing waits there.
   */
  at: string | null;
}

/** What an in-flight DELETE/MOVE is doing, for the oracle. */
export interface SlotWindow {
  lo: number;
  hi: number;
  /**
   * 'unflushed': INVALID published, flush not started; 'zapping-all': kvm_mmu_zap_all_fast stopped at a
   * resched point with invalidated roots not yet zapped; 'dropped': the precise zap stopped at a resched
   * point (what it zapped must be flushed; a TDP walk that yielded inside its SPTE walk has not yet
   * reached [resume, hi), which stays mapped, as in the kernel); 'flushed': the flush is done; 'committing': the new set is
   * published and synchronize_srcu runs before kvm_commit_memory_region (the old slot is out of the
   * active set but not yet freed, so its guest_memfd binding still names it).
   */
  phase: 'unflushed' | 'zapping-all' | 'dropped' | 'flushed' | 'committing';
  /** with 'dropped': the first gfn the precise zap has not reached yet (hi once its walk is done) */
  resume?: number | undefined;
}

/** Findings about gfns a dropped precise zap has not reached yet: the SPTE and TLB entries it will zap. */
const NOT_YET_ZAPPED = new Set(['INV-ZAP-001', 'INV-ZAP-002', 'INV-ACCESS-003']);

/** A guest access between its first and last step, with what the reference said at each step boundary. */
export interface InFlight {
  vcpu: Vcpu;
  gpa: number;
  kind: AccessKind;
  refs: Expected[];
  /** the EPT memtype KVM computed for the gfn at each of those step boundaries */
  mts: number[];
}

/** Could the access have produced `r` had it happened at once when the reference said `e`? */
function matches(e: Expected, r: AccessResult): boolean {
  if (e.kind === 'page') return r.exit === 'none' && r.pfn === e.pfn;
  if (e.kind === 'mmio') return r.exit === 'mmio';
  if (e.kind === 'retry') return r.exit !== 'none';
  // "no host page" only means the access has not allocated it yet
  if (e.kind === 'memory_fault') return r.exit === 'memory_fault' && !e.why.startsWith('no host page');
  return r.exit === 'vm_dead';
}

export interface RunOptions {
  /** record every step (race diagrams, replays) */
  record?: boolean;
  /** give the scheduler a state key where one is sound (state hashing) */
  stateKeys?: boolean;
  /** also keep the checker's trace lines of every step (replay --trace) */
  traceSteps?: boolean;
}

export interface RunOutcome {
  ending: Ending;
  violation?: ExploreViolation;
  steps: number;
  records: StepRecord[];
}

export class ModelProgram implements Program<ExploreViolation> {
  readonly design: DesignSpec;
  /** the outcome of the last run (records when asked for) */
  last: RunOutcome | null = null;

  constructor(
    readonly cfg: ExploreConfig,
    designId: string,
    readonly opts: RunOptions = {},
  ) {
    const d = designById(designId);
    if (d === undefined) throw new TypeError(`unknown design '${designId}'`);
    this.design = d;
  }

  /** the execution state after setup, built once and restored from `base` before every later run */
  private ex: Execution | null = null;
  private base: Snapshot | null = null;

  run(ctl: Controller): { ending: Ending; violation?: ExploreViolation; steps: number } {
    let ex = this.ex;
    if (ex === null || this.base === null) {
      ex = new Execution(this.cfg, this.design, ctl, this.opts);
      // Everything the execution reaches (the Kvm, the checker, the runner's contexts, the engine's own
      // fields) except the constant configuration and the scheduler's controller.
      this.base = snapshot([ex], { opaque: [this.cfg, this.design, this.opts, ctl] });
      this.ex = ex;
    } else {
      this.base.restore();
      ex.ctl = ctl;
    }
    const out = ex.run();
    this.last = out;
    return out;
  }

  /** Put the execution back in the state every run starts from (after setup); a no-op before the first run. */
  reset(): void {
    this.base?.restore();
  }

  /** What one restore copies (the bench reports it). */
  snapshotSize(): ReturnType<Snapshot['size']> | null {
    return this.base?.size() ?? null;
  }
}

/** The state of one execution. */
export class Execution {
  readonly kvm: Kvm;
  readonly vm: Vm;
  readonly c: VmCtx;
  readonly x: ExecCtx;
  readonly checker: Checker;
  readonly actors: ActorRt[] = [];
  /** the actor whose step is running (hooks belong to it) */
  running: ActorRt | null = null;
  /** the actor holding slots_lock across steps (a memslot ioctl in progress) */
  slotsHolder: ActorRt | null = null;
  window: SlotWindow | null = null;
  private readonly inflight = new Set<InFlight>();
  private completed: { gfn: number; result: AccessResult; refs: Expected[]; mts: number[] } | null = null;
  private current = -1;
  private steps = 0;
  private checkedSteps = 0;
  private seenViolations = 0;
  private srcuIds = 0;
  readonly records: StepRecord[] = [];

  constructor(
    readonly cfg: ExploreConfig,
    readonly design: DesignSpec,
    /** the scheduler of the current run (a restored execution gets the next run's) */
    public ctl: Controller,
    readonly opts: RunOptions,
  ) {
    const sc = cfg.scenario;
    const vfio = newVfioCtx();
    this.kvm = buildKvm(sc, vfio.units);
    // audits at the points the engine names (every step); the trace ring feeds violation reports, so
    // only recorded runs (replays of a violating schedule) keep one
    const traceDepth = opts.traceSteps ? 4096 : opts.record ? 24 : 0;
    this.checker = new Checker(this.kvm, { audit: 'points', traceDepth, maxViolations: Infinity });
    this.x = {
      kvm: this.kvm, design, checker: this.checker, derived: {}, seeded: () => Math.random,
      tdpMmu: this.kvm.cfg.tdpMmu, errors: [], label: 'setup', iter: 0, vfio, expectedSeen: 0,
    };
    this.c = buildVm(this.x, sc, 0);
    this.vm = this.c.vm;
    for (const s of sc.timeline) this.runSetup(s);
    if (this.x.errors.length > 0) throw new TypeError(`setup failed: ${this.x.errors.join('; ')}`);
    if (this.checker.violations.length > 0) {
      const v = this.checker.violations[0]!;
      throw new TypeError(`setup already violates ${v.id}: ${v.message}`);
    }
    this.traceSeen = this.checker.recentTrace().length;
  }

  /** The actors, each at its first step (generators are not part of a snapshot: made anew per run). */
  private startActors(): void {
    this.cfg.actors.forEach((a, i) => {
      const body: ActorBody = makeActor(this, a);
      const rt: ActorRt = { idx: i, name: a.name, vcpu: a.vcpu, gen: body, pending: null, inHook: false, srcu: 0, at: null };
      this.actors.push(rt);
    });
  }

  private runSetup(s: Step): void {
    if ('repeat' in s) {
      for (let k = 0; k < s.repeat; k++) {
        this.x.iter = k;
        for (const t of s.steps) this.runSetup(t);
      }
      return;
    }
    execStep(this.x, this.c, s);
  }

  run(): RunOutcome {
    this.startActors();
    try {
      for (const a of this.actors) this.advance(a);
      this.loop(null);
      if (this.actors.some((a) => a.pending !== null)) throw new Error(this.deadlock());
      // the end: every actor is done; the full audit
      this.checker.setStep('end');
      this.checker.auditPoint('end');
      this.oracle(-1);
      return { ending: 'complete', steps: this.steps, records: [...this.records] };
    } catch (e) {
      if (e instanceof Cut) return { ending: 'cut', steps: this.steps, records: [...this.records] };
      if (e instanceof Found) return { ending: 'violation', violation: e.v, steps: this.steps, records: [...this.records] };
      throw e;
    }
  }

  private deadlock(): string {
    const blocked = this.actors.filter((a) => a.pending !== null).map((a) => `${a.name} at ${a.pending!.fn}`);
    return `explorer: no actor can run but ${blocked.join(', ')} are not done (a deadlock in the model)`;
  }

  /** Run the actor's generator to its next pending step (or its end). */
  advance(a: ActorRt): void {
    const prev = this.running;
    this.running = a;
    try {
      const r = a.gen.next();
      a.pending = r.done ? null : r.value;
    } finally {
      this.running = prev;
    }
  }

  /** Actors that can take a step now. */
  private enabled(): Choice[] {
    const out: Choice[] = [];
    const top = this.innermostSuspended();
    for (const a of this.actors) {
      const p = a.pending;
      if (p === null || (a.inHook && a !== top)) continue;
      if (p.enabled !== undefined && !p.enabled()) continue;
      out.push({ actor: a.idx, fp: p.fp() });
    }
    return out;
  }

  private suspendedStack: ActorRt[] = [];
  private innermostSuspended(): ActorRt | null {
    return this.suspendedStack.length ? this.suspendedStack[this.suspendedStack.length - 1]! : null;
  }

  /**
   * The scheduler loop: audit what the last step did, then take the next step, until `until` (an actor
   * suspended in a hook) is chosen again or, at the top level, no actor can run.
   */
  loop(until: ActorRt | null): void {
    for (;;) {
      this.oracle(this.steps - 1);
      const enabled = this.enabled();
      if (enabled.length === 0) {
        if (until !== null) throw new Error(this.deadlock());
        return;
      }
      const i = this.ctl.choose(enabled, this.current, this.opts.stateKeys ? this.stateKey() : undefined);
      if (i < 0) throw new Cut();
      const a = this.actors[enabled[i]!.actor]!;
      this.record(a, a.pending!);
      this.current = a.idx;
      this.steps++;
      if (a === until) return;
      this.advance(a);
    }
  }

  private record(a: ActorRt, p: Pending): void {
    if (this.opts.record) this.records.push({ actor: a.idx, fn: p.fn, what: p.what });
    const label = `${a.name}: ${p.fn}`;
    this.checker.setStep(label);
  }

  /**
   * The state key at a choice point, or undefined where the state is not all in the object graph: an
   * actor suspended inside a model call (its JS stack), inside a step (a fault's pfn and sequence
   * snapshot live in the step's closure), an access in flight or a memslot ioctl holding slots_lock.
   * The key hashes the model and the checker (all but the label of the last step) with the oracle's
   * state, and names each actor's position.
   */
  private stateKey(): string | undefined {
    if (this.suspendedStack.length > 0 || this.slotsHolder !== null || this.inflight.size > 0 || this.window !== null) return undefined;
    let pos = '';
    for (const a of this.actors) {
      if (a.pending !== null && a.at === null) return undefined;
      pos += `${a.pending === null ? '-' : a.at}|`;
    }
    return pos + stateHash([this.kvm, this.c, this.checker, this.completed], { skip: this.hashSkips() });
  }

  private skips: Map<object, ReadonlySet<PropertyKey>> | null = null;
  /**
   * What state keys leave out: the label of the last step, the checker's caches, and each TLB's write
   * count (which the checker's cache reads; the TLB's contents are hashed).
   */
  private hashSkips(): Map<object, ReadonlySet<PropertyKey>> {
    if (this.skips !== null) return this.skips;
    const skip = this.checker.cacheKeys(new Map([[this.checker, STEP_LABEL]]));
    for (const v of this.vm.vcpus) skip.set(v.tlb, TLB_WRITES);
    return (this.skips = skip);
  }

  /** Rename the step being executed once its outcome is known (e.g. a TLB hit rather than a fault). */
  note(fn: string, what: string): void {
    if (!this.opts.record) return;
    const r = this.records[this.records.length - 1];
    if (r !== undefined) {
      r.fn = fn;
      r.what = what;
    }
  }

  /**
   * Suspend the running actor inside a stepping hook: other actors run until the scheduler picks this
   * one again (its `pending` describes what resuming does).
   */
  suspend(p: Pending): void {
    const a = this.running!;
    // the step that led here ends here: say where it stopped
    if (this.opts.record)
      for (let i = this.records.length - 1; i >= 0; i--)
        if (this.records[i]!.actor === a.idx) {
          this.records[i]!.what += ` ⟶ ${p.fn}`;
          break;
        }
    a.pending = p;
    a.inHook = true;
    this.suspendedStack.push(a);
    try {
      this.loop(a);
    } finally {
      this.suspendedStack.pop();
      a.inHook = false;
      this.running = a;
    }
  }

  /**
   * A resched point of the memslot flush: is mmu_lock contended? A two-way choice of the running actor
   * (go on holding the lock, or yield); both dependent with everything.
   */
  contended(what: string): boolean {
    const a = this.running!;
    // Nobody else can run: rwlock_needbreak is false and a yield would hand the lock straight back (it
    // would only move the flush owed before it), so the walk keeps the lock without a choice.
    if (!this.enabled().some((c) => c.actor !== a.idx)) return false;
    this.oracle(this.steps - 1);
    const n = this.actors.length;
    const i = this.ctl.choose([{ actor: a.idx, fp: GLOBAL }, { actor: n + a.idx, fp: GLOBAL }], this.current);
    if (i < 0) throw new Cut();
    this.steps++;
    // the yield is its own pseudo-actor, so running another actor next is not a second preemption
    this.current = i === 0 ? a.idx : n + a.idx;
    if (this.opts.record) this.records.push({ actor: a.idx, fn: 'cond_resched_rwlock_write', what: i === 0 ? `${what}: not contended, keeps mmu_lock` : `${what}: contended: flush if owed, drop mmu_lock` });
    this.checker.setStep(`${a.name}: ${i === 0 ? 'keeps' : 'drops'} mmu_lock`);
    return i === 1;
  }

  private traceSeen: number;
  /** The trace lines since the last step boundary go to the last step's record. */
  private takeTrace(): void {
    const all = this.checker.recentTrace();
    const r = this.records[this.records.length - 1];
    if (r !== undefined) r.trace = all.slice(this.traceSeen).filter((l) => !l.startsWith('--- step'));
    this.traceSeen = all.length;
  }

  /** An access starts: what the reference says before its first step. */
  accessBegin(vcpu: Vcpu, gpa: number, kind: AccessKind): InFlight {
    const f: InFlight = { vcpu, gpa, kind, refs: [referenceAccess(this.vm, vcpu, gpa, kind)], mts: [memtypeNow(vcpu, gpa)] };
    this.inflight.add(f);
    return f;
  }

  /** An access completes: the checker judges it against the state now; the oracle also accepts any
   * result the reference allowed at an earlier step boundary of the access (it may linearize there). */
  accessEnd(f: InFlight, result: AccessResult): void {
    this.inflight.delete(f);
    this.completed = { gfn: Math.floor(f.gpa / 4096), result, refs: f.refs, mts: f.mts };
    this.checker.onAccess(f.vcpu, f.gpa, f.kind, result);
  }

  /** An attempt that ended in a re-execution: the next attempt is a new access. */
  dropAccess(f: InFlight): void {
    this.inflight.delete(f);
  }

  /** A new SRCU read section id. */
  srcuEnter(a: ActorRt): void {
    a.srcu = ++this.srcuIds;
  }

  /** Check what the checker found since the last look; a report that is not transient ends the run. */
  oracle(step: number): void {
    if (this.steps > this.checkedSteps) {
      this.checkedSteps = this.steps;
      // No structural audit while an INVALID slot is published and not yet flushed (its SPTEs and TLB
      // entries are legitimately there), while zap-all has invalidated roots left to zap, or while the
      // old slot awaits kvm_commit_memory_region (its guest_memfd binding is unbound there): the checker
      // reports a finding once per run, so a report set aside now would hide the same finding later,
      // where it is real. Accesses are still checked.
      const ph = this.window?.phase;
      // Where the precise zap dropped mmu_lock inside its walk, the gfns it has not reached are exempt.
      if (ph === 'dropped') this.checker.auditPoint(`step ${this.steps}`, (id, gfn) => this.notYetZapped(id, gfn));
      else if (ph !== 'unflushed' && ph !== 'zapping-all' && ph !== 'committing') this.checker.auditPoint(`step ${this.steps}`);
      for (const f of this.inflight) {
        f.refs.push(referenceAccess(this.vm, f.vcpu, f.gpa, f.kind));
        f.mts.push(memtypeNow(f.vcpu, f.gpa));
      }
      if (this.opts.traceSteps) this.takeTrace();
    }
    const vs = this.checker.violations;
    for (; this.seenViolations < vs.length; this.seenViolations++) {
      const v = vs[this.seenViolations]!;
      if (this.transient(v)) continue;
      throw new Found(toExploreViolation(v, step));
    }
  }

  /**
   * Access reports the kernel's contract allows: a result the reference allowed at any step boundary the
   * access spanned (it linearizes there), and, while a DELETE/MOVE has published its INVALID copy and
   * not yet finished zapping, an access that reached the slot's old page through a live SPTE or TLB entry
   * (INV-ACCESS-003: it linearizes before the ioctl).
   */
  private transient(v: Violation): boolean {
    const done = this.completed;
    if (done !== null && v.id.startsWith('INV-ACCESS-') && v.gfn === done.gfn) {
      // the memtype too: right if KVM computed it at one of the access's step boundaries
      if (v.id === 'INV-ACCESS-005') return done.result.exit === 'none' && done.mts.includes(done.result.memtype);
      if (done.refs.some((e) => matches(e, done.result))) return true;
    }
    // A stale memtype sitting in an SPTE harms nothing until an access uses it, and every access is
    // judged by its own memtype (INV-ACCESS-005 above): the 2019 VFIO failure was a guest using a memtype
    // from before its CR0.CD toggle after a memslot update, not the stale SPTE's existence (a v5.3 kernel
    // holds one from the toggle until the next zap under every design).
    if (v.id === 'INV-MEMTYPE-001') return true;
    const w = this.window;
    if (w === null || (w.phase !== 'unflushed' && w.phase !== 'zapping-all')) return this.notYetZapped(v.id, v.gfn);
    return v.id === 'INV-ACCESS-003' && v.gfn !== undefined && v.gfn >= w.lo && v.gfn < w.hi;
  }

  /** A finding about a gfn the precise zap, stopped at a resched point, has not reached yet. */
  private notYetZapped(id: string, gfn: number | undefined): boolean {
    const w = this.window;
    if (w === null || w.phase !== 'dropped' || gfn === undefined || !NOT_YET_ZAPPED.has(id)) return false;
    return gfn >= (w.resume ?? w.hi) && gfn < w.hi;
  }

}

/** The EPT memtype (bits 5:3) KVM computes now for the gfn of gpa (checkAccess compares the access's). */
function memtypeNow(vcpu: Vcpu, gpa: number): number {
  return vcpu.vm.cfg.tdp ? expectedMemtype(vcpu, Math.floor(gpa / 4096)) : -1;
}

function toExploreViolation(v: Violation, step: number): ExploreViolation {
  const out: ExploreViolation = { id: v.id, message: v.message, step, trace: v.trace };
  if (v.gfn !== undefined) out.gfn = v.gfn;
  if (v.pfn !== undefined) out.pfn = v.pfn;
  return out;
}

export type { Footprint };

/** Re-run one schedule (actor indexes in order; pseudo-actor n+i = actor i yielding mmu_lock). */
export function replaySchedule(cfg: ExploreConfig, designId: string, schedule: readonly number[], opts: RunOptions = {}): RunOutcome {
  const prog = new ModelProgram(cfg, designId, { record: true, ...opts });
  let k = 0;
  prog.run({
    choose(enabled) {
      if (k >= schedule.length) return -1;
      const want = schedule[k++]!;
      const i = enabled.findIndex((e) => e.actor === want);
      if (i < 0) throw new TypeError(`schedule step ${k}: actor ${want} cannot run there (runnable: ${enabled.map((e) => e.actor).join(', ')})`);
      return i;
    },
  });
  return prog.last!;
}
