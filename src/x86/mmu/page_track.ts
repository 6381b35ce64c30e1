/**
 * Write tracking of guest page-table gfns: a shadow page that shadows a guest table makes the table's
 * gfn read-only to the guest, so guest writes to it are trapped and emulated (mmu_pte_write).
 *
 * Kernel counterpart: arch/x86/kvm/mmu/page_track.c (__kvm_write_track_add_gfn,
 * __kvm_write_track_remove_gfn, kvm_gfn_is_write_tracked), arch/x86/kvm/mmu/mmu.c (account_shadowed,
 * unaccount_shadowed, kvm_mmu_gfn_disallow_lpage / allow_lpage).
 * Simplifications: no external page-track notifiers (KVMGT); the counters live in the slot's
 * gfnWriteTrack (allocated lazily here, as with KVM's write-tracking when shadow paging is on).
 */
import type { KvmMemorySlot } from '../../kvm/kvm_host.ts';
import { gfnToIndex } from '../x86.ts';
import type { PgLevel } from '../../types/addr.ts';

function track(slot: KvmMemorySlot): Uint16Array {
  let t = slot.arch.gfnWriteTrack;
  if (t === null) slot.arch.gfnWriteTrack = t = new Uint16Array(slot.npages);
  return t;
}

/** @kernel arch/x86/kvm/mmu/page_track.c#__kvm_write_track_add_gfn */
export function kvmWriteTrackAddGfn(slot: KvmMemorySlot, gfn: number): void {
  track(slot)[gfn - slot.baseGfn]! += 1;
}

/** @kernel arch/x86/kvm/mmu/page_track.c#__kvm_write_track_remove_gfn */
export function kvmWriteTrackRemoveGfn(slot: KvmMemorySlot, gfn: number): void {
  const t = track(slot);
  const i = gfn - slot.baseGfn;
  if (t[i]! > 0) t[i]! -= 1;
}

/** @kernel arch/x86/kvm/mmu/page_track.c#kvm_gfn_is_write_tracked */
export function kvmGfnIsWriteTracked(slot: KvmMemorySlot, gfn: number): boolean {
  const t = slot.arch.gfnWriteTrack;
  return t !== null && t[gfn - slot.baseGfn]! > 0;
}

/** disallow_lpage += delta at 2M and 1G: no huge mapping may cover a shadowed 4K guest table. */
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
