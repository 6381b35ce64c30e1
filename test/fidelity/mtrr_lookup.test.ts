/**
 * arch/x86/kvm/mtrr.c as of v5.3 (the `honorGuestMtrrs` era; read in the v4.1 and v5.9 copies, identical
 * here) and v5.3's tdp_page_fault in mmu.c. The model combined overlapping variable MTRRs by the SDM
 * rules in any order, aligned a range's start down to its size and computed huge-page consistency from
 * exact coverage; the kernel does none of these:
 *  - set_var_mtrr_msr keeps the valid ranges in a list ordered by PhysBase value, highest first, and
 *    kvm_mtrr_get_guest_memory_type walks it returning WB as soon as a UC type is followed by a WB one
 *    (only `curr_type == UC` returns UC) — a UC range inside a WB range at a lower base reads as WB;
 *  - var_mtrr_range starts the range at base & PAGE_MASK, the low bits of an unaligned base included;
 *  - kvm_mtrr_check_gfn_range_consistency calls [start, end) partially covered when, in list order, a
 *    matched range starts above the highest end seen so far;
 *  - tdp_page_fault capped the mapping level by MTRR consistency on every fault, with or without
 *    non-coherent DMA (check_hugepage_cache_consistency), where the model asked for non-coherent DMA;
 *  - x86.c#kvm_set_cr0 zapped on a CR0.CD toggle with non-coherent DMA and the quirk disabled whether or
 *    not TDP was in use; the model also asked for tdp_enabled (which only 6.6's kvm_mmu_honors_guest_mtrrs added).
 */
import { describe, expect, it } from 'vitest';
import { Kvm, type Vcpu } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_CD_NW_CLEARED } from '../../src/uapi/kvm_x86.ts';
import {
  kvmMtrrCheckGfnRangeConsistency,
  kvmMtrrGetGuestMemoryType,
  MSR_MTRRphysBase0,
  MTRR_TYPE_UNCACHABLE as UC,
  MTRR_TYPE_WRBACK as WB,
  MTRR_TYPE_WRTHROUGH as WT,
} from '../../src/x86/mtrr.ts';

const MiB = 1 << 20;

function vcpu(): Vcpu {
  return new Kvm({ kernel: '6.12', honorGuestMtrrs: true }).createVm(0).createVcpu(0);
}

describe('kvm_mtrr_get_guest_memory_type: list order and the early WB return', () => {
  it('a UC range inside a WB range at a lower base reads as WB; at a higher base WB comes first and UC wins', () => {
    const v = vcpu();
    v.setMtrrDefType(UC);
    v.setMtrrVar(0, { base: 0, size: 4 * MiB, type: WB });
    v.setMtrrVar(1, { base: 2 * MiB, size: MiB, type: UC });
    // List: range 1 (base 0x200000), range 0 (base 0x6): UC, then WB → "undefined" → WB.
    expect(kvmMtrrGetGuestMemoryType(v, (2 * MiB) / 4096)).toBe(WB);
    expect(kvmMtrrGetGuestMemoryType(v, 0)).toBe(WB);
    expect(kvmMtrrGetGuestMemoryType(v, (4 * MiB) / 4096)).toBe(UC); // default
    // WB at the higher base: WB is met first, then UC → UC.
    v.setMtrrVar(0, { base: 0, size: 4 * MiB, type: UC });
    v.setMtrrVar(1, { base: 2 * MiB, size: MiB, type: WB });
    expect(kvmMtrrGetGuestMemoryType(v, (2 * MiB) / 4096)).toBe(UC);
    // WT and WB combine to WT in either order.
    v.setMtrrVar(0, { base: 0, size: 4 * MiB, type: WT });
    expect(kvmMtrrGetGuestMemoryType(v, (2 * MiB) / 4096)).toBe(WT);
  });

  it('the order is the PhysBase value, not the register number or the write order', () => {
    const v = vcpu();
    v.setMtrrDefType(WB);
    v.setMtrrVar(5, { base: 2 * MiB, size: MiB, type: UC });
    v.setMtrrVar(2, { base: 0, size: 4 * MiB, type: WB });
    expect(kvmMtrrGetGuestMemoryType(v, (2 * MiB) / 4096)).toBe(WB);
    expect(v.memtype.varList).toEqual([5, 2]);
    // Disabling range 5 takes it out of the list; enabling it again puts it back in base order.
    v.setMtrrVar(5, null);
    expect(v.memtype.varList).toEqual([2]);
    expect(kvmMtrrGetGuestMemoryType(v, (2 * MiB) / 4096)).toBe(WB);
    v.setMtrrVar(5, { base: 2 * MiB, size: MiB, type: UC });
    expect(v.memtype.varList).toEqual([5, 2]);
  });
});

