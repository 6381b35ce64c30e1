/**
 * The ABI cases on the model configured as the host and on the real kernel, side by side: the engine of
 * `zaplab conformance` and of the live comparison test. The model is `new Kvm(hostProfile().modelOptions)`,
 * i.e. exactly what the real-KVM backend says this host is, so a disagreement is either a model bug or a
 * host difference the profile does not describe.
 */
import { Kvm } from '../kvm/kvm_main.ts';
import type { RealKvm } from '../backends/kvm/real_kvm.ts';
import { resolveHostConfig, type KvmOptions } from '../kvm/host_profile.ts';
import {
  type AbiKvm,
  type AbiVm,
  CASE_BUF_SIZE,
  type CaseRun,
  type CaseVerdict,
  compareRuns,
  type Disagreement,
  runCases,
} from './abi_runner.ts';
import type { AbiCase } from './case_types.ts';
import type { RecordedHost } from './recording.ts';

export interface AbiComparison {
  compared: number;
  diffs: Disagreement[];
  /** one row per case: agree / disagree / n/a (with the reason) */
  cases: CaseVerdict[];
  model: CaseRun[];
  kernel: CaseRun[];
  /** mean wall time per ioctl, ns (VM setup excluded; JS argument handling included on both sides) */
  nsPerCall: { model: number; kernel: number };
  /** median wall time of one single-ioctl step (the R1many bulk steps excluded), ns */
  nsMedianCall: { model: number; kernel: number };
}

/**
 * Run `cases` on the model described by `opts` (one Kvm, one case buffer). A case whose needs the
 * configured host lacks comes back not applicable, judged on the model's own configuration.
 */
export function runModel(opts: KvmOptions, cases: readonly AbiCase[]): CaseRun[] {
  const kvm = new Kvm(opts);
  const base = kvm.host.mmap(CASE_BUF_SIZE);
  return runCases(kvm as unknown as AbiKvm, base, cases, resolveHostConfig(opts), {
    generation: (vm) => (vm as unknown as { memslotsGeneration(as: number): number }).memslotsGeneration(0),
  });
}

/**
 * Run `cases` on the real kernel behind `real` (each case's VM, and a second one if used, closed after);
 * applicability is judged on what the kernel itself reports (its probe), not on the model's options.
 */
export function runKernel(real: RealKvm, cases: readonly AbiCase[]): CaseRun[] {
  const base = real.host.mmap(CASE_BUF_SIZE);
  try {
    return runCases(real as unknown as AbiKvm, base, cases, real.hostProfile(), {
      closeVm: (vm: AbiVm) => (vm as unknown as { close(): void }).close(),
    });
  } finally {
    real.host.munmap(base);
  }
}

export function recordedHost(real: RealKvm): RecordedHost {
  const { modelOptions, derivation: _d, ...profile } = real.hostProfile();
  return {
    kernel: profile.kernel,
    pvm: profile.pvm,
    tdpMmu: profile.tdpMmu,
    modelOptions: { ...modelOptions },
    profile,
  };
}

const nsPer = (runs: readonly CaseRun[]): number =>
  runs.reduce((n, r) => n + r.ns, 0) /
  Math.max(
    1,
    runs.reduce((n, r) => n + r.ioctls, 0),
  );

function nsMedian(runs: readonly CaseRun[]): number {
  const t = runs
    .flatMap((r) => r.results.filter((c) => !c.call.startsWith('R1 ×')).map((c) => c.ns ?? 0))
    .sort((a, b) => a - b);
  return t.length ? t[t.length >> 1]! : 0;
}

export function compareLive(real: RealKvm, cases: readonly AbiCase[]): AbiComparison {
  const model = runModel(real.hostProfile().modelOptions, cases);
  const kernel = runKernel(real, cases);
  const { compared, diffs, cases: verdicts } = compareRuns(model, kernel);
  return {
    compared,
    diffs,
    cases: verdicts,
    model,
    kernel,
    nsPerCall: { model: nsPer(model), kernel: nsPer(kernel) },
    nsMedianCall: { model: nsMedian(model), kernel: nsMedian(kernel) },
  };
}

/** One row per case: its verdict, the calls compared, and for n/a the reason. */
export function formatCaseVerdicts(cases: readonly CaseVerdict[]): string {
  const w = Math.max(4, ...cases.map((c) => c.case.length));
  const mark = { agree: 'agree', disagree: 'DISAGREE', 'n/a': 'n/a' } as const;
  const lines = cases.map((c) => {
    const what =
      c.status === 'n/a'
        ? `not applicable on this host: ${c.reason}`
        : `${c.calls} call${c.calls === 1 ? '' : 's'}`;
    return `${c.case.padEnd(w)}  ${mark[c.status].padEnd(8)}  ${what}`;
  });
  return [`${'case'.padEnd(w)}  verdict   calls`, ...lines].join('\n') + '\n';
}

/** The disagreements as a side-by-side text table (empty string when there are none). */
export function formatDisagreements(diffs: readonly Disagreement[]): string {
  if (diffs.length === 0) return '';
  const rows = [
    ['case', '#', 'call', 'model', 'kernel'],
    ...diffs.map((d) => [d.case, String(d.index), d.call, d.model, d.kernel]),
  ];
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(w[i]!))
      .join(' │ ')
      .trimEnd();
  return (
    [line(rows[0]!), w.map((n) => '─'.repeat(n)).join('─┼─'), ...rows.slice(1).map(line)].join('\n') + '\n'
  );
}
