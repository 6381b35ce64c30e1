/**
 * memslot-abi.md §7: the kernel selftests' memslot cases (set_memory_region_test,
 * memslot_modification_stress_test, memslot_perf_test, private_mem_conversions_test, guest_memfd_test)
 * as tables with exact errno, layout and generations.
 */
import { describe, expect, it } from 'vitest';
import { fresh, layout, outcome, P, R1, R2, S, G } from './harness.ts';
import {
  KVM_CAP,
  KVM_MEM_GUEST_MEMFD as GMEM,
  KVM_MEM_LOG_DIRTY_PAGES as LOG,
  KVM_MEM_READONLY as RO,
  KVM_USER_MEM_SLOTS,
} from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';

describe('set_memory_region_test', () => {
  it('SMR-3 invalid flags: bits 3..31 via V1 and V2, GMEM via V1, LOG|GMEM and RO|GMEM via V2', () => {
    for (const type of [1, 0]) {
      const { vm } = fresh(type);
      for (let i = 2; i < 32; i++) {
        const bit = 2 ** i;
        expect(R1(vm, 0, bit, 0, S, 0)).toBe('EINVAL');
        if (i >= 3) expect(R2(vm, 0, bit, 0, S, 0, 0, 0)).toBe('EINVAL');
      }
      const fd = vm.createGuestMemfd({ size: S });
      expect(R2(vm, 0, LOG | GMEM, 0, S, 0, fd, 0)).toBe('EINVAL');
      expect(R2(vm, 0, RO | GMEM, 0, S, 0, fd, 0)).toBe('EINVAL');
      expect(layout(vm)).toEqual([]);
    }
  });

  it('SMR-4 add max memory regions: all 32764 ids work, the next id is EINVAL', () => {
    const { kvm, vm } = fresh();
    const max = kvm.checkExtension(KVM_CAP.KVM_CAP_NR_MEMSLOTS);
    expect(max).toBe(32764);
    const base = 0x100000000;
    for (let slot = 0; slot < max; slot++) {
      vm.setUserMemoryRegion({
        slot,
        guestPhysAddr: slot * S,
        memorySize: S,
        userspaceAddr: base + slot * S,
      });
    }
    expect(vm.memslots().length).toBe(KVM_USER_MEM_SLOTS);
    expect(R1(vm, max, 0, max * S, S, 0x10000)).toBe('EINVAL');
    expect(vm.memslotsGeneration(0)).toBe(2 * max);
  });

  it('SMR-5 add private memory region: foreign fds and unaligned offsets are EINVAL', () => {
    const { kvm, vm } = fresh(1);
    const other = kvm.createVm(1);
    const otherFd = other.createGuestMemfd({ size: S });
    const memfd = kvm.memfdCreate(S);
    expect(R2(vm, 10, GMEM, G, S, 0, kvm.fd, 0)).toBe('EINVAL');
    expect(R2(vm, 10, GMEM, G, S, 0, vm.fd, 0)).toBe('EINVAL');
    expect(R2(vm, 10, GMEM, G, S, 0, memfd, 0)).toBe('EINVAL');
    expect(R2(vm, 10, GMEM, G, S, 0, otherFd, 0)).toBe('EINVAL');
    expect(R2(other, 10, GMEM, G, S, 0, otherFd, 0)).toBe('OK');
    const fd = vm.createGuestMemfd({ size: S });
    for (const off of [1, 2048, 4095]) expect(R2(vm, 10, GMEM, G, S, 0, fd, off)).toBe('EINVAL');
    expect(R2(vm, 10, GMEM, G, S, 0, fd, 0)).toBe('OK');
  });

  it('SMR-6 overlapping private regions: EEXIST from the gpa overlap, before the bind', () => {
    const { vm } = fresh(1);
    const fd = vm.createGuestMemfd({ size: 4 * S });
    expect(R2(vm, 10, GMEM, G, 2 * S, 0, fd, 0)).toBe('OK');
    expect(R2(vm, 11, GMEM, 2 * G, 2 * S, 0, fd, 2 * S)).toBe('OK');
    expect(R2(vm, 10, GMEM, G, 0, 0, -1, 0)).toBe('OK');
    expect(R2(vm, 10, GMEM, 2 * G - S, 2 * S, 0, fd, 0)).toBe('EEXIST');
    expect(R2(vm, 10, GMEM, 2 * G + S, 2 * S, 0, fd, 0)).toBe('EEXIST');
    expect(layout(vm).map((r) => r[0])).toEqual([11]);
  });

  it('SMR-7 move: back and forth with the quirk on and off, generations +4 each', () => {
    for (const quirkOff of [false, true]) {
      const { kvm, vm } = fresh();
      if (quirkOff)
        vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
      const hva = kvm.host.mmap(S, { backing: 'thp' });
      expect(R1(vm, 10, 0, G, S, hva)).toBe('OK');
      for (let i = 0; i < 10; i++) {
        expect(R1(vm, 10, 0, G - P, S, hva)).toBe('OK');
        expect(R1(vm, 10, 0, G, S, hva)).toBe('OK');
      }
      expect(vm.memslotsGeneration(0)).toBe(2 + 10 * 8);
      expect(layout(vm)).toEqual([[10, G / P, 512, 0]]);
      const m = vm.getModelStats();
      expect([m['memslot_zap_all_fast'], m['memslot_zap_precise']]).toEqual(quirkOff ? [0, 20] : [20, 0]);
    }
  });

  it('SMR-8 delete: delete, re-create, delete again, then delete slot 0', () => {
    const { kvm, vm } = fresh();
    expect(R1(vm, 0, 0, 0, S, kvm.host.mmap(S))).toBe('OK');
    expect(R1(vm, 10, 0, G, S, kvm.host.mmap(S))).toBe('OK');
    expect(R1(vm, 10, 0, G, 0, 0)).toBe('OK');
    expect(R1(vm, 10, 0, G, S, kvm.host.mmap(S, { backing: 'thp' }))).toBe('OK');
    expect(R1(vm, 10, 0, G, 0, 0)).toBe('OK');
    expect(R1(vm, 0, 0, 0, 0, 0)).toBe('OK');
    expect(layout(vm)).toEqual([]);
  });
});

