/**
 * The scenario runner: builds the Kvm and VMs a scenario declares under one design, runs its timeline
 * (repeats unrolled), routes every guest access through the checker, calls audit points, and collects
 * counts — kernel stats, model counters and the runner's derived counters — per top-level step and in
 * total, plus the modelled cost. `compare` runs it once per allowed design. Deterministic: the only
 * randomness is the scenario's seeded generator. Tools never mutate model state except through the
 * public API; the trace sink is an observer. Model-only file.
 */
import * as zaplab from '../index.ts';
import { Kvm, KvmError, uapi, auditSpteMemtypes, type Vcpu } from '../index.ts';
import type { Scenario, Step } from './schema.ts';
import { designsFor, kvmOptionsFor, vmTypeNumber, type DesignSpec } from './designs.ts';
import { loadChecker, NoChecker, type AuditLevel, type CheckerLike, type Violation } from './checker_glue.ts';
import {
  createRegion,
  execStep,
  newExecCtx,
  type Derived,
  type ExecCtx,
  type RegionState,
  type VmCtx,
} from './steps.ts';
import { newVfioCtx } from './steps_vfio.ts';
import { countSteps, STEP_KIND_NAMES } from './step_kinds.ts';
import { modelCost, type Modelled } from '../metrics/cost.ts';
import type { TraceRecorder } from '../report/chrome_trace.ts';
import type { KvmTraceSink } from '../kvm/kvm_trace.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../uapi/kvm_x86.ts';
import { resolveHostConfig } from '../kvm/host_profile.ts';
import { prng } from './prng.ts';
import { CountsReader, type Counts } from './counts.ts';

export type { Counts };
export type Verdict = 'ok' | 'violations' | 'unchecked' | 'missing-features' | 'error';
/** 'steps' = the checker's 'points' plus a 'postStep' audit after every leaf step (the `check` default). */
export type RunAudit = AuditLevel | 'steps';

export interface StepResult {
  label: string;
  counts: Counts;
}

export interface RunResult {
  scenario: string;
  design: string;
  /** the audit level the verdict was reached at */
  audit: RunAudit;
  describe: string;
  verdict: Verdict;
  violations: Violation[];
  /** model features the scenario requires that this build lacks */
  missing: string[];
  /** ioctls the model rejected (a scenario bug, or a design that forbids the call) */
  errors: string[];
  vcpus: number;
  steps: StepResult[];
  totals: Counts;
  modelled: Modelled;
}

export interface RunOptions {
  audit?: RunAudit;
  trace?: TraceRecorder;
  /** called after each top-level step with (done, total) */
  onProgress?: (done: number, total: number) => void;
  /** called after each leaf step (repeats unrolled) with (done, total): progress inside a design */
  onStep?: (done: number, total: number) => void;
  /** the checker's whole-VM audits walk only what changed since the last one (default true; same verdicts) */
  incrementalAudits?: boolean;
}

/**
 * Model features a scenario may `require`, probed on the public API (not on file names), so a scenario
 * written before its feature landed reports exactly what is missing.
 */
const FEATURES: Record<string, () => boolean> = {
  memslots: () => true,
  'guest-memfd': () => 'createGuestMemfd' in zaplab.Vm.prototype,
  'memory-attributes': () => 'setMemoryAttributes' in zaplab.Vm.prototype,
  tdx: () => 'tdxAccept' in zaplab.Vcpu.prototype && vmTypeWorks(5, 'seamcalls'),
  snp: () => 'snpPvalidate' in zaplab.Vcpu.prototype && vmTypeWorks(4),
  vfio: () => 'vfio' in zaplab.Kvm.prototype && 'createDevice' in zaplab.Vm.prototype,
  'cr0-cd': () => 'setCr0' in zaplab.Vcpu.prototype,
  mtrr: () => 'setMtrrVar' in zaplab.Vcpu.prototype && 'setMtrrDefType' in zaplab.Vcpu.prototype,
  pat: () => 'setMsr' in zaplab.Vcpu.prototype,
  'memtype-audit': () => typeof zaplab.auditSpteMemtypes === 'function',
  bugs: () => Array.isArray((zaplab as Record<string, unknown>)['BUG_NAMES']),
};

/** Can the default host create a VM of this type, and (optionally) does it count `stat`? */
function vmTypeWorks(type: number, stat?: string): boolean {
  try {
    const vm = new Kvm().createVm(type);
    return stat === undefined || stat in vm.getModelStats();
  } catch {
    return false;
  }
}

/**
 * What the scenario needs that this build, or the host the scenario describes, lacks: its `requires`
 * probed on the public API, plus 'guest-memfd' when a region is private but the host is a kernel built
 * without guest_memfd (`guestMemfd: false` in host.overrides).
 */
export function missingFeatures(sc: Scenario): string[] {
  const missing = (sc.requires ?? []).filter((f) => !(FEATURES[f]?.() ?? false));
  const needsGmem = sc.vms.some((v) => v.regions.some((r) => r.private === true));
  if (needsGmem && !missing.includes('guest-memfd') && !hostHasGuestMemfd(sc)) missing.push('guest-memfd');
  return missing;
}

