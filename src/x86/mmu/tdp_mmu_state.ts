/**
 * The TDP MMU engine's state: what the kernel keeps in struct kvm for the TDP MMU (the roots list,
 * tdp_mmu_pages, the pages_* stats), the page-table pool, the model's counters, and the hooks through
 * which the engine reaches the rest of the model (KVM_BUG_ON, WARN, resched, remote flush, tracing,
 * TDX external page tables).
 *
 * Kernel counterpart: the TDP MMU fields of struct kvm_arch (arch/x86/include/asm/kvm_host.h),
 * kvm_update_page_stats (arch/x86/kvm/mmu/mmu.c), kvm_x86_ops.{link,free}_external_spt and
 * {set,remove}_external_spte, tdp_mmu.h's enum kvm_tdp_mmu_root_types.
 *
 * Simplifies: KVM_BUG_ON and WARN_ON_ONCE are callbacks (plus a `bugged` flag and a warning count), so
 * the engine never throws for them; only ModelCorruption (the kernel's BUG()) throws.
 */
import { SpPool } from './sp_pool.ts';
import { newSptePair, VMX_EPT_MISCONFIG_WX_VALUE, type SptePair } from './spte.ts';
import { PT64_ROOT_MAX_LEVEL, TdpIter } from './tdp_iter.ts';
import type { TdpTraceRecorder, TraceSink } from './mmu_trace.ts';

/** enum kvm_tdp_mmu_root_types (tdp_mmu.h) */
export const KVM_INVALID_ROOTS = 1 << 0;
export const KVM_DIRECT_ROOTS = 1 << 1;
export const KVM_MIRROR_ROOTS = 1 << 2;
export const KVM_VALID_ROOTS = KVM_DIRECT_ROOTS | KVM_MIRROR_ROOTS;
export const KVM_ALL_ROOTS = KVM_VALID_ROOTS | KVM_INVALID_ROOTS;

/** -EBUSY, as tdp_mmu_set_spte_atomic returns it. */
export const EBUSY = -16;

/**
 * The TDX hooks (kvm_x86_ops) the TDP MMU calls for mirror roots, each returning 0 or a negative errno.
 * `externalSpt` is the pool index of the mirror table whose S-EPT page is meant.
 */
export interface TdpExternalHooks {
  /** A mirror non-leaf SPTE at `level` now points to a table: add the S-EPT page (TDH.MEM.SEPT.ADD). */
  linkExternalSpt(gfn: number, level: number, externalSpt: number): number;
  /** A mirror leaf was installed: map the private page (TDH.MEM.PAGE.AUG/ADD). */
  setExternalSpte(gfn: number, level: number, pfn: number): number;
  /** A mirror leaf was zapped: block, track, remove (and flush) the private page. */
  removeExternalSpte(gfn: number, level: number, pfn: number): number;
  /** A mirror table is being freed: remove its S-EPT page. */
  freeExternalSpt(gfn: number, level: number, externalSpt: number): number;
}

/** What the engine asks of the rest of the model. All optional. */
export interface TdpMmuEnv {
  /** KVM_BUG_ON fired: mark the VM bugged (later ioctls fail with EIO). */
  kvmBugOn?(what: string): void;
  /** WARN_ON_ONCE fired. */
  warnOnce?(what: string): void;
  /** need_resched() || rwlock_needbreak(mmu_lock): lets a scenario make walks yield (undefined: never). */
  readonly needResched?: (() => boolean) | undefined;
  /**
   * false when needResched can say yes at no resched point of a walk over `root` (undefined: it may):
   * such a walk steps over runs of empty SPTEs and batches leaf zaps as if there were no hook.
   */
  mayYieldIn?(root: number): boolean;
  /** kvm_flush_remote_tlbs, owed before a walk drops mmu_lock with zapped SPTEs. */
  flushRemoteTlbs?(): void;
  /**
   * A walk has dropped mmu_lock (cond_resched_rwlock_*): whoever waited for it runs now and may use the
   * engine (fault in, zap). The yielding walk resumes from the root at resumeGfn afterwards.
   */
  onYield?(resumeGfn: number): void;
}

export interface TdpMmuOptions {
  env?: TdpMmuEnv;
  trace?: TraceSink;
  external?: TdpExternalHooks;
  /** tdp_mmu_max_gfn_exclusive(): kvm_mmu_max_gfn() + 1; default 2^40 (host MAXPHYADDR 52). */
  maxGfnExclusive?: number;
  /** kvm->arch.shadow_mmio_value: VMX_EPT_MISCONFIG_WX_VALUE (default) or 0 for TDX. */
  mmioValue?: number;
  /** is_nx_huge_page_enabled(): 4K children of a split regain X. */
  nxHugePages?: boolean;
  /** CONFIG_KVM_PROVE_MMU: tdp_mmu_zap_root skips its 4K and 2M passes. */
  proveMmu?: boolean;
}