describe('memslot_modification_stress_test', () => {
  it('adds and deletes slot 7 right below the test region, 10 times, quirk on and off', () => {
    for (const quirkOff of [false, true]) {
      const { vm } = fresh();
      if (quirkOff)
        vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
      const gpa = 0x3fc0000000; // memstress region at the top of a 40-bit guest
      expect(R1(vm, 1, 0, gpa, 0x40000000, 0x100000000)).toBe('OK');
      for (let i = 0; i < 10; i++) {
        expect(R1(vm, 7, 0, gpa - P, P, 0x200000000)).toBe('OK');
        expect(R1(vm, 7, 0, gpa - P, 0, 0)).toBe('OK');
      }
      expect(layout(vm)).toEqual([[1, gpa / P, 0x40000, 0]]);
      expect(vm.memslotsGeneration(0)).toBe(2 + 10 * 6);
    }
  });
});

describe('memslot_perf_test memslot operations', () => {
  it('lays out 32763 slots contiguously after slot 0 and moves the last one back and forth', () => {
    const { vm } = fresh();
    const MEM_GPA = 0x10000000;
    const npages = (512 * 1024 * 1024 + 64 * 1024) / P;
    expect(R1(vm, 0, 0, 0, MEM_GPA, 0x100000000)).toBe('OK');
    const nslots = 32763;
    const per = Math.floor(npages / nslots);
    let gpa = MEM_GPA;
    for (let s = 1; s <= nslots; s++) {
      const n = s === nslots ? per + (npages % nslots) : per;
      vm.setUserMemoryRegion({
        slot: s,
        guestPhysAddr: gpa,
        memorySize: n * P,
        userspaceAddr: 0x200000000 + (gpa - MEM_GPA),
      });
      gpa += n * P;
    }
    expect(gpa).toBe(MEM_GPA + npages * P);
    const last = vm.memslots().at(-1)!;
    const dest = MEM_GPA + npages * P;
    expect(R1(vm, nslots, 0, dest, last.npages * P, last.userspaceAddr)).toBe('OK');
    expect(R1(vm, nslots, 0, last.baseGfn * P, last.npages * P, last.userspaceAddr)).toBe('OK');
    expect(vm.memslots().length).toBe(32764);
  });
});

