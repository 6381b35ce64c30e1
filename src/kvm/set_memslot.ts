/**
 * The two-set memslot update protocol: publish the INVALID copy and flush (DELETE/MOVE), PREPARE,
 * swap, COMMIT — with the generation arithmetic and the arch hooks at the kernel's points.
 *
 * Kernel counterpart: virt/kvm/kvm_main.c (kvm_set_memslot, kvm_invalidate_memslot,
 * kvm_prepare_memory_region, kvm_commit_memory_region, kvm_activate_memslot, kvm_swap_active_memslots,
 * kvm_create_memslot, kvm_delete_memslot, kvm_move_memslot, kvm_update_flags_memslot).
 * See shared/reference/memslot-abi.md §2.4, §3.3.
 *
 * Simplifications: no SRCU (readers are the model's own sequential calls); ENOMEM never happens.
 */
import { KVM_MEMSLOT_INVALID, KVM_MEM_LOG_DIRTY_PAGES, type KvmMrChange } from '../uapi/kvm.ts';
import type { KvmArchMemslotHooks, KvmMemorySlot } from './kvm_host.ts';
import { copyMemslot, type KvmMemslots } from './memslots.ts';
import { prepareDirtyBitmap, type DirtyLogVm } from './dirty_log.ts';
import { kvmGmemUnbind } from './guest_memfd.ts';
import { KvmError } from './kvm_error.ts';

export interface SetMemslotVm extends DirtyLogVm {
  readonly hooks: KvmArchMemslotHooks;
  /** kvm_arch_nr_memslot_as_ids() */
  readonly nrAs: number;
  nrMemslotPages: number;
  nrMemslotsDirtyLogging: number;
  /** kvm->mn_active_invalidate_count */
  readonly mnActiveInvalidateCount: number;
  activeMemslots(asId: number): KvmMemslots;
  inactiveMemslots(asId: number): KvmMemslots;
  /** Make the inactive set of asId the active one. */
  flipActive(asId: number): void;
  kvmArchFreeMemslot(slot: KvmMemorySlot): void;
  /** Called while the INVALID copy of a slot being deleted/moved is published (after the flush). */
  onInvalidWindow?: ((slot: KvmMemorySlot) => void) | undefined;
  /** Stepping hook: the waits of kvm_swap_active_memslots (see VmState.onMemslotsWait). */
  onMemslotsWait?: ((what: 'mn-invalidate' | 'srcu') => void) | undefined;
}

/**
 * The kernel waits in kvm_swap_active_memslots for in-flight MMU-notifier invalidations; a sequential
 * model cannot wait, so the update fails with EBUSY instead (see simplifications.md), before it changes
 * anything a vCPU could see.
 */
function throwIfInvalidationInFlight(vm: SetMemslotVm): void {
  if (!invalidationsDone(vm)) throw busy();
}

/** Whether no MMU-notifier invalidation is in flight, once a scheduler had the chance to end them. */
function invalidationsDone(vm: SetMemslotVm): boolean {
  // A scheduler runs in-flight invalidations to their end in this stepping hook.
  vm.onMemslotsWait?.('mn-invalidate');
  return vm.mnActiveInvalidateCount === 0;
}

function busy(): KvmError {
  return new KvmError(
    'EBUSY',
    'KVM_SET_USER_MEMORY_REGION',
    'an MMU-notifier invalidation is in progress (the kernel would wait)',
  );
}

/**
 * `wait: false` only for the swap that puts the old slot back after an update gave up: it restores
 * what readers saw before, so it need not wait for an invalidation that started meanwhile.
 * @kernel virt/kvm/kvm_main.c#kvm_swap_active_memslots
 */
export function kvmSwapActiveMemslots(vm: SetMemslotVm, asId: number, wait = true): void {
  if (wait) throwIfInvalidationInFlight(vm);
  const slots = vm.inactiveMemslots(asId);
  const gen = vm.activeMemslots(asId).generation;
  slots.generation = gen;
  slots.updateInProgress = true;
  vm.flipActive(asId);
  // synchronize_srcu_expedited(&kvm->srcu): vCPUs still inside a read section that began before the
  // new set was published finish with the old one first.
  vm.onMemslotsWait?.('srcu');
  // Generations of one address space step by the number of address spaces, so they stay unique.
  const newGen = gen + vm.nrAs;
  vm.hooks.kvmArchMemslotsUpdated(asId, newGen);
  slots.generation = newGen;
  slots.updateInProgress = false;
}

/** @kernel virt/kvm/kvm_main.c#kvm_activate_memslot */
function kvmActivateMemslot(
  vm: SetMemslotVm,
  asId: number,
  old: KvmMemorySlot | null,
  nu: KvmMemorySlot | null,
  wait = true,
): void {
  kvmSwapActiveMemslots(vm, asId, wait);
  // Propagate the change to the now-inactive set, so both sets hold the same slots again.
  vm.inactiveMemslots(asId).replace(old, nu);
}

