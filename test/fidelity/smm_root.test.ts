/**
 * A vCPU in SMM runs on its own TDP root. arch/x86/kvm/mmu/mmu.c#kvm_calc_tdp_mmu_root_page_role sets
 * role.smm = cpu_role.base.smm, kvm_mmu_load → mmu_alloc_direct_roots → kvm_tdp_mmu_alloc_root allocates
 * (or finds) the root of that role, and smm.c#kvm_smm_changed resets the MMU context
 * (kvm_mmu_reset_context → kvm_mmu_unload) so the next entry loads the root of the new address space.
 * The address-space-1 memslots (SMRAM) are then mapped only in SMM roots, and kvm_tdp_mmu_unmap_gfn_range
 * for an address-space-1 slot finds them there (__for_each_tdp_mmu_root_yield_safe filters on
 * kvm_mmu_page_as_id). Read in linux-next 1c60d04a (mmu.c, tdp_mmu.c).
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { decodeRole } from '../../src/x86/mmu/mmu_internal.ts';
import { Checker } from '../../src/check/checker.ts';
import type { X86Mmu } from '../../src/x86/mmu/mmu.ts';

const MiB = 1 << 20;
const SMRAM = 0xa0000;
const AS1 = 1 << 16;

function smmGuest(quirk = true) {
  const kvm = new Kvm();
  const vm = kvm.createVm(0);
  // The old model's shared root is caught too: INV-PFN-002, an as-0 leaf mapping the SMRAM page.
  const checker = new Checker(kvm, { audit: 'full' });
  checker.watch(vm);
  if (!quirk) vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  const ram = kvm.host.mmap(4 * MiB);
  const smram = kvm.host.mmap(128 * 1024);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: ram });
  // Address space 1 (SMM) sees its own SMRAM at 0xa0000 and nothing else.
  const smramSlot = (size: number) =>
    vm.setUserMemoryRegion({ slot: AS1 | 0, guestPhysAddr: SMRAM, memorySize: size, userspaceAddr: smram });
  smramSlot(128 * 1024);
  const normal = vm.createVcpu(0);
  const smm = vm.createVcpu(1);
  smm.smm = true;
  return { vm, normal, smm, smramSlot, checker };
}

describe('kvm_calc_tdp_mmu_root_page_role: role.smm selects the root of the SMM address space', () => {
  it('an SMM vCPU and a normal vCPU reach different pages at the same gpa', () => {
    const { vm, normal, smm } = smmGuest();
    const ramHit = normal.access(SMRAM, 'read');
    const smramHit = smm.access(SMRAM, 'read');
    expect(ramHit).toMatchObject({ exit: 'none', level: 1 });
    expect(smramHit).toMatchObject({ exit: 'none', level: 1 });
    expect(smramHit.exit === 'none' && ramHit.exit === 'none' && smramHit.pfn !== ramHit.pfn).toBe(true);
    // Two roots, one per address space; the SMM one has role.smm = 1.
    const mmu = vm.mmu as X86Mmu;
    expect(decodeRole(mmu.tdp.pool.role[normal.mmu.root]!).smm).toBe(0);
    expect(decodeRole(mmu.tdp.pool.role[smm.mmu.root]!).smm).toBe(1);
    // The normal vCPU still reaches RAM, not the SMRAM page the SMM vCPU faulted in.
    expect(normal.access(SMRAM, 'read')).toEqual(ramHit);
  });

  it('a precise DELETE of the SMRAM slot zaps the SMM mapping: the SMM vCPU then exits to MMIO', () => {
    // Quirk off: kvm_mmu_zap_memslot → kvm_tdp_mmu_unmap_gfn_range walks only the roots of as_id 1.
    const { normal, smm, smramSlot, checker } = smmGuest(false);
    expect(smm.access(SMRAM, 'write')).toMatchObject({ exit: 'none' });
    expect(normal.access(SMRAM, 'read')).toMatchObject({ exit: 'none' });
    smramSlot(0);
    expect(smm.access(SMRAM, 'read')).toEqual({ exit: 'mmio', gpa: SMRAM, write: false });
    expect(normal.access(SMRAM, 'read')).toMatchObject({ exit: 'none' });
    checker.auditPoint('postStep');
    expect(checker.violations).toEqual([]);
  });

  it('leaving SMM (kvm_smm_changed → kvm_mmu_reset_context) puts the SMM root and loads the normal one', () => {
    const { vm, normal, smm } = smmGuest();
    const ramHit = normal.access(SMRAM, 'read');
    smm.access(SMRAM, 'read');
    const smmRoot = smm.mmu.root;
    smm.smm = false;
    expect(smm.access(SMRAM, 'read')).toEqual(ramHit);
    expect(smm.mmu.root).toBe(normal.mmu.root);
    // The SMM root stays valid (the TDP MMU's own reference) for the next SMM entry.
    const mmu = vm.mmu as X86Mmu;
    expect(mmu.tdp.pool.rootCount[smmRoot]).toBe(1);
    smm.smm = true;
    smm.access(SMRAM, 'read');
    expect(smm.mmu.root).toBe(smmRoot);
  });
});
