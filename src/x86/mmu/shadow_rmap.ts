/**
 * Shadow pages and reverse maps: struct kvm_mmu_page for the shadow MMU, and the per-slot rmaps that
 * find every leaf SPTE mapping a gfn (slot->arch.rmap[level - 1], allocated lazily), with the
 * pages_4k/pages_2m accounting.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu_internal.h (struct kvm_mmu_page, union kvm_mmu_page_role),
 * arch/x86/kvm/mmu/mmu.c (rmap_add, rmap_remove, pte_list_add/remove, drop_spte, mmu_spte_clear_track_bits,
 * kvm_update_page_stats, kvm_zap_rmap).
 * Simplifications: leaf SPTEs are 4K, plus 2M in direct pages on an EPT host (shadow paging maps guest
 * huge pages with 4K SPTEs in the model; nothing maps 1G), so rmaps exist for levels 1 and 2 and
 * pages_1g stays 0; an SPTE is a (pfn, bits) pair in typed arrays rather than a 64-bit word (on an EPT
 * host `bits` also carries the EPT memtype and IPAT bits, at their SPTE positions 5:3 and 6); rmap chains
 * are linked lists in typed arrays (rmap_level.ts), not pte_list_desc blocks of 14.
 */
import type { KvmMemorySlot } from '../../kvm/kvm_host.ts';
import { RmapLevel } from './rmap_level.ts';

/** Role bits packed into one word, like union kvm_mmu_page_role (only the fields the model uses). */
export const ROLE_LEVEL_MASK = 0xf;
export const ROLE_DIRECT = 0x10;
export const ROLE_ACCESS_SHIFT = 5; // 3 bits of ACC_*
export const ROLE_INVALID = 0x100;
/** role.smm: the page maps address space 1 (SMM). */
export const ROLE_SMM = 0x200;

/** SPTE bits kept per entry */
export const SPTE_WRITABLE = 1;
export const SPTE_MMU_WRITABLE = 2;
export const SPTE_USER = 4;
/** VMX_EPT_MT_MASK | VMX_EPT_IPAT_BIT: where an EPT leaf keeps its memory type (vmx_get_mt_mask). */
export const SPTE_MT_BITS = 0x78;

/** A role; `asId` 1 sets role.smm (kvm_calc_cpu_role: role.base.smm = is_smm(vcpu)). */
export function makeRole(level: number, direct: boolean, access: number, asId = 0): number {
  return level | (direct ? ROLE_DIRECT : 0) | (access << ROLE_ACCESS_SHIFT) | (asId === 1 ? ROLE_SMM : 0);
}

/**
 * The role of a page linked below parent: the parent's role (so role.smm too) with the level, access and
 * direct bits of the new page.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_child_role
 */
export function kvmMmuChildRole(parent: ShadowPage, direct: boolean, access: number): number {
  return makeRole(parent.level - 1, direct, access, kvmMmuPageAsId(parent));
}

/** The address space whose memslots the page maps: 1 for role.smm. @kernel arch/x86/kvm/mmu/mmu_internal.h#kvm_mmu_page_as_id */
export function kvmMmuPageAsId(sp: ShadowPage): number {
  return sp.role & ROLE_SMM ? 1 : 0;
}

/** struct kvm_mmu_page */
export class ShadowPage {
  /** the model's name for the page: its MMU's count of pages made so far (ShadowMmu.spIds) */
  readonly id: number;
  role: number;
  /** base gfn: the guest table it shadows (indirect), or the first gfn it maps (direct) */
  readonly gfn: number;
  /** kvm_mmu_page->mmu_valid_gen */
  readonly mmuValidGen: number;
  rootCount = 0;
  /** non-leaf SPTEs: the child shadow page, or null (levels above 1) */
  readonly child: (ShadowPage | null)[] | null;
  /** leaf SPTEs: pfn (the first of a huge leaf), or -1 when not present; level 1 always, level 2 once a 2M leaf is installed */
  pfn: Float64Array | null;
  bits: Uint8Array | null;
  /** kvm_mmu_page_get_gfn for each leaf (a huge leaf's first gfn) */
  gfns: Float64Array | null;
  /** parent_ptes: (parent, index) pairs */
  readonly parents: { sp: ShadowPage; i: number }[] = [];
  /** whether the page is on active_mmu_pages */
  onList = true;
  /**
   * role.level, role.direct and sp_has_gptes: fixed for the page's life (only role.invalid changes), so
   * plain fields rather than getters over `role` (the fault path reads them several times per fault, and
   * until V8 optimizes it every getter is a call).
   */
  readonly level: number;
  readonly direct: boolean;
  /** sp_has_gptes: shadows a guest page table (no passthrough roots in a 4-level guest). */
  readonly hasGptes: boolean;

