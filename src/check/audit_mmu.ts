/**
 * Structural audits of a VM's TDP MMU (read-only; roots and vCPU TLBs are in audit_tlb.ts): every table entry's encoding, the root
 * refcounts, and every present leaf — does it map a gfn of a live slot, stay inside the slot and its
 * lpage_info, point at the host page that backs the gfn now, carry the memtype KVM would compute now?
 * The same questions are asked of each vCPU's TLB entries that the vCPU could still use.
 *
 * Kernel counterparts (the facts each check defends; docs/invariants.md has the catalogue):
 * arch/x86/kvm/mmu/spte.h (SHADOW_NONPRESENT_VALUE, FROZEN_SPTE), tdp_mmu.c (kvm_tdp_mmu_put_root,
 * kvm_tdp_mmu_alloc_root), mmu.c (kvm_arch_flush_shadow_memslot, kvm_mmu_zap_all_fast,
 * kvm_mmu_hugepage_adjust, kvm_mmu_notifier_invalidate_range_start's contract), vmx.c#vmx_get_mt_mask.
 * Walks the tables itself (a pre-order scan of the typed arrays, the order TdpIter visits, so findings
 * come out in the same order); an incremental audit visits, in each table, only the entries its
 * filter names (audit_delta.ts), in the same order. Messages are built only for what is reported. Whether
 * a mapping reaches the right host page is audit_pfn.ts.
 */
import type { VmState } from '../kvm/vm_state.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';
import type { X86Mmu } from '../x86/mmu/mmu.ts';
import { PAGES_PER_LEVEL, roundGfnForLevel, spteIndex } from '../x86/mmu/tdp_iter.ts';
import {
  CHUNK_MASK,
  CHUNK_SHIFT,
  HI_OFFSET,
  SPTE_ENT_PER_PAGE,
  TABLE_WORDS,
  childTableOf,
  type SpPool,
} from '../x86/mmu/sp_pool.ts';
import {
  isFrozenSpte,
  isLastSpte,
  isMmioSpte,
  isShadowPresentPte,
  spteToPfn,
  SHADOW_NONPRESENT_HI,
  SHADOW_NONPRESENT_LO,
  VMX_EPT_IPAT_BIT,
  VMX_EPT_MT_MASK,
} from '../x86/mmu/spte.ts';
import { ROLE_INVALID, ROLE_IS_MIRROR, ROLE_SMM_SHIFT } from '../x86/mmu/mmu_internal.ts';
import { gfnToIndex } from '../x86/x86.ts';
import { kvmMmuGetMtMask } from '../x86/mtrr.ts';
import type { PgLevel } from '../types/addr.ts';
import { isPrivateGfn } from './reference.ts';
import type { AuditFilter } from './audit_delta.ts';
import type { LeafCounts } from './leaf_counts.ts';
import { newPfnMemo, type PfnMemo } from './pfn_memo.ts';
import { checkMappedPfns, hex, liveSlot, type Report } from './audit_pfn.ts';
import { or8, xorOr8 } from '../x86/mmu/spte_scan.ts';

export { checkMappedPfns, hex, liveSlot, type Report } from './audit_pfn.ts';

const MT_BITS = VMX_EPT_MT_MASK | VMX_EPT_IPAT_BIT;

export interface MirrorLeaf {
  gfn: number;
  pfn: number;
}

/** What the leaf checks need about the VM, computed once per audit. */
interface LeafCtx {
  vm: VmState;
  report: Report;
  bits: number;
  vcpu0: Vcpu | undefined;
  mirrorLeafs: MirrorLeaf[] | undefined;
  memo: PfnMemo;
  /** The leaf being checked, for `where` (one closure per audit, not one per leaf). */
  leaf: { root: number; level: number; invalid: boolean; mirror: boolean };
  /** The leaf's description, built only when something is reported. */
  where: () => string;
  /** Which tables to walk (null: all); see audit_delta.ts. */
  filter: AuditFilter | null;
  /** A whole walk counts the present 4K leafs it meets here (leaf_counts.ts). */
  recount: LeafCounts | null;
}

function leafCtx(
  vm: VmState,
  report: Report,
  mirrorLeafs?: MirrorLeaf[],
  only = -1,
  filter: AuditFilter | null = null,
  recount: LeafCounts | null = null,
): LeafCtx {
  const leaf = { root: 0, level: 0, invalid: false, mirror: false };
  return {
    filter,
    recount,
    vm,
    report,
    bits: vm.arch.gfnDirectBits,
    vcpu0: vm.vcpus[0],
    mirrorLeafs,
    memo: newPfnMemo(only),
    leaf,
    where: () =>
      `${leaf.invalid ? 'invalid ' : ''}${leaf.mirror ? 'mirror ' : ''}root ${leaf.root} leaf (level ${leaf.level})`,
  };
}

/**
 * Walk every root: encodings (INV-SPTE-*), leafs (INV-ZAP-001/003, INV-HUGE-*, INV-PFN-*, INV-MEMTYPE-001).
 * A whole walk (no filter) given `recount` leaves in it the present 4K leafs per 2M region it met.
 */
