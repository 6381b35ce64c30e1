/**
 * Huge pages over mixed memory attributes: KVM must never map one leaf across gfns of different
 * attributes (a shared 2M leaf over a PRIVATE gfn would hand the guest the shared host page behind it).
 * Each 2M/1G range of a slot whose gfns are not uniform carries KVM_LPAGE_MIXED_FLAG in its lpage_info,
 * which kvm_mmu_max_mapping_level (page_fault.ts#kvmMmuHugepageAdjust) reads like any disallow count.
 * The flag is computed at slot creation and recomputed for the head and tail ranges of every
 * KVM_SET_MEMORY_ATTRIBUTES; ranges the change covers entirely become uniform.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c (hugepage_test_mixed, hugepage_set_mixed,
 * hugepage_clear_mixed, hugepage_has_attrs, kvm_arch_pre_set_memory_attributes,
 * kvm_arch_post_set_memory_attributes, kvm_mmu_init_memslot_memory_attributes), compared against
 * linux-next at v6.19-rc5 (the same code since 6.8, 90b4fe17981e).
 * Bug switch 'no-lpage-mixed' restores the model before issue #12: the flag is never set.
 */
import { gfnRoundForLevel, pagesPerHpage, type Gfn, type PgLevel } from '../../types/addr.ts';
import type { KvmMemorySlot } from '../../kvm/kvm_host.ts';
import { hasBug, type HostConfig } from '../../kvm/host_profile.ts';
import { gfnToIndex } from '../x86.ts';

/** KVM_LPAGE_MIXED_FLAG: BIT(31) of disallow_lpage (an Int32Array entry, so the sign bit). */
export const KVM_LPAGE_MIXED_FLAG = 1 << 31;
/** KVM_MAX_HUGEPAGE_LEVEL on x86-64 (1G) */
const MAX_LEVEL = 3;

/** What these functions read of the VM: its attribute array and whether it has private memory. */
export interface AttrVm {
  readonly cfg: HostConfig;
  readonly hasPrivateMem: boolean;
  readonly memAttrs: { get(gfn: number): number; rangeIs(start: number, end: number, v: number): boolean };
}

function linfo(slot: KvmMemorySlot, gfn: number, level: number): { arr: Int32Array; i: number } {
  return {
    arr: slot.arch.lpageInfo![level - 2]!,
    i: gfnToIndex(gfn, slot.baseGfn, level as PgLevel),
  };
}

/** @kernel arch/x86/kvm/mmu/mmu.c#hugepage_test_mixed */
export function hugepageTestMixed(slot: KvmMemorySlot, gfn: number, level: number): boolean {
  const { arr, i } = linfo(slot, gfn, level);
  return (arr[i]! & KVM_LPAGE_MIXED_FLAG) !== 0;
}

/** @kernel arch/x86/kvm/mmu/mmu.c#hugepage_set_mixed */
function hugepageSetMixed(slot: KvmMemorySlot, gfn: number, level: number): void {
  const { arr, i } = linfo(slot, gfn, level);
  arr[i] = arr[i]! | KVM_LPAGE_MIXED_FLAG;
}

/** @kernel arch/x86/kvm/mmu/mmu.c#hugepage_clear_mixed */
function hugepageClearMixed(slot: KvmMemorySlot, gfn: number, level: number): void {
  const { arr, i } = linfo(slot, gfn, level);
  arr[i] = arr[i]! & ~KVM_LPAGE_MIXED_FLAG;
}

/**
 * Do all gfns of the level-sized range at gfn have exactly `attrs`? A 1G range asks its 2M ranges
 * (which is why the callers go level by level, 2M first).
 * @kernel arch/x86/kvm/mmu/mmu.c#hugepage_has_attrs
 */
function hugepageHasAttrs(
  vm: AttrVm,
  slot: KvmMemorySlot,
  gfn: number,
  level: number,
  attrs: number,
): boolean {
  const end = gfn + pagesPerHpage(level as PgLevel);
  if (level === 2) return vm.memAttrs.rangeIs(gfn, end, attrs);
  const step = pagesPerHpage((level - 1) as PgLevel);
  for (let g = gfn; g < end; g += step)
    if (hugepageTestMixed(slot, g, level - 1) || vm.memAttrs.get(g) !== attrs) return false;
  return true;
}

