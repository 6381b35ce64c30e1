/**
 * Structural audits of a VM's shadow MMU (read-only): the pages on active_mmu_pages and the roots vCPUs
 * hold, each present leaf SPTE, and the per-slot rmaps.
 *
 *   INV-SHADOW-001  a page that shadows a guest table outlives the memslot holding that table: its
 *                   accounting (write tracking / disallow_lpage) lives in the slot, and unaccount_shadowed
 *                   looks the slot up again when the page is zapped (the NULL dereference of Sept 2024).
 *   INV-SHADOW-002  a vCPU holds an obsolete root and nothing makes it drop the root before re-entry.
 *   INV-RMAP-001    a present leaf is missing from its slot's rmap, or an rmap entry is not a present leaf
 *                   of that gfn (a later zap through the rmaps would miss or corrupt it).
 *   INV-ZAP-001, INV-PFN-001/002, INV-MEMTYPE-001 for shadow leafs, as audit_mmu.ts asks them of TDP
 *   leafs. A direct page a zap has unlinked is audited too: it stays in the hash with its SPTEs, and the
 *   next fault below its old entry re-links it as it is.
 *
 * Kernel counterparts (the facts each check defends): arch/x86/kvm/mmu/mmu.c (account_shadowed,
 * unaccount_shadowed, rmap_add/rmap_remove, kvm_mmu_get_shadow_page, kvm_mmu_free_obsolete_roots),
 * vmx.c#vmx_get_mt_mask.
 */
import type { VmState } from '../kvm/vm_state.ts';
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';
import { KVM_REQ_MMU_FREE_OBSOLETE_ROOTS } from '../kvm/vcpu.ts';
import { KVM_MEMSLOT_INVALID } from '../uapi/kvm.ts';
import { shadowMmuOf } from '../x86/mmu/shadow_mmu.ts';
import {
  kvmMmuPageAsId,
  rmapHas,
  rmapIndex,
  SPTE_MT_BITS,
  type ShadowPage,
  type SlotRmap,
} from '../x86/mmu/shadow_rmap.ts';
import { linkedShadowPages } from '../x86/mmu/memtype_audit.ts';
import { kvmMmuGetMtMask } from '../x86/mtrr.ts';
import { checkMappedPfns, type Report } from './audit_mmu.ts';
import { newPfnMemo } from './pfn_memo.ts';

const hex = (n: number): string => '0x' + n.toString(16);

/** The live slot of gfn in the address space a page maps (kvm_memslots_for_spte_role: role.smm). */
function liveSlot(vm: VmState, asId: number, gfn: number): KvmMemorySlot | null {
  const slot = vm.activeMemslots(asId).peekMemslot(gfn);
  return slot !== null && (slot.flags & KVM_MEMSLOT_INVALID) === 0 ? slot : null;
}

/** How a report names a shadow page. */
export function describeSp(sp: ShadowPage, linked: boolean): string {
  const kind = sp.direct ? 'direct' : 'indirect';
  return `${kind} shadow page gfn ${hex(sp.gfn)} level ${sp.level}${linked ? '' : ' (unlinked: the next fault below it re-links it as it is)'}`;
}

