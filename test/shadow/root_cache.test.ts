/**
 * The root cache (shadow_roots.ts#rootOf, shadowEnterGuest's fast entry) against VM entry without it
 * (shadowFaultPaths.rootCache off: the cache is never filled): after each step of a directed sequence
 * (two vCPUs alternating, a CR3 change, SMM entry and exit, zap-all making the roots obsolete, CR3 in no
 * memslot: the dummy root) both models give the same results and load the same roots. Each case is one
 * the fast entry must leave to the slow one; dropping any of its checks fails one of them.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, type Vm } from '../../src/kvm/kvm_main.ts';
import type { Vcpu } from '../../src/kvm/vcpu.ts';
import { shadowFaultPaths } from '../../src/x86/mmu/shadow_fault_paths.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import { ROOT_CACHE_ROOT, ROOT_CACHE_VCPU } from '../../src/x86/mmu/shadow_roots.ts';

const PAGE = 4096;
const MiB = 1 << 20;
const RWU = 7;
const AS1 = 1 << 16;
const CR3_A = 0;
const CR3_B = 8 * PAGE;
const CR3_HOLE = 64 * MiB; // no memslot: the dummy root

function build(): { vm: Vm; vcpus: Vcpu[] } {
  const kvm = new Kvm({ tdp: false });
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(4 * MiB);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: hva });
  vm.setUserMemoryRegion({ slot: AS1 | 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: hva });
  // Two CR3s, each PML4 → PDPT → PD → PT mapping gva 2M + i*4K to gpa 2M + i*4K.
  for (const [cr3, base] of [
    [CR3_A, PAGE],
    [CR3_B, 9 * PAGE],
  ] as const) {
    vm.writeGuestPte(cr3, 0, base + RWU);
    vm.writeGuestPte(base, 0, base + PAGE + RWU);
    vm.writeGuestPte(base + PAGE, 1, base + 2 * PAGE + RWU);
    for (let i = 0; i < 16; i++) vm.writeGuestPte(base + 2 * PAGE, i, 2 * MiB + i * PAGE + RWU);
  }
  const vcpus = [vm.createVcpu(0), vm.createVcpu(1)];
  for (const v of vcpus) v.setCr3(CR3_A);
  return { vm, vcpus };
}

type Step = (m: { vm: Vm; vcpus: Vcpu[] }) => unknown;
const access =
  (v: number, i: number): Step =>
  (m) =>
    m.vcpus[v]!.access(2 * MiB + i * PAGE, 'write');

const SEQUENCES: Record<string, Step[]> = {
  'two vCPUs alternating': [access(0, 0), access(1, 1), access(0, 2), access(1, 0), access(0, 3)],
  'a CR3 change': [access(0, 0), (m) => m.vcpus[0]!.setCr3(CR3_B), access(0, 1), access(1, 1)],
  'SMM entry and exit': [
    access(0, 0),
    (m) => (m.vcpus[0]!.smm = true),
    access(0, 1),
    access(1, 2),
    (m) => (m.vcpus[0]!.smm = false),
    access(0, 3),
  ],
  'zap-all (obsolete roots)': [
    access(0, 0),
    access(1, 0),
    (m) => shadowMmuOf(m.vm)!.kvmMmuZapAllFast(),
    access(0, 1),
    access(1, 1),
  ],
  'zap-all, then the vCPU whose root is cached': [
    access(1, 0),
    access(0, 0),
    (m) => shadowMmuOf(m.vm)!.kvmMmuZapAllFast(),
    access(0, 1),
    access(0, 2),
  ],
  'CR3 in no memslot (the dummy root) and back': [
    access(0, 0),
    (m) => m.vcpus[0]!.setCr3(CR3_HOLE),
    access(0, 1),
    (m) => m.vcpus[0]!.setCr3(CR3_A),
    access(0, 2),
  ],
};

/** Each vCPU's root: [id, role, gfn], 'dummy', or null. */
function roots(m: { vm: Vm; vcpus: Vcpu[] }): unknown {
  const mmu = shadowMmuOf(m.vm)!;
  return m.vcpus.map((v) => {
    const r = mmu.roots.get(v);
    return r !== undefined ? [r.id, r.role, r.gfn] : mmu.dummyRoots.has(v) ? 'dummy' : null;
  });
}

describe('the root cache = a Map lookup per VM entry', () => {
  for (const [name, steps] of Object.entries(SEQUENCES)) {
    it(name, () => {
      const fast = build();
      const full = build();
      try {
        for (const step of steps) {
          shadowFaultPaths.rootCache = false;
          const want = step(full);
          shadowFaultPaths.rootCache = true;
          expect(step(fast)).toEqual(want);
          expect(roots(fast)).toEqual(roots(full));
          const mmu = shadowMmuOf(fast.vm)!;
          const v = mmu[ROOT_CACHE_VCPU];
          if (v !== null) expect(mmu.roots.get(v)).toBe(mmu[ROOT_CACHE_ROOT]);
        }
        for (let i = 0; i < 2; i++) expect(fast.vcpus[i]!.getStats()).toEqual(full.vcpus[i]!.getStats());
        expect(shadowMmuOf(full.vm)![ROOT_CACHE_VCPU]).toBe(null);
        expect(fast.vcpus[0]!.getStats().pf_fixed).toBeGreaterThan(0);
      } finally {
        shadowFaultPaths.rootCache = true;
      }
    });
  }
});