  constructor(id: number, gfn: number, role: number, gen: number) {
    this.id = id;
    this.gfn = gfn;
    this.role = role;
    this.mmuValidGen = gen;
    this.level = role & ROLE_LEVEL_MASK;
    this.direct = (role & ROLE_DIRECT) !== 0;
    this.hasGptes = !this.direct;
    if ((role & ROLE_LEVEL_MASK) === 1) {
      this.child = null;
      this.pfn = new Float64Array(512).fill(-1);
      this.bits = new Uint8Array(512);
      this.gfns = new Float64Array(512);
    } else {
      this.child = new Array<ShadowPage | null>(512).fill(null);
      this.pfn = null;
      this.bits = null;
      this.gfns = null;
    }
  }
  get invalid(): boolean {
    return (this.role & ROLE_INVALID) !== 0;
  }
  /** Number of gfns one entry covers. */
  get entrySpan(): number {
    return 512 ** (this.level - 1);
  }
  /** Is entry i a present leaf SPTE? */
  isLeaf(i: number): boolean {
    return this.pfn !== null && this.pfn[i]! >= 0;
  }
  /** Room for huge leafs in a level-2 page (allocated on the first one). */
  allocLeafs(): void {
    if (this.pfn !== null) return;
    this.pfn = new Float64Array(512).fill(-1);
    this.bits = new Uint8Array(512);
    this.gfns = new Float64Array(512);
  }
}

export interface RmapEntry {
  sp: ShadowPage;
  i: number;
}
/** slot->arch.rmap: [4K rmaps by gfn offset in the slot, 2M rmaps by gfn_to_index at 2M] */
export type SlotRmap = [RmapLevel, RmapLevel];

/** The slot's rmaps, allocated on first use. */
export function slotRmap(slot: KvmMemorySlot): SlotRmap {
  let r = slot.arch.rmap as SlotRmap | null | undefined;
  if (r === null || r === undefined) slot.arch.rmap = r = [new RmapLevel(), new RmapLevel()];
  return r;
}

/** The rmap index of gfn at level 1 or 2. @kernel arch/x86/kvm/mmu/mmu.c#gfn_to_rmap (gfn_to_index) */
export function rmapIndex(slot: KvmMemorySlot, gfn: number, level: number): number {
  return level === 1 ? gfn - slot.baseGfn : Math.floor(gfn / 512) - Math.floor(slot.baseGfn / 512);
}

/** What rmap/SPTE code needs of the VM: the pages_4k stat and the longest chain. */
export interface RmapStats {
  pages_4k: number;
  max_mmu_rmap_size: number;
}

/**
 * pte_list_add returns the chain's length before the new SPTE, and that is what the stat records (one
 * SPTE on a gfn is a peak of 0). RmapLevel.add returns the length with it.
 * @kernel arch/x86/kvm/mmu/mmu.c#rmap_add
 */
export function rmapAdd(stats: RmapStats, slot: KvmMemorySlot, sp: ShadowPage, i: number, gfn: number): void {
  // slotRmap and rmapIndex written out for the common case (rmaps made, a 4K leaf), their calls left
  // for the others: the fault path inlines this, and each call it keeps costs more than the lookup.
  const r = slot.arch.rmap as SlotRmap | null | undefined;
  const rmaps = r === null || r === undefined ? slotRmap(slot) : r;
  const level = sp.level;
  const k = level === 1 ? gfn - slot.baseGfn : rmapIndex(slot, gfn, level);
  const before = rmaps[level - 1]!.add(k, sp, i) - 1;
  if (before > stats.max_mmu_rmap_size) stats.max_mmu_rmap_size = before;
}

