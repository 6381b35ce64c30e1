/**
 * Dirty-page logging through the per-slot bitmap: allocation at PREPARE, KVM_GET_DIRTY_LOG (with and
 * without manual protect) and KVM_CLEAR_DIRTY_LOG, with the kernel's checks in the kernel's order.
 *
 * Kernel counterpart: virt/kvm/kvm_main.c (kvm_prepare_memory_region's bitmap part,
 * kvm_get_dirty_log_protect, kvm_clear_dirty_log_protect, mark_page_dirty_in_slot,
 * kvm_dirty_bitmap_bytes). See shared/reference/memslot-abi.md §4.
 *
 * Simplification: the kernel allocates the bitmap twice (live + snapshot); the model allocates the
 * snapshot per GET call. Bit order is the kernel's (little-endian longs = LSB-first bytes on x86).
 */
import { KVM_MEM_LOG_DIRTY_PAGES, KVM_USER_MEM_SLOTS, KVM_DIRTY_LOG_INITIALLY_SET } from '../uapi/kvm.ts';
import type { KvmMemorySlot } from './kvm_host.ts';
import { KvmError, hex } from './kvm_error.ts';

export interface DirtyLogVm {
  readonly nrAs: number;
  manualDirtyLogProtect: number;
  dirtyRingSize: number;
  dirtyRingWithBitmap: boolean;
  activeMemslots(asId: number): { idToMemslot(id: number): KvmMemorySlot | null };
  /** Re-protect the pages of `mask` (bit i = gfn slot.baseGfn + offset + i) for logging. */
  enableLogDirtyPtMasked(slot: KvmMemorySlot, offset: number, mask: number): void;
  flushRemoteTlbs(): void;
}

/** @kernel include/linux/kvm_host.h#kvm_dirty_bitmap_bytes */
export function kvmDirtyBitmapBytes(npages: number): number {
  return Math.ceil(npages / 64) * 8;
}

/** @kernel virt/kvm/kvm_main.c#kvm_use_dirty_bitmap */
export function kvmUseDirtyBitmap(vm: DirtyLogVm): boolean {
  return vm.dirtyRingSize === 0 || vm.dirtyRingWithBitmap;
}

/**
 * The bitmap part of PREPARE: reuse the old slot's bitmap, or allocate one (all-ones if INITIALLY_SET).
 * @kernel virt/kvm/kvm_main.c#kvm_prepare_memory_region
 */
export function prepareDirtyBitmap(vm: DirtyLogVm, old: KvmMemorySlot | null, nu: KvmMemorySlot): void {
  if (!(nu.flags & KVM_MEM_LOG_DIRTY_PAGES)) {
    nu.dirtyBitmap = null;
  } else if (old !== null && old.dirtyBitmap !== null) {
    nu.dirtyBitmap = old.dirtyBitmap;
  } else if (kvmUseDirtyBitmap(vm)) {
    const bm = new Uint8Array(kvmDirtyBitmapBytes(nu.npages));
    if (vm.manualDirtyLogProtect & KVM_DIRTY_LOG_INITIALLY_SET) setBits(bm, 0, nu.npages);
    nu.dirtyBitmap = bm;
  }
}

function setBits(bm: Uint8Array, from: number, n: number): void {
  for (let i = from; i < from + n; i++) bm[i >>> 3]! |= 1 << (i & 7);
}

/** @kernel virt/kvm/kvm_main.c#mark_page_dirty_in_slot */
export function markPageDirtyInSlot(slot: KvmMemorySlot, gfn: number): void {
  const bm = slot.dirtyBitmap;
  if (bm === null) return;
  const i = gfn - slot.baseGfn;
  bm[i >>> 3]! |= 1 << (i & 7);
}

function lookupLoggedSlot(vm: DirtyLogVm, syscall: string, slotArg: number): KvmMemorySlot {
  if (!kvmUseDirtyBitmap(vm))
    throw new KvmError('ENXIO', syscall, 'the dirty ring is in use without a bitmap');
  const asId = slotArg >>> 16;
  const id = slotArg & 0xffff;
  if (asId >= vm.nrAs || id >= KVM_USER_MEM_SLOTS) {
    throw new KvmError('EINVAL', syscall, `slot ${hex(slotArg)}: as_id ${asId} or id ${id} out of range`);
  }
  return (
    vm.activeMemslots(asId).idToMemslot(id) ??
    throwNoent(syscall, `no memslot ${id} in address space ${asId}`)
  );
}

function throwNoent(syscall: string, msg: string): never {
  throw new KvmError('ENOENT', syscall, msg);
}

