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
 * come out in the same order); messages are built only for what is reported.
 */
import type { VmState } from '../kvm/vm_state.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';
import { KVM_MEMSLOT_INVALID } from '../uapi/kvm.ts';
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
import { expectedPfn, isPrivateGfn, usesGmem } from './reference.ts';
import { framePfnRun } from '../host/vma.ts';
import type { AuditFilter } from './audit_delta.ts';
import { newPfnMemo, type PfnMemo } from './pfn_memo.ts';

/** Where audits send what they find. */
export type Report = (id: string, message: string, gfn?: number, pfn?: number) => void;

const MT_BITS = VMX_EPT_MT_MASK | VMX_EPT_IPAT_BIT;
export const hex = (n: number): string => '0x' + n.toString(16);

/** A live slot: in the active set and not INVALID (an INVALID slot's SPTEs must already be gone). */
export function liveSlot(vm: VmState, asId: number, gfn: number): KvmMemorySlot | null {
  const slot = vm.activeMemslots(asId).searchMemslots(gfn);
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
}

function leafCtx(
  vm: VmState,
  report: Report,
  mirrorLeafs?: MirrorLeaf[],
  only = -1,
  filter: AuditFilter | null = null,
): LeafCtx {
  const leaf = { root: 0, level: 0, invalid: false, mirror: false };
  return {
    filter,
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

/** Walk every root: encodings (INV-SPTE-*), leafs (INV-ZAP-001/003, INV-HUGE-*, INV-PFN-*, INV-MEMTYPE-001). */
export function auditSptes(
  vm: VmState,
  report: Report,
  mirrorLeafs?: MirrorLeaf[],
  filter?: AuditFilter | null,
): void {
  const tdp = (vm.mmu as Partial<X86Mmu>).tdp;
  if (tdp === undefined) return;
  const ctx = leafCtx(vm, report, mirrorLeafs, -1, filter ?? null);
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
  const step = PAGES_PER_LEVEL[level]!;
  const hiBase = base + HI_OFFSET;
  for (let i = 0; i < SPTE_ENT_PER_PAGE; i++) {
    // The common case first: empty entries (SHADOW_NONPRESENT_VALUE) have nothing to check; skip them
    // eight at a time, with one branch: SHADOW_NONPRESENT_LO is 0, so an OR of the low words finds any
    // other low word, and an OR of the high words XOR SHADOW_NONPRESENT_HI any other high word.
    if ((i & 7) === 0) {
      const j = base + i;
      const h = hiBase + i;
      const NP = SHADOW_NONPRESENT_HI;
      const los =
        arr[j]! |
        arr[j + 1]! |
        arr[j + 2]! |
        arr[j + 3]! |
        arr[j + 4]! |
        arr[j + 5]! |
        arr[j + 6]! |
        arr[j + 7]!;
      const his =
        (arr[h]! ^ NP) |
        (arr[h + 1]! ^ NP) |
        (arr[h + 2]! ^ NP) |
        (arr[h + 3]! ^ NP) |
        (arr[h + 4]! ^ NP) |
        (arr[h + 5]! ^ NP) |
        (arr[h + 6]! ^ NP) |
        (arr[h + 7]! ^ NP);
      if ((los | his) === SHADOW_NONPRESENT_LO) {
        i += 7;
        continue;
      }
    }
    const lo = arr[base + i]!;
    const hi = arr[hiBase + i]!;
    if (lo === SHADOW_NONPRESENT_LO && hi === SHADOW_NONPRESENT_HI) continue;
    const gfn = baseGfn + i * step;
    if (isFrozenSpte(lo, hi)) {
      ctx.report('INV-SPTE-002', `frozen SPTE at gfn ${hex(gfn)} level ${level} outside mmu_lock`, gfn);
      continue;
    }
    if (!isShadowPresentPte(lo)) {
      if (!isMmioSpte(lo, hi, mmioValue) && (hi & 0x80000000) === 0)
        ctx.report(
          'INV-SPTE-001',
          `non-present SPTE at gfn ${hex(gfn)} level ${level} lacks bit 63 (SUPPRESS_VE)`,
          gfn,
        );
      continue;
    }
    if (isLastSpte(lo, level)) checkLeaf(ctx, root, role, gfn, level, lo, hi);
    else if (level > 1 && (ctx.filter === null || ctx.filter.scan(level - 1, gfn)))
      auditTable(ctx, pool, mmioValue, root, role, childTableOf(lo, hi), level - 1, gfn);
  }
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
      `${where} [${hex(gfn)}, ${hex(gfn + span)}) spans gfns with different memory attributes`,
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
