/**
 * The two last-used memslot caches, as the kernel keeps them (linux-next 03b9d314, virt/kvm/kvm_main.c
 * kvm_vcpu_gfn_to_memslot; include/linux/kvm_host.h ____gfn_to_memslot):
 *   - a VM-context lookup (__gfn_to_memslot) reads and writes the set-wide slots->last_used_slot;
 *   - a vCPU-context lookup (kvm_vcpu_gfn_to_memslot) reads and writes only vcpu->last_used_slot, which
 *     it drops when the vCPU's address space's generation is not the one it was cached under (a memslot
 *     update since, the update-in-progress bit, or the other address space in SMM), and searches with
 *     search_memslots, which leaves the set-wide cache alone;
 * and the invariant checker looks slots up without moving either (its lookups are not the kernel's).
 * Which cache was consulted shows in whether the search ran (a spy on KvmMemslots' search).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { Kvm, type Vcpu, type Vm } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import {
  KvmMemslots,
  LAST_USED_SLOT,
  LAST_USED_SLOT_GEN,
  newMemslot,
  type VcpuLastUsedSlot,
} from '../../src/kvm/memslots.ts';
import type { KvmMemorySlot } from '../../src/kvm/kvm_host.ts';
import { asGfn, asHva } from '../../src/types/addr.ts';
import { IdentityMapBuilder } from '../../src/x86/mmu/guest_paging.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import { attempt, build, hostArb, opArb, step, type Model, type Op } from '../property/access_workload.ts';

afterEach(() => vi.restoreAllMocks());

/** Counts the searches past both caches (search_memslots). */
function spySearch(): { count: () => number } {
  const spy = vi.spyOn(KvmMemslots.prototype as unknown as { search: () => unknown }, 'search');
  let base = 0;
  return {
    count: () => {
      const n = spy.mock.calls.length - base;
      base = spy.mock.calls.length;
      return n;
    },
  };
}

function twoSlots(): { set: KvmMemslots; a: KvmMemorySlot; b: KvmMemorySlot } {
  const set = new KvmMemslots(0, 0);
  const a = newMemslot(0, 0, asGfn(0), 16, asHva(2 ** 40), 0);
  const b = newMemslot(0, 1, asGfn(100), 16, asHva(2 ** 41), 0);
  set.replace(null, a);
  set.replace(null, b);
  return { set, a, b };
}

const freshVcpu = (): VcpuLastUsedSlot => ({ [LAST_USED_SLOT]: null, [LAST_USED_SLOT_GEN]: 0 });