export class TdpMmu {
  readonly pool = new SpPool();
  /** kvm->arch.tdp_mmu_roots, newest first (list_add_rcu adds at the head). */
  readonly roots: number[] = [];
  /** kvm->arch.tdp_mmu_pages: linked non-root tables. */
  tdpMmuPages = 0;
  /** kvm->stat.pages[level - 1]: present leaf SPTEs per level (pages_4k, pages_2m, pages_1g). */
  readonly pages = new Float64Array(PT64_ROOT_MAX_LEVEL);
  /** Present SPTEs made non-present (zapped or frozen with their table), per level − 1. */
  readonly sptesZapped = new Float64Array(PT64_ROOT_MAX_LEVEL);
  /** The leaf subset of sptesZapped: mappings (4K, 2M, 1G) that went away. */
  readonly leafsZapped = new Float64Array(PT64_ROOT_MAX_LEVEL);
  /** Page tables allocated / freed, roots included. */
  spAllocated = 0;
  spFreed = 0;
  rootsAllocated = 0;
  hugePagesSplit = 0;
  /** SPTEs visited by zap walks (the per-SPTE cost base of a zap). */
  sptesWalked = 0;
  yields = 0;
  externalSptLeaked = 0;
  warnings = 0;
  /** A KVM_BUG_ON fired. */
  bugged = false;

  trace: TraceSink | undefined;
  /** The numeric tracepoint listener (mmu_trace.ts#TdpTraceRecorder); undefined = off, one branch. */
  recorder: TdpTraceRecorder | undefined = undefined;
  external: TdpExternalHooks | undefined;
  readonly env: TdpMmuEnv;
  readonly maxGfnExclusive: number;
  readonly mmioValue: number;
  readonly nxHugePages: boolean;
  readonly proveMmu: boolean;
  /**
   * The engine's own reusable iterator. Top-level operations never nest, so hooks and trace sinks must not
   * call back into the engine.
   */
  readonly iter: TdpIter;
  readonly scratch: SptePair = newSptePair();

  constructor(opts: TdpMmuOptions = {}) {
    this.env = opts.env ?? {};
    this.trace = opts.trace;
    this.external = opts.external;
    this.maxGfnExclusive = opts.maxGfnExclusive ?? 2 ** 40;
    this.mmioValue = opts.mmioValue ?? VMX_EPT_MISCONFIG_WX_VALUE;
    this.nxHugePages = opts.nxHugePages ?? false;
    this.proveMmu = opts.proveMmu ?? false;
    this.iter = new TdpIter(this.pool);
  }
}

/** KVM_BUG_ON(cond): returns cond. @kernel include/linux/kvm_host.h#KVM_BUG_ON */
export function kvmBugOn(mmu: TdpMmu, cond: boolean, what: string): boolean {
  if (cond) {
    mmu.bugged = true;
    mmu.env.kvmBugOn?.(what);
  }
  return cond;
}

/** WARN_ON_ONCE(cond): returns cond. Every hit is counted and reported; the env decides what "once" means. */
export function warnOnce(mmu: TdpMmu, cond: boolean, what: string): boolean {
  if (cond) {
    mmu.warnings++;
    mmu.env.warnOnce?.(what);
  }
  return cond;
}

/** The binary-stats view of the engine's counters, under the kernel's stat names where there is one. */
export function tdpMmuStats(mmu: TdpMmu): Record<string, number> {
  return {
    pages_4k: mmu.pages[0]!,
    pages_2m: mmu.pages[1]!,
    pages_1g: mmu.pages[2]!,
    tdp_mmu_pages: mmu.tdpMmuPages,
    sptes_zapped_4k: mmu.sptesZapped[0]!,
    sptes_zapped_2m: mmu.sptesZapped[1]!,
    sptes_zapped_1g: mmu.sptesZapped[2]!,
    sptes_zapped_512g: mmu.sptesZapped[3]!,
    sptes_zapped_256t: mmu.sptesZapped[4]!,
    sp_allocated: mmu.spAllocated,
    sp_freed: mmu.spFreed,
    roots_allocated: mmu.rootsAllocated,
    huge_pages_split: mmu.hugePagesSplit,
    sptes_walked: mmu.sptesWalked,
    yields: mmu.yields,
  };
}
