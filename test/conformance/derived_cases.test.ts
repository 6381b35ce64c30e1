/**
 * memslot-abi.md §8: derived conformance cases, one test per numbered case, exact errno, layout and
 * generation.
 */
import { describe, expect, it } from 'vitest';
import { fresh, layout, outcome, P, R1, R2, S, G } from './harness.ts';
import {
  KVM_CAP,
  KVM_MEM_GUEST_MEMFD as GMEM,
  KVM_MEM_LOG_DIRTY_PAGES as LOG,
  KVM_MEM_READONLY as RO,
} from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';

describe('memslot-abi §8 derived cases (DEFAULT VM, upstream-6.18)', () => {
  it('1: create on an empty VM → OK, AS0 generation 0 → 2', () => {
    const { vm } = fresh();
    expect(vm.memslotsGeneration(0)).toBe(0);
    expect(R1(vm, 0, 0, 0x1000, 0x1000, 0x10000)).toBe('OK');
    expect(vm.memslotsGeneration(0)).toBe(2);
    expect(layout(vm)).toEqual([[0, 1, 1, 0]]);
  });

  it('2: identical request again → 0, generation unchanged', () => {
    const { vm } = fresh();
    R1(vm, 0, 0, 0x1000, 0x1000, 0x10000);
    expect(R1(vm, 0, 0, 0x1000, 0x1000, 0x10000)).toBe('OK');
    expect(vm.memslotsGeneration(0)).toBe(2);
  });

  it('3: delete of a missing slot → EINVAL', () => {
    const { vm } = fresh();
    expect(R1(vm, 5, 0, 0, 0, 0)).toBe('EINVAL');
    expect(vm.memslotsGeneration(0)).toBe(0);
  });

  it('4: delete with a misaligned gpa → EINVAL, slot survives', () => {
    const { vm } = fresh();
    R1(vm, 0, 0, 0x1000, 0x1000, 0x10000);
    expect(R1(vm, 0, 0, 0x1001, 0, 0x10000)).toBe('EINVAL');
    expect(layout(vm)).toEqual([[0, 1, 1, 0]]);
  });

  it('5–7: size, hva alignment and gpa+size wrap → EINVAL', () => {
    const { vm } = fresh();
    expect(R1(vm, 0, 0, 0, 0x1001, 0x10000)).toBe('EINVAL');
    expect(R1(vm, 0, 0, 0, P, 0x10001)).toBe('EINVAL');
    expect(R1(vm, 0, 0, 0xfffffffffffff000n, 0x2000, 0x10000)).toBe('EINVAL');
    expect(layout(vm)).toEqual([]);
  });

  it('8: gpa beyond the max gfn → EINVAL (TDP: 2^MAXPHYADDR)', () => {
    const { vm } = fresh();
    expect(R1(vm, 0, 0, 2 ** 52, P, 0x10000)).toBe('EINVAL');
    const { vm: vm46 } = fresh(0, { maxPhyAddr: 46 });
    expect(R1(vm46, 0, 0, 2 ** 46 - P, P, 0x10000)).toBe('OK');
    expect(R1(vm46, 1, 0, 2 ** 46, P, 0x10000)).toBe('EINVAL');
  });

  it('9: a slot in AS1 (SMM) → OK; AS1 generation 1 → 3, AS0 unchanged', () => {
    const { vm } = fresh();
    expect(vm.memslotsGeneration(1)).toBe(1);
    expect(R1(vm, (1 << 16) | 0, 0, 0, P, 0x10000)).toBe('OK');
    expect(vm.memslotsGeneration(1)).toBe(3);
    expect(vm.memslotsGeneration(0)).toBe(0);
  });

  it('10: as_id 2 → EINVAL; as_id 1 on SW_PROTECTED/SNP/TDX → EINVAL', () => {
    expect(R1(fresh().vm, 2 << 16, 0, 0, P, 0x10000)).toBe('EINVAL');
    for (const t of [1, 4, 5]) expect(R1(fresh(t).vm, 1 << 16, 0, 0, P, 0x10000)).toBe('EINVAL');
  });

  it('11: slot ids 32764 and 0xffff → EINVAL', () => {
    const { vm } = fresh();
    expect(R1(vm, 32764, 0, 0, P, 0x10000)).toBe('EINVAL');
    expect(R1(vm, 0xffff, 0, 0, P, 0x10000)).toBe('EINVAL');
    expect(R1(vm, 32763, 0, 0, P, 0x10000)).toBe('OK');
  });

  it('12: 2^31 pages → EINVAL; 2^31 - 1 pages passes the size check', () => {
    const { vm } = fresh(0, { maxPhyAddr: 52 });
    expect(R1(vm, 0, 0, 0, 2 ** 31 * P, 0)).toBe('EINVAL');
    expect(R1(vm, 0, 0, 0, (2 ** 31 - 1) * P, 0)).toBe('OK');
  });

  it('13: adjacent slots → OK; a straddling slot → EEXIST', () => {
    const { vm } = fresh();
    expect(R1(vm, 0, 0, 0, S, 0x10000000)).toBe('OK');
    expect(R1(vm, 1, 0, S, S, 0x10000000)).toBe('OK');
    expect(R1(vm, 2, 0, S - P, 2 * P, 0x10000000)).toBe('EEXIST');
    expect(layout(vm).map((r) => r[0])).toEqual([0, 1]);
  });

  it('14: the same id and range in AS0 and AS1 → OK', () => {
    const { vm } = fresh();
    expect(R1(vm, 0, 0, 0, S, 0x10000000)).toBe('OK');
    expect(R1(vm, 1 << 16, 0, 0, S, 0x10000000)).toBe('OK');
    expect(layout(vm, 1)).toEqual([[0, 0, 512, 0]]);
  });

  it('15: two slots with the same hva → OK', () => {
    const { vm } = fresh();
    expect(R1(vm, 0, 0, 0, S, 0x10000000)).toBe('OK');
    expect(R1(vm, 1, 0, S, S, 0x10000000)).toBe('OK');
  });

  it('16: MOVE overlapping its own old range → OK, generation +4', () => {
    const { vm } = fresh();
    R1(vm, 0, 0, 0, S, 0x10000000);
    expect(R1(vm, 0, 0, S / 2, S, 0x10000000)).toBe('OK');
    expect(vm.memslotsGeneration(0)).toBe(2 + 4);
    expect(layout(vm)).toEqual([[0, 256, 512, 0]]);
  });

  it('17: MOVE onto another slot → EEXIST, layout and generation unchanged', () => {
    const { vm } = fresh();
    R1(vm, 0, 0, 0, S, 0x10000000);
    R1(vm, 1, 0, 4 * S, S, 0x20000000);
    expect(R1(vm, 0, 0, 4 * S, S, 0x10000000)).toBe('EEXIST');
    expect(layout(vm)).toEqual([
      [0, 0, 512, 0],
      [1, 2048, 512, 0],
    ]);
    expect(vm.memslotsGeneration(0)).toBe(4);
  });

  it('18: changing size, hva or READONLY of an existing slot → EINVAL', () => {
    const { vm } = fresh();
    R1(vm, 0, 0, 0, S, 0x10000000);
    expect(R1(vm, 0, 0, 0, 2 * S, 0x10000000)).toBe('EINVAL');
    expect(R1(vm, 0, 0, 0, S, 0x20000000)).toBe('EINVAL');
    expect(R1(vm, 0, RO, 0, S, 0x10000000)).toBe('EINVAL');
    expect(vm.memslotsGeneration(0)).toBe(2);
  });

  it('19: FLAGS_ONLY enabling LOG_DIRTY → +2; GET_DIRTY_LOG returns ALIGN(npages,64)/8 bytes', () => {
    const { vm } = fresh();
    R1(vm, 0, 0, 0, 100 * P, 0x10000000);
    expect(R1(vm, 0, LOG, 0, 100 * P, 0x10000000)).toBe('OK');
    expect(vm.memslotsGeneration(0)).toBe(4);
    expect(vm.getDirtyLog(0).length).toBe(16);
  });

  it('20: GET_DIRTY_LOG without logging / missing slot → ENOENT; id 40000 → EINVAL', () => {
    const { vm } = fresh();
    R1(vm, 0, 0, 0, S, 0x10000000);
    expect(outcome(() => vm.getDirtyLog(0))).toBe('ENOENT');
    expect(outcome(() => vm.getDirtyLog(3))).toBe('ENOENT');
    expect(outcome(() => vm.getDirtyLog(40000))).toBe('EINVAL');
  });

  it('21: INITIALLY_SET: GET returns all bits and does not clear; CLEAR clears', () => {
    const { vm } = fresh();
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [3] });
    R1(vm, 0, LOG, 0, 70 * P, 0x10000000);
    const bm = vm.getDirtyLog(0);
    expect([...bm]).toEqual([255, 255, 255, 255, 255, 255, 255, 255, 63, 0, 0, 0, 0, 0, 0, 0]);
    expect([...vm.getDirtyLog(0)]).toEqual([...bm]);
    vm.clearDirtyLog({ slot: 0, firstPage: 0, numPages: 70, bitmap: new Uint8Array(16).fill(255) });
    expect(vm.getDirtyLog(0).every((b) => b === 0)).toBe(true);
  });

  it('22: CLEAR_DIRTY_LOG range rules', () => {
    const { vm } = fresh();
    R1(vm, 0, LOG, 0, 1024 * P, 0x10000000);
    R1(vm, 1, LOG, 0x10000000, 1000 * P, 0x20000000);
    const bm = new Uint8Array(128);
    expect(outcome(() => vm.clearDirtyLog({ slot: 0, firstPage: 1, numPages: 64, bitmap: bm }))).toBe(
      'EINVAL',
    );
    expect(outcome(() => vm.clearDirtyLog({ slot: 0, firstPage: 0, numPages: 65, bitmap: bm }))).toBe(
      'EINVAL',
    );
    expect(outcome(() => vm.clearDirtyLog({ slot: 0, firstPage: 960, numPages: 64, bitmap: bm }))).toBe('OK');
    expect(outcome(() => vm.clearDirtyLog({ slot: 1, firstPage: 0, numPages: 1000, bitmap: bm }))).toBe('OK');
    expect(outcome(() => vm.clearDirtyLog({ slot: 0, firstPage: 1024, numPages: 1, bitmap: bm }))).toBe(
      'EINVAL',
    );
  });

  it('23: MANUAL_DIRTY_LOG_PROTECT2 argument rules', () => {
    const { vm } = fresh();
    const cap = KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
    expect(outcome(() => vm.enableCap({ cap, args: [2] }))).toBe('EINVAL');
    expect(outcome(() => vm.enableCap({ cap, args: [4] }))).toBe('EINVAL');
    expect(outcome(() => vm.enableCap({ cap, flags: 1, args: [1] }))).toBe('EINVAL');
    for (const a of [0, 1, 3]) expect(outcome(() => vm.enableCap({ cap, args: [a] }))).toBe('OK');
  });

  it('24: MOVE keeps the dirty bitmap object and its bits', () => {
    const { vm } = fresh();
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [3] });
    R1(vm, 0, LOG, 0, 64 * P, 0x10000000);
    const before = vm.memslots()[0]!.dirtyBitmap;
    expect(R1(vm, 0, LOG, S, 64 * P, 0x10000000)).toBe('OK');
    expect(vm.memslots()[0]!.dirtyBitmap).toBe(before);
    expect([...vm.getDirtyLog(0)]).toEqual(Array(8).fill(255));
  });

  it('25: FLAGS_ONLY clearing LOG_DIRTY → GET_DIRTY_LOG ENOENT', () => {
    const { vm } = fresh();
    R1(vm, 0, LOG, 0, 64 * P, 0x10000000);
    expect(R1(vm, 0, 0, 0, 64 * P, 0x10000000)).toBe('OK');
    expect(outcome(() => vm.getDirtyLog(0))).toBe('ENOENT');
  });

  it('26: SEV-ES/SNP/TDX reject READONLY; READONLY_MEM cap 0 on the VM, 1 on /dev/kvm', () => {
    for (const t of [3, 4, 5]) {
      const { kvm, vm } = fresh(t);
      expect(R1(vm, 0, RO, 0, P, 0x10000)).toBe('EINVAL');
      expect(vm.checkExtension(KVM_CAP.KVM_CAP_READONLY_MEM)).toBe(0);
      expect(kvm.checkExtension(KVM_CAP.KVM_CAP_READONLY_MEM)).toBe(1);
    }
  });

  it('27: SW_PROTECTED accepts a non-gmem READONLY slot', () => {
    expect(R1(fresh(1).vm, 0, RO, 0, P, 0x10000)).toBe('OK');
  });

  it('28–29: gmem slot re-issued with GMEM → EINVAL; with GMEM cleared → OK on 6.18 (bug), EINVAL with the fix', () => {
    for (const [opts, expected] of [
      [{}, 'OK'],
      [{ kernel: '6.19' as const }, 'EINVAL'],
    ] as const) {
      const { vm } = fresh(1, opts);
      const fd = vm.createGuestMemfd({ size: S });
      expect(R2(vm, 0, GMEM, G, S, 0, fd, 0)).toBe('OK');
      expect(R2(vm, 0, GMEM, G, S, 0, fd, 0)).toBe('EINVAL');
      expect(R2(vm, 0, 0, G, S, 0, fd, 0)).toBe(expected);
    }
  });

  it('30: gmem bind: closed fd → EBADF, past the file → EINVAL, overlapping binding → EINVAL', () => {
    const { kvm, vm } = fresh(1);
    const fd = vm.createGuestMemfd({ size: 2 * S });
    const closed = vm.createGuestMemfd({ size: S });
    kvm.close(closed);
    expect(R2(vm, 0, GMEM, G, S, 0, closed, 0)).toBe('EBADF');
    expect(R2(vm, 0, GMEM, G, S, 0, fd, 2 * S)).toBe('EINVAL');
    expect(R2(vm, 0, GMEM, G, S, 0, fd, S)).toBe('OK');
    expect(R2(vm, 1, GMEM, 2 * G, S, 0, fd, S + P)).toBe('EINVAL');
    expect(R2(vm, 1, GMEM, 2 * G, S, 0, fd, 0)).toBe('OK');
  });

  it('31: ≤6.17 DEFAULT VM: guest_memfd created but binding → EINVAL; 6.18 both OK', () => {
    const old = fresh(0, { kernel: '6.17' }).vm;
    const fd17 = old.createGuestMemfd({ size: P });
    expect(R2(old, 0, GMEM, 0, P, 0, fd17, 0)).toBe('EINVAL');
    const vm = fresh(0).vm;
    const fd18 = vm.createGuestMemfd({ size: P });
    expect(R2(vm, 0, GMEM, 0, P, 0, fd18, 0)).toBe('OK');
  });

  it('32–33: guest_memfd flags per VM type and version; size 0 or unaligned → EINVAL', () => {
    for (const t of [1, 4, 5]) {
      const { vm } = fresh(t);
      expect(outcome(() => vm.createGuestMemfd({ size: P, flags: 2 }))).toBe('EINVAL');
      expect(outcome(() => vm.createGuestMemfd({ size: P, flags: 1 }))).toBe('OK');
    }
    const { vm } = fresh(0);
    expect(outcome(() => vm.createGuestMemfd({ size: P, flags: 3 }))).toBe('OK');
    expect(outcome(() => vm.createGuestMemfd({ size: P, flags: 4 }))).toBe('EINVAL');
    const v17 = fresh(1, { kernel: '6.17' }).vm;
    expect(outcome(() => v17.createGuestMemfd({ size: P, flags: 1 }))).toBe('EINVAL');
    expect(outcome(() => vm.createGuestMemfd({ size: 0 }))).toBe('EINVAL');
    expect(outcome(() => vm.createGuestMemfd({ size: 100 }))).toBe('EINVAL');
  });

  it('34: SET_MEMORY_ATTRIBUTES checks', () => {
    const def = fresh(0).vm;
    const sw = fresh(1).vm;
    expect(outcome(() => sw.setMemoryAttributes({ address: 0, size: P, attributes: 8, flags: 1 }))).toBe(
      'EINVAL',
    );
    expect(outcome(() => def.setMemoryAttributes({ address: 0, size: P, attributes: 8 }))).toBe('EINVAL');
    expect(outcome(() => sw.setMemoryAttributes({ address: 0, size: 0, attributes: 8 }))).toBe('EINVAL');
    expect(outcome(() => sw.setMemoryAttributes({ address: 1, size: P, attributes: 8 }))).toBe('EINVAL');
    expect(
      outcome(() => sw.setMemoryAttributes({ address: 0xfffffffffffff000n, size: 2 * P, attributes: 8 })),
    ).toBe('EINVAL');
    expect(outcome(() => sw.setMemoryAttributes({ address: 0x100000000, size: P, attributes: 8 }))).toBe(
      'OK',
    );
    expect(outcome(() => def.setMemoryAttributes({ address: 0, size: P, attributes: 0 }))).toBe('OK');
    expect(
      outcome(() => fresh(0, { profile: 'pvm-6.18' }).vm.setMemoryAttributes({ address: 0, size: P })),
    ).toBe('ENOTTY');
  });

  it('35: DISABLE_QUIRKS2 validation and OR-in (6.15+) vs overwrite (6.12)', () => {
    const cap = KVM_CAP.KVM_CAP_DISABLE_QUIRKS2;
    const { vm } = fresh();
    expect(outcome(() => vm.enableCap({ cap, args: [1 << 12] }))).toBe('EINVAL');
    expect(outcome(() => vm.enableCap({ cap, args: [0x80] }))).toBe('OK');
    vm.enableCap({ cap, args: [1] });
    expect(vm.arch.disabledQuirks & 0x81).toBe(0x81);
    const old = fresh(0, { kernel: '6.12' }).vm;
    old.enableCap({ cap, args: [0x80] });
    old.enableCap({ cap, args: [1] });
    expect(old.arch.disabledQuirks).toBe(1);
  });

  it('36: DELETE/MOVE scope: ALL for DEFAULT with the quirk, SLOT_RANGE otherwise', () => {
    const run = (type: number, disable: boolean) => {
      const { vm } = fresh(type);
      if (disable) vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
      R1(vm, 0, 0, 0, S, 0x10000000);
      R1(vm, 0, 0, S, S, 0x10000000);
      R1(vm, 0, 0, 0, 0, 0);
      const m = vm.getModelStats();
      return [m['memslot_zap_all_fast'], m['memslot_zap_precise']];
    };
    expect(run(0, false)).toEqual([2, 0]);
    expect(run(0, true)).toEqual([0, 2]);
    for (const t of [1, 2, 3, 4, 5]) expect(run(t, false)).toEqual([0, 2]);
  });

  it('38: V2 with nonzero pad1/pad2 is accepted', () => {
    const { vm } = fresh();
    expect(
      outcome(() =>
        vm.setUserMemoryRegion2({ slot: 0, memorySize: P, userspaceAddr: 0x10000, pad1: 7, pad2: 9 }),
      ),
    ).toBe('OK');
  });

  it('40: DIRTY_LOG_RING_WITH_BITMAP cannot be enabled on x86', () => {
    const { vm } = fresh();
    expect(outcome(() => vm.enableCap({ cap: KVM_CAP.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP, args: [1] }))).toBe(
      'EINVAL',
    );
  });

  it('a DELETE/MOVE whose PREPARE fails: layout unchanged, generation +2N, flush already done', () => {
    const { vm } = fresh(0, { maxPhyAddr: 46 });
    R1(vm, 0, 0, 0, S, 0x10000000);
    expect(R1(vm, 0, 0, 2 ** 46, S, 0x10000000)).toBe('EINVAL');
    expect(layout(vm)).toEqual([[0, 0, 512, 0]]);
    expect(vm.memslotsGeneration(0)).toBe(2 + 4);
    expect(vm.getModelStats()['memslot_zap_all_fast']).toBe(1);
  });

  it('overlap is checked before the guest_memfd fd (EEXIST beats EBADF)', () => {
    const { vm } = fresh(1);
    const fd = vm.createGuestMemfd({ size: S });
    expect(R2(vm, 0, GMEM, G, S, 0, fd, 0)).toBe('OK');
    expect(R2(vm, 1, GMEM, G, S, 0, 999, 0)).toBe('EEXIST');
    expect(R2(vm, 1, GMEM, 2 * G, S, 0, 999, 0)).toBe('EBADF');
  });
});
