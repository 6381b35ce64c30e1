/**
 * Issue #12 finding 1: a huge-page range whose gfns have mixed memory attributes must not be mapped huge.
 * The kernel marks such ranges in lpage_info with KVM_LPAGE_MIXED_FLAG (arch/x86/kvm/mmu/mmu.c:
 * hugepage_set_mixed, from kvm_arch_post_set_memory_attributes and, at slot creation,
 * kvm_mmu_init_memslot_memory_attributes), and kvm_mmu_max_mapping_level then stops at a smaller level.
 * The bug switch 'no-lpage-mixed' restores the old model (flag never set), and the checker's INV-HUGE-003
 * (a huge leaf over mixed attributes) must catch it.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_GUEST_MEMFD, KVM_MEMORY_ATTRIBUTE_PRIVATE } from '../../src/uapi/kvm.ts';
import { Checker } from '../../src/check/checker.ts';
import type { BugName } from '../../src/kvm/host_profile.ts';

const PAGE = 4096;
const MiB = 1 << 20;
const SW_PROTECTED = 1;

/** A SW_PROTECTED VM with one 4 MiB guest_memfd slot at gpa 0 whose shared half is THP-backed. */
function guest(bugs: BugName[] = [], attrsFirst = false) {
  const kvm = new Kvm({ bugs });
  const vm = kvm.createVm(SW_PROTECTED);
  const fd = vm.createGuestMemfd({ size: 4 * MiB });
  if (attrsFirst)
    vm.setMemoryAttributes({ address: 5 * PAGE, size: PAGE, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE });
  vm.setUserMemoryRegion2({
    slot: 0,
    flags: KVM_MEM_GUEST_MEMFD,
    guestPhysAddr: 0,
    memorySize: 4 * MiB,
    userspaceAddr: kvm.host.mmap(4 * MiB, { backing: 'thp' }),
    guestMemfd: fd,
    guestMemfdOffset: 0,
  });
  if (!attrsFirst)
    vm.setMemoryAttributes({ address: 5 * PAGE, size: PAGE, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE });
  return { kvm, vm, vcpu: vm.createVcpu(0) };
}

describe('KVM_LPAGE_MIXED_FLAG (kvm_arch_post_set_memory_attributes, kvm_mmu_max_mapping_level)', () => {
  it('a shared access next to one PRIVATE gfn maps 4K, and the PRIVATE gfn stays unreachable as shared', () => {
    const { vm, vcpu } = guest();
    expect(vcpu.access(0, 'read')).toMatchObject({ exit: 'none', level: 1 });
    expect(vcpu.access(5 * PAGE, 'read', { private: false })).toEqual({
      exit: 'memory_fault',
      gpa: 5 * PAGE,
      size: PAGE,
      private: false,
    });
    // The second 2 MiB frame has uniform (shared) attributes: it still maps huge.
    expect(vcpu.access(2 * MiB, 'read')).toMatchObject({ exit: 'none', level: 2 });
    expect(vm.getStats().pages_2m).toBe(1);
  });

  it('the flag is set at slot creation from attributes already present (kvm_mmu_init_memslot_memory_attributes)', () => {
    const { vcpu } = guest([], true);
    expect(vcpu.access(0, 'read')).toMatchObject({ exit: 'none', level: 1 });
    expect(vcpu.access(2 * MiB + 7 * PAGE, 'read')).toMatchObject({ exit: 'none', level: 2 });
  });

  it('converting the range back to uniform clears the flag: the frame maps huge again', () => {
    const { vm, vcpu } = guest();
    expect(vcpu.access(0, 'read')).toMatchObject({ level: 1 });
    vm.setMemoryAttributes({ address: 5 * PAGE, size: PAGE, attributes: 0 });
    // The conversion zapped [5, 6) only; the 4K leaf at gfn 0 stays until zapped. A fresh gfn of the frame
    // faults, and the whole frame is now uniform: 2M (replacing the table under it).
    expect(vcpu.access(9 * PAGE, 'read')).toMatchObject({ exit: 'none', level: 2 });
  });

  it('a whole 2M range converted to PRIVATE clears the flag too, and 1G ranges consume the 2M results', () => {
    const { vm, vcpu } = guest();
    vm.setMemoryAttributes({ address: 0, size: 2 * MiB, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE });
    // shared half of the second frame still maps huge; the first frame is private (4K through guest_memfd)
    expect(vcpu.access(2 * MiB, 'read')).toMatchObject({ exit: 'none', level: 2 });
    expect(vcpu.access(0, 'read')).toMatchObject({ exit: 'none', level: 1 });
  });

  it("bug 'no-lpage-mixed': the old model maps a 2M leaf over the PRIVATE gfn, and INV-HUGE-003 catches it", () => {
    const run = (bugs: BugName[]) => {
      const { kvm, vm, vcpu } = guest(bugs);
      const checker = new Checker(kvm, { audit: 'points' });
      checker.watch(vm);
      checker.setStep('shared-read');
      const r = vcpu.access(0, 'read');
      checker.onAccess(vcpu, 0, 'read', r);
      checker.auditPoint('postStep');
      const ids = [...new Set(checker.violations.map((v) => `${v.id}@${v.step}`))];
      return { r, vcpu, ids, messages: checker.violations.map((v) => v.message) };
    };
    const bad = run(['no-lpage-mixed']);
    expect(bad.r).toMatchObject({ exit: 'none', level: 2 });
    expect(bad.ids).toEqual(['INV-HUGE-003@shared-read']);
    expect(bad.messages).toEqual([
      'VM 1 at postStep: root 0 leaf (level 2) [0x0, 0x200) spans gfns with different memory attributes',
    ]);
    // The PRIVATE gfn is reached through the shared host page, with no exit.
    expect(bad.vcpu.access(5 * PAGE, 'read', { private: false }).exit).toBe('none');
    const good = run([]);
    expect(good.r).toMatchObject({ exit: 'none', level: 1 });
    expect(good.ids).toEqual([]);
  });
});