function hostHasGuestMemfd(sc: Scenario): boolean {
  try {
    return resolveHostConfig(kvmOptionsFor(sc)).guestMemfd;
  } catch {
    return true; // a bad host option is reported when the run builds the host
  }
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** The host: profile, kernel and memtype options, bug switches; IOMMU units and snoop scope for VFIO. */
export function buildKvm(sc: Scenario, units: Map<string, zaplab.IommuUnit>): Kvm {
  const h = sc.host ?? {};
  const kvm = new Kvm(kvmOptionsFor(sc));
  if (h.snoopScope !== undefined || h.iommus?.length) {
    if (h.snoopScope !== undefined) kvm.vfio.snoopScope = h.snoopScope;
    units.set('default', kvm.vfio.units[0]!);
    for (const u of h.iommus ?? [])
      units.set(u.name, kvm.vfio.addIommu({ snoopControl: u.snoopControl ?? true }));
  }
  return kvm;
}

/** Does the scenario touch guest memory types (so the end-of-run memtype audit means something)? */
function usesMemtypes(sc: Scenario): boolean {
  const has = (list: Step[]): boolean =>
    list.some((s) =>
      'repeat' in s ? has(s.steps) : 'cr0' in s || 'mtrr' in s || 'pat' in s || 'kvmVfio' in s,
    );
  return sc.host?.honorGuestMtrrs === true || has(sc.timeline);
}

export function buildVm(x: ExecCtx, sc: Scenario, i: number): VmCtx {
  const decl = sc.vms[i]!;
  const vm = x.kvm.createVm(vmTypeNumber(decl.type), { zapDesign: x.design.zapDesign });
  if (x.design.disableSlotZapAll) {
    vm.enableCap({ cap: uapi.KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  }
  x.checker.watch(vm);
  const regions = new Map<string, RegionState>();
  let nextSlot = 0;
  const used = new Set(decl.regions.filter((r) => r.slot !== undefined).map((r) => `${r.as ?? 0}:${r.slot}`));
  for (const r of decl.regions) {
    let slotId = r.slot;
    while (slotId === undefined) {
      const key = `${r.as ?? 0}:${nextSlot}`;
      if (!used.has(key)) {
        slotId = nextSlot;
        used.add(key);
      }
      nextSlot++;
    }
    const hva = x.kvm.host.mmap(r.size, { backing: r.backing ?? '4k' });
    const gmemFd = r.private ? vm.createGuestMemfd({ size: r.size }) : -1;
    regions.set(r.name, {
      decl: r,
      slotId,
      hva,
      gmemFd,
      gpa: r.gpa,
      logDirty: r.logDirty ?? false,
      readonly: r.readonly ?? false,
      present: false,
    });
  }
  const vcpus: Vcpu[] = [];
  // A scenario's guest keeps executing between its steps: once a vCPU has run, remote flushes IPI it.
  for (let v = 0; v < (decl.vcpus ?? 1); v++) vcpus.push(Object.assign(vm.createVcpu(v), { running: true }));
  const c: VmCtx = { name: decl.name ?? `vm${i}`, vm, vcpus, regions };
  for (const r of regions.values()) if (r.decl.present !== false) createRegion(x, c, r);
  return c;
}

function stepLabel(s: Step, i: number): string {
  if (s.label) return s.label;
  const kind = Object.keys(s).find((k) => (STEP_KIND_NAMES as readonly string[]).includes(k))!;
  const v = (s as Record<string, unknown>)[kind];
  return `#${i + 1} ${kind}${typeof v === 'string' || typeof v === 'number' ? ' ' + String(v) : ''}`;
}

/** Run a scenario under one design. */
export async function runScenario(
  sc: Scenario,
  design: DesignSpec,
  opts: RunOptions = {},
): Promise<RunResult> {
  const missing = missingFeatures(sc);
  const audit = opts.audit ?? 'points';
  const Checker = audit === 'off' ? null : await loadChecker();
  const vfio = newVfioCtx();
  const vcpus = sc.vms.reduce((n, v) => n + (v.vcpus ?? 1), 0);
  const failed = (why: string): RunResult => ({
    scenario: sc.name,
    design: design.id,
    audit,
    describe: design.describe,
    missing,
    errors: [why],
    verdict: missing.length ? 'missing-features' : 'error',
    violations: [],
    vcpus,
    steps: [],
    totals: {},
    modelled: { totalNs: 0, rows: [] },
  });
  let kvm: Kvm;
  try {
    kvm = buildKvm(sc, vfio.units);
  } catch (e) {
    // a host configuration the model refuses (e.g. cdToggleZap without honorGuestMtrrs, an unknown bug)
    if (!(e instanceof TypeError || e instanceof RangeError || e instanceof KvmError)) throw e;
    return failed(`host: ${e.message}`);
  }
  const checker: CheckerLike = Checker
    ? new Checker(kvm, {
        audit: audit === 'steps' ? 'points' : audit,
        incremental: opts.incrementalAudits ?? true,
      })
    : new NoChecker();
  const seeded = (key: string): (() => number) => prng((sc.seed ?? 1) ^ hash(key));
  const x = newExecCtx(kvm, design, checker, vfio, seeded, new Map());
  const base = {
    scenario: sc.name,
    design: design.id,
    audit,
    describe: design.describe,
    missing,
    errors: x.errors,
  };
  checker.setStep('setup');
  let vms: VmCtx[];
  try {
    vms = sc.vms.map((_, i) => buildVm(x, sc, i));
  } catch (e) {
    // a call the model rejects (KvmError) or a layout its host cannot map (mmap's RangeError)
    if (e instanceof KvmError) return failed(`setup: ${e.code} ${e.message}`);
    if (e instanceof RangeError || e instanceof TypeError) return failed(`setup: ${e.message}`);
    throw e;
  }
  const marks = vms.map((c) => {
    if (!opts.trace) return () => {};
    const lane = opts.trace.lane(`${design.id} / ${c.name}`);
    // The MMU's tracepoint sink (one branch when unset): an observer, it changes no state.
    (c.vm.mmu as unknown as { trace: KvmTraceSink | undefined }).trace = lane.sink;
    return lane.mark;
  });
  const steps: StepResult[] = [];
  const leafTotal = opts.onStep ? countSteps(sc.timeline) : 0;
  let leafDone = 0;
  const reader = new CountsReader();
  let before = reader.read(vms, x.derived);
  const setup = before;
  // a repeat's inner steps' own labels, made once per repeat step rather than once per iteration
  const inner = new Map<Step, string[]>();
  const innerLabel = (s: Extract<Step, { repeat: unknown }>, j: number): string => {
    let l = inner.get(s);
    if (l === undefined) inner.set(s, (l = s.steps.map((t, i) => stepLabel(t, i))));
    return l[j]!;
  };
  const run = (s: Step, label: string): void => {
    if ('repeat' in s) {
      const outer = x.iter;
      for (let k = 0; k < s.repeat; k++) {
        x.iter = k;
        for (let j = 0; j < s.steps.length; j++) run(s.steps[j]!, `${label}[${k}] ${innerLabel(s, j)}`);
      }
      x.iter = outer;
      return;
    }
    const c = s.vm === undefined ? vms[0]! : vms.find((v) => v.name === s.vm)!;
    x.label = label;
    checker.setStep(label);
    x.expect = s.expect;
    x.expectedSeen = 0;
    execStep(x, c, s);
    if (s.expect !== undefined && x.expectedSeen === 0)
      x.errors.push(`${label}: expected ${s.expect}, but no call of the step failed with it`);
    x.expect = undefined;
    if (audit === 'steps') checker.auditPoint('postStep');
    opts.onStep?.(++leafDone, leafTotal);
  };
  sc.timeline.forEach((s, i) => {
    const label = stepLabel(s, i);
    for (const m of marks) m(label);
    run(s, label);
    const now = reader.read(vms, x.derived);
    steps.push({ label, counts: reader.diff(before, now) });
    before = now;
    opts.onProgress?.(i + 1, sc.timeline.length);
  });
  checker.setStep('end');
  checker.auditPoint('end');
  const totals = reader.counts(reader.read(vms, x.derived));
  if (usesMemtypes(sc)) Object.assign(totals, memtypeTotals(vms));
  steps.unshift({ label: 'setup', counts: reader.diff(null, setup) });
  // A call that failed without the step expecting it fails the run: the scenario did not do what it says.
  const verdict: Verdict = missing.length
    ? 'missing-features'
    : checker.violations.length
      ? 'violations'
      : x.errors.length
        ? 'error'
        : Checker
          ? 'ok'
          : 'unchecked';
  return {
    ...base,
    verdict,
    violations: [...checker.violations],
    vcpus,
    steps,
    totals,
    modelled: modelCost(totals, vcpus),
  };
}

/**
 * SPTEs whose EPT memory type differs from what KVM computes now (auditSpteMemtypes, a read-only walk),
 * at the end of the run: `memtype_stale_sptes` (memtype or IPAT differs), `memtype_stale_type` (the
 * memtype itself differs). Gauges, not counters, so they appear in totals only.
 */
function memtypeTotals(vms: VmCtx[]): Counts {
  const out: Counts = { memtype_stale_sptes: 0, memtype_stale_type: 0 };
  for (const c of vms) {
    const a = auditSpteMemtypes(c.vm);
    out['memtype_stale_sptes']! += a.stale;
    out['memtype_stale_type']! += a.staleType;
  }
  return out;
}

/** Run under every design the scenario's VM types allow. */
export async function compareScenario(
  sc: Scenario,
  opts: RunOptions & { onDesign?: (i: number, n: number, id: string) => void } = {},
): Promise<{ runs: RunResult[]; skipped: { id: string; why: string }[] }> {
  const { allowed, skipped } = designsFor(sc);
  const runs: RunResult[] = [];
  for (const [i, d] of allowed.entries()) {
    opts.onDesign?.(i, allowed.length, d.id);
    runs.push(await runScenario(sc, d, opts));
  }
  return { runs, skipped };
}
