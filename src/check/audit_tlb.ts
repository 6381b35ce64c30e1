/**
 * Structural audits of what vCPUs hold (read-only): the TDP MMU's root refcounts against the roots vCPUs
 * hold, and each vCPU TLB entry the vCPU could still use (a live slot behind it, the host page that backs
 * the gfn now), unless a flush or a root reload is pending before its next VM entry.
 *
 * Kernel counterparts: arch/x86/kvm/mmu/tdp_mmu.c (kvm_tdp_mmu_put_root, kvm_tdp_mmu_alloc_root),
 * x86.c#vcpu_enter_guest (KVM_REQ_TLB_FLUSH, KVM_REQ_MMU_FREE_OBSOLETE_ROOTS serviced before entry).
 */
import type { VmState } from '../kvm/vm_state.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import { KVM_REQ_MMU_FREE_OBSOLETE_ROOTS, KVM_REQ_TLB_FLUSH } from '../kvm/vcpu.ts';
import type { X86Mmu } from '../x86/mmu/mmu.ts';
import { PAGES_PER_LEVEL, roundGfnForLevel } from '../x86/mmu/tdp_iter.ts';
import { ROLE_INVALID } from '../x86/mmu/mmu_internal.ts';
import { shadowMmuOf } from '../x86/mmu/shadow_mmu.ts';
import { isPrivateGfn } from './reference.ts';
import { checkMappedPfns, hex, liveSlot, type Report } from './audit_mmu.ts';
import { newPfnMemo, type PfnMemo } from './pfn_memo.ts';
import type { TlbFilter } from './audit_delta.ts';
import { tlbColumns, type GfnRanges, type TlbSeen } from './tlb_seen.ts';

/** INV-ROOT-001/002: root refcounts and the roots vCPUs hold. @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_put_root */
export function auditRoots(vm: VmState, report: Report): void {
  const tdp = (vm.mmu as Partial<X86Mmu>).tdp;
  if (tdp === undefined) return;
  const pool = tdp.pool;
  // (no Map and no array per audit: a VM has a few roots, and each vCPU holds at most two)
  const held = (v: Vcpu, r: number): void => {
    if (r < 0) return;
    if (!pool.isAllocated(r) || !tdp.roots.includes(r))
      report('INV-ROOT-002', `vCPU ${v.vcpuId} holds root ${r}, which is freed or not on tdp_mmu_roots`);
  };
  for (const v of vm.vcpus) {
    held(v, v.mmu.root);
    held(v, v.mmu.mirrorRoot);
  }
  for (const r of tdp.roots) {
    let holders = 0;
    // (a vCPU without a root holds -1, which is no root's number)
    for (let k = 0; k < vm.vcpus.length && r >= 0; k++) {
      const v = vm.vcpus[k]!;
      if (v.mmu.root === r) holders++;
      if (v.mmu.mirrorRoot === r) holders++;
    }
    const valid = (pool.role[r]! & ROLE_INVALID) === 0;
    const need = holders + (valid ? 1 : 0);
    if (!pool.isAllocated(r) || pool.rootCount[r]! < need)
      report(
        'INV-ROOT-001',
        `root ${r} (${valid ? 'valid' : 'invalid'}) has refcount ${pool.rootCount[r]}, needs ≥ ${need} (vCPU holders + the TDP MMU's own while valid)`,
      );
  }
}

/** True if the vCPU flushes or reloads its root before it runs the guest again. */
export function tlbGoesAway(v: Vcpu): boolean {
  if ((v.requests & (KVM_REQ_TLB_FLUSH | KVM_REQ_MMU_FREE_OBSOLETE_ROOTS)) !== 0) return true;
  const shadow = shadowMmuOf(v.vm);
  return shadow !== null ? !shadow.roots.has(v) : v.mmu.root < 0;
}

/**
 * TLB entries a vCPU can still use: INV-ZAP-002 (a live slot), INV-PFN-001/002 (the right page); with a
 * filter (audit_delta.ts), only the entries it names, in every vCPU alike.
 */
export function auditTlbs(
  vm: VmState,
  report: Report,
  filter: TlbFilter | null = null,
  delta: { ranges: GfnRanges; seen: readonly TlbSeen[] } | null = null,
): void {
  const memo = newPfnMemo();
  const tlbWhere = newTlbWhere();
  if (delta !== null) {
    // incremental: each vCPU's entries as its TlbSeen holds them (brought up to date by this audit)
    if (delta.ranges.length === 0) return;
    for (let i = 0; i < vm.vcpus.length; i++) {
      const v = vm.vcpus[i]!;
      if (tlbGoesAway(v)) continue;
      delta.seen[i]!.visitOver(delta.ranges, (gfn, pfn, level) =>
        checkTlbEntry(vm, report, v, gfn, pfn, level, memo, tlbWhere),
      );
    }
    return;
  }
  const c = tlbColumns;
  for (const v of vm.vcpus) {
    if (tlbGoesAway(v)) continue;
    // the entries in forEachEntry's order (columns: no call per entry filtered out)
    const n = c.read(v.tlb);
    for (let k = 0; k < n; k++) {
      const level = c.level[k]!;
      if (filter === null || filter.check(c.gfn[k]!, PAGES_PER_LEVEL[level]!))
        checkTlbEntry(vm, report, v, c.gfn[k]!, c.pfn[k]!, level, memo, tlbWhere);
    }
  }
}

/** The TLB half of the targeted audit after one access: hwGfn's translation in each vCPU's TLB. */
export function auditTlbsAtGfn(vm: VmState, report: Report, hwGfn: number, memo: PfnMemo): void {
  for (const v of vm.vcpus) {
    if (tlbGoesAway(v)) continue;
    const t = v.tlb.lookup(hwGfn);
    if (t === null) continue;
    const base = roundGfnForLevel(hwGfn, t.level);
    checkTlbEntry(vm, report, v, base, t.pfn - (hwGfn - base), t.level, memo, newTlbWhere());
  }
}

/** A TLB entry's description for reports: one closure per audit, filled in per entry. */
interface TlbWhere {
  vcpuId: number;
  level: number;
  text: () => string;
}
function newTlbWhere(): TlbWhere {
  const w: TlbWhere = { vcpuId: 0, level: 0, text: () => `vCPU ${w.vcpuId} TLB entry (level ${w.level})` };
  return w;
}

function checkTlbEntry(
  vm: VmState,
  report: Report,
  v: Vcpu,
  hwGfn: number,
  basePfn: number,
  level: number,
  memo: PfnMemo,
  tlbWhere: TlbWhere,
): void {
  const bits = vm.arch.gfnDirectBits;
  const shared = bits !== 0 && Math.floor(hwGfn / bits) % 2 === 1;
  const gfn = shared ? hwGfn - bits : hwGfn;
  const isPrivate = bits !== 0 ? !shared : vm.info.hasPrivateMem && isPrivateGfn(vm, gfn);
  const span = PAGES_PER_LEVEL[level]!;
  tlbWhere.vcpuId = v.vcpuId;
  tlbWhere.level = level;
  const where = tlbWhere.text;
  const slot = liveSlot(vm, v.asId(), gfn);
  if (slot === null)
    report(
      'INV-ZAP-002',
      `${where()} still translates gfn ${hex(gfn)} → pfn ${hex(basePfn)} with no live memslot there, and no flush is pending`,
      gfn,
      basePfn,
    );
  checkMappedPfns(vm, report, where, slot, gfn, span, basePfn, isPrivate, memo);
}
