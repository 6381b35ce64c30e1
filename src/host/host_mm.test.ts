import { describe, expect, it } from 'vitest';
import { HostMm, type MmuNotifier } from './host_mm.ts';

const M2 = 0x200000;

function recorder(host: HostMm): string[] {
  const log: string[] = [];
  const n: MmuNotifier = {
    invalidateRangeStart: (s, e, ev) =>
      log.push(`start ${ev} ${(s - 2 ** 40).toString(16)}+${(e - s).toString(16)}`),
    invalidateRangeEnd: (_s, _e, ev) => log.push(`end ${ev}`),
    release: () => log.push('release'),
  };
  host.registerNotifier(n);
  return log;
}

describe('HostMm', () => {
  it('faults in distinct 4K pfns on first touch and keeps them', () => {
    const h = new HostMm();
    const a = h.mmap(4 * 4096);
    const p0 = h.hvaToPfn(a)!;
    const p1 = h.hvaToPfn(a + 4096)!;
    expect(p0.level).toBe(1);
    expect(p1.pfn).not.toBe(p0.pfn);
    expect(h.hvaToPfn(a)!.pfn).toBe(p0.pfn);
    expect(h.hvaToPfn(a + 4 * 4096)).toBeNull();
  });

  it('backs a 2M hugetlb / THP frame with 512 contiguous pfns at level 2; THP at an unaligned edge is 4K', () => {
    const h = new HostMm();
    const a = h.mmap(2 * M2, { backing: '2m' });
    const p = h.hvaToPfn(a + 5 * 4096)!;
    expect(p.level).toBe(2);
    expect(h.hvaToPfn(a)!.pfn).toBe(p.pfn - 5);
    expect(h.hvaToPfn(a)!.pfn % 512).toBe(0);
    const t = h.mmap(M2 + 4096, { backing: 'thp' });
    expect(h.hvaToPfn(t)!.level).toBe(2);
    expect(h.hvaToPfn(t + M2)!.level).toBe(1);
  });

  it('munmap frees pages for reuse and brackets the change with the notifier', () => {
    const h = new HostMm();
    const log = recorder(h);
    const a = h.mmap(2 * 4096);
    const old = h.hvaToPfn(a + 4096)!.pfn;
    h.munmap(a + 4096, 4096);
    expect(log).toEqual([
      'start unmap 0+1000'.replace('0+', (a + 4096 - 2 ** 40).toString(16) + '+'),
      'end unmap',
    ]);
    expect(h.hvaToPfn(a + 4096)).toBeNull();
    expect(h.pfns.isFree(old)).toBe(true);
    const b = h.mmap(4096);
    expect(h.hvaToPfn(b)!.pfn).toBe(old); // reused: a stale mapping would now reach b's page
    expect(h.hvaToPfn(a)).not.toBeNull();
  });

  it('migration moves a page to a new pfn with the same content; THP split keeps pfns at 4K', () => {
    const h = new HostMm();
    const a = h.mmap(M2, { backing: 'thp' });
    const before = h.hvaToPfn(a)!;
    h.thpSplit(a);
    const split = h.hvaToPfn(a)!;
    expect([split.pfn, split.level]).toEqual([before.pfn, 1]);
    const v = h.pfns.contentVersion(split.pfn);
    h.migrate(a, 4096);
    const moved = h.hvaToPfn(a)!;
    expect(moved.pfn).not.toBe(split.pfn);
    expect(h.pfns.contentVersion(moved.pfn)).toBe(v);
    h.thpCollapse(a);
    const c = h.hvaToPfn(a + 4096)!;
    expect(c.level).toBe(2);
  });

  it('stepwise: the change happens only when the returned function runs', () => {
    const h = new HostMm();
    const log = recorder(h);
    const a = h.mmap(4096);
    const p = h.hvaToPfn(a)!.pfn;
    const finish = h.migrate(a, 4096, { stepwise: true });
    expect(h.inFlight()).toBe(1);
    expect(h.pfnAt(a)).toBe(p);
    finish();
    expect(h.inFlight()).toBe(0);
    expect(h.pfnAt(a)).not.toBe(p);
    expect(log.map((l) => l.split(' ')[0])).toEqual(['start', 'end']);
  });

  it('swap-out frees the page; swap-in restores its content in a new page', () => {
    const h = new HostMm();
    const a = h.mmap(4096);
    const p = h.hvaToPfn(a)!.pfn;
    h.pfns.write(p);
    const v = h.pfns.contentVersion(p);
    h.swapOut(a, 4096);
    expect(h.pfnAt(a)).toBe(0);
    h.hvaToPfn(h.mmap(4096)); // someone else takes the freed page
    const back = h.hvaToPfn(a)!.pfn;
    expect(back).not.toBe(p);
    expect(h.pfns.contentVersion(back)).toBe(v);
  });

  it('KSM merge shares one read-only page; a write breaks the sharing', () => {
    const h = new HostMm();
    const a = h.mmap(4096);
    const b = h.mmap(4096);
    h.ksmMerge(a, b);
    expect(h.hvaToPfn(b)!.pfn).toBe(h.hvaToPfn(a)!.pfn);
    expect(h.hvaToPfn(b)!.writable).toBe(false);
    const w = h.hvaToPfn(b, true)!;
    expect(w.writable).toBe(true);
    expect(w.pfn).not.toBe(h.hvaToPfn(a)!.pfn);
  });

  it('mprotect read-only: a write lookup fails, a read still works', () => {
    const h = new HostMm();
    const a = h.mmap(2 * 4096);
    h.mprotect(a, 4096, false);
    expect(h.hvaToPfn(a, true)).toBeNull();
    expect(h.hvaToPfn(a)!.writable).toBe(false);
    expect(h.hvaToPfn(a + 4096, true)!.writable).toBe(true);
  });
});
