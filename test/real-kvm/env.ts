/**
 * Shared setup for the real-KVM suites: whether /dev/kvm is usable here (and why not), and small
 * helpers. Suites use `describe.skipIf(!REAL_KVM.ok)`; when skipping, the reason is printed once.
 */
import { existsSync } from 'node:fs';
import { realKvmAvailability } from '../../src/backends/kvm/libc.ts';
import type { RealHostProfile } from '../../src/backends/kvm/host_probe.ts';
import { KvmError } from '../../src/kvm/kvm_error.ts';

/** ZAPLAB_SKIP_REAL_KVM=1 forces the skip path (to check it, or to keep a CI run model-only). */
export const REAL_KVM: { ok: true } | { ok: false; reason: string } = process.env['ZAPLAB_SKIP_REAL_KVM']
  ? { ok: false, reason: 'ZAPLAB_SKIP_REAL_KVM is set' }
  : realKvmAvailability();
export const SKIP_REASON = REAL_KVM.ok ? '' : REAL_KVM.reason;

/**
 * kvm_pvm is the vendor module (a nested PVM host, real-kvm-host.md): guest code at CPL0 is emulated, so
 * the suites that drive the guest (CPL3 harness) and read vendor-specific stat names need it. It says
 * nothing about the kernel build: what the build offers comes from HOST (the probe).
 */
export const PVM_HOST = REAL_KVM.ok && existsSync('/sys/module/kvm_pvm');

/**
 * What this /dev/kvm reports (src/backends/kvm/host_probe.ts), probed once per test file, or null
 * without a usable /dev/kvm. Tests configure the model from HOST.modelOptions and guard build-dependent
 * cases on its fields (HOST.guestMemfd, …), never on which build it is.
 */
export const HOST: RealHostProfile | null = REAL_KVM.ok ? await probe() : null;

async function probe(): Promise<RealHostProfile> {
  const { RealKvm } = await import('../../src/backends/kvm/real_kvm.ts');
  const kvm = new RealKvm();
  try {
    return kvm.hostProfile();
  } finally {
    kvm.close();
  }
}

/** Print, once per suite, why a build-dependent test does not run here. */
export function skipUnless(cond: boolean, suite: string, why: string): boolean {
  if (!cond && REAL_KVM.ok) console.warn(`[${suite}] not applicable on this host: ${why}`);
  return !cond;
}
export const NO_GMEM_WHY =
  'needs guest_memfd (KVM_CAP_GUEST_MEMFD = 0: kernel built without CONFIG_KVM_GUEST_MEMFD)';

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
