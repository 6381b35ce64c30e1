/**
 * In-place updates of a present leaf's volatile bits, as done outside the TDP MMU's set_spte paths: the
 * CPU's Accessed/Dirty assists and fast_page_fault's cmpxchg that restores W on a write-protected leaf.
 * Neither changes the pfn or presence, so no page stats or handle_changed_spte bookkeeping is involved.
 *
 * Kernel counterpart: the hardware EPT A/D update; arch/x86/kvm/mmu/mmu.c#fast_pf_fix_direct_spte.
 */
import { CHUNK_MASK, CHUNK_SHIFT, HI_OFFSET, TABLE_WORDS, childTableOf } from './sp_pool.ts';
import { PAGES_PER_LEVEL } from './tdp_iter.ts';
import { PT_PAGE_SIZE_MASK, SPTE_MMU_PRESENT_MASK } from './spte.ts';
import type { TdpMmu } from './tdp_mmu_state.ts';

/** Write `lo` into the present leaf mapping gfn in root; returns the value written (or the old one if no leaf). */
export function tdpMmuIterWriteLeafBits(mmu: TdpMmu, root: number, gfn: number, lo: number): number {
  const chunks = mmu.pool.chunks;
  let t = root;
  let level = mmu.pool.role[root]! & 0xf;
  for (;;) {
    const arr = chunks[t >>> CHUNK_SHIFT]!;
    const i = (t & CHUNK_MASK) * TABLE_WORDS + ((gfn / PAGES_PER_LEVEL[level]!) & 511);
    const cur = arr[i]!;
    if ((cur & SPTE_MMU_PRESENT_MASK) === 0) return cur;
    if (level === 1 || (cur & PT_PAGE_SIZE_MASK) !== 0) {
      arr[i] = lo | 0;
      return lo;
    }
    t = childTableOf(cur, arr[i + HI_OFFSET]!);
    level--;
  }
}
