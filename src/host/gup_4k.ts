/**
 * GUP of one page of a 4K-backed mapping without the per-call lookups, for bulk callers that already
 * hold the mapping (the batched guest-access path, x86/mmu/guest_access_bulk.ts): the pfn behind hva,
 * faulted in on first touch.
 *
 * Kernel counterpart: hva_to_pfn → get_user_pages on a present or not-yet-faulted anonymous 4K pte.
 * This is the 4K-frame case of HostMm.hvaToPfnInto / faultIn (host_mm.ts): the fault-in log entry, a
 * fresh pfn, swap-in of content saved for the hva. HostMm.faultIn uses it for every 4K-backed mapping,
 * so the batched path and the per-access path fault pages in through this one function.
 */
import type { FaultLog } from './fault_log.ts';
import type { PfnPool } from './pfn_pool.ts';
import type { Vma } from './vma.ts';

/**
 * Can gup4k serve a `write` (or read) of v's pages? A 4K-backed mapping with no KSM-shared page (a
 * write would break COW, which runs an invalidation) that allows the access.
 */
export function gup4kUsable(v: Vma, write: boolean): boolean {
  return v.framePages === 1 && v.cow.size === 0 && (v.writable || !write);
}

/** The pfn at page-aligned hva in v (gup4kUsable), faulted in on first touch. */
export function gup4k(v: Vma, hva: number, pfns: PfnPool, faults: FaultLog): number {
  const f = (hva - v.frameBase) / 4096;
  const pfn = v.frames[f]!;
  if (pfn !== 0) return pfn;
  faults.record(hva, 4096);
  const nu = pfns.alloc(1);
  v.frames[f] = nu;
  pfns.swapSlotRestore(hva, nu);
  return nu;
}
