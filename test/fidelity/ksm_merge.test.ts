/**
 * KSM merging (mm/ksm.c, linux-next v6.19-rc5: try_to_merge_two_pages → try_to_merge_one_page →
 * write_protect_page / replace_page). The page that becomes the KSM page is write-protected inside an
 * MMU-notifier invalidation of its own address, so KVM zaps its (writable) SPTEs; the page merged into
 * it is write-protected and replaced, one invalidation each. The model used to invalidate only the
 * replaced page: a guest kept writing the shared KSM page through its old writable SPTE.
 */
import { describe, expect, it } from 'vitest';
import type { MmuNotifierEvent } from '../../src/host/host_mm.ts';
import { Checker } from '../../src/check/checker.ts';
import { guest } from '../mmu/fixture.ts';

/** The invalidations the host sends, as `start:event` (hva offsets from base). */
function spy(host: { registerNotifier(n: object): void }, base: number): string[] {
  const seen: string[] = [];
  host.registerNotifier({
    invalidateRangeStart: (start: number, _end: number, event: MmuNotifierEvent) =>
      seen.push(`${(start - base).toString(16)}:${event}`),
    invalidateRangeEnd: () => {},
    release: () => {},
  });
  return seen;
}

describe('KSM: the page kept as the KSM page is write-protected under an invalidation (write_protect_page)', () => {
  it('a guest that wrote page a cannot write the merged page through its old SPTE', () => {
    const g = guest({ vcpus: 1 });
    const checker = new Checker(g.kvm, { audit: 'points' });
    const v = g.vcpus[0]!;
    const ram = g.vm.memslots()[0]!.userspaceAddr;
    const wa = v.access(0x1000, 'write');
    expect(wa.exit).toBe('none');
    const shared = g.kvm.host.pfnAt(ram + 0x1000);
    expect(v.access(0x2000, 'write').exit).toBe('none');
    const seen = spy(g.kvm.host, ram);
    g.kvm.host.ksmMerge(ram + 0x1000, ram + 0x2000);
    expect(g.kvm.host.pfnAt(ram + 0x2000)).toBe(shared);
    const version = g.kvm.host.pfns.contentVersion(shared);
    // The write faults (a's SPTE is gone), breaks COW in the host and maps a private copy.
    const w = v.access(0x1000, 'write');
    expect(w.exit).toBe('none');
    expect(w.exit === 'none' && w.pfn).not.toBe(shared);
    expect(g.kvm.host.pfnAt(ram + 0x1000)).not.toBe(shared);
    expect(g.kvm.host.pfnAt(ram + 0x2000)).toBe(shared);
    expect(g.kvm.host.pfns.contentVersion(shared)).toBe(version);
    checker.auditPoint('after');
    expect(checker.violations).toEqual([]);
    // a: write_protect_page; b: write_protect_page, replace_page (then the COW break of a's write)
    expect(seen).toEqual(['1000:ksm', '2000:ksm', '2000:ksm', '1000:ksm']);
  });

  it('a page that already is a KSM page is merged into as is (stable tree): only b is invalidated', () => {
    const g = guest({ vcpus: 1 });
    const ram = g.vm.memslots()[0]!.userspaceAddr;
    g.kvm.host.ksmMerge(ram + 0x1000, ram + 0x2000);
    const seen = spy(g.kvm.host, ram);
    g.kvm.host.ksmMerge(ram + 0x1000, ram + 0x3000);
    expect(seen).toEqual(['3000:ksm', '3000:ksm']);
    expect(g.kvm.host.pfnAt(ram + 0x3000)).toBe(g.kvm.host.pfnAt(ram + 0x1000));
  });

  it('b pinned: write_protect_page refuses it, break_cow un-shares a (a COW break: one more invalidation)', () => {
    const g = guest({ vcpus: 1 });
    const ram = g.vm.memslots()[0]!.userspaceAddr;
    const host = g.kvm.host;
    host.hvaToPfn(ram + 0x2000);
    host.pfns.pin(host.pfnAt(ram + 0x2000));
    const before = [host.pfnAt(ram + 0x1000), host.pfnAt(ram + 0x2000)];
    host.hvaToPfn(ram + 0x1000);
    const a0 = host.pfnAt(ram + 0x1000);
    const seen = spy(host, ram);
    host.ksmMerge(ram + 0x1000, ram + 0x2000);
    expect(seen).toEqual(['1000:ksm', '2000:ksm', '1000:ksm']);
    expect(host.pfnAt(ram + 0x2000)).toBe(before[1]);
    expect(host.pfnAt(ram + 0x1000)).not.toBe(a0);
    expect(host.hvaToPfn(ram + 0x1000)!.writable).toBe(true);
  });
});