/** @kernel virt/kvm/kvm_main.c#kvm_invalidate_memslot */
function kvmInvalidateMemslot(vm: SetMemslotVm, old: KvmMemorySlot, invalid: KvmMemorySlot): void {
  invalid.flags |= KVM_MEMSLOT_INVALID;
  vm.inactiveMemslots(old.asId).replace(old, invalid);
  kvmSwapActiveMemslots(vm, old.asId);
  // vCPUs now see the INVALID copy and retry faults on it, so no new SPTE can appear for the slot
  // while the arch code zaps what exists.
  vm.hooks.kvmArchFlushShadowMemslot(old);
  vm.hooks.kvmArchGuestMemoryReclaimed();
  // A vCPU running concurrently with the update sees the INVALID slot here (scenarios and tests use
  // this hook to model that access; it is not a kernel interface).
  vm.onInvalidWindow?.(old);
  old.arch = invalid.arch;
}

/** @kernel virt/kvm/kvm_main.c#kvm_prepare_memory_region */
function kvmPrepareMemoryRegion(
  vm: SetMemslotVm,
  old: KvmMemorySlot | null,
  nu: KvmMemorySlot | null,
  change: KvmMrChange,
): string | null {
  if (change !== 'DELETE') prepareDirtyBitmap(vm, old, nu!);
  const r = vm.hooks.kvmArchPrepareMemoryRegion(old, nu, change);
  if (r !== null && nu !== null && nu.dirtyBitmap !== null && nu.dirtyBitmap !== old?.dirtyBitmap)
    nu.dirtyBitmap = null;
  return r;
}

/** @kernel virt/kvm/kvm_main.c#kvm_commit_memory_region */
function kvmCommitMemoryRegion(
  vm: SetMemslotVm,
  old: KvmMemorySlot | null,
  nu: KvmMemorySlot | null,
  change: KvmMrChange,
): void {
  const oldFlags = old?.flags ?? 0;
  const newFlags = nu?.flags ?? 0;
  if (change === 'DELETE') vm.nrMemslotPages -= old!.npages;
  else if (change === 'CREATE') vm.nrMemslotPages += nu!.npages;
  if ((oldFlags ^ newFlags) & KVM_MEM_LOG_DIRTY_PAGES) {
    vm.nrMemslotsDirtyLogging += newFlags & KVM_MEM_LOG_DIRTY_PAGES ? 1 : -1;
  }
  vm.hooks.kvmArchCommitMemoryRegion(old, nu, change);
  switch (change) {
    case 'DELETE':
      kvmGmemUnbind(old!);
      old!.dirtyBitmap = null;
      vm.kvmArchFreeMemslot(old!);
      break;
    case 'MOVE':
    case 'FLAGS_ONLY':
      // The old object is freed; its bitmap only if the new slot did not inherit it. A guest_memfd
      // binding still pointing at `old` here is the 6.12–6.18 use-after-free (memslot-abi.md §2.2).
      if (nu!.dirtyBitmap !== old!.dirtyBitmap) old!.dirtyBitmap = null;
      break;
    case 'CREATE':
      break;
  }
}

/**
 * Apply a validated change. DELETE/MOVE publish an INVALID copy (one swap) and flush, then swap again;
 * a PREPARE failure after that restores the old slot with a second swap (+2N generations, zap done).
 * @kernel virt/kvm/kvm_main.c#kvm_set_memslot
 */
export function kvmSetMemslot(
  vm: SetMemslotVm,
  old: KvmMemorySlot | null,
  nu: KvmMemorySlot | null,
  change: KvmMrChange,
): string | null {
  const asId = (old ?? nu)!.asId;
  throwIfInvalidationInFlight(vm);
  let invalid: KvmMemorySlot | null = null;
  if (change === 'DELETE' || change === 'MOVE') {
    invalid = copyMemslot(old!);
    kvmInvalidateMemslot(vm, old!, invalid);
    // Something that ran in the INVALID window (a concurrent party) started an invalidation: the next
    // swap has to wait for it. Where nothing can end it (no scheduler), put the old slot back, as a
    // failed PREPARE does, rather than leave the INVALID copy published.
    if (!invalidationsDone(vm)) {
      kvmActivateMemslot(vm, asId, invalid, old, false);
      throw busy();
    }
  }
  const r = kvmPrepareMemoryRegion(vm, old, nu, change);
  if (r !== null) {
    if (invalid !== null) kvmActivateMemslot(vm, asId, invalid, old);
    return r;
  }
  const inactive = vm.inactiveMemslots(asId);
  switch (change) {
    case 'CREATE':
      inactive.replace(null, nu);
      kvmActivateMemslot(vm, asId, null, nu);
      break;
    case 'DELETE':
      // After the INVALIDATE swap the inactive set is the one that still holds `old`.
      inactive.replace(old, null);
      kvmActivateMemslot(vm, asId, invalid, null);
      break;
    case 'MOVE':
      inactive.replace(old, nu);
      kvmActivateMemslot(vm, asId, invalid, nu);
      break;
    case 'FLAGS_ONLY':
      inactive.replace(old, nu);
      kvmActivateMemslot(vm, asId, old, nu);
      break;
  }
  kvmCommitMemoryRegion(vm, old, nu, change);
  return null;
}
