/**
 * Shared setup for the real-KVM suites: whether /dev/kvm is usable here (and why not), and small
 * helpers. Suites use `describe.skipIf(!REAL_KVM.ok)`; when skipping, the reason is printed once.
 */
import { realKvmAvailability } from '../../src/backends/kvm/libc.ts';
import { KvmError } from '../../src/kvm/kvm_error.ts';

export const REAL_KVM = realKvmAvailability();
export const SKIP_REASON = REAL_KVM.ok ? '' : REAL_KVM.reason;

export function announceSkip(suite: string): void {
  if (!REAL_KVM.ok) console.warn(`[${suite}] skipped: real /dev/kvm not usable: ${SKIP_REASON}`);
}

/** The errno name a call throws, or 'ok'. Non-KvmError exceptions propagate. */
export function errnoOf(f: () => unknown): string {
  try {
    f();
    return 'ok';
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    throw e;
  }
}

/** Only the nonzero entries of a stats delta. */
export function nonzero(o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== 0));
}

export function statDelta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return nonzero(Object.fromEntries(Object.keys(b).map((k) => [k, b[k]! - (a[k] ?? 0)])));
}
