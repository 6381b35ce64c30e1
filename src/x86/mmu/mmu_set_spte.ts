/**
 * Installing a leaf SPTE in a shadow page: the access it gets (a clean gPTE, a read-only host page, a
 * read fault in a dirty-logged slot and a shadowed guest table all withhold write), the rmap entry and
 * page counts of a new SPTE, the flush when a present one changes, and the fault's RET_PF_* answer.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c (mmu_set_spte, make_spte's unsync/write-protect part,
 * mmu_try_to_unsync_pages), arch/x86/kvm/mmu/paging_tmpl.h#FNAME(protect_clean_gpte).
 * Simplifications: no unsync pages (a write to a shadowed guest table is always write-protected and
 * emulated); an SPTE is a (pfn, bits) pair (shadow_rmap.ts).
 */
import type { KvmMemorySlot } from '../../kvm/kvm_host.ts';
import { KVM_MEM_LOG_DIRTY_PAGES } from '../../uapi/kvm.ts';
import { markPageDirtyInSlot } from '../../kvm/dirty_log.ts';
import { kvmGfnIsWriteTracked } from './page_track.ts';
import { rmapAdd, SPTE_MMU_WRITABLE, SPTE_USER, SPTE_WRITABLE, type ShadowPage } from './shadow_rmap.ts';
import { ACC_USER_MASK, ACC_WRITE_MASK, PT_DIRTY_MASK } from './guest_paging.ts';
import type { ShadowMmu } from './shadow_mmu.ts';

/** The shadow MMU's fault answers (RET_PF_* in mmu_internal.h). */
export const RET_PF_RETRY = 1;
export const RET_PF_EMULATE = 2;
export const RET_PF_FIXED = 5;
export const RET_PF_SPURIOUS = 6;
export const RET_PF_WRITE_PROTECTED = 7;
export const RET_PF_MEMORY_FAULT = -14;

/**
 * Install (or upgrade) leaf i of sp (4K, or 2M in a level-2 direct page). Write access needs a dirty gPTE
 * (protect_clean_gpte; direct pages pass a dirty one) and a gfn that is not a shadowed guest table
 * (mmu_try_to_unsync_pages; no unsync in the model). `mt` is the EPT memtype|IPAT (0 without EPT).
 * @kernel arch/x86/kvm/mmu/mmu.c#mmu_set_spte
 */
export function mmuSetSpte(
  mmu: ShadowMmu,
  sp: ShadowPage,
  i: number,
  pteAccess: number,
  gpte: number,
  gfn: number,
  slot: KvmMemorySlot,
  pfn: number,
  hostWritable: boolean,
  write: boolean,
  prefetch: boolean,
  mt: number,
): number {
  let access = pteAccess;
  if (!(gpte & PT_DIRTY_MASK)) access &= ~ACC_WRITE_MASK; // FNAME(protect_clean_gpte)
  if (!hostWritable) access &= ~ACC_WRITE_MASK;
  // A read fault in a dirty-logged slot maps read-only, so the first write is seen and logged.
  if (!write && !prefetch && slot.flags & KVM_MEM_LOG_DIRTY_PAGES) access &= ~ACC_WRITE_MASK;
  const bits = (access & ACC_USER_MASK ? SPTE_USER : 0) | mt;
  // A present SPTE is changed in place or replaced (mmu_spte_update); an empty one is filled here.
  if (sp.pfn![i]! >= 0) return mmuUpdateSpte(mmu, sp, i, access, bits, gfn, slot, pfn, write);
  const oldBits = sp.bits![i]!;
  const w = sptePermissions(mmu, access, bits, oldBits, gfn, slot);
  const nu = w & ~WRPROT;
  if (nu & SPTE_WRITABLE && slot.dirtyBitmap !== null) markPageDirtyInSlot(slot, gfn);
  setNewLeaf(mmu, sp, i, gfn, slot, pfn, nu);
  return w & WRPROT && write ? RET_PF_WRITE_PROTECTED : RET_PF_FIXED;
}

