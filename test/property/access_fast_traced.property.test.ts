/**
 * Property: with the invariant checker watching, and trace sinks beside it, vcpu.access's fast path
 * (x86/mmu/guest_access_fast.ts) is still the full path, tracepoints included. Two identical models run
 * the same random workload (access_workload.ts: accesses and runs of accesses, memslot changes, dirty
 * logging, host invalidations, SMM, memory types; here also historical bugs switched back on, so that
 * the checker has violations to report). Each model has a Checker ('points' or 'full') and a log that
 * takes every tracepoint the MMU's sink and the TDP engine's recorder (and, in some runs, the engine's
 * object sink) receive, each with the vCPUs' mode and fault counters and the 4K page count at that
 * moment. One model makes its accesses as a user and the scenario runner do (vcpu.access; a run through
 * vcpu.accessRange with a per-access callback that hands each result to checker.onAccess), the fast path
 * taken where it applies; the other makes every access through the full path. After every operation the
 * two logs must be equal (same events, same contents, same order, same state when each fired), and so
 * must the hash of the whole model state with the checker in it (its ring of recent events, its record
 * of what changed since the last audit); at the end the checker's verdicts (every violation with its
 * step, message and trace), its audit counts, every stat and the dirty logs. The fast path must have
 * made first-touch faults with the sinks installed, and some runs must have found violations.
 *
 * Replay a failure: fast-check prints `seed` and `path`; pass them to fc.assert's options.
 */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { AccessKind, AccessResult, BugName, Vcpu } from '../../src/index.ts';
