/**
 * A vCPU fd: its stats and the requests other code makes of it (TLB flush, free obsolete roots, kicks).
 * The guest-access path (vcpu.access) is added by the MMU layer.
 *
 * Kernel counterpart: struct kvm_vcpu (include/linux/kvm_host.h), kvm_make_request / kvm_vcpu_kick.
 */
import type { VmState } from './vm_state.ts';
import { Tlb } from '../host/tlb.ts';
import type { AccessKind, AccessResult } from './api_types.ts';
import { exportStats, newVcpuStats, VCPU_STAT_NAMES, VCPU_STAT_NAMES_PVM } from './kvm_stats.ts';

/** KVM_REQ_* bits the model uses (arch/x86/include/asm/kvm_host.h). */
export const KVM_REQ_TLB_FLUSH = 1 << 0;
export const KVM_REQ_MMU_FREE_OBSOLETE_ROOTS = 1 << 1;

export class Vcpu {
  readonly vm: VmState;
  readonly vcpuId: number;
  readonly fd: number;
  readonly stats = newVcpuStats();
  /** vcpu->requests */
  requests = 0;
  /** kvm_vcpu_kick() count (model counter). */
  kicks = 0;
  /** struct kvm_mmu's roots (pool indexes, -1 = INVALID_PAGE) */
  readonly mmu = { root: -1, mirrorRoot: -1 };
  /** The vCPU's TLB: translations survive until a flush or a root load reaches it. */
  readonly tlb = new Tlb();
  /** HF_SMM_MASK: the vCPU uses address space 1 while in SMM. */
  smm = false;

  constructor(vm: VmState, vcpuId: number, fd: number) {
    this.vm = vm;
    this.vcpuId = vcpuId;
    this.fd = fd;
  }

  /** The memslot address space the vCPU currently uses. @kernel arch/x86/include/asm/kvm_host.h#kvm_arch_vcpu_memslots_id */
  asId(): number {
    return this.smm && this.vm.nrAs > 1 ? 1 : 0;
  }

  /**
   * The guest touches gpa. Returns the host page it reached (pfn, leaf level, EPT memtype) or the exit
   * KVM would produce. `private` overrides how the access is classified on private-memory VMs (SNP's
   * C-bit); by default SW_PROTECTED/SNP accesses follow the gfn's attribute and TDX accesses the GPA's
   * shared bit.
   */
  access(gpa: number, kind: AccessKind, opts: { private?: boolean } = {}): AccessResult {
    return this.vm.mmu.vcpuAccess(this, gpa, kind, opts);
  }

  /** kvm_make_request(KVM_REQ_TLB_FLUSH, vcpu) */
  requestTlbFlush(): void {
    this.requests |= KVM_REQ_TLB_FLUSH;
  }

  /** kvm_make_request(req, vcpu) */
  makeRequest(req: number): void {
    this.requests |= req;
  }

  /** kvm_vcpu_kick(): the vCPU leaves guest mode and will service its requests before re-entry. */
  kick(): void {
    this.kicks++;
  }

  /** The binary stats of the vCPU fd as { name: value }. */
  getStats(): Record<string, number> {
    return exportStats(
      this.stats,
      VCPU_STAT_NAMES,
      this.vm.cfg.profile === 'pvm-6.18' ? VCPU_STAT_NAMES_PVM : [],
    );
  }
}
