/**
 * One VMM mapping (a VMA) and its pages: a base pfn per backing frame (4K, 2M or 1G), frames split to
 * 4K entries where the host maps them at 4K (a THP split, a partial THP at an edge, a migrated page of
 * a huge frame), and KSM copy-on-write marks; and the process's list of them (sorted by address,
 * disjoint): the mappings over a range, the present pages under it, cuts at a range's ends. The
 * host-memory events in host_mm.ts and page_events.ts edit mappings only through these helpers.
 *
 * Kernel counterpart: struct vm_area_struct with its page tables, as far as KVM's GUP and
 * host_pfn_mapping_level observe them (pte / pmd / pud leaves); the list is mm's VMA tree as the range
 * walks of mm/{mmap,mprotect}.c use it (__split_vma at a range's ends).
 */
import type { PfnPool } from './pfn_pool.ts';

export type Backing = '4k' | '2m' | '1g' | 'thp';
const PAGE = 4096;

export interface Vma {
  start: number;
  length: number;
  backing: Backing;
  writable: boolean;
  /** Pages per backing frame: 1 (4K), 512 (2M hugetlb / THP), 262144 (1G). */
  framePages: number;
  /** First frame's address: start rounded down to the frame size (THP mappings may start mid-frame). */
  frameBase: number;
  /** Base pfn per frame (0 = not present). A split frame's pages live in `split` instead. */
  frames: Float64Array;
  /** Frames mapped at 4K (a THP split, a partial THP at a mapping edge, a migrated page): pfn per page. */
  split: Map<number, Float64Array>;
  /** KSM-merged pages (page index): mapped read-only until a write breaks the sharing (COW). */
  cow: Set<number>;
}

/** Frame index of addr in v. */
export function frameIndex(v: Vma, addr: number): number {
  return Math.floor((addr - v.frameBase) / (v.framePages * PAGE));
}

/** A page lookup's answer: the pfn at addr (0 if absent) and its mapping level. */
export interface PageAt {
  pfn: number;
  level: 1 | 2 | 3;
}

/** The pfn at addr (0 if absent) and its mapping level. */
export function pageAt(v: Vma, addr: number): PageAt {
  const out: PageAt = { pfn: 0, level: 1 };
  pageInto(v, addr, out);
  return out;
}

/** pageAt into `out` (no object per lookup, for the fault and pin paths). */
export function pageInto(v: Vma, addr: number, out: PageAt): void {
  const fp = v.framePages;
  const f = frameIndex(v, addr);
  if (fp > 1 && v.split.size > 0) {
    const arr = v.split.get(f);
    if (arr !== undefined) {
      out.pfn = arr[Math.floor((addr - v.frameBase) / PAGE) % fp]!;
      out.level = 1;
      return;
    }
  }
  const base = v.frames[f]!;
  if (base === 0) {
    out.pfn = 0;
    out.level = 1;
    return;
  }
  out.pfn = fp === 1 ? base : base + (Math.floor((addr - v.frameBase) / PAGE) % fp);
  out.level = fp === 1 ? 1 : fp === 512 ? 2 : 3;
}

/**
 * The pfn at addr when [addr, addr + pages × 4K) lies inside v in one present, unsplit frame, so the
 * pages there map pfn, pfn + 1, …; else 0. (A bulk pageAt for the audits.)
 */
export function framePfnRun(v: Vma, addr: number, pages: number): number {
  const fp = v.framePages;
  if (fp < pages || addr < v.start || addr + pages * PAGE > v.start + v.length) return 0;
  const f = frameIndex(v, addr);
  if (frameIndex(v, addr + (pages - 1) * PAGE) !== f || v.split.has(f)) return 0;
  const base = v.frames[f]!;
  return base === 0 ? 0 : base + (Math.floor((addr - v.frameBase) / PAGE) % fp);
}

/** Map the 4K page at addr to pfn (0 = unmap), splitting its huge frame to 4K first. */
export function setPage(v: Vma, addr: number, pfn: number, pool: PfnPool): void {
  if (v.framePages === 1) {
    v.frames[frameIndex(v, addr)] = pfn;
    return;
  }
  const arr = splitFrame(v, frameIndex(v, addr), pool);
  arr[Math.floor((addr - v.frameBase) / PAGE) % v.framePages] = pfn;
}

