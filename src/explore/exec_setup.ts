/**
 * The state an explorer execution starts from: the configuration's scenario part built with the scenario
 * runner's own buildKvm/buildVm, the invariant checker watching it, and the setup timeline run through the
 * runner's steps (before any actor takes a step). Built once per program; every run restores it
 * (program.ts). A setup that fails, or already violates an invariant, is a configuration error.
 *
 * Model-only file (no kernel counterpart).
 */
import { Checker } from '../check/checker.ts';
import type { Kvm } from '../index.ts';
import { buildKvm, buildVm } from '../scenario/runner.ts';
import type { DesignSpec } from '../scenario/designs.ts';
import { execStep, newExecCtx, type ExecCtx, type VmCtx } from '../scenario/steps.ts';
import { newVfioCtx } from '../scenario/steps_vfio.ts';
import type { Step } from '../scenario/schema.ts';
import type { ExploreConfig } from './config.ts';
import type { RunOptions } from './execution_types.ts';

export interface ExecutionSetup {
  kvm: Kvm;
  checker: Checker;
  /** the runner's execution context (counters, errors, the design) */
  x: ExecCtx;
  /** the runner's VM context (the VM, its regions and vCPUs) */
  c: VmCtx;
}

/** Build the VM of cfg under design, watched by a checker, and run its setup timeline. */
export function setUpExecution(cfg: ExploreConfig, design: DesignSpec, opts: RunOptions): ExecutionSetup {
  const sc = cfg.scenario;
  const vfio = newVfioCtx();
  const kvm = buildKvm(sc, vfio.units);
  // audits at the points the engine names (every step); the trace ring feeds violation reports, so
  // only recorded runs (replays of a violating schedule) keep one
  const traceDepth = opts.traceSteps ? 4096 : opts.record ? 24 : 0;
  const checker = new Checker(kvm, { audit: 'points', traceDepth, maxViolations: Infinity });
  const x = newExecCtx(kvm, design, checker, vfio, () => Math.random);
  const c = buildVm(x, sc, 0);
  for (const s of sc.timeline) runSetup(x, c, s);
  if (x.errors.length > 0) throw new TypeError(`setup failed: ${x.errors.join('; ')}`);
  if (checker.violations.length > 0) {
    const v = checker.violations[0]!;
    throw new TypeError(`setup already violates ${v.id}: ${v.message}`);
  }
  return { kvm, checker, x, c };
}

function runSetup(x: ExecCtx, c: VmCtx, s: Step): void {
  if ('repeat' in s) {
    for (let k = 0; k < s.repeat; k++) {
      x.iter = k;
      for (const t of s.steps) runSetup(x, c, t);
    }
    return;
  }
  execStep(x, c, s);
}
