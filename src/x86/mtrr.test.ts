import { describe, expect, it } from 'vitest';
import { Kvm, type KvmOptions, type Vcpu } from '../index.ts';
import { KVM_CAP } from '../uapi/kvm.ts';
import { KVM_X86_QUIRK_CD_NW_CLEARED, KVM_X86_QUIRK_IGNORE_GUEST_PAT } from '../uapi/kvm_x86.ts';
import {
  kvmMtrrCheckGfnRangeConsistency,
  kvmMtrrGetGuestMemoryType,
  vmxGetMtMask,
  MSR_IA32_CR_PAT,
  MSR_MTRRcap,
  MSR_MTRRdefType,
  MSR_MTRRfix16K_80000,
  MSR_MTRRfix4K_C0000,
  MSR_MTRRphysBase0,
  MTRR_DEF_TYPE_FE,
  MTRR_TYPE_UNCACHABLE as UC,
  MTRR_TYPE_WRBACK as WB,
  MTRR_TYPE_WRCOMB as WC,
  MTRR_TYPE_WRPROT as WP,
  MTRR_TYPE_WRTHROUGH as WT,
  X86_CR0_RESET,
} from './mtrr.ts';
import { effectiveMemtype, guestPatType } from './memtype.ts';

const IPAT = 0x40;
const mt = (t: number, ipat = false): number => (t << 3) | (ipat ? IPAT : 0);

function vcpu(opts: KvmOptions = {}, disable = 0): Vcpu {
  const vm = new Kvm(opts).createVm(0);
  if (disable) vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [disable] });
  return vm.createVcpu(0);
}

describe('guest MTRR and PAT MSRs', () => {
  it('round-trips values and #GPs on invalid types and reserved bits', () => {
    const v = vcpu();
    expect(v.getMsr(MSR_MTRRcap)).toBe(0x508n);
    expect(v.getMsr(MSR_IA32_CR_PAT)).toBe(0x0007040600070406n);
    expect(v.memtype.cr0).toBe(X86_CR0_RESET);
    expect(v.setMsr(MSR_MTRRdefType, 0xc06)).toBe(0);
    expect(v.getMsr(MSR_MTRRdefType)).toBe(0xc06n);
    expect(v.setMsr(MSR_MTRRdefType, 0x1006)).toBe(1); // reserved bit 12
    expect(v.setMsr(MSR_MTRRdefType, 0x802)).toBe(1); // type 2 is reserved
    expect(v.setMsr(MSR_MTRRfix16K_80000, 0x0606060606060600n)).toBe(0);
    expect(v.getMsr(MSR_MTRRfix16K_80000)).toBe(0x0606060606060600n);
    expect(v.setMsr(MSR_MTRRphysBase0, 2n ** 46n)).toBe(1); // above MAXPHYADDR 46
    expect(v.setMsr(MSR_MTRRphysBase0 + 1, 0x400)).toBe(1); // mask bits 10:0 are reserved
    expect(v.setMsr(MSR_IA32_CR_PAT, 0x0007040600070402n)).toBe(1);
    expect(() => v.setMsr(0x10, 0)).toThrow(TypeError);
  });

  it('computes guest memory types: disabled, default, variable precedence, fixed ranges', () => {
    const v = vcpu();
    expect(kvmMtrrGetGuestMemoryType(v, 0x100)).toBe(UC); // MTRRs disabled
    v.setMtrrDefType(WB);
    expect(kvmMtrrGetGuestMemoryType(v, 0x100)).toBe(WB);
    v.setMtrrVar(0, { base: 0x100000, size: 0x100000, type: WT });
    v.setMtrrVar(1, { base: 0x180000, size: 0x80000, type: WB });
    v.setMtrrVar(2, { base: 0x1c0000, size: 0x40000, type: UC });
    expect(kvmMtrrGetGuestMemoryType(v, 0x100)).toBe(WT);
    expect(kvmMtrrGetGuestMemoryType(v, 0x180)).toBe(WT); // WT + WB → WT
    // UC wins only when met after the other type: the kernel's list runs from the highest base down, so
    // range 2 (UC, base 0x1c0000) comes first and range 1 (WB) then makes it WB (mtrr_lookup.ts).
    expect(kvmMtrrGetGuestMemoryType(v, 0x1c0)).toBe(WB);
    expect(kvmMtrrGetGuestMemoryType(v, 0x200)).toBe(WB); // default
    v.setMsr(MSR_MTRRfix4K_C0000, 0x0505050505050505n);
    expect(kvmMtrrGetGuestMemoryType(v, 0xc0)).toBe(WB); // fixed ranges not enabled
    v.setMtrrDefType(WB, { fixed: true });
    expect(v.getMsr(MSR_MTRRdefType) & BigInt(MTRR_DEF_TYPE_FE)).not.toBe(0n);
    expect(kvmMtrrGetGuestMemoryType(v, 0xc0)).toBe(WP);
    expect(kvmMtrrGetGuestMemoryType(v, 0x0)).toBe(UC); // fixed 64K_00000 never written: 0 = UC
  });

  it('checks MTRR consistency over a huge-page range', () => {
    const v = vcpu();
    v.setMtrrDefType(UC);
    v.setMtrrVar(0, { base: 0, size: 0x4000000, type: WB });
    expect(kvmMtrrCheckGfnRangeConsistency(v, 0x200, 512)).toBe(true);
    v.setMtrrVar(1, { base: 0x210000, size: 0x10000, type: UC });
    expect(kvmMtrrCheckGfnRangeConsistency(v, 0x200, 512)).toBe(false);
    expect(kvmMtrrCheckGfnRangeConsistency(v, 0x400, 512)).toBe(true);
    // Half WB (variable range 0), half the UC default: not uniform.
    expect(kvmMtrrCheckGfnRangeConsistency(v, 0x4000000 / 4096 - 256, 512)).toBe(false);
    // A UC range over half of a 2M range whose other half has the UC default: uniform.
    v.setMtrrVar(2, { base: 0x8000000, size: 0x100000, type: UC });
    expect(kvmMtrrCheckGfnRangeConsistency(v, 0x8000000 / 4096, 512)).toBe(true);
  });
});