describe('kvm_vcpu_gfn_to_memslot vs __gfn_to_memslot (which cache, on which path)', () => {
  it('a vCPU lookup uses and fills only the vCPU cache; a VM lookup only the set-wide one', () => {
    const { set, a, b } = twoSlots();
    const v = freshVcpu();
    const searches = spySearch();
    expect(set.vcpuGfnToMemslot(v, 5)).toBe(a);
    expect(searches.count()).toBe(1);
    expect(v[LAST_USED_SLOT]).toBe(a);
    expect(set.lastUsedSlot).toBeNull(); // search_memslots: the VM-wide cache untouched
    expect(set.vcpuGfnToMemslot(v, 15)).toBe(a);
    expect(searches.count()).toBe(0); // try_get_memslot on the vCPU's slot
    // the VM-wide path does not see the vCPU's cache
    expect(set.searchMemslots(7)).toBe(a);
    expect(searches.count()).toBe(1);
    expect(set.lastUsedSlot).toBe(a);
    expect(set.searchMemslots(3)).toBe(a);
    expect(searches.count()).toBe(0);
    // the vCPU moves to b: the VM-wide cache stays on a
    expect(set.vcpuGfnToMemslot(v, 100)).toBe(b);
    expect(searches.count()).toBe(1);
    expect(v[LAST_USED_SLOT]).toBe(b);
    expect(set.lastUsedSlot).toBe(a);
    // the VM moves to b: the vCPU's cache is not consulted (b is searched again) and stays b
    expect(set.searchMemslots(101)).toBe(b);
    expect(searches.count()).toBe(1);
    // a miss fills neither cache
    expect(set.vcpuGfnToMemslot(v, 50)).toBeNull();
    expect(set.searchMemslots(50)).toBeNull();
    expect(v[LAST_USED_SLOT]).toBe(b);
    expect(set.lastUsedSlot).toBe(b);
    // a peek (the checker's lookup) reads the VM-wide cache and moves nothing
    expect(set.peekMemslot(3)).toBe(a);
    expect(set.lastUsedSlot).toBe(b);
    expect(v[LAST_USED_SLOT]).toBe(b);
  });

  it('the vCPU cache is dropped on a generation change, including the update-in-progress bit', () => {
    const { set, a } = twoSlots();
    const v = freshVcpu();
    const searches = spySearch();
    set.vcpuGfnToMemslot(v, 1);
    expect(searches.count()).toBe(1);
    set.updateInProgress = true; // gen | KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS
    expect(set.vcpuGfnToMemslot(v, 1)).toBe(a);
    expect(searches.count()).toBe(1);
    expect(set.vcpuGfnToMemslot(v, 2)).toBe(a);
    expect(searches.count()).toBe(0);
    set.updateInProgress = false;
    set.generation += 2;
    expect(set.vcpuGfnToMemslot(v, 3)).toBe(a);
    expect(searches.count()).toBe(1);
    expect(v[LAST_USED_SLOT_GEN]).toBe(2);
    // the set-wide cache has no generation: it is kept in step by kvm_replace_memslot instead
    set.searchMemslots(1);
    set.generation += 2;
    searches.count();
    set.searchMemslots(2);
    expect(searches.count()).toBe(0);
  });

  /** A TDP VM with RAM at 0 and a second slot, two vCPUs, SMRAM (as_id 1) over the first 64 KiB. */
  function tdpVm(): { vm: Vm; v0: Vcpu; v1: Vcpu } {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    const hva = kvm.host.mmap(4 << 20);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 2 << 20, userspaceAddr: hva });
    vm.setUserMemoryRegion({
      slot: 1,
      guestPhysAddr: 1 << 30,
      memorySize: 2 << 20,
      userspaceAddr: hva + (2 << 20),
    });
    vm.setUserMemoryRegion({
      slot: (1 << 16) | 0,
      guestPhysAddr: 0,
      memorySize: 0x10000,
      userspaceAddr: hva,
    });
    return { vm, v0: vm.createVcpu(0), v1: vm.createVcpu(1) };
  }

  it('guest accesses (fast and full path, TDP) move only the accessing vCPU cache', () => {
    const { vm, v0, v1 } = tdpVm();
    const as0 = vm.activeMemslots(0);
    const ram = as0.idToMemslot(0)!;
    const hi = as0.idToMemslot(1)!;
    expect(v0.access(0x1000, 'write').exit).toBe('none'); // first touch: the fast path
    expect(v0[LAST_USED_SLOT]).toBe(ram);
    expect(v1[LAST_USED_SLOT]).toBeNull();
    expect(as0.lastUsedSlot).toBeNull();
    expect(v1.access(1 << 30, 'exec').exit).toBe('none'); // exec: the full path
    expect(v1[LAST_USED_SLOT]).toBe(hi);
    expect(v0[LAST_USED_SLOT]).toBe(ram);
    expect(as0.lastUsedSlot).toBeNull();
    // a memslot update moves the generation: the next lookup drops the vCPU's slot and searches
    vm.setUserMemoryRegion({
      slot: 2,
      guestPhysAddr: 2 ** 31,
      memorySize: 0x1000,
      userspaceAddr: 0x7000_0000,
    });
    const searches = spySearch();
    expect(v0.access(0x2000, 'read').exit).toBe('none');
    expect(searches.count()).toBe(1);
    expect(v0[LAST_USED_SLOT_GEN]).toBe(vm.activeMemslots(0).generation);
    expect(v0.access(0x3000, 'read').exit).toBe('none');
    expect(searches.count()).toBe(0);
    // SMM: the vCPU looks up in as_id 1 (its own generation), so its cache is dropped and refilled there
    v0.smm = true;
    expect(v0.access(0x4000, 'read').exit).toBe('none');
    expect(searches.count()).toBe(1);
    expect(v0[LAST_USED_SLOT]).toBe(vm.activeMemslots(1).idToMemslot(0));
    expect(v0[LAST_USED_SLOT_GEN]).toBe(vm.activeMemslots(1).generation);
    expect(vm.activeMemslots(1).lastUsedSlot).toBeNull();
  });

  it('a shadow fault walks the guest tables and maps the data through the vCPU cache', () => {
    // data in slot 0 at 4 GiB, the guest's page tables in slot 1 at gpa 0
    const { vm, v, data } = shadowVm(1, 1, 16);
    v.access(data, 'write');
    const searches = spySearch();
    // the walk reads 4 table pages in slot 1, then the fault looks up the data page in slot 0: the vCPU
    // cache takes both in turn (2 searches); sp-role lookups of the tables use the set-wide cache, which
    // stays on slot 1 after the first fault, so they search nothing
    expect(v.access(data + 4096, 'write').exit).toBe('none');
    expect(v[LAST_USED_SLOT]).toBe(vm.activeMemslots(0).idToMemslot(0));
    expect(searches.count()).toBe(2);
  });
});

/** A shadow-MMU VM (pvm-6.18): nData 1 MiB data slots from 4 GiB (ids 0..), the guest's page tables in
 * slot tableSlot at gpa 0 identity-mapping the first `mapped` data pages, one vCPU on those tables. */
