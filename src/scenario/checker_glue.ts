/**
 * How the runner reaches the invariant checker (src/check/checker.ts): the checker itself for any audit
 * level but 'off', and for 'off' a stand-in that observes nothing (the run's verdict is then
 * "unchecked", never "ok"). Model-only file.
 */
import { Checker, type AuditLevel, type Violation } from '../check/checker.ts';

export type { AuditLevel, Violation };

/** The part of the Checker API the runner uses. */
export type CheckerLike = Pick<Checker, 'watch' | 'setStep' | 'onAccess' | 'auditPoint' | 'violations'>;

export type CheckerCtor = typeof Checker;

/** The Checker class (kept async for the runner's call site). */
export async function loadChecker(): Promise<CheckerCtor> {
  return Checker;
}

/** Stands in when auditing is off: observes nothing, so the verdict is "unchecked". */
export class NoChecker implements CheckerLike {
  readonly violations: Violation[] = [];
  watch(): void {}
  setStep(): void {}
  onAccess(): void {}
  auditPoint(): void {}
}
