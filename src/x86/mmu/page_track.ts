/**
 * Write tracking of guest page-table gfns: a shadow page that shadows a guest table above 4K makes the
 * table's gfn read-only to the guest, so guest writes to it are trapped and emulated (mmu_pte_write).
 * Adding a tracker also forbids huge mappings over the gfn and write-protects what maps it now; removing
 * the last one does not make anything writable again (the next write fault does).
 *
 * Kernel counterpart: arch/x86/kvm/mmu/page_track.c (update_gfn_write_track, __kvm_write_track_add_gfn,
 * __kvm_write_track_remove_gfn, kvm_gfn_is_write_tracked), arch/x86/kvm/mmu/mmu.c
 * (kvm_mmu_gfn_disallow_lpage / allow_lpage, update_gfn_disallow_lpage_count). Read in page_track.c as
 * stored for gregkh/linux 429b6f43 and torvalds/linux 03c11eb3 (the add/remove paths are identical).
 * Simplifications: no external page-track notifiers (KVMGT); one address space, so
 * kvm_gfn_is_write_tracked does not look at the SMM slot; the counters live in the slot's gfnWriteTrack
 * (allocated lazily here, as with KVM's write-tracking when shadow paging is on).
 */
import type { KvmMemorySlot } from '../../kvm/kvm_host.ts';
import { gfnToIndex } from '../x86.ts';
import type { PgLevel } from '../../types/addr.ts';
import { kvmMmuSlotGfnWriteProtect } from './shadow_rmap.ts';

/** What page tracking needs of the VM: the WARN and the remote flush. */
export interface PageTrackVm {
  warnOnce(cond: boolean, id: string, message: string): boolean;
  flushRemoteTlbs(): void;
}

function track(slot: KvmMemorySlot): Uint16Array {
  let t = slot.arch.gfnWriteTrack;
  if (t === null) slot.arch.gfnWriteTrack = t = new Uint16Array(slot.npages);
  return t;
}

/**
 * The per-gfn count (an unsigned short): a change that would leave 0..USHRT_MAX WARNs and is dropped.
 * @kernel arch/x86/kvm/mmu/page_track.c#update_gfn_write_track
 */
function updateGfnWriteTrack(vm: PageTrackVm, slot: KvmMemorySlot, gfn: number, count: number): void {
  const t = track(slot);
  const i = gfn - slot.baseGfn;
  const val = t[i]! + count;
  if (
    vm.warnOnce(
      val < 0 || val > 0xffff,
      'INV-WRITE-TRACK-COUNT',
      `update_gfn_write_track: gfn 0x${gfn.toString(16)} count ${t[i]} + ${count} leaves 0..USHRT_MAX`,
    )
  )
    return;
  t[i] = val;
}

/**
 * Count the tracker, forbid huge pages over gfn, and write-protect gfn's SPTEs at every level (a page
 * that becomes a guest table may still be mapped writable from before); flush if one was MMU-writable.
 * @kernel arch/x86/kvm/mmu/page_track.c#__kvm_write_track_add_gfn
 */
export function kvmWriteTrackAddGfn(vm: PageTrackVm, slot: KvmMemorySlot, gfn: number): void {
  updateGfnWriteTrack(vm, slot, gfn, 1);
  kvmMmuGfnDisallowLpage(slot, gfn); // a new tracker stops huge mappings of the tracked page
  if (kvmMmuSlotGfnWriteProtect(slot, gfn)) vm.flushRemoteTlbs(); // kvm_flush_remote_tlbs
}

/** @kernel arch/x86/kvm/mmu/page_track.c#__kvm_write_track_remove_gfn */
export function kvmWriteTrackRemoveGfn(vm: PageTrackVm, slot: KvmMemorySlot, gfn: number): void {
  updateGfnWriteTrack(vm, slot, gfn, -1);
  kvmMmuGfnAllowLpage(slot, gfn); // huge mappings may come back once the tracker is gone
}

/** @kernel arch/x86/kvm/mmu/page_track.c#kvm_gfn_is_write_tracked */
export function kvmGfnIsWriteTracked(slot: KvmMemorySlot, gfn: number): boolean {
  const t = slot.arch.gfnWriteTrack;
  return t !== null && t[gfn - slot.baseGfn]! > 0;
}

/** disallow_lpage += delta at 2M and 1G: no huge mapping may cover a shadowed guest table. @kernel arch/x86/kvm/mmu/mmu.c#update_gfn_disallow_lpage_count */
function updateLpage(slot: KvmMemorySlot, gfn: number, delta: number): void {
  const li = slot.arch.lpageInfo;
  if (li === null) return;
  for (let level = 2; level <= 3; level++) {
    const arr = li[level - 2]!;
    const idx = gfnToIndex(gfn, slot.baseGfn, level as PgLevel);
    arr[idx] = arr[idx]! + delta;
  }
}

/** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_gfn_disallow_lpage */
export function kvmMmuGfnDisallowLpage(slot: KvmMemorySlot, gfn: number): void {
  updateLpage(slot, gfn, 1);
}

/** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_gfn_allow_lpage */
export function kvmMmuGfnAllowLpage(slot: KvmMemorySlot, gfn: number): void {
  updateLpage(slot, gfn, -1);
}