/** Turn a huge frame into per-page entries (same pfns), once; the compound page is split with it. */
export function splitFrame(v: Vma, f: number, pool: PfnPool): Float64Array {
  let arr = v.split.get(f);
  if (arr !== undefined) return arr;
  arr = new Float64Array(v.framePages);
  const base = v.frames[f]!;
  if (base !== 0) pool.splitCompound(base);
  if (base !== 0) for (let k = 0; k < v.framePages; k++) arr[k] = base + k;
  v.frames[f] = 0;
  v.split.set(f, arr);
  return arr;
}

/** The part [s, e) of v as a mapping of its own (frames copied; a huge frame cut in two is split first). */
export function sliceVma(v: Vma, s: number, e: number, pool: PfnPool): Vma {
  const fp = v.framePages;
  const fs = frameIndex(v, s);
  const fe = frameIndex(v, e - 1);
  if (fp > 1)
    for (const c of [s, e])
      if ((c - v.frameBase) % (fp * PAGE) !== 0 && c > v.start && c < v.start + v.length)
        splitFrame(v, frameIndex(v, c), pool);
  const split = new Map<number, Float64Array>();
  for (const [f, arr] of v.split) if (f >= fs && f <= fe) split.set(f - fs, arr.slice());
  const cow = new Set<number>();
  for (const i of v.cow) {
    const a = v.start + i * PAGE;
    if (a >= s && a < e) cow.add((a - s) / PAGE);
  }
  return {
    start: s,
    length: e - s,
    backing: v.backing,
    writable: v.writable,
    framePages: fp,
    frameBase: v.frameBase + fs * fp * PAGE,
    frames: v.frames.slice(fs, fe + 1),
    split,
    cow,
  };
}

/** The mappings of `vmas` (sorted, disjoint) overlapping [start, end), in address order (a binary search, then a scan). */
export function vmasIn(vmas: readonly Vma[], start: number, end: number): Vma[] {
  let lo = 0;
  let hi = vmas.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (vmas[mid]!.start + vmas[mid]!.length <= start) lo = mid + 1;
    else hi = mid;
  }
  const out: Vma[] = [];
  for (let i = lo; i < vmas.length && vmas[i]!.start < end; i++) out.push(vmas[i]!);
  return out;
}

/**
 * Visit every present page of [start, start+len): only the mappings that overlap the range, and in
 * each only its present frames, so an event costs what is mapped there, not the range's length (a
 * munmap of the whole 128 TiB address space returns at once, as mm's VMA walk does).
 */
export function forPresentPages(
  vmas: readonly Vma[],
  start: number,
  len: number,
  f: (v: Vma, addr: number) => void,
): void {
  const end = start + len;
  for (const v of vmasIn(vmas, start, end)) {
    const s = Math.max(start, v.start);
    const e = Math.min(end, v.start + v.length);
    const fbytes = v.framePages * PAGE;
    for (let fi = frameIndex(v, s), fl = frameIndex(v, e - 1); fi <= fl; fi++) {
      if (v.frames[fi] === 0 && !v.split.has(fi)) continue; // nothing mapped in this frame
      const fs = Math.max(s, v.frameBase + fi * fbytes);
      const fe = Math.min(e, v.frameBase + (fi + 1) * fbytes);
      for (let a = fs; a < fe; a += PAGE) if (pageAt(v, a).pfn !== 0) f(v, a);
    }
  }
}

/**
 * `vmas` cut at addr and addr+length: a mapping straddling a cut becomes its slices (a THP frame
 * straddling a cut is split to 4K first, sliceVma); a new list, the untouched mappings the same objects.
 */
export function splitVmasAround(vmas: readonly Vma[], addr: number, length: number, pool: PfnPool): Vma[] {
  const out: Vma[] = [];
  for (const v of vmas) {
    const cuts = [v.start, v.start + v.length];
    for (const c of [addr, addr + length]) if (c > v.start && c < v.start + v.length) cuts.push(c);
    if (cuts.length === 2) {
      out.push(v);
      continue;
    }
    cuts.sort((x, y) => x - y);
    for (let k = 0; k + 1 < cuts.length; k++) out.push(sliceVma(v, cuts[k]!, cuts[k + 1]!, pool));
  }
  return out;
}
