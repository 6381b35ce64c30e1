/**
 * A memslot set's hva index: which slots' userspace ranges intersect an hva range, as the MMU notifier
 * handlers ask (__kvm_handle_hva_range). The slots sorted by userspace_addr with a running maximum of their ends,
 * so a query is a binary search for the last slot starting below the range's end, then a walk down
 * while the running maximum still reaches past its start. Built on the first query after a change to
 * the set (KvmMemslots drops it on every change).
 *
 * Kernel counterpart: the per-set hva interval tree (struct kvm_memslots.hva_tree, a node per slot),
 * walked by virt/kvm/kvm_main.c's kvm_for_each_memslot_in_hva_range (interval_tree_iter_first/_next over
 * [start, last], inclusive). Read in the stored ColinIanKing/linux-next kvm_main.c (commit bf052e4f, a
 * 6.19-rc tree: the macro and its use in __kvm_handle_hva_range) and include/linux/interval_tree_generic.h
 * (stored torvalds/linux copy 371bb621): the iterator returns the intersecting nodes in rb order, i.e. by
 * start (userspace_addr), and _insert sends an equal start to the right, so slots with the same
 * userspace_addr come back in the order they entered that set's tree. Simplification: a sorted array in
 * place of the augmented rb-tree; the same slots come back in userspace_addr order, but slots sharing a
 * userspace_addr (aliases) in gfn order (docs/simplifications.md).
 */
import type { KvmMemorySlot } from './kvm_host.ts';

export interface HvaIndex {
  /** the set's slots by userspace_addr */
  slots: KvmMemorySlot[];
  /** maxEnd[i]: the highest userspace end among slots[0..i] */
  maxEnd: Float64Array;
}

export function buildHvaIndex(sorted: readonly KvmMemorySlot[]): HvaIndex {
  const slots = [...sorted].sort((a, b) => a.userspaceAddr - b.userspaceAddr);
  const maxEnd = new Float64Array(slots.length);
  let m = 0;
  slots.forEach((s, i) => {
    m = Math.max(m, s.userspaceAddr + s.npages * 4096);
    maxEnd[i] = m;
  });
  return { slots, maxEnd };
}

/** The slots whose userspace range intersects [start, end) (bytes), in userspace_addr order. */
export function hvaIndexRange(idx: HvaIndex, start: number, end: number): KvmMemorySlot[] {
  const out: KvmMemorySlot[] = [];
  // last slot with hva start < end
  let lo = 0;
  let hi = idx.slots.length - 1;
  let i = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (idx.slots[mid]!.userspaceAddr < end) {
      i = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  for (; i >= 0 && idx.maxEnd[i]! > start; i--) {
    const s = idx.slots[i]!;
    if (s.userspaceAddr + s.npages * 4096 > start) out.push(s);
  }
  return out.reverse();
}
