/**
 * AMD SEV-SNP private memory as KVM and the Reverse Map Table (RMP) see it. Each host page guest_memfd
 * hands to an SNP guest has an RMP entry: assigned to the guest's ASID at a gpa, and validated once the
 * guest has run PVALIDATE on it. KVM assigns a page when guest_memfd first prepares it for a private
 * fault, and gives it back to the hypervisor when guest_memfd frees it (punch hole, truncation).
 *
 * Unmapping an NPT leaf (a precise memslot zap, a shared↔private conversion, an MMU-notifier event)
 * leaves the RMP alone, so a refault maps the same guest_memfd pfn with its content and its validation
 * intact: unlike TDX, zapping SNP private memory destroys nothing (mmu-zap.md §5.6, marked [U] there;
 * see docs/simplifications.md).
 *
 * Kernel counterpart: arch/x86/kvm/svm/sev.c (sev_gmem_prepare, sev_gmem_invalidate),
 * arch/x86/virt/svm/sev.c (rmp_make_private, rmp_make_shared), arch/x86/kvm/x86.c
 * (kvm_arch_gmem_prepare, kvm_arch_gmem_invalidate). PVALIDATE is the guest's instruction.
 * Simplifications: 4K RMP entries only (no 2M entries, no PSMASH), no immutable or VMSA pages, no
 * SNP_LAUNCH_UPDATE, no RMP #NPF handling. "Validated" is recorded, not enforced: a guest touching an
 * unvalidated private page takes a #VC inside the guest, which KVM never sees.
 */
import type { AccessResult } from '../kvm/api_types.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { VmState } from '../kvm/vm_state.ts';

/** One RMP entry, as rmp_make_private / rmp_make_shared leave it. */
export interface RmpEntry {
  assigned: boolean;
  validated: boolean;
  /** the gpa the page is assigned at (meaningful only when assigned) */
  gpa: number;
  asid: number;
}

/** The SNP half of a VM (struct kvm_sev_info, for what the model needs) plus the host's RMP for it. */
export class SevSnp {
  /** RMP entries of this guest's assigned pages: pfn → gfn, and whether PVALIDATE ran. */
  private readonly rmp = new Map<number, { gfn: number; validated: boolean }>();
  /** rmp_make_private / rmp_make_shared calls (model counters). */
  assignments = 0;
  reclaims = 0;

  /** @param asid sev->asid (the model gives each SNP VM its own) */
  constructor(readonly asid: number) {}

  /** The RMP entry of host page pfn as this guest sees it. */
  entry(pfn: number): RmpEntry {
    const e = this.rmp.get(pfn);
    if (e === undefined) return { assigned: false, validated: false, gpa: 0, asid: 0 };
    return { assigned: true, validated: e.validated, gpa: e.gfn * 4096, asid: this.asid };
  }

  /** Pages currently assigned to the guest. */
  get assignedPages(): number {
    return this.rmp.size;
  }

  /** Guest-owned at gfn, not yet validated. @kernel arch/x86/virt/svm/sev.c#rmp_make_private */
  rmpMakePrivate(pfn: number, gfn: number): void {
    this.rmp.set(pfn, { gfn, validated: false });
    this.assignments++;
  }

  /** Back to the hypervisor (assigned and validated clear). @kernel arch/x86/virt/svm/sev.c#rmp_make_shared */
  rmpMakeShared(pfn: number): void {
    if (this.rmp.delete(pfn)) this.reclaims++;
  }

  /** The guest's PVALIDATE on an assigned page: 'noupdate' when the page is already in that state. */
  pvalidate(pfn: number, validate: boolean): 'success' | 'noupdate' | 'fail_input' {
    const e = this.rmp.get(pfn);
    if (e === undefined) return 'fail_input';
    if (e.validated === validate) return 'noupdate';
    e.validated = validate;
    return 'success';
  }
}

/** svm_vm_init for an SNP VM: its RMP view, under an ASID of its own. @kernel arch/x86/kvm/svm/svm.c#svm_vm_init */
export function snpVmInit(vm: VmState): SevSnp {
  const snp = new SevSnp(vm.id);
  vm.arch.snp = snp;
  return snp;
}

/** What the gmem arch hooks read of kvm->arch. */
export interface SnpArch {
  snp?: SevSnp | undefined;
}

/**
 * guest_memfd prepares a page the first time a private fault (or populate) gets it: on SNP the page is
 * assigned to the guest in the RMP, unvalidated. Other VM types need nothing. Returns 0.
 * @kernel arch/x86/kvm/svm/sev.c#sev_gmem_prepare
 */
export function kvmArchGmemPrepare(arch: SnpArch, gfn: number, pfn: number): number {
  const snp = arch.snp;
  if (snp === undefined) return 0;
  // Already assigned (e.g. prepared through another binding): nothing to do.
  if (snp.entry(pfn).assigned) return 0;
  snp.rmpMakePrivate(pfn, gfn);
  return 0;
}

/**
 * guest_memfd is freeing a page (punch hole, truncation): an SNP page still assigned to the guest goes
 * back to the hypervisor before the host can reuse it.
 * @kernel arch/x86/kvm/svm/sev.c#sev_gmem_invalidate
 */
export function kvmArchGmemInvalidate(arch: SnpArch, pfn: number): void {
  arch.snp?.rmpMakeShared(pfn);
}

/**
 * Guest memory was unmapped from KVM's MMU (a memslot DELETE/MOVE flush, an MMU-notifier invalidation
 * that found a memslot, a flush of everything): a SEV or SEV-ES guest's dirty cache lines tagged with
 * its key must be written back before the host reuses the pages (WBNOINVD on the CPUs that ran it; 6.14
 * and older WBINVD everywhere). SNP is exempt: its private memory is in guest_memfd, which these events
 * never reach, and shared pages need no flush. The model counts the writebacks.
 * @kernel arch/x86/kvm/svm/sev.c#sev_guest_memory_reclaimed
 */
export function sevGuestMemoryReclaimed(vm: {
  readonly info: { readonly name: string };
  countModel(name: 'sev_cache_writebacks'): void;
}): void {
  if (vm.info.name !== 'SEV' && vm.info.name !== 'SEV_ES') return;
  vm.countModel('sev_cache_writebacks'); // sev_writeback_caches
}

export type PvalidateResult =
  | { exit: 'none'; status: 'success' | 'noupdate' | 'fail_input'; pfn: number }
  | Exclude<AccessResult, { exit: 'none' }>;

/**
 * The guest runs PVALIDATE on private gpa: the CPU translates it through the NPT first (faulting it in
 * like any private access, so a gfn whose attribute is shared exits with KVM_EXIT_MEMORY_FAULT), then
 * the RMP entry's validated bit is set (or cleared).
 */
export function snpPvalidate(vcpu: Vcpu, snp: SevSnp, gpa: number, validate: boolean): PvalidateResult {
  const r = vcpu.access(gpa - (gpa % 4096), 'read', { private: true });
  if (r.exit !== 'none') return r;
  return { exit: 'none', status: snp.pvalidate(r.pfn, validate), pfn: r.pfn };
}
