/**
 * Historical KVM bugs switched back on (KvmOptions.bugs): each test drives the model through the public
 * API into the situation the bug needs, asserts WHICH invariant fires at WHICH step, and that the same
 * sequence is clean with the switch off. docs/invariants.md "Historical bugs" is the table of results.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, uapiVfio, type BugName, type KvmOptions, type Vcpu, type Vm } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import { beginFault } from '../../src/x86/mmu/guest_access_step.ts';
import type { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { KVM_CAP, KVM_MEM_GUEST_MEMFD } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { MTRR_TYPE_UNCACHABLE, MTRR_TYPE_WRBACK, MTRR_TYPE_WRCOMB } from '../../src/x86/mtrr.ts';
import { guest, touch, BAR_GPA, MiB } from '../mmu/fixture.ts';

/** [invariant, step] of every violation, in order, without repeats. */
function fired(ch: Checker): string[] {
  return [...new Set(ch.violations.map((v) => `${v.id}@${v.step}`))];
}

function access(ch: Checker, v: Vcpu, gpa: number, kind: 'read' | 'write' = 'read') {
  const r = v.access(gpa, kind);
  ch.onAccess(v, gpa, kind, r);
  return r;
}

describe('KvmOptions.bugs', () => {
  it('validates names', () => {
    expect(() => new Kvm({ bugs: ['no-such-bug' as BugName] })).toThrow(TypeError);
    expect(() => new Kvm({ bugs: 'fault-no-seq-recheck' as unknown as BugName[] })).toThrow(TypeError);
    expect(() => new Kvm({ bugs: ['gmem-flag-clear-uaf'], gmemFlagsFix: true })).toThrow(TypeError);
    expect(new Kvm({ bugs: ['fault-no-seq-recheck'] }).cfg.bugs).toEqual(['fault-no-seq-recheck']);
    expect(new Kvm().cfg.bugs).toEqual([]);
  });
});

describe("'fault-no-seq-recheck': is_page_fault_stale skips mmu_invalidate_retry_gfn", () => {
  /** A fault gets its pfn, the host migrates the page (invalidation start/end), then the fault installs. */
  function race(bugs: BugName[]): Checker {
    const g = guest({ kvm: { bugs }, vcpus: 1 });
    const ch = new Checker(g.kvm, { audit: 'points' });
    ch.watch(g.vm);
    const v = g.vcpus[0]!;
    const ram = g.vm.memslots()[0]!.userspaceAddr;
    ch.setStep('fault-begin');
    const f = beginFault(g.vm.mmu as X86Mmu, v, 0x5000, 'read');
    ch.setStep('host-migrate');
    g.kvm.host.migrate(ram + 0x5000, 4096);
    ch.auditPoint('postNotifier');
    ch.setStep('fault-finish');
    const r = f.finish();
    ch.onAccess(v, 0x5000, 'read', r);
    ch.auditPoint('postStep');
    return ch;
  }

  it('maps the freed pre-migration page: INV-ACCESS-001 and INV-PFN-001 at fault-finish', () => {
    const ch = race(['fault-no-seq-recheck']);
    expect(fired(ch)).toEqual(['INV-ACCESS-001@fault-finish', 'INV-PFN-001@fault-finish']);
    expect(ch.violations[0]!.gfn).toBe(5);
    expect(ch.violations[0]!.trace.some((l) => l.includes('step fault-finish'))).toBe(true);
  });

  it('switch off: the fault retries and maps the new page; clean', () => {
    expect(race([]).violations).toEqual([]);
  });
});

