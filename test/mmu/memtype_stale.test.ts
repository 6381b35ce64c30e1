/**
 * The 2019 VFIO failure as Yan Zhao root-caused it (mmu-zap.md §6.7): a GPU behind an IOMMU that the
 * pre-v5.19 Intel driver reported as lacking snoop control makes KVM see non-coherent DMA; SPTEs the
 * guest creates while CR0.CD=1 get WB|IPAT; when CD goes to 0 the guest MTRR type applies, but v5.3 did
 * not zap EPT on the toggle with KVM_X86_QUIRK_CD_NW_CLEARED enabled. Zap-all on a memslot DELETE hid it;
 * a precise zap does not. Exact SPTE counts throughout.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, auditSpteMemtypes, uapiVfio, type KvmOptions, type Vcpu, type Vm } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_IGNORE_GUEST_PAT, KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { MTRR_TYPE_UNCACHABLE, MTRR_TYPE_WRBACK, MTRR_TYPE_WRCOMB } from '../../src/x86/mtrr.ts';

const MiB = 1 << 20;
const RAM = 64 * MiB;
const BAR_GPA = 0xc0000000;
const ROM_GPA = 0xd0000000;
const RAM_PAGES = 256;
const BAR_PAGES = 16;
const WB_IPAT = (MTRR_TYPE_WRBACK << 3) | 0x40;

interface Setup {
  kvm: Kvm;
  vm: Vm;
  cpu: Vcpu;
  ram: number;
}

/** RAM, a 2 MiB "GPU BAR" slot and a small ROM slot; one vCPU at reset (CR0.CD=1). */
function machine(kvmOpts: KvmOptions, opts: { slotZapAll?: boolean; snoopBug?: boolean } = {}): Setup {
  const kvm = new Kvm(kvmOpts);
  const vm = kvm.createVm(0);
  if (opts.slotZapAll === false)
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  const ram = kvm.host.mmap(RAM);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: RAM, userspaceAddr: ram });
  const bar = kvm.host.mmap(2 * MiB);
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 2 * MiB, userspaceAddr: bar });
  const rom = kvm.host.mmap(64 * 1024);
  vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: ROM_GPA, memorySize: 64 * 1024, userspaceAddr: rom });
  return { kvm, vm, cpu: vm.createVcpu(0), ram };
}

/** The Kaby Lake desktop: the host's IGD sits behind a DMAR unit without snoop control. */
function assignGpu(s: Setup, snoopScope: 'system' | 'attached'): void {
  const vfio = s.kvm.vfio;
  vfio.snoopScope = snoopScope;
  vfio.addIommu({ snoopControl: false }); // the IGD's unit: not attached to the guest
  const gpu = vfio.addDevice({ name: 'GT640' }); // unit 0, which has snoop control
  const c = vfio.openContainer();
  gpu.group.setContainer(c.fd);
  c.setIommu(uapiVfio.VFIO_TYPE1v2_IOMMU);
  c.mapDma({ iova: 0, vaddr: s.ram, size: RAM, flags: 3 });
  s.vm.createDevice({ type: uapiVfio.KVM_DEV_TYPE_VFIO }).fileAdd(gpu.group.fd);
}

/** Firmware: MTRRs (RAM WB, BAR WC, default UC) programmed while CD=1, pages touched, then CD cleared. */
function boot(s: Setup): void {
  const { cpu } = s;
  expect(cpu.setMtrrVar(0, { base: 0, size: RAM, type: MTRR_TYPE_WRBACK })).toBe(0);
  expect(cpu.setMtrrVar(1, { base: BAR_GPA, size: 2 * MiB, type: MTRR_TYPE_WRCOMB })).toBe(0);
  expect(cpu.setMtrrDefType(MTRR_TYPE_UNCACHABLE)).toBe(0);
  for (let i = 0; i < RAM_PAGES; i++) cpu.access(i * 4096, 'read');
  for (let i = 0; i < BAR_PAGES; i++) cpu.access(BAR_GPA + i * 4096, 'write');
}

const counts = (vm: Vm): [number, number, number] => {
  const a = auditSpteMemtypes(vm);
  return [a.leafs, a.stale, a.staleType];
};