describe('var_mtrr_range: the range starts at the base as written', () => {
  it('an unaligned base leaves the pages below it to the default type', () => {
    const v = vcpu();
    v.setMtrrDefType(WB);
    const phys = v.vm.cfg.maxPhyAddr;
    expect(v.setMsr(MSR_MTRRphysBase0, 0x1000 + UC)).toBe(0);
    expect(v.setMsr(MSR_MTRRphysBase0 + 1, 2 ** phys - 2 * MiB + 0x800)).toBe(0);
    expect(kvmMtrrGetGuestMemoryType(v, 0)).toBe(WB); // [0x1000, 0x200000): gfn 0 is outside
    expect(kvmMtrrGetGuestMemoryType(v, 1)).toBe(UC);
    expect(kvmMtrrGetGuestMemoryType(v, 0x1ff)).toBe(UC);
    expect(kvmMtrrGetGuestMemoryType(v, 0x200)).toBe(WB);
  });
});

describe('kvm_mtrr_check_gfn_range_consistency: coverage in list order', () => {
  it('two adjacent WB ranges over a UC default: the higher one first makes the range "partial"', () => {
    const v = vcpu();
    v.setMtrrDefType(UC);
    v.setMtrrVar(0, { base: 0, size: 2 * MiB, type: WB });
    v.setMtrrVar(1, { base: 2 * MiB, size: 2 * MiB, type: WB });
    // [0, 4M) is all WB, but range 1 (start 2M) is matched first with start_max = 0 < 2M: partial, and
    // WB is not the default type.
    expect(kvmMtrrCheckGfnRangeConsistency(v, 0, 1024)).toBe(false);
    // Each half alone is covered by one range.
    expect(kvmMtrrCheckGfnRangeConsistency(v, 0, 512)).toBe(true);
    expect(kvmMtrrCheckGfnRangeConsistency(v, 512, 512)).toBe(true);
  });
});

describe('v5.3 tdp_page_fault: the MTRR cap applies without non-coherent DMA', () => {
  it('a 2M THP range with a UC hole in the guest MTRRs is mapped 4K, no assigned device needed', () => {
    const kvm = new Kvm({ kernel: '6.12', honorGuestMtrrs: true });
    const vm = kvm.createVm(0);
    const ram = kvm.host.mmap(8 * MiB, { backing: 'thp' });
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 8 * MiB, userspaceAddr: ram });
    const cpu = vm.createVcpu(0);
    cpu.setMtrrDefType(WB);
    cpu.setMtrrVar(0, { base: 4 * MiB + 0x10000, size: 0x10000, type: UC });
    expect(vm.arch.noncoherentDmaCount).toBe(0);
    expect(cpu.access(2 * MiB, 'read')).toMatchObject({ exit: 'none', level: 2 });
    expect(cpu.access(4 * MiB, 'read')).toMatchObject({ exit: 'none', level: 1 });
    // Without honorGuestMtrrs (6.11+: no MTRR virtualization) the same access maps 2M.
    const k2 = new Kvm({ kernel: '6.12' });
    const vm2 = k2.createVm(0);
    const ram2 = k2.host.mmap(8 * MiB, { backing: 'thp' });
    vm2.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 8 * MiB, userspaceAddr: ram2 });
    const cpu2 = vm2.createVcpu(0);
    cpu2.setMtrrDefType(WB);
    cpu2.setMtrrVar(0, { base: 4 * MiB + 0x10000, size: 0x10000, type: UC });
    expect(cpu2.access(4 * MiB, 'read')).toMatchObject({ exit: 'none', level: 2 });
  });
});

describe('v5.3 kvm_set_cr0: the CR0.CD zap does not ask for tdp_enabled', () => {
  it('shadow paging, non-coherent DMA, CD_NW_CLEARED disabled: a CD toggle zaps everything', () => {
    const vm = new Kvm({ kernel: '6.12', honorGuestMtrrs: true, tdp: false }).createVm(0);
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_CD_NW_CLEARED] });
    const cpu = vm.createVcpu(0);
    const state = cpu.vm;
    state.arch.noncoherentDmaCount = 1;
    const seq = state.mmuInvalidateSeq;
    expect(cpu.setCr0({ cd: false })).toBe(0);
    // kvm_zap_gfn_range(kvm, 0, ~0ULL) runs inside one invalidation window.
    expect(state.mmuInvalidateSeq - seq).toBe(1);
    // update_mtrr, by contrast, returns early without tdp_enabled.
    cpu.setMtrrDefType(WB);
    expect(state.mmuInvalidateSeq - seq).toBe(1);
  });
});
