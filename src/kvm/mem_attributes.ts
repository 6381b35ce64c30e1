/**
 * KVM_SET_MEMORY_ATTRIBUTES: per-gfn attributes (only PRIVATE on x86), independent of memslots.
 *
 * Kernel counterpart: virt/kvm/kvm_main.c#kvm_vm_ioctl_set_mem_attributes, #kvm_vm_set_mem_attributes,
 * #kvm_supported_mem_attributes, #kvm_range_has_memory_attributes. See memslot-abi.md §5.3.
 * Conversions zap the affected mappings through the arch hooks before the new value is stored.
 */
import { KVM_MEMORY_ATTRIBUTE_PRIVATE, PAGE_SIZE } from '../uapi/kvm.ts';
import type { KvmMemoryAttributes } from './api_types.ts';
import { KvmError, hex } from './kvm_error.ts';
import { addWrapsU64, copyIn, isUnaligned, num } from './args.ts';
import type { VmState } from './vm_state.ts';
import { KVM_FILTER_PRIVATE, KVM_FILTER_SHARED, type KvmMemorySlot } from './kvm_host.ts';
import { asGfn } from '../types/addr.ts';
import { kvmArchPostSetMemoryAttributes, preSetWidening } from '../x86/mmu/mixed_attrs.ts';

/** @kernel virt/kvm/kvm_main.c#kvm_supported_mem_attributes */
export function kvmSupportedMemAttributes(vm: VmState): number {
  return vm.info.hasPrivateMem ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
}

/** @kernel virt/kvm/kvm_main.c#kvm_vm_ioctl_set_mem_attributes */
export function kvmVmIoctlSetMemAttributes(vm: VmState, arg: KvmMemoryAttributes): void {
  const syscall = 'KVM_SET_MEMORY_ATTRIBUTES';
  if (!vm.cfg.memoryAttributes)
    throw new KvmError('ENOTTY', syscall, 'this kernel has no CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES');
  vm.checkAlive(syscall);
  const a = copyIn(syscall, arg, { address: 'u64', size: 'u64', attributes: 'u64', flags: 'u64' });
  if (a.flags !== 0) throw new KvmError('EINVAL', syscall, `flags ${hex(a.flags)} must be 0`);
  const supported = kvmSupportedMemAttributes(vm);
  if (typeof a.attributes === 'bigint' || a.attributes & ~supported || a.attributes > 0xffffffff) {
    throw new KvmError(
      'EINVAL',
      syscall,
      `attributes ${hex(a.attributes)} not in the supported set ${hex(supported)}`,
    );
  }
  if (a.size === 0 || addWrapsU64(a.address, a.size)) {
    throw new KvmError(
      'EINVAL',
      syscall,
      `size ${hex(a.size)} is zero or address ${hex(a.address)} + size wraps`,
    );
  }
  if (isUnaligned(a.address, PAGE_SIZE) || isUnaligned(a.size, PAGE_SIZE)) {
    throw new KvmError(
      'EINVAL',
      syscall,
      `address ${hex(a.address)} or size ${hex(a.size)} is not page aligned`,
    );
  }
  // Past 2^53 bytes no memslot can exist; the attribute store still takes the range.
  const start = typeof a.address === 'bigint' ? Number(a.address / 4096n) : a.address / PAGE_SIZE;
  const end = start + (typeof a.size === 'bigint' ? Number(a.size / 4096n) : num(a.size) / PAGE_SIZE);
  kvmVmSetMemAttributes(vm, start, end, a.attributes);
}

/**
 * Store the new attributes between two passes over the overlapping memslots: the first (under mmu_lock)
 * begins an invalidation, widens it and zaps the mappings of the old attribute; the second recomputes
 * the huge-page mixed flags and ends the invalidation. mmu_lock is dropped in between (the xarray
 * stores), which is where a concurrent party (`vm.onMmuLockDrop`) runs.
 * @kernel virt/kvm/kvm_main.c#kvm_vm_set_mem_attributes
 */
export function kvmVmSetMemAttributes(vm: VmState, start: number, end: number, attrs: number): void {
  if (vm.memAttrs.rangeIs(start, end, attrs)) return; // nothing changes: no zap, no notifier
  const pre = (slot: KvmMemorySlot, s: number, e: number): boolean =>
    kvmPreSetMemoryAttributes(vm, slot, s, e, attrs);
  const begun = kvmHandleGfnRange(vm, start, end, () => vm.mmuInvalidateBegin(), pre);
  // mmu_lock is not held while the xarray is written: others may fault (and must retry) meanwhile.
  if (begun) vm.mmuLockYield(false, false);
  vm.memAttrs.set(start, end, attrs);
  const post = (slot: KvmMemorySlot, s: number, e: number): boolean => {
    kvmArchPostSetMemoryAttributes(vm, slot, s, e, attrs);
    return false;
  };
  kvmHandleGfnRange(vm, start, end, () => vm.mmuInvalidateEnd(), post);
}

/**
 * Run handler on [start, end) ∩ each memslot of every address space. Only if some slot overlaps is
 * mmu_lock taken and onLock run, once (kvm_mmu_invalidate_begin for the pre pass, _end for the post
 * pass: slots_lock is held throughout, so both passes see the same slots); a flush owed by the
 * handlers (flush_on_ret) is done before returning. Returns whether a memslot was found.
 * @kernel virt/kvm/kvm_main.c#kvm_handle_gfn_range
 */
function kvmHandleGfnRange(
  vm: VmState,
  start: number,
  end: number,
  onLock: () => void,
  handler: (slot: KvmMemorySlot, s: number, e: number) => boolean,
): boolean {
  let found = false;
  let flush = false;
  for (let as = 0; as < vm.nrAs; as++) {
    for (const slot of vm.activeMemslots(as).inGfnRange(start, end)) {
      const s = Math.max(start, slot.baseGfn);
      const e = Math.min(end, slot.baseGfn + slot.npages);
      if (s >= e) continue;
      if (!found) onLock();
      found = true;
      flush = handler(slot, s, e) || flush;
    }
  }
  if (flush) vm.flushRemoteTlbs();
  return found;
}

/**
 * The pre pass for one slot: add its range to the invalidation (unconditionally, so every begin has a
 * range), then the arch widens it to the huge ranges around the head and tail and zaps.
 * @kernel virt/kvm/kvm_main.c#kvm_pre_set_memory_attributes
 */
function kvmPreSetMemoryAttributes(
  vm: VmState,
  slot: KvmMemorySlot,
  start: number,
  end: number,
  attrs: number,
): boolean {
  vm.mmuInvalidateRangeAdd(start, end);
  return kvmArchPreSetMemoryAttributes(vm, slot, start, end, attrs);
}

/** @kernel arch/x86/kvm/mmu/mmu.c#kvm_arch_pre_set_memory_attributes */
function kvmArchPreSetMemoryAttributes(
  vm: VmState,
  slot: KvmMemorySlot,
  start: number,
  end: number,
  attrs: number,
): boolean {
  for (const [s, e] of preSetWidening(slot, start, end)) vm.mmuInvalidateRangeAdd(s, e);
  // Unmap the old attribute: converting to private drops shared mappings and vice versa.
  const filter = attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE ? KVM_FILTER_SHARED : KVM_FILTER_PRIVATE;
  return vm.mmu.kvmUnmapGfnRange({
    slot,
    start: asGfn(start),
    end: asGfn(end),
    attrFilter: filter,
    mayBlock: true,
  });
}
