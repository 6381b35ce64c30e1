/**
 * A guest access driven step by step, for the explorer and race tests: the steps of vcpu.access
 * (guest_access.ts: VM entry, the CPU's translation, the EPT violation, the fault) stopped where the
 * kernel lets other threads in. A fault stops at the end of its phase 2 (kvm_mmu_faultin_pfn: the pfn
 * obtained, mmu_lock not yet taken); the caller runs host events, memslot updates or other vCPUs there,
 * then finishes it (phases 3–4: is_page_fault_stale, then the install). The same functions as
 * vcpu.access, in the same order, so nothing run in between gives the plain access.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c#kvm_tdp_mmu_page_fault, cut between kvm_mmu_faultin_pfn and
 * taking mmu_lock (page_fault.ts's phases 2 and 3).
 */
import type { Vcpu } from '../../kvm/vcpu.ts';
import { OUTSIDE_GUEST_MODE } from '../../kvm/vcpu.ts';
import type { AccessKind, AccessResult } from '../../kvm/api_types.ts';
import {
  newPageFault,
  RET_PF_CONTINUE,
  kvmMmuFaultinPfn,
  kvmTdpMmuPageFaultLocked,
  type KvmPageFault,
} from './page_fault.ts';
import {
  accessHit,
  classify,
  fastPageFault,
  finishFault,
  handleEptMisconfig,
  MISS,
  noteEptViolation,
  translate,
  vcpuAccess,
  vcpuEnterGuest,
} from './guest_access.ts';
import type { X86Mmu } from './mmu.ts';

/**
 * Stepwise driving for race tests: run the fault up to the end of phase 2 (pfn obtained, mmu_lock not
 * yet taken) and return a function that takes the lock, rechecks and installs. Between the two the
 * caller may run host events or memslot updates.
 */
export function beginFault(
  mmu: X86Mmu,
  vcpu: Vcpu,
  gpa: number,
  kind: AccessKind,
): { fault: KvmPageFault; r: number; finish: () => AccessResult } {
  vcpuEnterGuest(mmu, vcpu);
  const c = classify(mmu, gpa, undefined);
  vcpu.mode = OUTSIDE_GUEST_MODE; // the EPT violation's VM exit
  vcpu.stats.exits++;
  vcpu.stats.pf_taken++;
  const fault = newPageFault(gpa, c.gfn, kind === 'write', kind === 'exec', c.isPrivate);
  const r = kvmMmuFaultinPfn(mmu, vcpu, fault);
  const finish = (): AccessResult => {
    const r2 = r === RET_PF_CONTINUE ? kvmTdpMmuPageFaultLocked(mmu, vcpu, fault) : r;
    const done = finishFault(mmu, vcpu, fault, r2, gpa, c);
    if (done !== null) return done;
    // The guest re-executes the instruction.
    return vcpuAccess(mmu, vcpu, gpa, kind);
  };
  return { fault, r, finish };
}

/** One guest access driven step by step (see beginAccessStep). */
export interface AccessStep {
  /** the access's result when it needed no fault (TLB or EPT hit, emulated MMIO, dead VM) */
  result: AccessResult | null;
  /** phases 3–4 of the fault: the exit, or null when the guest simply re-executes the instruction */
  finish(): AccessResult | null;
}

/**
 * The explorer's stepping hook for a guest access: VM entry and the CPU's translation; on an EPT
 * violation, the fault (fast_page_fault, else phases 1–2: pfn obtained, mmu_lock not yet taken). The
 * same functions as vcpuAccess, stopped where the kernel lets other threads in; the retry loop is the
 * caller's (each re-execution is a new AccessStep).
 */
export function beginAccessStep(mmu: X86Mmu, vcpu: Vcpu, gpa: number, kind: AccessKind): AccessStep {
  if (mmu.vm.dead) {
    const dead: AccessResult = {
      exit: 'vm_dead',
      gpa,
      reason: 'the VM is dead (KVM_BUG_ON or a fatal TDX error)',
    };
    return { result: dead, finish: () => dead };
  }
  const c = { ...classify(mmu, gpa, undefined) };
  const write = kind === 'write';
  vcpuEnterGuest(mmu, vcpu);
  const t = translate(mmu, vcpu, c, write);
  const hit: AccessResult | null =
    t === null
      ? { exit: 'none', pfn: accessHit.pfn, level: accessHit.level, memtype: accessHit.memtype }
      : t !== MISS
        ? t
        : handleEptMisconfig(mmu, vcpu, c, gpa, write);
  if (hit !== null) return { result: hit, finish: () => hit };
  noteEptViolation(mmu, vcpu, gpa, write, kind);
  const fault = newPageFault(gpa, c.gfn, write, kind === 'exec', c.isPrivate);
  const fast = fastPageFault(mmu, vcpu, c, fault);
  const r = fast ?? kvmMmuFaultinPfn(mmu, vcpu, fault);
  return {
    result: null,
    finish: () => {
      const r2 = fast === null && r === RET_PF_CONTINUE ? kvmTdpMmuPageFaultLocked(mmu, vcpu, fault) : r;
      return finishFault(mmu, vcpu, fault, r2, gpa, c);
    },
  };
}
