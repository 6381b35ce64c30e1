/**
 * Shared setup for the real-KVM suites: whether /dev/kvm is usable here (and why not), and small
 * helpers. Suites use `describe.skipIf(!REAL_KVM.ok)`; when skipping, the reason is printed once.
 */
import { existsSync } from 'node:fs';
import { realKvmAvailability } from '../../src/backends/kvm/libc.ts';
import { KvmError } from '../../src/kvm/kvm_error.ts';

/** ZAPLAB_SKIP_REAL_KVM=1 forces the skip path (to check it, or to keep a CI run model-only). */
export const REAL_KVM: { ok: true } | { ok: false; reason: string } = process.env['ZAPLAB_SKIP_REAL_KVM']
  ? { ok: false, reason: 'ZAPLAB_SKIP_REAL_KVM is set' }
  : realKvmAvailability();
export const SKIP_REASON = REAL_KVM.ok ? '' : REAL_KVM.reason;

/**
 * The exact capability values, errnos and stat deltas asserted by the host-specific suites are those of
 * the development machines' host (kvm_pvm, shadow MMU, DEFAULT VM only; real-kvm-host.md). On any
 * other /dev/kvm those suites skip; the generic ones (leaks, host memory, model-vs-kernel) still run.
 */
export const PVM_HOST = REAL_KVM.ok && existsSync('/sys/module/kvm_pvm');

/** Print why a suite is skipped (once, at import). `pvmOnly` suites also need the kvm_pvm host. */
export function announceSkip(suite: string, pvmOnly = false): void {
  if (!REAL_KVM.ok) console.warn(`[${suite}] skipped: real /dev/kvm not usable: ${SKIP_REASON}`);
  else if (pvmOnly && !PVM_HOST) {
    console.warn(
      `[${suite}] skipped: its exact values are those of the kvm_pvm development host (see real-kvm-host.md)`,
    );
  }
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
