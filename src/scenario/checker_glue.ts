/**
 * How the runner reaches the invariant checker (src/check/checker.ts, owned by the checker work). The
 * module is loaded lazily by a computed path so the scenario tools build and run before it lands; a run
 * without it reports the verdict "unchecked", never "ok". Model-only file.
 */
import type { Kvm, Vm, Vcpu, AccessKind, AccessResult } from '../index.ts';

export type AuditLevel = 'off' | 'points' | 'full';

export interface Violation {
  id: string;
  step: string;
  message: string;
  gfn?: number;
  pfn?: number;
  trace: string[];
}

/** The Checker API the runner codes against (the checker issue's contract). */
export interface CheckerLike {
  watch(vm: Vm): void;
  setStep(label: string): void;
  onAccess(vcpu: Vcpu, gpa: number, kind: AccessKind, result: AccessResult, opts?: { private?: boolean }): void;
  auditPoint(name: string): void;
  readonly violations: Violation[];
}

export type CheckerCtor = new (kvm: Kvm, opts?: { audit?: AuditLevel }) => CheckerLike;

let cached: CheckerCtor | null | undefined;

/** The Checker class, or null while src/check/checker.ts has not landed. */
export async function loadChecker(): Promise<CheckerCtor | null> {
  if (cached !== undefined) return cached;
  const path = '../check/checker.ts';
  try {
    const m = (await import(path)) as { Checker?: CheckerCtor };
    cached = typeof m.Checker === 'function' ? m.Checker : null;
  } catch {
    cached = null;
  }
  return cached;
}

/** Stands in when there is no checker: observes nothing, so the verdict is "unchecked". */
export class NoChecker implements CheckerLike {
  readonly violations: Violation[] = [];
  watch(): void {}
  setStep(): void {}
  onAccess(): void {}
  auditPoint(): void {}
}