describe('private_mem_conversions_test memslot setup', () => {
  it('one guest_memfd bound by several slots at disjoint offsets; attributes persist across delete', () => {
    const { vm } = fresh(1);
    const perCpu = S; // 2 MiB + 4 KiB rounded up to 2 MiB granularity, per vCPU → 4 MiB each
    const size = 2 * perCpu * 2;
    const fd = vm.createGuestMemfd({ size });
    const m = 4;
    const slotSize = size / m;
    for (let i = 0; i < m; i++) {
      expect(
        R2(vm, 10 + i, GMEM, 2 ** 32 + i * slotSize, slotSize, 0x100000000 + i * slotSize, fd, i * slotSize),
      ).toBe('OK');
    }
    vm.setMemoryAttributes({ address: 2 ** 32, size: 2 * P, attributes: 8 });
    expect(vm.memAttrs.get(2 ** 20)).toBe(8);
    expect(vm.memAttrs.get(2 ** 20 + 2)).toBe(0);
    expect(R2(vm, 10, GMEM, 2 ** 32, 0, 0, -1, 0)).toBe('OK');
    expect(vm.memAttrs.get(2 ** 20 + 1)).toBe(8);
    for (const [off, sz] of [
      [0, P],
      [0, S],
      [P, P],
      [P, S],
      [S, P],
    ] as const) {
      expect(outcome(() => vm.setMemoryAttributes({ address: 2 ** 32 + off, size: sz, attributes: 8 }))).toBe(
        'OK',
      );
      expect(outcome(() => vm.setMemoryAttributes({ address: 2 ** 32 + off, size: sz, attributes: 0 }))).toBe(
        'OK',
      );
    }
  });
});

describe('guest_memfd_test memslot parts', () => {
  it('flag probing: each single bit is accepted iff it is in KVM_CAP_GUEST_MEMFD_FLAGS; sizes 1..4095 EINVAL', () => {
    for (const type of [0, 1, 2, 3, 4, 5]) {
      const { vm } = fresh(type);
      const supported = vm.checkExtension(KVM_CAP.KVM_CAP_GUEST_MEMFD_FLAGS);
      for (let i = 0; i < 64; i++) {
        const flag = 1n << BigInt(i);
        const want = i < 31 && supported & (1 << i) ? 'OK' : 'EINVAL';
        expect(outcome(() => vm.createGuestMemfd({ size: P, flags: flag }))).toBe(want);
      }
      for (const sz of [1, 100, 4095])
        expect(outcome(() => vm.createGuestMemfd({ size: sz }))).toBe('EINVAL');
    }
  });

  it('6.18 DEFAULT VM binds an MMAP|INIT_SHARED guest_memfd at hva 0 and marks the slot GMEM_ONLY', () => {
    const { vm } = fresh(0);
    expect(vm.checkExtension(KVM_CAP.KVM_CAP_GUEST_MEMFD_FLAGS)).toBe(3);
    const fd = vm.createGuestMemfd({ size: P, flags: 3 });
    expect(R2(vm, 1, GMEM, 4 * 2 ** 30, P, 0, fd, 0)).toBe('OK');
    expect(vm.memslots()[0]!.flags).toBe(GMEM | (1 << 17));
  });
});