function updateMixed(vm: AttrVm, slot: KvmMemorySlot, gfn: number, level: number, attrs: number): void {
  if (hugepageHasAttrs(vm, slot, gfn, level, attrs)) hugepageClearMixed(slot, gfn, level);
  else hugepageSetMixed(slot, gfn, level);
}

/** Is the mixed tracking on? (kvm_arch_has_private_mem, and the bug switch) */
function tracking(vm: AttrVm, slot: KvmMemorySlot): boolean {
  return vm.hasPrivateMem && slot.arch.lpageInfo !== null && !hasBug(vm.cfg, 'no-lpage-mixed');
}

/**
 * Slot creation (and MOVE): every huge range entirely inside the slot is checked, since attributes are
 * independent of memslots and may already be mixed there.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_init_memslot_memory_attributes
 */
export function kvmMmuInitMemslotMemoryAttributes(vm: AttrVm, slot: KvmMemorySlot): void {
  if (!tracking(vm, slot)) return;
  for (let level = 2; level <= MAX_LEVEL; level++) {
    const n = pagesPerHpage(level as PgLevel);
    const end = gfnRoundForLevel((slot.baseGfn + slot.npages) as Gfn, level as PgLevel);
    let start: number = gfnRoundForLevel(slot.baseGfn, level as PgLevel);
    // Ranges that stick out of the slot can never be huge anyway (their edge disallow count).
    if (start < slot.baseGfn) start += n;
    for (let gfn = start; gfn < end; gfn += n) updateMixed(vm, slot, gfn, level, vm.memAttrs.get(gfn));
  }
}

/**
 * Before the attributes change (mmu_lock held, invalidation begun): add the huge ranges around the
 * head and tail of [start, end) to the invalidation when they could be mapped huge today, so no fault
 * builds a huge page over gfns whose attributes are in flux. Returns the ranges to add.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_arch_pre_set_memory_attributes
 */
export function preSetWidening(slot: KvmMemorySlot, start: number, end: number): [number, number][] {
  const out: [number, number][] = [];
  const slotEnd = slot.baseGfn + slot.npages;
  for (let level = 2; level <= MAX_LEVEL; level++) {
    const n = pagesPerHpage(level as PgLevel);
    const head = start - (start % n);
    const tail = end - 1 - ((end - 1) % n);
    if (
      (head !== start || head + n > end) &&
      head >= slot.baseGfn &&
      head + n <= slotEnd &&
      !hugepageTestMixed(slot, head, level)
    )
      out.push([head, head + n]);
    if (tail === head) continue;
    if (tail + n > end && tail + n <= slotEnd && !hugepageTestMixed(slot, tail, level))
      out.push([tail, tail + n]);
  }
  return out;
}

/**
 * After the attributes changed: recompute the flag of the head and tail ranges the change straddles;
 * ranges it covers entirely now hold only `attrs`.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_arch_post_set_memory_attributes
 */
export function kvmArchPostSetMemoryAttributes(
  vm: AttrVm,
  slot: KvmMemorySlot,
  start: number,
  end: number,
  attrs: number,
): void {
  if (!tracking(vm, slot)) return;
  const slotEnd = slot.baseGfn + slot.npages;
  // Level order matters: 1G consumes the 2M results.
  for (let level = 2; level <= MAX_LEVEL; level++) {
    const n = pagesPerHpage(level as PgLevel);
    let gfn = start - (start % n);
    if (gfn !== start || gfn + n > end) {
      if (gfn >= slot.baseGfn && gfn + n <= slotEnd) updateMixed(vm, slot, gfn, level, attrs);
      gfn += n;
    }
    for (; gfn + n <= end; gfn += n) hugepageClearMixed(slot, gfn, level);
    if (gfn < end && gfn + n <= slotEnd) updateMixed(vm, slot, gfn, level, attrs);
  }
}