export function auditSptes(
  vm: VmState,
  report: Report,
  mirrorLeafs?: MirrorLeaf[],
  filter?: AuditFilter | null,
  recount?: LeafCounts,
): void {
  const tdp = (vm.mmu as Partial<X86Mmu>).tdp;
  if (tdp === undefined) return;
  const ctx = leafCtx(vm, report, mirrorLeafs, -1, filter ?? null, filter == null ? (recount ?? null) : null);
  ctx.recount?.clear();
  for (const root of tdp.roots) {
    const role = tdp.pool.role[root]!;
    auditTable(ctx, tdp.pool, tdp.mmioValue, root, role, root, role & 0xf, 0);
  }
}

/** One table's entries in order, descending into present non-leaf entries (pre-order, as TdpIter). */
function auditTable(
  ctx: LeafCtx,
  pool: SpPool,
  mmioValue: number,
  root: number,
  role: number,
  table: number,
  level: number,
  baseGfn: number,
): void {
  const arr = pool.chunks[table >>> CHUNK_SHIFT]!;
  const base = (table & CHUNK_MASK) * TABLE_WORDS;
  const t: TableAt = { arr, base, root, role, level, baseGfn };
  // an incremental audit names the entries that can hold a new finding (in order): only those
  const only = ctx.filter === null ? null : ctx.filter.entries(level, baseGfn);
  if (only !== null) {
    for (let k = 0; k < only.length; k++) auditEntry(ctx, pool, mmioValue, t, only[k]!);
    return;
  }
  const hiBase = base + HI_OFFSET;
  for (let i = 0; i < SPTE_ENT_PER_PAGE; i++) {
    // The common case first: empty entries (SHADOW_NONPRESENT_VALUE) have nothing to check; skip them
    // eight at a time, with one branch: SHADOW_NONPRESENT_LO is 0, so an OR of the low words finds any
    // other low word, and an OR of the high words XOR SHADOW_NONPRESENT_HI any other high word.
    if ((i & 7) === 0) {
      const j = base + i;
      const h = hiBase + i;
      const NP = SHADOW_NONPRESENT_HI;
      const los = or8(arr, j);
      const his = xorOr8(arr, h, NP);
      if ((los | his) === SHADOW_NONPRESENT_LO) {
        i += 7;
        continue;
      }
    }
    auditEntry(ctx, pool, mmioValue, t, i);
  }
}

/** The table auditTable is in: its words, its root and where it lies. */
interface TableAt {
  arr: Int32Array;
  base: number;
  root: number;
  role: number;
  level: number;
  baseGfn: number;
}

/** Entry i of a table: its encoding, then the leaf it is or the table below it. */
function auditEntry(ctx: LeafCtx, pool: SpPool, mmioValue: number, t: TableAt, i: number): void {
  const lo = t.arr[t.base + i]!;
  const hi = t.arr[t.base + HI_OFFSET + i]!;
  if (lo === SHADOW_NONPRESENT_LO && hi === SHADOW_NONPRESENT_HI) return;
  const level = t.level;
  const gfn = t.baseGfn + i * PAGES_PER_LEVEL[level]!;
  if (isFrozenSpte(lo, hi)) {
    ctx.report('INV-SPTE-002', `frozen SPTE at gfn ${hex(gfn)} level ${level} outside mmu_lock`, gfn);
    return;
  }
  if (!isShadowPresentPte(lo)) {
    if (!isMmioSpte(lo, hi, mmioValue) && (hi & 0x80000000) === 0)
      ctx.report(
        'INV-SPTE-001',
        `non-present SPTE at gfn ${hex(gfn)} level ${level} lacks bit 63 (SUPPRESS_VE)`,
        gfn,
      );
    return;
  }
  if (isLastSpte(lo, level)) {
    if (level === 1 && ctx.recount !== null) ctx.recount.add(Math.floor(gfn / 512), 1);
    checkLeaf(ctx, t.root, t.role, gfn, level, lo, hi);
  } else if (level > 1 && (ctx.filter === null || ctx.filter.scan(level - 1, gfn)))
    auditTable(ctx, pool, mmioValue, t.root, t.role, childTableOf(lo, hi), level - 1, gfn);
}

/** The leaf of `root` covering hwGfn, by a plain descent (no iterator state). */
function lookupLeaf(
  pool: SpPool,
  root: number,
  hwGfn: number,
): { gfn: number; level: number; lo: number; hi: number } | null {
  let table = root;
  for (let level = pool.role[root]! & 0xf; level >= 1; level--) {
    const i = spteIndex(hwGfn, level);
    const lo = pool.readLo(table, i);
    const hi = pool.readHi(table, i);
    if (!isShadowPresentPte(lo)) return null;
    if (isLastSpte(lo, level)) return { gfn: roundGfnForLevel(hwGfn, level), level, lo, hi };
    table = childTableOf(lo, hi);
  }
  return null;
}

/**
 * The targeted audit after one access: the translations of hwGfn in every root. Returns the pfn memo for
 * the TLB half (audit_tlb.ts#auditTlbsAtGfn), or null on a VM without a TDP MMU (nothing to audit).
 */
