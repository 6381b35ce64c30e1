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
 * The VM an execution starts from (the configuration's scenario part, its setup timeline) is built by
 * exec_setup.ts; the program the scheduler runs (build once, restore per run) is program.ts; what the oracle accepts
 * from the checker is oracle.ts (`transient`): the checker's audits assume a DELETE/MOVE's INVALID slot has been
 * flushed; between publishing the INVALID copy and the end of its flush the kernel legitimately still
 * maps the slot, so those reports are set aside for the slot's gfns in that window (and an access that
 * reached the old page then is linearized before the DELETE).
 *
 * Model-only file (no kernel counterpart).
 */
import type { Checker } from '../check/checker.ts';
import { referenceAccess } from '../check/reference.ts';
import type { AccessKind, AccessResult } from '../kvm/api_types.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { Kvm, Vm } from '../index.ts';
import type { DesignSpec } from '../scenario/designs.ts';
import type { Derived, ExecCtx, VmCtx } from '../scenario/steps.ts';
import type { Choice, Controller } from './scheduler.ts';
import type { ActorRt, ExploreViolation, RunOptions, RunOutcome, StepRecord } from './execution_types.ts';
import type { ExploreConfig } from './config.ts';
import { makeActor, GLOBAL, type ActorBody, type Pending } from './actors.ts';
import { stateHash } from '../kvm/state_hash.ts';
import { setUpExecution } from './exec_setup.ts';
import {
  memtypeNow,
  notYetZapped,
  toExploreViolation,
  transient,
  type Completed,
  type InFlight,
  type SlotWindow,
} from './oracle.ts';

/** the checker's label of the step being run: names the last step, not the state */
const STEP_LABEL: ReadonlySet<PropertyKey> = new Set(['step']);
const TLB_WRITES: ReadonlySet<PropertyKey> = new Set(['writes']);

/** The audit point names 'step n', made once each (a string per audit otherwise). */
const STEP_NAMES: string[] = [];
const stepName = (n: number): string => (STEP_NAMES[n] ??= `step ${n}`);

/** Thrown through the model to abandon an execution the scheduler cut. */
class Cut extends Error {}
/** Thrown through the model when the oracle found a violation. */
class Found extends Error {
  constructor(readonly v: ExploreViolation) {
    super(v.id);
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
  private completed: Completed | null = null;
  private current = -1;
  private steps = 0;
  private checkedSteps = 0;
  private seenViolations = 0;
  private srcuIds = 0;
  readonly records: StepRecord[] = [];
  /** the run keeps step records (race diagrams, replays); otherwise their strings are never built */
  readonly recording: boolean;
  /**
   * The runner's derived counters after setup. Each run counts into a copy (run()): counting into this
   * record would add keys a restore must delete again, and V8 turns an object that loses properties into
   * a slow dictionary, for every later run's counting and every restore.
   */
  private readonly setupDerived: Derived;

  constructor(
    readonly cfg: ExploreConfig,
    readonly design: DesignSpec,
    /** the scheduler of the current run (a restored execution gets the next run's) */
    public ctl: Controller,
    readonly opts: RunOptions,
  ) {
    this.recording = opts.record === true;
    const s = setUpExecution(cfg, design, opts);
    this.kvm = s.kvm;
    this.checker = s.checker;
    this.x = s.x;
    this.c = s.c;
    this.vm = s.c.vm;
    this.traceSeen = this.checker.recentTrace().length;
    this.setupDerived = this.x.derived;
  }

  /** The actors, each at its first step (generators are not part of a snapshot: made anew per run). */
  private startActors(): void {
    this.cfg.actors.forEach((a, i) => {
      const body: ActorBody = makeActor(this, a, i);
      const rt: ActorRt = {
        idx: i,
        name: a.name,
        vcpu: a.vcpu,
        gen: body,
        pending: null,
        inHook: false,
        srcu: 0,
        at: null,
      };
      this.actors.push(rt);
    });
  }

  run(): RunOutcome {
    // (Object.assign onto {} follows the shared map transitions from the empty object; a spread copy gets
    // a map of its own, and adding keys to it then costs microseconds each run)
    this.x.derived = Object.assign({}, this.setupDerived);
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
      if (e instanceof Found)
        return { ending: 'violation', violation: e.v, steps: this.steps, records: [...this.records] };
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
    if (this.recording) this.records.push({ actor: a.idx, fn: p.fn, what: p.what() });
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
    if (
      this.suspendedStack.length > 0 ||
      this.slotsHolder !== null ||
      this.inflight.size > 0 ||
      this.window !== null
    )
      return undefined;
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

  /**
   * Rename the step being executed once its outcome is known (e.g. a TLB hit rather than a fault); only a
   * recorded run keeps it (callers build the strings only when `recording`).
   */
  note(fn: string, what: string): void {
    if (!this.recording) return;
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
    if (this.recording)
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
    const i = this.ctl.choose(
      [
        { actor: a.idx, fp: GLOBAL },
        { actor: n + a.idx, fp: GLOBAL },
      ],
      this.current,
    );
    if (i < 0) throw new Cut();
    this.steps++;
    // the yield is its own pseudo-actor, so running another actor next is not a second preemption
    this.current = i === 0 ? a.idx : n + a.idx;
    if (this.recording)
      this.records.push({
        actor: a.idx,
        fn: 'cond_resched_rwlock_write',
        what:
          i === 0
            ? `${what}: not contended, keeps mmu_lock`
            : `${what}: contended: flush if owed, drop mmu_lock`,
      });
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
    const f: InFlight = {
      vcpu,
      gpa,
      kind,
      refs: [referenceAccess(this.vm, vcpu, gpa, kind)],
      mts: [memtypeNow(vcpu, gpa)],
    };
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
      if (ph === 'dropped')
        this.checker.auditPoint(stepName(this.steps), (id, gfn) => notYetZapped(this.window, id, gfn));
      else if (ph !== 'unflushed' && ph !== 'zapping-all' && ph !== 'committing')
        this.checker.auditPoint(stepName(this.steps));
      for (const f of this.inflight) {
        f.refs.push(referenceAccess(this.vm, f.vcpu, f.gpa, f.kind));
        f.mts.push(memtypeNow(f.vcpu, f.gpa));
      }
      if (this.opts.traceSteps) this.takeTrace();
    }
    const vs = this.checker.violations;
    for (; this.seenViolations < vs.length; this.seenViolations++) {
      const v = vs[this.seenViolations]!;
      if (transient(v, this.completed, this.window)) continue;
      throw new Found(toExploreViolation(v, step));
    }
  }
}
