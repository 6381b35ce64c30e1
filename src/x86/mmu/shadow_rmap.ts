/**
 * Shadow pages and reverse maps: struct kvm_mmu_page for the shadow MMU, and the per-slot rmaps that
 * find every leaf SPTE mapping a gfn (slot->arch.rmap, allocated lazily), with the pages_4k accounting.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu_internal.h (struct kvm_mmu_page, union kvm_mmu_page_role),
 * arch/x86/kvm/mmu/mmu.c (rmap_add, rmap_remove, pte_list_add/remove, drop_spte, mmu_spte_clear_track_bits,
 * kvm_update_page_stats, kvm_zap_rmap).
 * Simplifications: leaf SPTEs are 4K only (host huge pages are not used by the shadow MMU model), so
 * rmaps exist for level 1 only and pages_2m/pages_1g stay 0; an SPTE is a (pfn, bits) pair in typed
 * arrays rather than a 64-bit word; rmap chains are JS arrays, not pte_list_desc blocks of 14.
 */
import type { KvmMemorySlot } from '../../kvm/kvm_host.ts';

/** Role bits packed into one word, like union kvm_mmu_page_role (only the fields the model uses). */
export const ROLE_LEVEL_MASK = 0xf;
export const ROLE_DIRECT = 0x10;
export const ROLE_ACCESS_SHIFT = 5; // 3 bits of ACC_*
export const ROLE_INVALID = 0x100;

/** SPTE bits kept per entry */
export const SPTE_WRITABLE = 1;
export const SPTE_MMU_WRITABLE = 2;
export const SPTE_USER = 4;

export function makeRole(level: number, direct: boolean, access: number): number {
  return level | (direct ? ROLE_DIRECT : 0) | (access << ROLE_ACCESS_SHIFT);
}

let nextSpId = 1;

/** struct kvm_mmu_page */
export class ShadowPage {
  readonly id = nextSpId++;
  role: number;
  /** base gfn: the guest table it shadows (indirect), or the first gfn it maps (direct) */
  readonly gfn: number;
  /** kvm_mmu_page->mmu_valid_gen */
  readonly mmuValidGen: number;
  rootCount = 0;
  /** non-leaf SPTEs: the child shadow page, or null */
  readonly child: (ShadowPage | null)[] | null;
  /** leaf SPTEs (level 1): pfn, or -1 when not present */
  readonly pfn: Float64Array | null;
  readonly bits: Uint8Array | null;
  /** kvm_mmu_page_get_gfn for each leaf */
  readonly gfns: Float64Array | null;
  /** parent_ptes: (parent, index) pairs */
  readonly parents: { sp: ShadowPage; i: number }[] = [];
  /** whether the page is on active_mmu_pages */
  onList = true;

  constructor(gfn: number, role: number, gen: number) {
    this.gfn = gfn;
    this.role = role;
    this.mmuValidGen = gen;
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
  get level(): number {
    return this.role & ROLE_LEVEL_MASK;
  }
  get direct(): boolean {
    return (this.role & ROLE_DIRECT) !== 0;
  }
  get invalid(): boolean {
    return (this.role & ROLE_INVALID) !== 0;
  }
  /** sp_has_gptes: shadows a guest page table (no passthrough roots in a 4-level guest). */
  get hasGptes(): boolean {
    return !this.direct;
  }
  /** Number of gfns one entry covers. */
  get entrySpan(): number {
    return 512 ** (this.level - 1);
  }
}

export interface RmapEntry {
  sp: ShadowPage;
  i: number;
}
/** slot->arch.rmap[0] (4K): gfn offset in the slot → the SPTEs mapping it */
export type SlotRmap = Map<number, RmapEntry[]>;

export function slotRmap(slot: KvmMemorySlot): SlotRmap {
  let r = slot.arch.rmap as SlotRmap | null | undefined;
  if (r === null || r === undefined) slot.arch.rmap = r = new Map();
  return r;
}

/** What rmap/SPTE code needs of the VM: the pages_4k stat and the longest chain. */
export interface RmapStats {
  pages_4k: number;
  max_mmu_rmap_size: number;
}

/** @kernel arch/x86/kvm/mmu/mmu.c#rmap_add */
export function rmapAdd(stats: RmapStats, slot: KvmMemorySlot, sp: ShadowPage, i: number, gfn: number): void {
  const r = slotRmap(slot);
  const off = gfn - slot.baseGfn;
  let list = r.get(off);
  if (list === undefined) r.set(off, (list = []));
  list.push({ sp, i });
  if (list.length > stats.max_mmu_rmap_size) stats.max_mmu_rmap_size = list.length;
}

/** @kernel arch/x86/kvm/mmu/mmu.c#rmap_remove */
export function rmapRemove(slot: KvmMemorySlot, sp: ShadowPage, i: number, gfn: number): void {
  const r = slot.arch.rmap as SlotRmap | null;
  const list = r?.get(gfn - slot.baseGfn);
  if (list === undefined) return;
  const k = list.findIndex((e) => e.sp === sp && e.i === i);
  if (k >= 0) list.splice(k, 1);
  if (list.length === 0) r!.delete(gfn - slot.baseGfn);
}