describe('stale EPT memtype after a guest CR0.CD toggle with non-coherent DMA', () => {
  const preFix: KvmOptions = { kernel: '6.12', honorGuestMtrrs: true };

  it('pre-fix kernel: the CD 1→0 toggle leaves every SPTE built during CD=1 stale', () => {
    const s = machine(preFix);
    assignGpu(s, 'system');
    expect(s.vm.arch.noncoherentDmaCount).toBe(1);
    boot(s);
    expect(counts(s.vm)).toEqual([272, 0, 0]); // all WB|IPAT, which is right while CD=1
    expect(s.cpu.setCr0({ cd: false })).toBe(0);
    // RAM: WB|IPAT where KVM now computes WB (IPAT differs); BAR: WB|IPAT where it computes WC.
    expect(counts(s.vm)).toEqual([272, 272, 16]);
    const a = auditSpteMemtypes(s.vm);
    expect(a.staleInValidRoots).toBe(272);
    expect(a.entries.find((e) => e.gfn === BAR_GPA / 4096)).toMatchObject({ have: WB_IPAT, want: 1 << 3 });
  });

  it('zap-all on a memslot DELETE (DEFAULT VM, SLOT_ZAP_ALL quirk) removes them; refaults are right', () => {
    const s = machine(preFix);
    assignGpu(s, 'system');
    boot(s);
    s.cpu.setCr0({ cd: false });
    s.vm.setUserMemoryRegion({ slot: 2, memorySize: 0 });
    expect(s.vm.getModelStats().memslot_zap_all_fast).toBe(1);
    expect(counts(s.vm)).toEqual([0, 0, 0]);
    const r = s.cpu.access(BAR_GPA, 'read');
    expect(r).toMatchObject({ exit: 'none', memtype: MTRR_TYPE_WRCOMB });
    expect(counts(s.vm)).toEqual([1, 0, 0]);
  });

  it('a precise memslot zap (quirk disabled) leaves them, and the guest keeps using WB on the BAR', () => {
    const s = machine(preFix, { slotZapAll: false });
    assignGpu(s, 'system');
    boot(s);
    s.cpu.setCr0({ cd: false });
    s.vm.setUserMemoryRegion({ slot: 2, memorySize: 0 });
    expect(s.vm.getModelStats().memslot_zap_precise).toBe(1);
    expect(counts(s.vm)).toEqual([272, 272, 16]);
    expect(s.cpu.access(BAR_GPA + 4096, 'read')).toMatchObject({ exit: 'none', memtype: MTRR_TYPE_WRBACK });
  });

  it('post-fix kernel (zap on every CD toggle with non-coherent DMA): none survive', () => {
    const s = machine({ ...preFix, cdToggleZap: true }, { slotZapAll: false });
    assignGpu(s, 'system');
    boot(s);
    const seq = s.vm.mmuInvalidateSeq;
    s.cpu.setCr0({ cd: false });
    expect(s.vm.mmuInvalidateSeq).toBe(seq + 1); // kvm_zap_gfn_range ran in an invalidation window
    expect(counts(s.vm)).toEqual([0, 0, 0]);
    boot(s); // the guest touches the same pages again with CD=0
    s.vm.setUserMemoryRegion({ slot: 2, memorySize: 0 });
    expect(counts(s.vm)).toEqual([272, 0, 0]);
  });

  it('the quirk disabled (6.15+ on VMX) makes even the shipped code zap: CD=1 maps UC|IPAT', () => {
    const s = machine({ kernel: '6.18', honorGuestMtrrs: true }, { slotZapAll: false });
    assignGpu(s, 'system');
    boot(s);
    expect(s.cpu.access(0, 'read')).toMatchObject({ memtype: MTRR_TYPE_UNCACHABLE });
    s.cpu.setCr0({ cd: false });
    expect(counts(s.vm)).toEqual([0, 0, 0]);
  });

  it('the v5.19 IOMMU fix hides it: snoop control checked on attached units, no non-coherent DMA', () => {
    const s = machine(preFix, { slotZapAll: false });
    assignGpu(s, 'attached');
    expect(s.vm.arch.noncoherentDmaCount).toBe(0);
    boot(s);
    s.cpu.setCr0({ cd: false });
    s.vm.setUserMemoryRegion({ slot: 2, memorySize: 0 });
    expect(counts(s.vm)).toEqual([272, 0, 0]);
  });

  it('6.18 (no MTRR virtualization): CD toggles change nothing; WB without IPAT under non-coherent DMA', () => {
    const s = machine({}, { slotZapAll: false });
    assignGpu(s, 'system');
    boot(s);
    s.cpu.setCr0({ cd: false });
    s.vm.setUserMemoryRegion({ slot: 2, memorySize: 0 });
    expect(counts(s.vm)).toEqual([272, 0, 0]);
    expect(s.cpu.access(BAR_GPA, 'read')).toMatchObject({ memtype: MTRR_TYPE_WRBACK });
    expect(auditSpteMemtypes(s.vm).entries).toEqual([]);
  });

  it('6.18: the first non-coherent registration zaps SPTEs built with IPAT, unless IGNORE_GUEST_PAT is off', () => {
    for (const [patQuirkOff, leafsAfter] of [
      [false, 0],
      [true, 272],
    ] as const) {
      const s = machine({}, { slotZapAll: false });
      if (patQuirkOff)
        s.vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_IGNORE_GUEST_PAT] });
      boot(s);
      expect(s.cpu.access(0, 'read')).toMatchObject({ memtype: MTRR_TYPE_WRBACK });
      assignGpu(s, 'system');
      expect(counts(s.vm)).toEqual([leafsAfter, 0, 0]);
    }
  });

  it('pre-6.6 (honorGuestMtrrs): the first non-coherent registration only counts; IPAT SPTEs stay stale', () => {
    // v5.3's kvm_arch_register_noncoherent_dma was an atomic_inc; the zap on 0 -> 1 came with 6.6
    // (kvm_noncoherent_dma_assignment_start_or_stop). SPTEs built before the assignment keep WB|IPAT
    // while the guest's MTRRs now apply: the stale-memtype class the 2019 report is about, without a
    // CD toggle (docs/fidelity.md, Memory types).
    const s = machine(preFix, { slotZapAll: false });
    s.cpu.setCr0({ cd: false });
    boot(s);
    expect(auditSpteMemtypes(s.vm).entries).toEqual([]);
    assignGpu(s, 'system');
    expect(counts(s.vm)).toEqual([272, 272, 16]);
    // The same sequence on 6.18 zaps at the registration (the test above): nothing left to be stale.
  });

  it('guest MTRR writes with non-coherent DMA zap the written range (pre-6.11 only)', () => {
    for (const [opts, leafs] of [
      [preFix, 256],
      [{}, 272],
    ] as const) {
      const s = machine(opts, { slotZapAll: false });
      assignGpu(s, 'system');
      s.cpu.setCr0({ cd: false });
      boot(s);
      expect(counts(s.vm)).toEqual([272, 0, 0]);
      s.cpu.setMtrrVar(1, { base: BAR_GPA, size: 2 * MiB, type: MTRR_TYPE_UNCACHABLE });
      expect(counts(s.vm)).toEqual([leafs, 0, 0]);
    }
  });
});