describe('vmx_get_mt_mask across kernel eras', () => {
  it('6.18: WB|IPAT without non-coherent DMA, WB with it or with IGNORE_GUEST_PAT disabled; MMIO UC', () => {
    const v = vcpu();
    expect(vmxGetMtMask(v, 0, false)).toBe(mt(WB, true));
    expect(vmxGetMtMask(v, 0, true)).toBe(mt(UC));
    v.vm.arch.noncoherentDmaCount = 1;
    expect(vmxGetMtMask(v, 0, false)).toBe(mt(WB));
    expect(vmxGetMtMask(vcpu({}, KVM_X86_QUIRK_IGNORE_GUEST_PAT), 0, false)).toBe(mt(WB));
    const old = vcpu({ kernel: '6.12' }); // no IGNORE_GUEST_PAT quirk yet: non-coherent DMA alone decides
    expect(vmxGetMtMask(old, 0, false)).toBe(mt(WB, true));
    old.vm.arch.noncoherentDmaCount = 1;
    expect(vmxGetMtMask(old, 0, false)).toBe(mt(WB));
  });

  it('v5.x (honorGuestMtrrs): CD=1 → WB|IPAT with CD_NW_CLEARED, UC|IPAT without; CD=0 → guest MTRR type', () => {
    const v = vcpu({ kernel: '6.12', honorGuestMtrrs: true });
    v.setMtrrDefType(WC);
    expect(vmxGetMtMask(v, 0, false)).toBe(mt(WB, true)); // no non-coherent DMA
    v.vm.arch.noncoherentDmaCount = 1;
    expect(vmxGetMtMask(v, 0, false)).toBe(mt(WB, true));
    expect(v.setCr0({ cd: false })).toBe(0);
    expect(vmxGetMtMask(v, 0, false)).toBe(mt(WC));
    const q = vcpu({ kernel: '6.12', honorGuestMtrrs: true }, KVM_X86_QUIRK_CD_NW_CLEARED);
    q.vm.arch.noncoherentDmaCount = 1;
    expect(vmxGetMtMask(q, 0, false)).toBe(mt(UC, true));
  });

  it('CR0 writes: NW without CD #GPs; cdToggleZap needs honorGuestMtrrs', () => {
    const v = vcpu();
    expect(v.setCr0({ cd: false, nw: true })).toBe(1);
    expect(v.setCr0(0x80000000)).toBe(1); // PG without PE
    expect(v.setCr0({ cd: false })).toBe(0);
    expect(v.memtype.cr0).toBe(0x10);
    expect(() => new Kvm({ cdToggleZap: true })).toThrow(TypeError);
  });
});

describe('effective memory type', () => {
  it('IPAT selects the EPT type; otherwise EPT × guest PAT by the SDM table', () => {
    const v = vcpu();
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((i) => guestPatType(v, i))).toEqual([6, 4, 7, 0, 6, 4, 7, 0]);
    expect(effectiveMemtype(WB, true, UC)).toBe(WB);
    expect(effectiveMemtype(WB, false, WC)).toBe(WC);
    expect(effectiveMemtype(WB, false, 7)).toBe(UC); // UC- under WB
    expect(effectiveMemtype(WC, false, 7)).toBe(WC); // UC- under WC
    expect(effectiveMemtype(UC, false, WB)).toBe(UC);
    expect(effectiveMemtype(WP, false, WB)).toBe(WP);
    expect(effectiveMemtype(WT, false, WB)).toBe(WT);
  });
});
