/**
 * The TDP engine's hooks into an x86 VM (TdpMmuEnv): KVM_BUG_ON and WARN_ON_ONCE reach the VM, remote
 * TLB flushes, and mmu_lock contention for a party waiting on the lock (vm.onMmuLockDrop), which a walk's
 * resched point lets in (X86Mmu.partyWantsLock decides when).
 *
 * Kernel counterpart: none of its own; the calls stand for kvm_flush_remote_tlbs, KVM_BUG_ON/WARN_ON_ONCE
 * and need_resched() || rwlock_needbreak(&kvm->mmu_lock) at tdp_mmu_iter_cond_resched.
 */
import type { X86Mmu } from './mmu.ts';
import { ROLE_INVALID } from './mmu_internal.ts';
import type { TdpMmuEnv } from './tdp_mmu_state.ts';

/**
 * What the TDP engine asks of the VM (TdpMmuEnv), as a class: the engine's walks read these hooks at
 * every resched point, and an object literal of closures made per VM (its getter, too, a function per
 * VM) gave every VM's hooks their own functions and shape, so code the JIT had optimized with one VM's
 * inlined was dropped when the next VM came (a compare runs one VM per design).
 */
export class X86TdpEnv implements TdpMmuEnv {
  constructor(private readonly mmu: X86Mmu) {}

  kvmBugOn(what: string): void {
    this.mmu.vm.kvmBugOn(true, 'INV-TDP-BUG', what);
  }

  warnOnce(what: string): void {
    this.mmu.vm.warnOnce(true, 'INV-TDP-WARN:' + what, what);
  }

  flushRemoteTlbs(): void {
    this.mmu.vm.flushRemoteTlbs();
  }

  // A party waiting on mmu_lock (vm.onMmuLockDrop) makes a resched point of a walk that may yield
  // drop the lock; without one the model never yields (and leaf zaps may run batched).
  get needResched(): (() => boolean) | undefined {
    return this.mmu.vm.onMmuLockDrop === undefined ? undefined : this.mmu.wantsLock;
  }

  // see partyWantsLock: no party is let in while an invalidated root is zapped
  mayYieldIn(root: number): boolean {
    return (this.mmu.tdp.pool.role[root]! & ROLE_INVALID) === 0;
  }

  onYield(resumeGfn: number): void {
    this.mmu.syncCounters(); // the party reads the stats of the half-done walk
    this.mmu.vm.runMmuLockParty(resumeGfn);
  }
}