/** An empty SPTE becomes a leaf: rmap_add and the page-size stat, then its pfn and bits. */
function setNewLeaf(
  mmu: ShadowMmu,
  sp: ShadowPage,
  i: number,
  gfn: number,
  slot: KvmMemorySlot,
  pfn: number,
  nu: number,
): void {
  sp.gfns![i] = gfn;
  rmapAdd(mmu.vm.stats, slot, sp, i, gfn);
  if (sp.level === 1) mmu.vm.stats.pages_4k++;
  else mmu.vm.stats.pages_2m++;
  sp.pfn![i] = pfn;
  sp.bits![i] = nu;
}

/**
 * Not an SPTE bit: sptePermissions' mark that write access was withheld because gfn is a shadowed guest
 * table (mmu_try_to_unsync_pages refused), which makes a write fault RET_PF_WRITE_PROTECTED.
 */
const WRPROT = 0x100;

/**
 * The SPTE bits for `access` over `bits` (user and memtype): W and MMU-writable with write access, both
 * withheld (and WRPROT set) when gfn is a shadowed guest table and the SPTE was not writable before.
 * @kernel arch/x86/kvm/mmu/spte.c#make_spte (its write-access part: mmu_try_to_unsync_pages)
 */
function sptePermissions(
  mmu: ShadowMmu,
  access: number,
  bits: number,
  oldBits: number,
  gfn: number,
  slot: KvmMemorySlot,
): number {
  if (!(access & ACC_WRITE_MASK)) return bits;
  if (!(oldBits & SPTE_WRITABLE) && gfnIsShadowedTable(mmu, slot, gfn)) return bits | WRPROT;
  return bits | SPTE_WRITABLE | SPTE_MMU_WRITABLE;
}

/** mmu_set_spte over a present SPTE: a different pfn drops it first (then it is filled as a new one). */
function mmuUpdateSpte(
  mmu: ShadowMmu,
  sp: ShadowPage,
  i: number,
  access: number,
  bits: number,
  gfn: number,
  slot: KvmMemorySlot,
  pfn: number,
  write: boolean,
): number {
  const oldBits = sp.bits![i]!;
  let flush = false;
  if (sp.pfn![i]! !== pfn) {
    mmu.dropSpte(sp, i);
    flush = true;
  }
  const w = sptePermissions(mmu, access, bits, oldBits, gfn, slot);
  const wrprot = (w & WRPROT) !== 0;
  const nu = w & ~WRPROT;
  if (nu & SPTE_WRITABLE && slot.dirtyBitmap !== null) markPageDirtyInSlot(slot, gfn);
  // An unchanged SPTE is spurious, unless the write hit a shadowed table: that one is emulated.
  if (sp.pfn![i]! >= 0 && nu === oldBits) return wrprot && write ? RET_PF_WRITE_PROTECTED : RET_PF_SPURIOUS;
  if (sp.pfn![i]! >= 0) {
    // Observed on the recording host: replacing a present SPTE that was never MMU-writable (a clean
    // gPTE) with a writable one costs a remote flush; re-enabling a write-protected one does not.
    if (!(oldBits & SPTE_MMU_WRITABLE) && nu & SPTE_WRITABLE) flush = true;
    if (oldBits & SPTE_WRITABLE && !(nu & SPTE_WRITABLE)) flush = true; // mmu_spte_update
    sp.bits![i] = nu;
  } else setNewLeaf(mmu, sp, i, gfn, slot, pfn, nu);
  if (flush) mmu.vm.flushRemoteTlbs(); // kvm_flush_remote_tlbs_gfn
  return wrprot && write ? RET_PF_WRITE_PROTECTED : RET_PF_FIXED;
}

/**
 * Is gfn a guest table that a valid shadow page shadows (write-tracked, or a 4K table)? Then no SPTE may
 * map it writable: mmu_try_to_unsync_pages' answer in a model without unsync pages.
 */
export function gfnIsShadowedTable(mmu: ShadowMmu, slot: KvmMemorySlot, gfn: number): boolean {
  // Without pages that shadow guest tables (always, with EPT) nothing can be: skip the hash walk.
  if (mmu.indirectShadowPages === 0) return false;
  return kvmGfnIsWriteTracked(slot, gfn) || mmu.hash.hasValidGptesPage(gfn);
}
