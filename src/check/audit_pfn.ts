/**
 * Does a mapping (an SPTE leaf, a TLB entry, a shadow page's leaf) reach the right host page? INV-PFN-001
 * (a page the host freed) and INV-PFN-002 (not the page that backs the gfn now), once per distinct
 * mapping per audit; and the helpers every audit shares (the report sink, live slots, hex).
 *
 * Kernel counterparts: the contract of kvm_mmu_notifier_invalidate_range_start (no SPTE outlives the
 * host mapping it was made from) and kvm_faultin_pfn's (the pfn the host maps at the slot's hva).
 * Split out of audit_mmu.ts (the TDP table walk), which re-exports it for its importers.
 */
import type { VmState } from '../kvm/vm_state.ts';
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';
import { KVM_MEMSLOT_INVALID } from '../uapi/kvm.ts';
import { expectedPfn, usesGmem } from './reference.ts';
import { framePfnRun } from '../host/vma.ts';
import type { PfnMemo } from './pfn_memo.ts';

/** Where audits send what they find. */
export type Report = (id: string, message: string, gfn?: number, pfn?: number) => void;

export const hex = (n: number): string => '0x' + n.toString(16);

/** A live slot: in the active set and not INVALID (an INVALID slot's SPTEs must already be gone). */
export function liveSlot(vm: VmState, asId: number, gfn: number): KvmMemorySlot | null {
  const slot = vm.activeMemslots(asId).peekMemslot(gfn);
  return slot !== null && (slot.flags & KVM_MEMSLOT_INVALID) === 0 ? slot : null;
}

/**
 * Does the host map the slot's hva range for [gfn, gfn + span) with one frame (pfns advancing with the
 * gfn), so expectedPfn of each page is the first page's plus its offset? Never for guest_memfd pages.
 */
function hostRunMatches(
  vm: VmState,
  slot: KvmMemorySlot,
  gfn: number,
  span: number,
  isPrivate: boolean,
): boolean {
  if (usesGmem(slot, isPrivate)) return false;
  const hva = slot.userspaceAddr + (gfn - slot.baseGfn) * 4096;
  const v = vm.kvm.host.findVma(hva);
  return v !== null && framePfnRun(v, hva, span) !== 0;
}

/**
 * INV-PFN-001 / INV-PFN-002 for one mapping (an SPTE leaf or a TLB entry) of [gfn, gfn + span) → basePfn.
 * Returns after the first bad page: one report per mapping.
 */
export function checkMappedPfns(
  vm: VmState,
  report: Report,
  what: string | (() => string),
  slot: KvmMemorySlot | null,
  gfn: number,
  span: number,
  basePfn: number,
  isPrivate: boolean,
  memo?: PfnMemo,
): void {
  // One check per distinct mapping per audit (64 vCPUs' TLBs mostly hold the same 2M translations).
  if (memo !== undefined) {
    if (memo.seen(slot === null ? -1 : slot.id, gfn, basePfn, span, isPrivate)) return;
    if (memo.only >= 0) {
      // A targeted audit looks at one page of the mapping only.
      if (memo.only < gfn || memo.only >= gfn + span) return;
      span = 1;
      basePfn += memo.only - gfn;
      gfn = memo.only;
    }
  }
  const pfns = vm.kvm.host.pfns;
  // While an invalidation runs the host may be between its start (mappings zapped) and its change.
  const settled = vm.mmuInvalidateInProgress === 0;
  // A huge mapping of one whole host block, where the host maps the slot's range with one frame too:
  // every page's answer is its first page's (a shared refcount; pfns that advance together), so the
  // first page decides, as the loop below would have.
  if (
    span > 1 &&
    pfns.inOneBlock(basePfn, span) &&
    (slot === null || !settled || hostRunMatches(vm, slot, gfn, span, isPrivate))
  )
    span = 1;
  const step = span > 512 ? 512 : 1;
  for (let k = 0; k < span + step - 1; k += step) {
    // every page of a 4K/2M mapping, every 512th of a 1G one and its last page
    if (k >= span) k = span - 1;
    const pfn = basePfn + k;
    if (pfns.isFree(pfn)) {
      report(
        'INV-PFN-001',
        `${text(what)} maps gfn ${hex(gfn + k)} to pfn ${hex(pfn)}, which the host freed`,
        gfn + k,
        pfn,
      );
      return;
    }
    if (slot === null || !settled) continue;
    const want = expectedPfn(vm, slot, gfn + k, isPrivate);
    if (want !== pfn) {
      report(
        'INV-PFN-002',
        `${text(what)} maps gfn ${hex(gfn + k)} to pfn ${hex(pfn)}, but the ${isPrivate ? 'guest_memfd' : 'host'} page there is ${want ? hex(want) : 'none'}`,
        gfn + k,
        pfn,
      );
      return;
    }
  }
}

const text = (what: string | (() => string)): string => (typeof what === 'string' ? what : what());
