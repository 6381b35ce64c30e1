/**
 * The host-memory events that move or share the pages under mapped hvas without changing the mappings:
 * page migration / compaction, THP split and collapse, swap-out, KSM merge. Each brackets its page-table
 * change with the MMU notifiers through HostMm.changePages; HostMm keeps one-line methods that call these.
 *
 * Kernel counterpart: the mmu_notifier_invalidate_range_start/end call sites in
 * mm/{migrate,huge_memory,khugepaged,vmscan,ksm}.c, as KVM observes them. Not a model of mm/ itself.
 */
import { argBool, argOpts, readHostNumber } from '../kvm/args.ts';
import type { HostMm } from './host_mm.ts';
import { frameIndex, pageAt, setPage, splitFrame, type Vma } from './vma.ts';

const PAGE = 4096;

/** Page migration / compaction: each present page under [addr, addr+len) moves to a new pfn (a THP is split first). */
export function migrate(
  mm: HostMm,
  addr: number,
  length: number,
  opts: { stepwise?: boolean } = {},
): () => void {
  checkRange('migrate', addr, length);
  const stepwise = readStepwise('migrate', opts);
  return mm.changePages(
    addr,
    length,
    'migrate',
    () => {
      mm.forPages(addr, length, (v, a) => {
        const old = pageAt(v, a).pfn;
        // A long-term pinned page cannot move: migration unmaps it (the notifiers above fired),
        // finds the extra references and puts it back.
        if (old === 0 || mm.pfns.isPinned(old)) return;
        const nu = mm.pfns.alloc(1);
        mm.pfns.copyContent(old, nu);
        setPage(v, a, nu, mm.pfns); // splits a huge frame first, so `old` has its own refcount
        mm.pfns.put(old);
      });
    },
    stepwise,
  );
}

/** split_huge_pmd: a 2M THP becomes 512 4K ptes on the same pfns. */
export function thpSplit(mm: HostMm, addr: number): void {
  readHostNumber('thpSplit', 'addr', addr);
  const f0 = Math.floor(addr / 0x200000) * 0x200000;
  mm.changePages(f0, 0x200000, 'thp_split', () => {
    const v = mm.findVma(f0);
    if (v !== null && v.framePages === 512) splitFrame(v, frameIndex(v, f0), mm.pfns);
  });
}

/** khugepaged collapse: the 512 pages of a 2M frame are copied into a fresh huge page. */
export function thpCollapse(mm: HostMm, addr: number): void {
  readHostNumber('thpCollapse', 'addr', addr);
  const f0 = Math.floor(addr / 0x200000) * 0x200000;
  const v = mm.findVma(f0);
  if (v === null || v.backing !== 'thp' || f0 < v.start || f0 + 0x200000 > v.start + v.length) {
    throw new RangeError(`thpCollapse: 0x${addr.toString(16)} is not in a whole 2M frame of a THP mapping`);
  }
  // khugepaged's scan finds a long-term pinned page's extra references and gives up on the frame
  // before any invalidation (SCAN_PAGE_COUNT).
  for (let a = f0; a < f0 + 0x200000; a += PAGE) if (mm.pfns.isPinned(pageAt(v, a).pfn)) return;
  mm.changePages(f0, 0x200000, 'thp_collapse', () => {
    const f = frameIndex(v, f0);
    const base = mm.pfns.alloc(512);
    for (let k = 0; k < 512; k++) {
      const old = pageAt(v, f0 + k * PAGE).pfn;
      if (old) {
        mm.pfns.copyContent(old, base + k);
        mm.pfns.put(old);
      }
    }
    v.split.delete(f);
    v.frames[f] = base;
  });
}

/** Reclaim: pages are written to swap and freed; the next touch faults in a new page with the same content. */
export function swapOut(mm: HostMm, addr: number, length: number): void {
  checkRange('swapOut', addr, length);
  mm.changePages(addr, length, 'swap', () => {
    mm.forPages(addr, length, (v, a) => {
      const old = pageAt(v, a).pfn;
      // try_to_unmap cannot unshare a pinned anonymous page: it stays mapped (and resident).
      if (old === 0 || mm.pfns.isPinned(old)) return;
      mm.pfns.swapSlotSave(a, old);
      setPage(v, a, 0, mm.pfns);
      mm.pfns.put(old);
    });
  });
}

/**
 * KSM: the page at b becomes a read-only share of the page at a (same content assumed). As
 * try_to_merge_two_pages (mm/ksm.c, linux-next 6.19-rc5): the page at a becomes the KSM page first
 * (write_protect_page: its PTE made read-only inside an invalidation of a's page, so KVM zaps a's
 * SPTEs, writable ones included), unless it already is one (a stable-tree match, try_to_merge_with_ksm_page
 * only); then b is write-protected and replaced (write_protect_page, replace_page: two invalidations of
 * b's page). write_protect_page refuses a pinned page; if b's refuses, break_cow un-shares a again.
 * @kernel mm/ksm.c#try_to_merge_two_pages
 */
export function ksmMerge(mm: HostMm, a: number, b: number): void {
  readHostNumber('ksmMerge', 'a', a);
  readHostNumber('ksmMerge', 'b', b);
  const va = mm.findVma(a);
  const vb = mm.findVma(b);
  if (va === null || vb === null) throw new RangeError('ksmMerge: a and b must both be mapped');
  mm.hvaToPfn(a);
  mm.hvaToPfn(b);
  const pa = Math.floor(a / PAGE) * PAGE;
  const pb = Math.floor(b / PAGE) * PAGE;
  const ia = Math.floor((pa - va.start) / PAGE);
  const madeKsm = !va.cow.has(ia);
  if (madeKsm && !ksmWriteProtect(mm, va, pa, () => va.cow.add(ia))) return;
  if (!ksmWriteProtect(mm, vb, pb, () => {})) {
    if (madeKsm) mm.breakCow(va, ia); // break_cow: a KSM page with one PTE is broken again
    return;
  }
  mm.changePages(pb, PAGE, 'ksm', () => {
    // replace_page
    const shared = pageAt(va, pa).pfn;
    const old = pageAt(vb, pb).pfn;
    setPage(vb, pb, shared, mm.pfns);
    mm.pfns.put(old);
    mm.pfns.get(shared);
    vb.cow.add(Math.floor((pb - vb.start) / PAGE));
  });
}

/** One invalidation of the page; false if its extra (pin) references refuse it. @kernel mm/ksm.c#write_protect_page */
function ksmWriteProtect(mm: HostMm, v: Vma, addr: number, protect: () => void): boolean {
  let ok = false;
  mm.changePages(addr, PAGE, 'ksm', () => {
    if (mm.pfns.isPinned(pageAt(v, addr).pfn)) return;
    protect();
    ok = true;
  });
  return ok;
}

/** The (addr, length) of a range event: page aligned and non-empty. */
export function checkRange(fn: string, addr: number, length: number): void {
  readHostNumber(fn, 'addr', addr);
  readHostNumber(fn, 'length', length);
  if (addr % PAGE || length <= 0 || length % PAGE) {
    throw new RangeError(
      `${fn}: range 0x${addr.toString(16)}+0x${length.toString(16)} must be page aligned and non-empty`,
    );
  }
}

/** The `stepwise` option of an event that can be driven start / change+end. */
export function readStepwise(fn: string, opts: unknown): boolean {
  return argBool(fn, 'stepwise', argOpts(fn, opts, ['stepwise'])['stepwise'], false);
}