describe('huge pages and guest MTRRs', () => {
  it('a 2M mapping is split to 4K where the MTRR type is not uniform over it', () => {
    const kvm = new Kvm({ kernel: '6.12', honorGuestMtrrs: true });
    const vm = kvm.createVm(0);
    const ram = kvm.host.mmap(RAM, { backing: 'thp' });
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: RAM, userspaceAddr: ram });
    const cpu = vm.createVcpu(0);
    const s = { kvm, vm, cpu, ram };
    assignGpu(s, 'system');
    cpu.setCr0({ cd: false });
    // A WB default with a UC hole (a UC range inside a WB range at a lower base would read as WB in v5.3:
    // test/fidelity/mtrr_lookup.test.ts).
    cpu.setMtrrVar(1, { base: 0x400000 + 0x10000, size: 0x10000, type: MTRR_TYPE_UNCACHABLE });
    cpu.setMtrrDefType(MTRR_TYPE_WRBACK);
    expect(cpu.access(0x200000, 'read')).toMatchObject({ level: 2, memtype: MTRR_TYPE_WRBACK });
    expect(cpu.access(0x400000, 'read')).toMatchObject({ level: 1, memtype: MTRR_TYPE_WRBACK });
    expect(cpu.access(0x410000, 'read')).toMatchObject({ level: 1, memtype: MTRR_TYPE_UNCACHABLE });
    expect(counts(vm)).toEqual([3, 0, 0]);
  });
});