describe("'fault-ignores-invalid-slot': the fault maps a gfn of an INVALID slot", () => {
  function deleteWithConcurrentAccess(bugs: BugName[], quirk: boolean): Checker {
    const g = guest({ kvm: { bugs }, quirk, vcpus: 1 });
    const ch = new Checker(g.kvm, { audit: 'points' });
    ch.watch(g.vm);
    const v = g.vcpus[0]!;
    g.vm.onInvalidWindow = (slot) => {
      if (slot.id !== 1) return;
      ch.setStep('invalid-window');
      access(ch, v, BAR_GPA + 0x3000);
    };
    ch.setStep('delete-bar');
    g.vm.setUserMemoryRegion({ slot: 1, memorySize: 0 });
    g.vm.onInvalidWindow = undefined;
    ch.setStep('delete-bar-done');
    ch.auditPoint('postMemslotUpdate');
    ch.setStep('access-after');
    access(ch, v, BAR_GPA + 0x3000);
    return ch;
  }

  for (const quirk of [true, false]) {
    it(`${quirk ? 'zap-all' : 'precise zap'}: INV-ACCESS-003 in the window, INV-ZAP-001/002 once the DELETE returns`, () => {
      const ch = deleteWithConcurrentAccess(['fault-ignores-invalid-slot'], quirk);
      expect(fired(ch)).toEqual([
        'INV-ACCESS-003@invalid-window',
        'INV-ZAP-001@delete-bar-done',
        'INV-ZAP-002@delete-bar-done',
        'INV-ACCESS-001@access-after',
      ]);
    });
    it(`${quirk ? 'zap-all' : 'precise zap'}, switch off: the window access retries; clean`, () => {
      expect(deleteWithConcurrentAccess([], quirk).violations).toEqual([]);
    });
  }
});

describe("'precise-zap-no-flush': kvm_mmu_zap_memslot without kvm_flush_remote_tlbs", () => {
  function deleteTouchedBar(bugs: BugName[], quirk: boolean): Checker {
    const g = guest({ kvm: { bugs }, quirk, vcpus: 2 });
    const ch = new Checker(g.kvm, { audit: 'points' });
    ch.watch(g.vm);
    ch.setStep('touch-bar');
    expect(touch(g.vcpus[1]!, BAR_GPA, 16)).toBe(16);
    ch.setStep('delete-bar');
    g.vm.setUserMemoryRegion({ slot: 1, memorySize: 0 });
    ch.auditPoint('postMemslotUpdate');
    ch.setStep('access-after');
    access(ch, g.vcpus[1]!, BAR_GPA + 0x2000);
    return ch;
  }

  it('precise zap: the TLBs keep the slot: INV-ZAP-002 at delete-bar, then the guest reaches the page', () => {
    const ch = deleteTouchedBar(['precise-zap-no-flush'], false);
    expect(fired(ch)).toEqual(['INV-ZAP-002@delete-bar', 'INV-ACCESS-001@access-after']);
    expect(ch.violations.filter((v) => v.id === 'INV-ZAP-002')).toHaveLength(16);
  });

  it('zap-all hides it (the precise path never runs); switch off is clean too', () => {
    expect(deleteTouchedBar(['precise-zap-no-flush'], true).violations).toEqual([]);
    expect(deleteTouchedBar([], false).violations).toEqual([]);
  });
});

describe("'gmem-flag-clear-uaf': 6.12–6.18 accept clearing KVM_MEM_GUEST_MEMFD", () => {
  function clearFlag(opts: KvmOptions): { ch: Checker; error: string | null } {
    const kvm = new Kvm(opts);
    const vm = kvm.createVm(1); // KVM_X86_SW_PROTECTED_VM
    const ch = new Checker(kvm, { audit: 'points' });
    ch.watch(vm);
    const fd = vm.createGuestMemfd({ size: 2 * MiB });
    const hva = kvm.host.mmap(2 * MiB);
    const region = { slot: 0, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva, guestMemfd: fd };
    ch.setStep('create-gmem-slot');
    vm.setUserMemoryRegion2({ ...region, flags: KVM_MEM_GUEST_MEMFD });
    ch.auditPoint('postMemslotUpdate');
    ch.setStep('clear-gmem-flag');
    let error: string | null = null;
    try {
      vm.setUserMemoryRegion2({ ...region, flags: 0 });
    } catch (e) {
      error = (e as { code: string }).code;
    }
    ch.auditPoint('postMemslotUpdate');
    return { ch, error };
  }

  it('the binding keeps pointing at the freed slot: INV-GMEM-001 at clear-gmem-flag', () => {
    for (const opts of [
      { bugs: ['gmem-flag-clear-uaf'] },
      { kernel: '6.19', bugs: ['gmem-flag-clear-uaf'] },
    ] as KvmOptions[]) {
      const { ch, error } = clearFlag(opts);
      expect(error).toBeNull();
      expect(fired(ch)).toEqual(['INV-GMEM-001@clear-gmem-flag']);
    }
  });

  it('with the 6.19 fix the request is EINVAL and nothing fires', () => {
    for (const opts of [{ gmemFlagsFix: true }, { kernel: '6.19' }] as KvmOptions[]) {
      const { ch, error } = clearFlag(opts);
      expect(error).toBe('EINVAL');
      expect(ch.violations).toEqual([]);
    }
  });
});

