/**
 * The shadow MMU (kvm.tdp_mmu=N) keeps SMM and non-SMM mappings apart, as the TDP MMU does
 * (smm_root.test.ts). Read in arch/x86/kvm/mmu/mmu.c at linux-next 1c60d04a:
 *   - kvm_calc_cpu_role sets role.base.smm = is_smm(vcpu); the root role of both shadow paging
 *     (kvm_init_shadow_mmu) and EPT built from shadow pages (kvm_calc_tdp_mmu_root_page_role) carries it,
 *     and kvm_mmu_child_role copies the parent's role, so every page below an SMM root has role.smm;
 *   - kvm_mmu_find_shadow_page matches sp->role.word, so the SMM and normal roots are different pages
 *     even for the same gfn (the same guest CR3, or gfn 0 for the direct root);
 *   - the fault looks the gfn up in the vCPU's address space (kvm_vcpu_gfn_to_memslot,
 *     kvm_arch_vcpu_memslots_id) and rmap_add files the SPTE under that slot; rmap_remove and
 *     account_shadowed/unaccount_shadowed find it again by kvm_memslots_for_spte_role;
 *   - an address-space-1 DELETE zaps the SMM SPTEs: zap-all through kvm_zap_obsolete_pages, the precise
 *     zap through kvm_mmu_zap_memslot → kvm_unmap_gfn_range on the as-1 slot's own rmaps;
 *   - kvm_zap_gfn_range's rmap half, kvm_rmap_zap_gfn_range, walks the memslots of every address space
 *     (kvm_arch_nr_memslot_as_ids), so a memory-type zap reaches SMM SPTEs too;
 *   - smm.c#kvm_smm_changed → kvm_mmu_reset_context → kvm_mmu_unload puts the root; the next entry loads
 *     the root of the new address space, and the old root stays in the hash for the next SMI.
 * The old model looked every gfn up in address space 0 and built one root for both: the SMM vCPU read
 * RAM at 0xa0000 instead of SMRAM, and an as-1 DELETE left it reading RAM.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { Checker } from '../../src/check/checker.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import { IdentityMapBuilder } from '../../src/x86/mmu/guest_paging.ts';
import { kvmMmuPageAsId } from '../../src/x86/mmu/shadow_rmap.ts';
import type { ZapDesign } from '../../src/x86/x86.ts';
import type { Vcpu } from '../../src/kvm/vcpu.ts';
import type { AccessKind } from '../../src/kvm/api_types.ts';
import { kvmZapGfnRange } from '../../src/x86/mmu/zap_gfn_range.ts';
import { kvmGfnIsWriteTracked } from '../../src/x86/mmu/page_track.ts';

const KiB = 1024;
const MiB = 1 << 20;
const SMRAM = 0xa0000;
const SMRAM_END = 0xc0000;
const AS1 = 1 << 16;

type Host = 'ept' | 'shadow-paging';
const HOSTS: Host[] = ['ept', 'shadow-paging'];

function smmGuest(host: Host, zapDesign: ZapDesign = 'quirk', quirk = true) {
  // 'ept': EPT built from shadow pages (tdp_enabled, tdp_mmu=N); 'shadow-paging': no EPT at all.
  const kvm = new Kvm(host === 'ept' ? { tdpMmu: false } : { tdp: false });
  const vm = kvm.createVm(0, { zapDesign });
  const checker = new Checker(kvm, { audit: 'full' });
  checker.watch(vm);
  if (!quirk) vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  const ram = kvm.host.mmap(4 * MiB);
  const smram = kvm.host.mmap(128 * KiB);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: ram });
  // Address space 1 as QEMU builds it: RAM, with the SMRAM window over [0xa0000, 0xc0000).
  vm.setUserMemoryRegion({ slot: AS1 | 0, guestPhysAddr: 0, memorySize: SMRAM, userspaceAddr: ram });
  const smramSlot = (size: number) =>
    vm.setUserMemoryRegion({ slot: AS1 | 1, guestPhysAddr: SMRAM, memorySize: size, userspaceAddr: smram });
  smramSlot(128 * KiB);
  vm.setUserMemoryRegion({
    slot: AS1 | 2,
    guestPhysAddr: SMRAM_END,
    memorySize: 4 * MiB - SMRAM_END,
    userspaceAddr: ram + SMRAM_END,
  });
  const normal = vm.createVcpu(0);
  const smm = vm.createVcpu(1);
  smm.smm = true;
  const mmu = shadowMmuOf(vm)!;
  if (host === 'shadow-paging') {
    // Both vCPUs run on the same identity-mapped guest tables (in RAM at 1 MiB, seen by both address
    // spaces): gva == gpa, one CR3.
    const map = new IdentityMapBuilder(mmu.gpt, 1 * MiB, 2 * MiB);
    map.mapPage(SMRAM);
    normal.setCr3(map.cr3);
    smm.setCr3(map.cr3);
  }
  // Every access is reported to the checker, which compares it with the reference semantics of the
  // vCPU's address space (INV-ACCESS-*): on the old model it reported INV-ACCESS-001 for the SMM read.
  const acc = (v: Vcpu, kind: AccessKind) => {
    const r = v.access(SMRAM, kind);
    checker.onAccess(v, SMRAM, kind, r);
    return r;
  };
  const ramPfn = kvm.host.hvaToPfn(ram + SMRAM)!.pfn;
  const smramPfn = kvm.host.hvaToPfn(smram)!.pfn;
  return { kvm, vm, mmu, normal, smm, smramSlot, checker, acc, ramPfn, smramPfn };
}

describe.each(HOSTS)('shadow MMU on a %s host: role.smm and the vCPU address space', (host) => {
  it('an SMM vCPU reaches SMRAM, a normal vCPU RAM, at the same address; two roots (role.smm)', () => {
    const { mmu, normal, smm, ramPfn, smramPfn, checker, acc } = smmGuest(host);
    expect(acc(normal, 'read')).toMatchObject({ exit: 'none', pfn: ramPfn, level: 1 });
    expect(acc(smm, 'read')).toMatchObject({ exit: 'none', pfn: smramPfn, level: 1 });
    // The normal vCPU still reaches RAM, not the SMRAM page the SMM vCPU faulted in.
    expect(acc(normal, 'read')).toMatchObject({ exit: 'none', pfn: ramPfn });
    const normalRoot = mmu.roots.get(normal)!;
    const smmRoot = mmu.roots.get(smm)!;
    expect(smmRoot).not.toBe(normalRoot);
    expect(smmRoot.gfn).toBe(normalRoot.gfn); // same CR3 / the direct root's gfn 0: only the role differs
    expect(kvmMmuPageAsId(normalRoot)).toBe(0);
    expect(kvmMmuPageAsId(smmRoot)).toBe(1);
    // rmap_add filed the SMM SPTE under the as-1 SMRAM slot: a full audit finds every rmap consistent.
    checker.auditPoint('postStep');
    expect(checker.violations).toEqual([]);
  });

  it('leaving SMM (kvm_smm_changed) loads the normal root; the next SMI finds the SMM root in the hash', () => {
    const { vm, mmu, normal, smm, ramPfn, smramPfn, checker, acc } = smmGuest(host);
    acc(normal, 'read');
    acc(smm, 'read');
    const smmRoot = mmu.roots.get(smm)!;
    smm.smm = false;
    expect(acc(smm, 'read')).toMatchObject({ exit: 'none', pfn: ramPfn });
    expect(mmu.roots.get(smm)).toBe(mmu.roots.get(normal));
    // kvm_mmu_free_roots dropped the vCPU's reference; the page is valid and stays in the hash.
    expect(smmRoot.rootCount).toBe(0);
    expect(mmu.isObsoleteSp(smmRoot)).toBe(false);
    smm.smm = true;
    const fixed = vm.vcpus[1]!.getStats().pf_fixed;
    expect(acc(smm, 'read')).toMatchObject({ exit: 'none', pfn: smramPfn });
    expect(mmu.roots.get(smm)).toBe(smmRoot);
    expect(vm.vcpus[1]!.getStats().pf_fixed).toBe(fixed); // its SPTEs were kept: no new fault
    checker.auditPoint('postStep');
    expect(checker.violations).toEqual([]);
  });

  it('kvm_zap_gfn_range zaps the SMM SPTE too: kvm_rmap_zap_gfn_range walks both address spaces', () => {
    const { vm, normal, smm, ramPfn, smramPfn, checker, acc } = smmGuest(host);
    acc(normal, 'read');
    acc(smm, 'read');
    const fixed = () => [normal.getStats().pf_fixed, smm.getStats().pf_fixed];
    const before = fixed();
    kvmZapGfnRange(vm, SMRAM / 4096, SMRAM_END / 4096);
    // Both leafs are gone: each vCPU faults once more to reach its page again.
    expect(acc(normal, 'read')).toMatchObject({ exit: 'none', pfn: ramPfn });
    expect(acc(smm, 'read')).toMatchObject({ exit: 'none', pfn: smramPfn });
    expect(fixed()).toEqual([before[0]! + 1, before[1]! + 1]);
    checker.auditPoint('postStep');
    expect(checker.violations).toEqual([]);
  });

  const designs: [string, ZapDesign, boolean][] = [
    ['quirk on (zap all)', 'quirk', true],
    ['quirk off (precise)', 'quirk', false],
    ['vm-type (DEFAULT: zap all)', 'vm-type', true],
    ['slot-flag (no flag: zap all)', 'slot-flag', true],
  ];
  it.each(designs)('an as-1 DELETE of SMRAM zaps the SMM mapping, design %s', (_name, design, quirk) => {
    const { normal, smm, smramSlot, checker, ramPfn, smramPfn, acc } = smmGuest(host, design, quirk);
    expect(acc(smm, 'write')).toMatchObject({ exit: 'none', pfn: smramPfn });
    expect(acc(normal, 'read')).toMatchObject({ exit: 'none', pfn: ramPfn });
    smramSlot(0);
    // No as-1 slot holds 0xa0000 now: the SMM vCPU's access is emulated MMIO.
    expect(acc(smm, 'read')).toEqual({ exit: 'mmio', gpa: SMRAM, write: false });
    expect(acc(normal, 'read')).toMatchObject({ exit: 'none', pfn: ramPfn });
    checker.auditPoint('postStep');
    expect(checker.violations).toEqual([]);
  });
});

describe("account_shadowed / unaccount_shadowed in the page's address space (kvm_memslots_for_spte_role)", () => {
  it('an SMM vCPU whose page tables live in SMRAM: write tracking in the as-1 slot, undone when SMRAM goes', () => {
    const { vm, mmu, smm, smramSlot, checker, acc, smramPfn } = smmGuest('shadow-paging', 'quirk', false);
    // The SMM handler's own tables, inside SMRAM (gva == gpa); its CR3 is 0xa1000.
    const map = new IdentityMapBuilder(mmu.gpt, SMRAM + 4096, SMRAM_END);
    map.mapPage(SMRAM);
    smm.setCr3(map.cr3);
    expect(acc(smm, 'read')).toMatchObject({ exit: 'none', pfn: smramPfn });
    const pml4 = map.cr3 / 4096;
    const smramSlotNow = vm.activeMemslots(1).searchMemslots(pml4)!;
    // The root shadows the PML4 (level 4 > 4K): __kvm_write_track_add_gfn on the as-1 SMRAM slot only.
    expect([smramSlotNow.baseGfn, kvmGfnIsWriteTracked(smramSlotNow, pml4)]).toEqual([SMRAM / 4096, true]);
    expect(kvmGfnIsWriteTracked(vm.activeMemslots(0).searchMemslots(pml4)!, pml4)).toBe(false);
    // A precise DELETE zaps the pages shadowing tables in the slot (kvm_mmu_zap_memslot_pages_and_flush)
    // while the slot still exists, and unaccount_shadowed finds it in address space 1.
    smramSlot(0);
    expect(
      mmu.shadowPages().filter((sp) => sp.hasGptes && sp.gfn >= SMRAM / 4096 && sp.gfn < SMRAM_END / 4096),
    ).toEqual([]);
    expect(vm.warnings).toEqual([]);
    // CR3 is now in no visible as-1 memslot: the dummy root, and the walk gives the guest a #PF.
    expect(acc(smm, 'read')).toMatchObject({ exit: 'retry' });
    checker.auditPoint('postStep');
    expect(checker.violations).toEqual([]);
  });
});
