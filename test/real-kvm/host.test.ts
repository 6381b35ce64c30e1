/**
 * The real backend's VMM address space (RealHost): mapping kinds, alignment, bounds-checked host access
 * to guest memory, and its errors.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import { REAL_KVM, announceSkip, errnoOf } from './env.ts';

announceSkip('host');

const hugepages2m = (): number => {
  try {
    return Number(readFileSync('/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages', 'utf8'));
  } catch {
    return 0;
  }
};

describe.skipIf(!REAL_KVM.ok)('real backend host memory', () => {
  let kvm: RealKvm;
  beforeAll(() => {
    kvm = new RealKvm();
  });
  afterAll(() => kvm.close());

  it("'thp' mappings are 2 MiB aligned; '4k' ones page aligned", () => {
    const t = kvm.host.mmap(4 << 20, { backing: 'thp' });
    expect(t % (2 << 20)).toBe(0);
    const a = kvm.host.mmap(12345);
    expect(a % 4096).toBe(0);
    expect(kvm.host.mappingOf(t + 100, 10)).toMatchObject({ hva: t, backing: 'thp' });
    kvm.host.munmap(t);
    kvm.host.munmap(a);
    expect(kvm.host.mappingOf(t)).toBeNull();
  });

  it("'2m' is hugetlbfs: ENOMEM from mmap when the host has no free 2 MiB pages", () => {
    const r = errnoOf(() => kvm.host.munmap(kvm.host.mmap(2 << 20, { backing: '2m' })));
    expect(r).toBe(hugepages2m() > 0 ? 'ok' : 'ENOMEM');
  });

  it('host access is bounds checked against the mappings made here', () => {
    const a = kvm.host.mmap(8192);
    kvm.host.write(a + 4090, Uint8Array.of(1, 2, 3, 4, 5, 6));
    expect([...kvm.host.read(a + 4090, 6)]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(errnoOf(() => kvm.host.read(a + 8190, 4))).toBe('EFAULT');
    expect(errnoOf(() => kvm.host.read(0x1000, 1))).toBe('EFAULT');
    expect(errnoOf(() => kvm.host.munmap(a + 4096))).toBe('EINVAL');
    expect(errnoOf(() => kvm.host.mmap(0))).toBe('EINVAL');
    expect(errnoOf(() => kvm.host.mmap(4096, { backing: 'huge' as never }))).toBe('EINVAL');
    kvm.host.munmap(a);
    expect(errnoOf(() => kvm.host.munmap(a))).toBe('EINVAL');
  });

  it('pagemap: no pfn before the first touch, a stable one after', () => {
    const a = kvm.host.mmap(4096);
    expect(kvm.host.pagemapPfn(a)).toBeNull();
    kvm.host.write(a, Uint8Array.of(1));
    const pfn = kvm.host.pagemapPfn(a);
    expect(pfn).toBeGreaterThan(0);
    expect(kvm.host.pagemapPfn(a)).toBe(pfn);
    kvm.host.munmap(a);
  });
});