interface ShadowVm {
  kvm: Kvm;
  vm: Vm;
  v: Vcpu;
  data: number;
}
function shadowVm(nData: number, tableSlot: number, mapped: number): ShadowVm {
  const kvm = new Kvm({ profile: 'pvm-6.18' });
  const vm = kvm.createVm(0);
  const data = 2 ** 32;
  for (let s = 0; s < nData; s++)
    vm.setUserMemoryRegion({
      slot: s,
      guestPhysAddr: data + s * (1 << 20),
      memorySize: 1 << 20,
      userspaceAddr: kvm.host.mmap(1 << 20),
    });
  vm.setUserMemoryRegion({
    slot: tableSlot,
    guestPhysAddr: 0,
    memorySize: 1 << 20,
    userspaceAddr: kvm.host.mmap(1 << 20),
  });
  const map = new IdentityMapBuilder(shadowMmuOf(vm)!.gpt, 0, 1 << 20);
  for (let i = 0; i < mapped; i++) map.mapPage(data + i * 4096);
  const v = vm.createVcpu(0);
  v.setCr3(map.cr3);
  return { kvm, vm, v, data };
}

/** Both caches' state (slots by address space and id, since the two models' objects differ). */
function caches(vm: Vm, vcpus: Vcpu[], nrAs = 2): unknown {
  const id = (s: KvmMemorySlot | null): string | null => (s === null ? null : `${s.asId}:${s.id}:${s.flags}`);
  const sets = [0, 1].slice(0, nrAs).map((as) => {
    const set = vm.activeMemslots(as);
    return [id(set.lastUsedSlot), (set as unknown as { searchesSinceChange: number }).searchesSinceChange];
  });
  return [sets, vcpus.map((v) => [id(v[LAST_USED_SLOT]), v[LAST_USED_SLOT_GEN]])];
}

describe('the invariant checker does not move the last-used caches', () => {
  it('TDP workload: with and without a full-audit checker, equal caches after every operation', () => {
    fc.assert(
      fc.property(hostArb, fc.array(opArb, { minLength: 1, maxLength: 30 }), (h, ops) => {
        const plain = build(h);
        const watched = build(h);
        const checker = new Checker(watched.kvm, { audit: 'full' });
        checker.watch(watched.vm);
        const run = (m: Model, o: Op, checked: boolean): unknown => {
          if (o.op === 'access' || o.op === 'run') {
            const n = o.op === 'run' ? o.count : 1;
            const v = m.vcpus[o.vcpu]!;
            const out: unknown[] = [];
            for (let i = 0; i < n; i++) {
              const gpa = o.gpa + i * 4096;
              const r = attempt(() => v.access(gpa, o.kind));
              if (checked && typeof r === 'object' && r !== null && 'exit' in r)
                checker.onAccess(v, gpa, o.kind, r as Parameters<Checker['onAccess']>[3]);
              out.push(r);
            }
            return out;
          }
          if (o.op === 'again') return null;
          const r = attempt(() => step(m, o));
          if (checked) checker.auditPoint(o.op);
          return r;
        };
        ops.forEach((o, k) => {
          checker.setStep(`${k}:${o.op}`);
          expect(run(watched, o, true)).toEqual(run(plain, o, false));
          expect(caches(watched.vm, watched.vcpus)).toEqual(caches(plain.vm, plain.vcpus));
        });
        checker.setStep('end');
        checker.auditPoint('end');
        expect(caches(watched.vm, watched.vcpus)).toEqual(caches(plain.vm, plain.vcpus));
      }),
      { numRuns: 40 },
    );
  });

  it('shadow paging: with and without a full-audit checker, equal caches after every access and DELETE', () => {
    // data in slots 0-3 from 4 GiB, the guest's page tables in slot 9 at gpa 0
    const make = (): ShadowVm => shadowVm(4, 9, 1024);
    const opArbShadow = fc.oneof(
      { weight: 8, arbitrary: fc.record({ page: fc.nat(1023), write: fc.boolean() }) },
      { weight: 1, arbitrary: fc.record({ del: fc.integer({ min: 0, max: 3 }) }) },
    );
    fc.assert(
      fc.property(fc.array(opArbShadow, { minLength: 1, maxLength: 60 }), (ops) => {
        const plain = make();
        const watched = make();
        const checker = new Checker(watched.kvm, { audit: 'full' });
        checker.watch(watched.vm);
        ops.forEach((o, k) => {
          checker.setStep(String(k));
          if ('page' in o) {
            const gpa = watched.data + o.page * 4096;
            const kind = o.write ? 'write' : 'read';
            const r = watched.v.access(gpa, kind);
            checker.onAccess(watched.v, gpa, kind, r);
            expect(r).toEqual(plain.v.access(gpa, kind));
          } else {
            for (const m of [watched, plain])
              attempt(() =>
                m.vm.setUserMemoryRegion({
                  slot: o.del,
                  guestPhysAddr: m.data + o.del * (1 << 20),
                  memorySize: 0,
                }),
              );
            checker.auditPoint('delete');
          }
          expect(caches(watched.vm, [watched.v], 1)).toEqual(caches(plain.vm, [plain.v], 1));
        });
        expect(checker.violations).toEqual([]);
      }),
      { numRuns: 25 },
    );
  });
});