/** @kernel virt/kvm/kvm_main.c#kvm_get_dirty_log_protect */
export function kvmGetDirtyLogProtect(vm: DirtyLogVm, slotArg: number): Uint8Array {
  const syscall = 'KVM_GET_DIRTY_LOG';
  const slot = lookupLoggedSlot(vm, syscall, slotArg);
  const bm = slot.dirtyBitmap ?? throwNoent(syscall, `memslot ${slot.id} does not log dirty pages`);
  const n = kvmDirtyBitmapBytes(slot.npages);
  if (vm.manualDirtyLogProtect) return bm.slice(0, n); // manual protect: copy, don't clear
  const snap = new Uint8Array(n);
  let flush = false;
  // Take-and-clear one 64-bit word at a time, re-protecting the pages that were dirty.
  for (let w = 0; w < n; w += 8) {
    for (let half = 0; half < 8; half += 4) {
      const o = w + half;
      const mask = bm[o]! | (bm[o + 1]! << 8) | (bm[o + 2]! << 16) | (bm[o + 3]! << 24);
      if (mask === 0) continue;
      flush = true;
      snap.set(bm.subarray(o, o + 4), o);
      bm.fill(0, o, o + 4);
      vm.enableLogDirtyPtMasked(slot, o * 8, mask >>> 0);
    }
  }
  if (flush) vm.flushRemoteTlbs();
  return snap;
}

/** @kernel virt/kvm/kvm_main.c#kvm_clear_dirty_log_protect */
export function kvmClearDirtyLogProtect(
  vm: DirtyLogVm,
  a: { slot: number; numPages: number; firstPage: number | bigint; bitmap: Uint8Array | null },
): void {
  const syscall = 'KVM_CLEAR_DIRTY_LOG';
  if (!kvmUseDirtyBitmap(vm))
    throw new KvmError('ENXIO', syscall, 'the dirty ring is in use without a bitmap');
  const asId = a.slot >>> 16;
  const id = a.slot & 0xffff;
  if (asId >= vm.nrAs || id >= KVM_USER_MEM_SLOTS) {
    throw new KvmError('EINVAL', syscall, `slot ${hex(a.slot)}: as_id ${asId} or id ${id} out of range`);
  }
  const first = a.firstPage;
  if (typeof first === 'bigint' ? first % 64n !== 0n : first % 64 !== 0) {
    throw new KvmError('EINVAL', syscall, `first_page ${hex(first)} is not a multiple of 64`);
  }
  const slot = vm.activeMemslots(asId).idToMemslot(id);
  if (slot === null || slot.dirtyBitmap === null) {
    throw new KvmError('ENOENT', syscall, `memslot ${id} does not exist or does not log dirty pages`);
  }
  const n = slot.npages;
  if (
    typeof first === 'bigint' ||
    first > n ||
    a.numPages > n - first ||
    (a.numPages < n - first && a.numPages % 64)
  ) {
    throw new KvmError(
      'EINVAL',
      syscall,
      `range first_page ${hex(first)} num_pages ${hex(a.numPages)} does not fit memslot ${id} (npages ${hex(n)})`,
    );
  }
  const want = kvmDirtyBitmapBytes(a.numPages);
  if (a.bitmap === null || a.bitmap.length < want) {
    throw new KvmError('EFAULT', syscall, `dirty_bitmap must hold ${want} bytes`);
  }
  clearMaskedBits(vm, slot, first, a.numPages, a.bitmap);
}

function clearMaskedBits(
  vm: DirtyLogVm,
  slot: KvmMemorySlot,
  first: number,
  num: number,
  user: Uint8Array,
): void {
  const bm = slot.dirtyBitmap!;
  const base = first >>> 3;
  let flush = false;
  const nbytes = kvmDirtyBitmapBytes(num);
  for (let o = 0; o < nbytes; o += 4) {
    const req = user[o]! | (user[o + 1]! << 8) | (user[o + 2]! << 16) | (user[o + 3]! << 24);
    const k = base + o;
    if (k >= bm.length) break;
    const cur = bm[k]! | (bm[k + 1]! << 8) | (bm[k + 2]! << 16) | (bm[k + 3]! << 24);
    const hit = (cur & req) >>> 0;
    if (hit === 0) continue;
    // Only bits that were actually set get re-protected.
    const left = (cur & ~req) >>> 0;
    bm[k] = left & 0xff;
    bm[k + 1] = (left >>> 8) & 0xff;
    bm[k + 2] = (left >>> 16) & 0xff;
    bm[k + 3] = (left >>> 24) & 0xff;
    vm.enableLogDirtyPtMasked(slot, first + o * 8, hit);
    flush = true;
  }
  if (flush) vm.flushRemoteTlbs();
}