/** @kernel arch/x86/kvm/mmu/mmu.c#rmap_remove */
export function rmapRemove(slot: KvmMemorySlot, sp: ShadowPage, i: number, gfn: number): void {
  const r = slot.arch.rmap as SlotRmap | null;
  if (r !== null && r !== undefined) r[sp.level - 1]!.remove(rmapIndex(slot, gfn, sp.level), sp, i);
}

/** Is (sp, i) on the rmap of gfn at sp's level? (the checker's question) */
export function rmapHas(slot: KvmMemorySlot, sp: ShadowPage, i: number, gfn: number): boolean {
  const r = slot.arch.rmap as SlotRmap | null;
  return r !== null && r !== undefined && r[sp.level - 1]!.has(rmapIndex(slot, gfn, sp.level), sp, i);
}

/**
 * The leafs on the rmaps of [start, end) at every level, into sps/is (a huge leaf counts if any of its
 * gfns is in the range); returns how many. A snapshot: the caller may zap what it finds.
 * @kernel arch/x86/kvm/mmu/mmu.c#__walk_slot_rmaps (the rmap iteration, without the resched points)
 */
export function rmapEntriesInRange(
  slot: KvmMemorySlot,
  start: number,
  end: number,
  sps: ShadowPage[],
  is: number[],
): number {
  const r = slot.arch.rmap as SlotRmap | null;
  if (r === null || r === undefined || end <= start) return 0;
  let n = 0;
  for (let level = 1; level <= 2; level++)
    n += r[level - 1]!.collect(rmapIndex(slot, start, level), rmapIndex(slot, end - 1, level), sps, is);
  return n;
}

/**
 * Write-protect one leaf. For a shadowed guest table (ptProtect) the SPTE also loses MMU-writable, so
 * only unsync could make it writable again; dirty logging keeps it, so the next write fault restores W.
 * True if the TLB needs a flush: the SPTE was MMU-writable and is not now (leaf_spte_change_needs_tlb_flush).
 * @kernel arch/x86/kvm/mmu/mmu.c#spte_write_protect
 */
function spteWriteProtect(sp: ShadowPage, i: number, ptProtect: boolean): boolean {
  const old = sp.bits![i]!;
  if (!(old & SPTE_WRITABLE) && !(ptProtect && old & SPTE_MMU_WRITABLE)) return false;
  const nu = old & ~(SPTE_WRITABLE | (ptProtect ? SPTE_MMU_WRITABLE : 0));
  sp.bits![i] = nu;
  return (old & SPTE_MMU_WRITABLE) !== 0 && (nu & SPTE_MMU_WRITABLE) === 0;
}

/** Write-protect every leaf mapping gfn, at every level, as for a shadowed guest table; true if the caller must flush. @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_slot_gfn_write_protect */
export function kvmMmuSlotGfnWriteProtect(slot: KvmMemorySlot, gfn: number): boolean {
  const sps: ShadowPage[] = [];
  const is: number[] = [];
  let flush = false;
  const n = rmapEntriesInRange(slot, gfn, gfn + 1, sps, is);
  for (let k = 0; k < n; k++) if (spteWriteProtect(sps[k]!, is[k]!, true)) flush = true; // rmap_write_protect(.., true)
  return flush;
}

/** Clear W (not MMU-writable) on every leaf mapping gfn, for dirty logging. @kernel arch/x86/kvm/mmu/mmu.c#rmap_write_protect */
export function rmapWriteProtectGfn(slot: KvmMemorySlot, gfn: number): void {
  const sps: ShadowPage[] = [];
  const is: number[] = [];
  const n = rmapEntriesInRange(slot, gfn, gfn + 1, sps, is);
  for (let k = 0; k < n; k++) spteWriteProtect(sps[k]!, is[k]!, false);
}

/** Clear W on every leaf of the slot, 4K and up (the caller flushes). @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_slot_remove_write_access */
export function rmapRemoveWriteAccess(slot: KvmMemorySlot): void {
  for (const r of (slot.arch.rmap as SlotRmap | null) ?? [])
    r.forEach((_k, sp, i) => (sp.bits![i]! &= ~SPTE_WRITABLE));
}