export function auditGfn(vm: VmState, report: Report, hwGfn: number): PfnMemo | null {
  const tdp = (vm.mmu as Partial<X86Mmu>).tdp;
  if (tdp === undefined) return null;
  const ctx = leafCtx(vm, report, undefined, hwGfn);
  for (const root of tdp.roots) {
    const l = lookupLeaf(tdp.pool, root, hwGfn);
    if (l !== null) checkLeaf(ctx, root, tdp.pool.role[root]!, l.gfn, l.level, l.lo, l.hi);
  }
  return ctx.memo;
}

/** One present leaf of `root` at hwGfn (its first gfn, with the TDX shared bit for shared roots). */
function checkLeaf(
  ctx: LeafCtx,
  root: number,
  role: number,
  hwGfn: number,
  level: number,
  lo: number,
  hi: number,
): void {
  const { vm, report, bits } = ctx;
  const invalid = (role & ROLE_INVALID) !== 0;
  const mirror = (role & ROLE_IS_MIRROR) !== 0;
  const asId = (role >>> ROLE_SMM_SHIFT) & 0xff ? 1 : 0;
  const gfn = bits !== 0 && !mirror && hwGfn >= bits ? hwGfn - bits : hwGfn;
  const span = PAGES_PER_LEVEL[level]!;
  const basePfn = spteToPfn(lo, hi);
  const leaf = ctx.leaf;
  leaf.root = root;
  leaf.level = level;
  leaf.invalid = invalid;
  leaf.mirror = mirror;
  const where = ctx.where;
  if (invalid) {
    // kvm_mmu_zap_all_fast zaps the roots it invalidated before it returns.
    report('INV-ZAP-003', `${where()} still maps gfn ${hex(gfn)} → pfn ${hex(basePfn)}`, gfn, basePfn);
    checkMappedPfns(vm, report, where, null, gfn, span, basePfn, mirror, ctx.memo);
    return;
  }
  const slot = liveSlot(vm, asId, gfn);
  const isPrivate = mirror || (vm.info.hasPrivateMem && !vm.info.hasMirroredTdp && isPrivateGfn(vm, gfn));
  if (slot === null || (mirror && slot.gmem === null)) {
    report(
      'INV-ZAP-001',
      `${where()} maps gfn ${hex(gfn)} → pfn ${hex(basePfn)}, but no live ${mirror ? 'guest_memfd ' : ''}memslot of address space ${asId} holds it`,
      gfn,
      basePfn,
    );
    checkMappedPfns(vm, report, where, null, gfn, span, basePfn, isPrivate, ctx.memo);
    return;
  }
  if (mirror) ctx.mirrorLeafs?.push({ gfn, pfn: basePfn });
  if (level > 1) auditHugeLeaf(vm, report, where, slot, gfn, level, basePfn);
  checkMappedPfns(vm, report, where, slot, gfn, span, basePfn, isPrivate, ctx.memo);
  if (!mirror && ctx.vcpu0 !== undefined) {
    const want = kvmMmuGetMtMask(ctx.vcpu0, gfn, false);
    if ((lo & MT_BITS) !== want)
      report(
        'INV-MEMTYPE-001',
        `${where()} at gfn ${hex(gfn)} has memtype bits ${hex(lo & MT_BITS)}, KVM now computes ${hex(want)}`,
        gfn,
        basePfn,
      );
  }
}

/**
 * INV-HUGE-001 (inside the slot), INV-HUGE-002 (lpage_info allows it) and INV-HUGE-003 (uniform memory
 * attributes, read from the attribute array itself, so a missing KVM_LPAGE_MIXED_FLAG is caught too).
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_hugepage_adjust
 */
function auditHugeLeaf(
  vm: VmState,
  report: Report,
  where: () => string,
  slot: KvmMemorySlot,
  gfn: number,
  level: number,
  pfn: number,
): void {
  const span = PAGES_PER_LEVEL[level]!;
  if (gfn < slot.baseGfn || gfn + span > slot.baseGfn + slot.npages) {
    report(
      'INV-HUGE-001',
      `${where()} [${hex(gfn)}, ${hex(gfn + span)}) spans the edge of memslot ${slot.id} [${hex(slot.baseGfn)}, ${hex(slot.baseGfn + slot.npages)})`,
      gfn,
      pfn,
    );
    return;
  }
  if (vm.info.hasPrivateMem && !vm.memAttrs.rangeIs(gfn, gfn + span, vm.memAttrs.get(gfn)))
    report(
      'INV-HUGE-003',
      `${where()} [${hex(gfn)}, ${hex(gfn + span)}) spans gfns with different memory attributes`,
      gfn,
      pfn,
    );
  const arr = slot.arch.lpageInfo?.[level - 2];
  const disallow = arr?.[gfnToIndex(gfn, slot.baseGfn, level as PgLevel)] ?? 0;
  if (disallow !== 0)
    report(
      'INV-HUGE-002',
      `${where()} at gfn ${hex(gfn)}: lpage_info disallow_lpage is ${hex(disallow >>> 0)}`,
      gfn,
      pfn,
    );
}