/** Every check above over every shadow page of the VM (a TDP-MMU VM has none: nothing to do). */
export function auditShadow(vm: VmState, report: Report): void {
  const mmu = shadowMmuOf(vm);
  if (mmu === null) return;
  const pages = new Set<ShadowPage>(mmu.shadowPages());
  for (const r of mmu.roots.values()) pages.add(r);
  const linked = linkedShadowPages(mmu);
  const memo = newPfnMemo();
  const vcpu0 = vm.vcpus[0];
  // The leaf being checked, described only when something is reported (one closure per audit).
  const leafAt = { sp: null as ShadowPage | null, i: 0 };
  const name = (): string => describeSp(leafAt.sp!, linked.has(leafAt.sp!));
  const where = (): string => `${name()} leaf ${leafAt.i}`;
  for (const sp of pages) {
    if (sp.invalid) continue;
    leafAt.sp = sp;
    // unaccount_shadowed looks the slot up with __gfn_to_memslot, which finds a DELETE's INVALID copy
    // too: the page may live until the memslot flush zaps it, not a moment after the slot is gone.
    // Obsolete pages (an old mmu_valid_gen) are unreachable by vCPUs but still zapped through the rmaps:
    // zap-all may drop mmu_lock with some not yet zapped (kvm_zap_obsolete_pages' lock break), their slot
    // INVALID. Only the rmap and pfn checks apply to them.
    const obsolete = mmu.isObsoleteSp(sp);
    const asId = kvmMmuPageAsId(sp);
    if (sp.hasGptes && !obsolete && vm.activeMemslots(asId).peekMemslot(sp.gfn) === null)
      report(
        'INV-SHADOW-001',
        `${name()} shadows a guest table in no memslot: unaccount_shadowed will find no slot when it is zapped`,
        sp.gfn,
      );
    if (sp.pfn === null) continue;
    for (let i = 0; i < 512; i++) {
      if (!sp.isLeaf(i)) continue;
      const gfn = sp.gfns![i]!;
      const pfn = sp.pfn[i]!;
      const span = sp.entrySpan;
      const slot = liveSlot(vm, asId, gfn);
      leafAt.i = i;
      if (slot === null) {
        if (!obsolete)
          report(
            'INV-ZAP-001',
            `${where()} maps gfn ${hex(gfn)} → pfn ${hex(pfn)}, but no live memslot holds it`,
            gfn,
            pfn,
          );
        checkMappedPfns(vm, report, where, null, gfn, span, pfn, false, memo);
        continue;
      }
      checkRmapHasLeaf(report, where, slot, sp, i, gfn);
      checkMappedPfns(vm, report, where, slot, gfn, span, pfn, false, memo);
      if (mmu.tdpEnabled && sp.direct && !obsolete && vcpu0 !== undefined) {
        const have = sp.bits![i]! & SPTE_MT_BITS;
        const want = kvmMmuGetMtMask(vcpu0, gfn, false);
        if (have !== want)
          report(
            'INV-MEMTYPE-001',
            `${where()} at gfn ${hex(gfn)} has memtype bits ${hex(have)}, KVM now computes ${hex(want)}`,
            gfn,
            pfn,
          );
      }
    }
  }
  auditRmaps(vm, pages, report);
  for (const [v, root] of mmu.roots) {
    if (mmu.isObsoleteSp(root) && (v.requests & KVM_REQ_MMU_FREE_OBSOLETE_ROOTS) === 0)
      report(
        'INV-SHADOW-002',
        `vCPU ${v.vcpuId} holds obsolete root ${describeSp(root, true)} with no KVM_REQ_MMU_FREE_OBSOLETE_ROOTS pending`,
      );
  }
}

function checkRmapHasLeaf(
  report: Report,
  where: () => string,
  slot: KvmMemorySlot,
  sp: ShadowPage,
  i: number,
  gfn: number,
): void {
  if (!rmapHas(slot, sp, i, gfn))
    report('INV-RMAP-001', `${where()} maps gfn ${hex(gfn)} but is not on memslot ${slot.id}'s rmap`, gfn);
}

/**
 * Every rmap entry must be a present leaf of a live page of the slot's address space, for the gfn the
 * rmap slot stands for.
 */
function auditRmaps(vm: VmState, pages: Set<ShadowPage>, report: Report): void {
  for (let as = 0; as < vm.nrAs; as++) auditRmapsOf(vm, as, pages, report);
}

function auditRmapsOf(vm: VmState, asId: number, pages: Set<ShadowPage>, report: Report): void {
  for (const slot of vm.activeMemslots(asId).all()) {
    const r = slot.arch.rmap as SlotRmap | null;
    if (r === null || r === undefined) continue;
    for (let level = 1; level <= 2; level++) {
      r[level - 1]!.forEach((k, sp, i) => {
        const ok =
          pages.has(sp) &&
          !sp.invalid &&
          sp.level === level &&
          kvmMmuPageAsId(sp) === asId &&
          sp.isLeaf(i) &&
          rmapIndex(slot, sp.gfns![i]!, level) === k;
        if (!ok)
          report(
            'INV-RMAP-001',
            `memslot ${slot.id}'s level-${level} rmap entry ${k} points at entry ${i} of ${describeSp(sp, true)}, which is not a present leaf of that gfn`,
          );
      });
    }
  }
}