import { Checker, type AuditLevel } from '../../src/check/checker.ts';
import { stateHash } from '../../src/kvm/state_hash.ts';
import { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import type { TdpTraceRecorder } from '../../src/x86/mmu/mmu_trace.ts';
import {
  attempt,
  build,
  dirtyLogs,
  fullAccess,
  hostArb,
  opArb,
  spyFastPath,
  step,
  type Host,
  type Model,
  type Op,
} from './access_workload.ts';

/** The fast path's answers over the whole run (the sinks are installed throughout). */
const seen = { hits: 0, faults: 0, linkFaults: 0, smmFaults: 0, refused: 0, violatingRuns: 0, violations: 0 };
afterAll(spyFastPath(seen));

interface Checked {
  m: Model;
  checker: Checker;
  /** every tracepoint since the last comparison, with the state it fired in */
  log: unknown[];
}

/** The checker, then a log on the MMU's sink and beside the engine's recorder (both compose). */
function watch(m: Model, audit: AuditLevel, objectSink: boolean, mmuLog: boolean): Checked {
  const checker = new Checker(m.kvm, { audit });
  checker.watch(m.vm);
  const log: unknown[] = [];
  const mmu = m.vm.mmu as unknown as X86Mmu;
  const tdp = mmu.tdp;
  const at = (): unknown => [
    m.vcpus.map((v) => [v.mode, v.stats.exits, v.stats.pf_taken, v.stats.pf_fixed, v.stats.pf_fast]),
    tdp.pages[0],
  ];
  // the checker's tap keeps a sink set after it: it runs after the checker's
  // (without it the checker is the MMU's only sink: the fast path hands it the fault's two tracepoints
  // as numbers, mmu_trace.ts#FaultTraceNumbers; its ring, in the state hash, must come out the same)
  if (mmuLog) mmu.trace = (ev) => log.push({ sink: 'mmu', ...ev, at: at() });
  if (objectSink) tdp.trace = (ev) => log.push({ sink: 'tdp', ...ev, at: at() });
  const theirs = tdp.recorder!;
  const mine: TdpTraceRecorder = {
    spteChanged: (...a) => {
      log.push(['spteChanged', ...a, at()]);
      theirs.spteChanged(...a);
    },
    sptesFrozen: (...a) => {
      log.push(['sptesFrozen', ...a, at()]);
      theirs.sptesFrozen(...a);
    },
    event: (ev) => {
      log.push({ sink: 'recorder', ...ev, at: at() });
      theirs.event(ev);
    },
  };
  tdp.recorder = mine;
  return { m, checker, log };
}

type Access = (v: Vcpu, gpa: number, kind: AccessKind) => AccessResult;

/** n accesses from gpa on, 4K apart, each handed to the checker; what each returned. */
function accesses(
  c: Checked,
  vcpu: number,
  gpa: number,
  n: number,
  kind: AccessKind,
  fast: boolean,
): unknown[] {
  const v = c.m.vcpus[vcpu]!;
  const out: unknown[] = [];
  if (fast && n > 1) {
    // the scenario runner's way: one batch, the checker called back after each access
    v.accessRange(gpa, n, kind, {
      onResult: (i, res) => {
        c.checker.onAccess(v, gpa + i * 4096, kind, res);
        out.push({ ...res });
      },
    });
    return out;
  }
  const one: Access = fast ? (w, g, k) => w.access(g, k) : fullAccess;
  for (let i = 0; i < n; i++) {
    const r = attempt(() => one(v, gpa + i * 4096, kind));
    if (typeof r === 'object' && r !== null && 'exit' in r)
      c.checker.onAccess(v, gpa + i * 4096, kind, r as AccessResult);
    out.push(r);
  }
  return out;
}

function same(a: Checked, b: Checked): void {
  expect(a.log).toEqual(b.log);
  a.log.length = 0;
  b.log.length = 0;
  const roots = (c: Checked): unknown[] => [c.m.kvm, c.m.vm, c.m.vcpus, c.checker];
  expect(stateHash(roots(a))).toBe(stateHash(roots(b)));
}

interface Cfg {
  h: Host;
  audit: AuditLevel;
  /** the TDP engine's object sink installed too (kvm_tdp_mmu_spte_changed as an object) */
  objectSink: boolean;
  /** a log on the MMU's sink beside the checker's (else the checker alone takes the fault's numbers) */
  mmuLog: boolean;
  /** KVM_X86_QUIRK_SLOT_ZAP_ALL off from the start: memslot deletes zap precisely (with the bug, unflushed) */
  quirkOff: boolean;
  /** vCPU 1 starts in SMM (the SMM root, as_id 1, maps RAM0's first 4 MiB) */
  smm: boolean;
}

const cfgArb: fc.Arbitrary<Cfg> = fc.record({
  h: fc
    .tuple(hostArb, fc.subarray<BugName>(['precise-zap-no-flush', 'vfio-2019-memtype']))
    // v5.3's memtype bug needs guest MTRRs honoured
    .map(([h, bugs]) => ({
      ...h,
      bugs: h.honorGuestMtrrs ? bugs : bugs.filter((b) => b !== 'vfio-2019-memtype'),
    })),
  audit: fc.constantFrom<AuditLevel>('points', 'full'),
  objectSink: fc.boolean(),
  mmuLog: fc.boolean(),
  quirkOff: fc.boolean(),
  smm: fc.boolean(),
});

/**
 * A run the checker must find violations in, whatever the random ones do: with precise-zap-no-flush,
 * slot 1 is deleted (a precise zap, the quirk being off) without the TLB flush while both vCPUs hold
 * translations of it; RAM0's pages are first-touched and hit through the fast path before and after.
 */
const violating: [Cfg, Op[]] = [
  {
    h: { kernel: '6.18', pml: false, honorGuestMtrrs: false, maxPhyAddr: 46, bugs: ['precise-zap-no-flush'] },
    audit: 'points',
    objectSink: false,
    mmuLog: true,
    quirkOff: true,
    smm: false,
  },
  [
    { op: 'run', vcpu: 0, gpa: 0x0, count: 64, kind: 'write' },
    { op: 'run', vcpu: 0, gpa: 0x40000000, count: 16, kind: 'read' },
    { op: 'run', vcpu: 1, gpa: 0x40000000, count: 16, kind: 'read' },
    { op: 'again', vcpu: 0, kind: 'read' },
    { op: 'slot1', present: false, logDirty: false },
    { op: 'run', vcpu: 1, gpa: 0x0, count: 64, kind: 'read' },
  ],
];

/** One workload on two checked models, the fast path on one, the full path on the other. */
function checkedRun(cfg: Cfg, ops: Op[]): void {
  const a = watch(build(cfg.h), cfg.audit, cfg.objectSink, cfg.mmuLog);
  const b = watch(build(cfg.h), cfg.audit, cfg.objectSink, cfg.mmuLog);
  if (cfg.quirkOff) for (const c of [a, b]) step(c.m, { op: 'quirk', which: 'zapAll' });
  if (cfg.smm) for (const c of [a, b]) step(c.m, { op: 'smm', vcpu: 1, on: true });
  const last: Extract<Op, { op: 'access' | 'run' }>[] = [];
  ops.forEach((op, k) => {
    const o: Op = op.op === 'again' && last[0] ? { ...last[0], vcpu: op.vcpu, kind: op.kind } : op;
    if (o.op === 'again') return;
    a.checker.setStep(`${k}:${o.op}`);
    b.checker.setStep(`${k}:${o.op}`);
    if (o.op === 'access' || o.op === 'run') {
      last[0] = o;
      const n = o.op === 'run' ? o.count : 1;
      const got = accesses(a, o.vcpu, o.gpa, n, o.kind, true);
      const want = accesses(b, o.vcpu, o.gpa, n, o.kind, false);
      expect(got).toEqual(want);
    } else {
      expect(attempt(() => step(a.m, o))).toEqual(attempt(() => step(b.m, o)));
      a.checker.auditPoint(o.op);
      b.checker.auditPoint(o.op);
    }
    same(a, b);
  });
  for (const c of [a, b]) {
    c.checker.setStep('end');
    c.checker.auditPoint('end');
  }
  same(a, b);
  expect(a.checker.violations).toEqual(b.checker.violations);
  expect(a.checker.incrementalAudits).toBe(b.checker.incrementalAudits);
  expect(a.checker.incrementalTlbAudits).toBe(b.checker.incrementalTlbAudits);
  expect(a.m.vm.getStats()).toEqual(b.m.vm.getStats());
  expect(a.m.vm.getModelStats()).toEqual(b.m.vm.getModelStats());
  for (let i = 0; i < 2; i++) expect(a.m.vcpus[i]!.getStats()).toEqual(b.m.vcpus[i]!.getStats());
  expect(dirtyLogs(a.m)).toEqual(dirtyLogs(b.m));
  if (a.checker.violations.length > 0) seen.violatingRuns++;
  seen.violations += a.checker.violations.length;
}

describe('vcpu.access fast path under the invariant checker = the full path', () => {
  it('the crafted run finds violations (the verdicts compared below are not all empty)', () => {
    const before = seen.violations;
    checkedRun(...violating);
    expect(seen.violations - before).toBeGreaterThan(0);
  });

  it('same tracepoints, checker state and verdicts, stats and model state on random workloads (fast-check)', () => {
    fc.assert(fc.property(cfgArb, fc.array(opArb, { minLength: 1, maxLength: 30 }), checkedRun), {
      numRuns: Number(process.env.FC_RUNS ?? 100),
    });
    console.log('fast path under the checker:', seen);
    expect(seen.hits).toBeGreaterThan(1000);
    expect(seen.faults).toBeGreaterThan(1000);
    expect(seen.linkFaults).toBeGreaterThan(10);
    expect(seen.refused).toBeGreaterThan(100);
    expect(seen.smmFaults).toBeGreaterThan(50); // as_id 1 in the tracepoints
  });
});