describe("'vfio-2019-memtype': no EPT zap on a guest CR0.CD toggle with non-coherent DMA", () => {
  const RAM = 64 * MiB;
  const BAR = 0xc0000000;
  const ROM = 0xd0000000;

  function run(bugs: BugName[], slotZapAll: boolean): Checker {
    const kvm = new Kvm({ bugs });
    const vm: Vm = kvm.createVm(0);
    if (!slotZapAll)
      vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
    const ch = new Checker(kvm, { audit: 'points' });
    ch.watch(vm);
    ch.setStep('setup');
    const ram = kvm.host.mmap(RAM);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: RAM, userspaceAddr: ram });
    vm.setUserMemoryRegion({
      slot: 1,
      guestPhysAddr: BAR,
      memorySize: 2 * MiB,
      userspaceAddr: kvm.host.mmap(2 * MiB),
    });
    vm.setUserMemoryRegion({
      slot: 2,
      guestPhysAddr: ROM,
      memorySize: 0x10000,
      userspaceAddr: kvm.host.mmap(0x10000),
    });
    const cpu = vm.createVcpu(0);
    // A GPU assigned through VFIO while the host's other DMAR unit lacks snoop control: non-coherent DMA.
    kvm.vfio.snoopScope = 'system';
    kvm.vfio.addIommu({ snoopControl: false });
    const gpu = kvm.vfio.addDevice({ name: 'GT640' });
    const c = kvm.vfio.openContainer();
    gpu.group.setContainer(c.fd);
    c.setIommu(uapiVfio.VFIO_TYPE1v2_IOMMU);
    c.mapDma({ iova: 0, vaddr: ram, size: RAM, flags: 3 });
    vm.createDevice({ type: uapiVfio.KVM_DEV_TYPE_VFIO }).fileAdd(gpu.group.fd);
    ch.setStep('firmware-boot');
    cpu.setMtrrVar(0, { base: 0, size: RAM, type: MTRR_TYPE_WRBACK });
    cpu.setMtrrVar(1, { base: BAR, size: 2 * MiB, type: MTRR_TYPE_WRCOMB });
    cpu.setMtrrDefType(MTRR_TYPE_UNCACHABLE);
    for (let i = 0; i < 16; i++) access(ch, cpu, BAR + i * 4096, 'write');
    ch.auditPoint('postStep');
    ch.setStep('cd-toggle');
    cpu.setCr0({ cd: false });
    ch.auditPoint('postStep');
    ch.setStep('delete-rom');
    vm.setUserMemoryRegion({ slot: 2, memorySize: 0 });
    ch.auditPoint('postMemslotUpdate');
    ch.setStep('bar-access');
    access(ch, cpu, BAR + 4096, 'read');
    return ch;
  }

  it('precise zap: stale memtypes at cd-toggle (INV-MEMTYPE-001) and the guest uses one (INV-ACCESS-005)', () => {
    const ch = run(['vfio-2019-memtype'], false);
    expect(fired(ch)).toEqual(['INV-MEMTYPE-001@cd-toggle', 'INV-ACCESS-005@bar-access']);
    expect(ch.violations.filter((v) => v.id === 'INV-MEMTYPE-001')).toHaveLength(16);
  });

  it('zap-all on the ROM delete hides the symptom: only the stale window at cd-toggle is seen', () => {
    expect(fired(run(['vfio-2019-memtype'], true))).toEqual(['INV-MEMTYPE-001@cd-toggle']);
  });

  it('switch off (6.18: no MTRR virtualization) is clean under both designs', () => {
    expect(run([], false).violations).toEqual([]);
    expect(run([], true).violations).toEqual([]);
  });
});
