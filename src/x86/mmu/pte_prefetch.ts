/**
 * Prefetch around a shadow-paging fault: after a new 4K SPTE, KVM maps its neighbours in the aligned group
 * of PTE_PREFETCH_NUM, taking only what costs no fault — gPTEs already present and Accessed (shadow
 * pages) or runs of empty entries (direct pages), and host pages the host already maps writable
 * (kvm_prefetch_pages is GUP-fast with FOLL_WRITE: it never faults a page in).
 *
 * Kernel counterpart: arch/x86/kvm/mmu/paging_tmpl.h (FNAME(pte_prefetch), FNAME(prefetch_gpte),
 * FNAME(prefetch_invalid_gpte)), arch/x86/kvm/mmu/mmu.c (__direct_pte_prefetch, kvm_mmu_prefetch_sptes),
 * virt/kvm/kvm_main.c#kvm_prefetch_pages.
 * Simplifications: gPTEs are read from the model's GuestPageTables (guest_paging.ts).
 */
import type { Vcpu } from '../../kvm/vcpu.ts';
import { KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_MEMSLOT_INVALID } from '../../uapi/kvm.ts';
import { kvmMmuGetMtMask } from '../mtrr.ts';
import type { ShadowPage } from './shadow_rmap.ts';
import {
  ACC_WRITE_MASK,
  gpteAccess,
  gpteToGfn,
  PT_ACCESSED_MASK,
  PT_DIRTY_MASK,
  PT_PRESENT_MASK,
} from './guest_paging.ts';
import { mmuSetSpte } from './mmu_set_spte.ts';
import type { ShadowMmu } from './shadow_mmu.ts';

/** PTE_PREFETCH_NUM */
export const PTE_PREFETCH_NUM = 8;
const PAGE = 4096;

/**
 * kvm_prefetch_pages for one page: the pfn a *writable* host PTE maps at hva right now, or -1. It is
 * get_user_pages_fast_only(FOLL_WRITE): never faults a page in, and fails on a read-only or COW-shared
 * (KSM) mapping. Prefetch only "grabs surrounding pages that have already been accessed by the host".
 * @kernel virt/kvm/kvm_main.c#kvm_prefetch_pages
 */
function kvmPrefetchPage(host: ShadowMmu['vm']['kvm']['host'], hva: number): number {
  if (host.pfnAt(hva) === 0) return -1; // nothing mapped: GUP-fast does not fault
  const p = host.hvaToPfn(hva, false); // present, so this does not fault either
  return p !== null && p.writable ? p.pfn : -1;
}

/**
 * Prefetch n SPTEs of sp from index i for gfn, gfn + 1, …: none unless the slot may be mapped with this
 * access (gfn_to_memslot_dirty_bitmap: no slot, INVALID, or writable access to a dirty-logged slot), the
 * slot is writable (gfn_to_hva_many asks for a writable hva: KVM_HVA_ERR_RO_BAD) and holds all n pages;
 * then as many as kvm_prefetch_pages got, up to the first page it could not. false: it mapped none.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_prefetch_sptes
 */
function kvmMmuPrefetchSptes(
  mmu: ShadowMmu,
  vcpu: Vcpu,
  sp: ShadowPage,
  i: number,
  gfn: number,
  n: number,
  access: number,
  gpte: number,
): boolean {
  const slot = mmu.vcpuGfnToMemslot(vcpu, gfn); // gfn_to_memslot_dirty_bitmap
  if (slot === null || slot.flags & KVM_MEMSLOT_INVALID) return false;
  if (access & ACC_WRITE_MASK && slot.flags & KVM_MEM_LOG_DIRTY_PAGES) return false;
  if (slot.flags & KVM_MEM_READONLY || gfn + n > slot.baseGfn + slot.npages) return false;
  const host = mmu.vm.kvm.host;
  let k = 0;
  for (; k < n; k++) {
    const pfn = kvmPrefetchPage(host, slot.userspaceAddr + (gfn + k - slot.baseGfn) * PAGE);
    if (pfn < 0) break;
    const mt = mmu.tdpEnabled ? kvmMmuGetMtMask(vcpu, gfn + k, false) : 0;
    // Prefetching always gets a writable pfn (host_writable).
    mmuSetSpte(mmu, sp, i + k, access, gpte, gfn + k, slot, pfn, true, false, true, mt);
  }
  return k > 0;
}

/**
 * Map the neighbours of a new 4K SPTE in its aligned group of 8. Direct pages go by runs of non-present
 * entries (__direct_pte_prefetch: a run that maps nothing ends the prefetch, a partial one does not);
 * shadow pages entry by entry, stopping at the first gPTE that is not present+Accessed or whose page
 * cannot be had without a fault.
 * @kernel arch/x86/kvm/mmu/paging_tmpl.h#FNAME(pte_prefetch)
 */
export function ptePrefetch(mmu: ShadowMmu, vcpu: Vcpu, sp: ShadowPage, at: number): void {
  if (sp.level > 1 || mmu.vm.mmuInvalidateInProgress > 0) return;
  if (sp.direct) return directPtePrefetch(mmu, vcpu, sp, at);
  const first = at & ~(PTE_PREFETCH_NUM - 1);
  // The group's gPTEs are read from the guest table once, as the kernel reads them in one block into
  // gw->prefetch_ptes (FNAME(gpte_changed) at the 4K level); nothing the prefetch does writes guest memory.
  const gptes = mmu.gpt.tableIfAny(sp.gfn);
  for (let i = first; i < first + PTE_PREFETCH_NUM; i++) {
    if (i === at || sp.pfn![i]! >= 0) continue;
    const gpte = gptes === undefined ? 0 : gptes[i]!;
    // FNAME(prefetch_invalid_gpte): not present or not Accessed ends the prefetch.
    if (!(gpte & PT_PRESENT_MASK) || !(gpte & PT_ACCESSED_MASK)) break;
    // FNAME(protect_clean_gpte): no write access until the guest PTE is dirty.
    let access = (sp.role >> 5) & 7 & gpteAccess(gpte);
    if (!(gpte & PT_DIRTY_MASK)) access &= ~ACC_WRITE_MASK;
    if (!kvmMmuPrefetchSptes(mmu, vcpu, sp, i, gpteToGfn(gpte), 1, access, gpte)) break;
  }
}

/**
 * The prefetch around a new 4K SPTE in a direct page, by runs of non-present entries: a run that maps
 * nothing ends it, a partial one does not.
 * @kernel arch/x86/kvm/mmu/mmu.c#__direct_pte_prefetch
 */
function directPtePrefetch(mmu: ShadowMmu, vcpu: Vcpu, sp: ShadowPage, at: number): void {
  const first = at & ~(PTE_PREFETCH_NUM - 1);
  const access = (sp.role >> 5) & 7;
  let start = -1;
  for (let i = first; i <= first + PTE_PREFETCH_NUM; i++) {
    const end = i === first + PTE_PREFETCH_NUM || i === at || sp.pfn![i]! >= 0;
    if (!end) {
      if (start < 0) start = i;
      continue;
    }
    if (start < 0) continue;
    if (!kvmMmuPrefetchSptes(mmu, vcpu, sp, start, sp.gfn + start, i - start, access, PT_DIRTY_MASK)) return;
    start = -1;
  }
}
