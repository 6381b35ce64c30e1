/**
 * EPT built by the shadow MMU (tdp_enabled with kvm.tdp_mmu=N — and every KVM before 5.10, so the MMU
 * the 2019 VFIO regression ran on): one direct root for gfn 0 shared by the vCPUs, and below it direct
 * shadow pages whose gfn is the first gfn they cover, rounded to their span (a level-1 page at 2 MiB, a
 * level-2 page at 1 GiB). Those pages live in the same hash and rmaps as shadow paging's, so a zap that
 * cuts a link to a child page leaves the child — with its leaf SPTEs — in the hash, and the next fault
 * below that entry re-links it as it is.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c (kvm_tdp_page_fault, direct_page_fault, direct_map,
 * drop_large_spte, kvm_mmu_hugepage_adjust, direct_pte_prefetch, kvm_mmu_get_child_sp), the CPU's EPT
 * walk and TLB for the access, vmx.c#vmx_get_mt_mask for the leaf memtype (mtrr.ts#kvmMmuGetMtMask).
 * Simplifications: leafs are 4K or 2M (no 1G); no MMIO SPTEs — a no-slot fault is emulated at once, as
 * with MMIO caching off; accesses are not raced against invalidations (no vcpuBeginAccess here);
 * dirty logging write-protects as a host without PML would (shadow_memslot.ts#kvmMmuSlotApplyFlags).
 */
import { OUTSIDE_GUEST_MODE, type Vcpu } from '../../kvm/vcpu.ts';
import type { KvmMemorySlot } from '../../kvm/kvm_host.ts';
import type { AccessKind, AccessResult } from '../../kvm/api_types.ts';
import { KVM_MEM_READONLY, KVM_MEMSLOT_INVALID } from '../../uapi/kvm.ts';
import { kvmMmuGetMtMask, kvmTdpMtrrMaxLevel } from '../mtrr.ts';
import { kvmMmuHugepageAdjust, newPageFault } from './page_fault.ts';
import { kvmMmuChildRole, SPTE_WRITABLE, type ShadowPage } from './shadow_rmap.ts';
import { VMX_EPT_MT_MASK } from './spte.ts';
import { ACC_ALL, PT_DIRTY_MASK } from './guest_paging.ts';
import { shadowEnterGuest } from './shadow_roots.ts';
import {
  mmuSetSpte,
  RET_PF_EMULATE,
  RET_PF_FIXED,
  RET_PF_MEMORY_FAULT,
  RET_PF_RETRY,
  RET_PF_SPURIOUS,
} from './mmu_set_spte.ts';
import { ptePrefetch } from './pte_prefetch.ts';
import type { ShadowMmu } from './shadow_mmu.ts';

const PAGE = 4096;
const MAX_REFAULTS = 8;
/** The largest leaf this model builds from direct pages (2M). */
const DIRECT_MAX_LEVEL = 2;

function index(gfn: number, level: number): number {
  return Math.floor(gfn / 512 ** (level - 1)) % 512;
}

/** The present leaf covering gfn below root, or null (the CPU's EPT walk). */
export function directLookup(root: ShadowPage, gfn: number): { sp: ShadowPage; i: number } | null {
  let sp: ShadowPage = root;
  for (let level = sp.level; level >= 1; level--) {
    const i = index(gfn, level);
    if (sp.isLeaf(i)) return { sp, i };
    const child = sp.child?.[i] ?? null;
    if (child === null) return null;
    sp = child;
  }
  return null;
}

/** vcpu.access() on an EPT host with the shadow MMU: gpa is a guest physical address. */
export function directVcpuAccess(mmu: ShadowMmu, vcpu: Vcpu, gpa: number, kind: AccessKind): AccessResult {
  if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa >= 2 ** 52)
    throw new RangeError(`gpa ${String(gpa)} is not a guest physical address`);
  if (kind !== 'read' && kind !== 'write' && kind !== 'exec')
    throw new TypeError(`access kind must be read, write or exec (got ${String(kind)})`);
  const vm = mmu.vm;
  if (vm.dead) return { exit: 'vm_dead', gpa, reason: 'the VM is dead' };
  const write = kind === 'write';
  const gfn = Math.floor(gpa / PAGE);
  for (let tries = 0; tries < MAX_REFAULTS; tries++) {
    const root = shadowEnterGuest(mmu, vcpu)!; // never the dummy root: EPT roots are direct
    const t = vcpu.tlb.lookup(gfn);
    if (t !== null && (!write || t.writable))
      return { exit: 'none', pfn: t.pfn, level: t.level, memtype: t.memtype };
    const leaf = directLookup(root, gfn);
    if (leaf !== null) {
      const b = leaf.sp.bits![leaf.i]!;
      if (!write || b & SPTE_WRITABLE) {
        const level = leaf.sp.level as 1 | 2;
        const base = leaf.sp.gfns![leaf.i]!;
        const basePfn = leaf.sp.pfn![leaf.i]!;
        const memtype = (b & VMX_EPT_MT_MASK) >>> 3;
        vcpu.tlb.fill(gfn, basePfn, level, (b & SPTE_WRITABLE) !== 0, memtype);
        return { exit: 'none', pfn: basePfn + (gfn - base), level, memtype };
      }
    }
    // EPT violation
    vcpu.mode = OUTSIDE_GUEST_MODE;
    vcpu.stats.exits++;
    const r = directPageFault(mmu, vcpu, gfn, write);
    if (r === RET_PF_FIXED || r === RET_PF_SPURIOUS || r === RET_PF_RETRY) continue;
    if (r === RET_PF_MEMORY_FAULT)
      return { exit: 'memory_fault', gpa: gfn * PAGE, size: PAGE, private: false };
    return { exit: 'mmio', gpa, write }; // RET_PF_EMULATE
  }
  return { exit: 'retry', gpa, reason: 'the fault kept retrying' };
}

/** @kernel arch/x86/kvm/mmu/mmu.c#kvm_tdp_page_fault (direct_page_fault without the TDP MMU) */
export function directPageFault(mmu: ShadowMmu, vcpu: Vcpu, gfn: number, write: boolean): number {
  vcpu.stats.pf_taken++;
  const slot = mmu.vcpuGfnToMemslot(vcpu, gfn); // SMRAM in SMM
  if (slot === null || (write && slot.flags & KVM_MEM_READONLY)) {
    vcpu.stats.pf_emulate++;
    return RET_PF_EMULATE;
  }
  if (slot.flags & KVM_MEMSLOT_INVALID) return RET_PF_RETRY;
  const p = mmu.vm.kvm.host.hvaToPfn(slot.userspaceAddr + (gfn - slot.baseGfn) * PAGE, write);
  if (p === null) return RET_PF_MEMORY_FAULT;
  // kvm_mmu_hugepage_adjust with the MTRR cap kvm_tdp_page_fault applies first.
  const fault = newPageFault(gfn * PAGE, gfn, write, false, false);
  fault.slot = slot;
  fault.pfn = p.pfn;
  fault.hostLevel = Math.min(p.level, DIRECT_MAX_LEVEL);
  fault.maxLevel = kvmTdpMtrrMaxLevel(vcpu, gfn, DIRECT_MAX_LEVEL);
  kvmMmuHugepageAdjust(fault);
  const level = fault.goalLevel;
  const span = 512 ** (level - 1);
  const base = gfn - (gfn % span);
  const basePfn = p.pfn - (gfn - base);
  const writable = p.writable && !(slot.flags & KVM_MEM_READONLY);
  const r = directMap(mmu, vcpu, slot, base, level, basePfn, writable, write);
  if (r === RET_PF_FIXED) {
    vcpu.stats.pf_fixed++;
    mmu.noteFixed(gfn);
  } else if (r === RET_PF_SPURIOUS) vcpu.stats.pf_spurious++;
  return r;
}

/**
 * Walk down from the root to `level`, creating (or finding in the hash) the direct page for each
 * missing table and dropping a huge leaf that is in the way, then set the leaf.
 * @kernel arch/x86/kvm/mmu/mmu.c#direct_map
 */
function directMap(
  mmu: ShadowMmu,
  vcpu: Vcpu,
  slot: KvmMemorySlot,
  gfn: number,
  level: number,
  pfn: number,
  writable: boolean,
  write: boolean,
): number {
  let sp = mmu.roots.get(vcpu)!;
  for (let l = sp.level; l > level; l--) {
    const i = index(gfn, l);
    if (sp.isLeaf(i)) {
      // drop_large_spte: a 2M leaf where a 4K table must go.
      mmu.dropSpte(sp, i);
      mmu.vm.flushRemoteTlbs();
    }
    let child = sp.child![i] ?? null;
    if (child === null) {
      // kvm_mmu_get_child_sp: the page's gfn is the first gfn this entry covers.
      const span = 512 ** (l - 1);
      child = mmu.getShadowPage(gfn - (gfn % span), kvmMmuChildRole(sp, true, ACC_ALL));
      sp.child![i] = child;
      child.parents.push({ sp, i }); // link_shadow_page
    }
    sp = child;
  }
  const i = index(gfn, level);
  if (level > 1) {
    sp.allocLeafs();
    // mmu_set_spte over a link to a 4K table: the table is cut loose (drop_parent_pte) and TLBs flushed.
    if ((sp.child![i] ?? null) !== null) {
      mmu.mmuPageZapPte(sp, i);
      mmu.vm.flushRemoteTlbs();
    }
  }
  const mt = kvmMmuGetMtMask(vcpu, gfn, false);
  const r = mmuSetSpte(mmu, sp, i, ACC_ALL, PT_DIRTY_MASK, gfn, slot, pfn, writable, write, false, mt);
  if (r === RET_PF_SPURIOUS) return r;
  ptePrefetch(mmu, vcpu, sp, i); // direct_pte_prefetch: 4K pages only
  return r;
}
