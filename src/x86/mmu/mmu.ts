/**
 * The x86 MMU as the rest of KVM calls it: the memslot zaps (zap-all-fast, the precise memslot zap, the
 * RFC's leafs-only zap), kvm_unmap_gfn_range for notifiers and attribute changes, dirty-logging
 * transitions, MMIO-generation invalidation, teardown, and the vCPU root lifecycle. The fault path is in
 * page_fault.ts, the guest's side of an access in guest_access.ts.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c (kvm_mmu_zap_all_fast, kvm_mmu_zap_memslot,
 * kvm_unmap_gfn_range, kvm_mmu_invalidate_mmio_sptes, kvm_arch_flush_shadow_all, kvm_mmu_load,
 * kvm_mmu_free_obsolete_roots, kvm_mmu_slot_apply_flags' MMU half) on a TDP-MMU host.
 * (Hosts with tdpMmu: false get the shadow MMU of shadow_mmu.ts instead; see mmu_create.ts.)
 * Simplifications: no async page faults; one mmu_lock holder at a time (the model is sequential), so read/write locking is implicit.
 */
import type { KvmGfnRange, KvmMemorySlot } from '../../kvm/kvm_host.ts';
import { KVM_FILTER_PRIVATE, KVM_FILTER_SHARED } from '../../kvm/kvm_host.ts';
import type { VmState } from '../../kvm/vm_state.ts';
import type { Vcpu } from '../../kvm/vcpu.ts';
import { KVM_REQ_MMU_FREE_OBSOLETE_ROOTS } from '../../kvm/vcpu.ts';
import {
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_DIRTY_LOG_INITIALLY_SET,
  type KvmMrChange,
} from '../../uapi/kvm.ts';
import type { KvmMmuOps } from '../mmu_ops.ts';
import { hasBug } from '../../kvm/host_profile.ts';
import { kvmMmuMaxGfn } from '../x86.ts';
import { TdpMmu, KVM_DIRECT_ROOTS, KVM_MIRROR_ROOTS, tdpMmuStats } from './tdp_mmu_state.ts';
import { X86TdpEnv } from './tdp_mmu_env.ts';
import {
  kvmTdpMmuAllocRoot,
  kvmTdpMmuInvalidateRoots,
  kvmTdpMmuPutRoot,
  kvmTdpMmuUnmapGfnRange,
  kvmTdpMmuZapAll,
  kvmTdpMmuZapInvalidatedRoots,
} from './tdp_mmu_root.ts';
import {
  kvmTdpMmuClearDirtyPtMasked,
  kvmTdpMmuClearDirtySlot,
  kvmTdpMmuWrprotSlot,
  kvmTdpMmuRecoverHugePages,
  kvmTdpMmuZapCollapsibleSptes,
} from './tdp_mmu_dirty.ts';
import { kvmMmuMaxMappingLevel } from './page_fault.ts';
import { tdpRootRole, kvmMmuRoleAsId, ROLE_INVALID } from './mmu_internal.ts';
import { MMIO_SPTE_GEN_MASK } from './spte.ts';
import type { KvmTraceSink } from '../../kvm/kvm_trace.ts';
import { accessHit, vcpuAccess, vcpuAccessCore, type AccessOptions } from './guest_access.ts';
import { beginAccessStep, beginFault, type AccessStep } from './guest_access_step.ts';
import { tdxVmInit } from '../tdx.ts';
import { snpVmInit } from '../sev.ts';
import type { AccessBatchOut, AccessHit, AccessKind, AccessResult } from '../../kvm/api_types.ts';
import { vcpuAccessBulk } from './guest_access_bulk.ts';
import { EverMapped } from './ever_mapped.ts';
import { vcpuAccessFast } from './guest_access_fast.ts';

/** Per-vCPU MMU state (struct kvm_mmu's roots). */
export interface VcpuMmu {
  /** mmu->root.hpa as a pool index, -1 = INVALID_PAGE */
  root: number;
  /** mmu->mirror_root_hpa (TDX) */
  mirrorRoot: number;
}

export class X86Mmu implements KvmMmuOps {
  readonly tdp: TdpMmu;
  /** kvm->arch.mmu_valid_gen (toggled by zap-all-fast; only shadow pages carry it) */
  mmuValidGen = 0;
  /** gfns that have ever been mapped: a fault on one of them is a refault */
  readonly everMapped = new EverMapped();
  /**
   * Trace sink (undefined = off: one branch). Declared, not a field: no own property until one is set,
   * so a checker's tap (check/checker.ts#tapTrace) adds its accessor without sending the MMU's
   * properties into V8's dictionary mode.
   */
  declare trace: KvmTraceSink | undefined;

  constructor(readonly vm: VmState) {
    this.tdp = new TdpMmu({
      env: new X86TdpEnv(this),
      // The kernel bounds walks by the natural gfn and ORs a TD's shared bit in (tdp_iter's gfn_bits);
      // this engine sees shared gfns with the bit set, so its bound covers the shared alias too.
      maxGfnExclusive: kvmMmuMaxGfn(vm.cfg) + 1 + vm.arch.gfnDirectBits,
    });
    // tdx_vm_init / svm_vm_init, the vendor half of the VM: a TD's mirror roots reach the TDX module
    // through the external page-table hooks; an SNP guest's private pages are tracked in the RMP.
    if (vm.info.hasMirroredTdp) this.tdp.external = tdxVmInit(vm);
    else if (vm.info.name === 'SNP') snpVmInit(vm);
  }

  /** partyWantsLock as a function (TdpMmuEnv.needResched hands it out while a party waits) */
  readonly wantsLock = (): boolean => this.partyWantsLock();

  /** The party last offered mmu_lock at a TDP walk's resched point, and the zap count then. */
  private offeredTo: ((resumeGfn?: number) => void) | undefined;
  private offeredAt = -1;

  /**
   * need_resched() || rwlock_needbreak() at a TDP walk's resched point, for the party in
   * vm.onMmuLockDrop: its first offer comes at the walk's first resched point; a party that stays
   * installed after running (the explorer's) is offered the lock again only once the walk has zapped
   * something since, since a yield between two untouched entries shows it the same state
   * (docs/simplifications.md). vm.mmuLockContended then decides.
   */
  partyWantsLock(): boolean {
    const vm = this.vm;
    // An invalidated root is zapped under the read lock (kvm_tdp_mmu_zap_invalidated_roots): vCPU faults
    // do not wait for it, and no writer of the model touches an invalid root, so no party is let in.
    const it = this.tdp.iter;
    if ((this.tdp.pool.role[it.ptPath[it.rootLevel - 1]!]! & ROLE_INVALID) !== 0) return false;
    const z = this.tdp.sptesZapped.reduce((a, b) => a + b, 0);
    if (vm.onMmuLockDrop === this.offeredTo && z === this.offeredAt) return false;
    this.offeredTo = vm.onMmuLockDrop;
    this.offeredAt = z;
    return vm.mmuLockContended === undefined || vm.mmuLockContended();
  }

  /** The root role for a vCPU in address space asId. */
  private rootRole(asId: number, mirror: boolean): number {
    return tdpRootRole({ asId, level: this.vm.cfg.maxPhyAddr > 48 ? 5 : 4, isMirror: mirror });
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_load (mmu_alloc_direct_roots) */
  kvmMmuLoad(vcpu: Vcpu): void {
    const m = vcpu.mmu;
    // TDX: the mirror root first, then the shared (direct) root. The root role carries the vCPU's SMM
    // state (kvm_calc_tdp_mmu_root_page_role: role.smm = cpu_role.base.smm), so SMRAM is mapped only in
    // the roots of address space 1. (A TD has no SMM.)
    if (this.vm.info.hasMirroredTdp && m.mirrorRoot < 0)
      m.mirrorRoot = kvmTdpMmuAllocRoot(this.tdp, this.rootRole(0, true));
    m.root = kvmTdpMmuAllocRoot(this.tdp, this.rootRole(vcpu.asId(), false));
    // kvm_mmu_flush_tlb_current: a freshly loaded root starts with a clean TLB, which is why zapping
    // invalidated roots needs no remote flush.
    vcpu.tlb.flushAll();
  }

  /** @kernel arch/x86/kvm/mmu.h#kvm_mmu_reload */
  kvmMmuReload(vcpu: Vcpu): void {
    this.kvmSmmChanged(vcpu);
    if (vcpu.mmu.root < 0) this.kvmMmuLoad(vcpu);
  }

  /**
   * Entering or leaving SMM resets the MMU context (kvm_mmu_reset_context → kvm_mmu_unload puts the
   * root), so the next entry loads the root of the other address space. The kernel does it at the
   * transition; `vcpu.smm` is a plain field here, so the change is noticed at the next VM entry.
   * @kernel arch/x86/kvm/smm.c#kvm_smm_changed
   */
  private kvmSmmChanged(vcpu: Vcpu): void {
    const root = vcpu.mmu.root;
    if (root < 0 || kvmMmuRoleAsId(this.tdp.pool.role[root]!) === vcpu.asId()) return;
    kvmTdpMmuPutRoot(this.tdp, root);
    vcpu.mmu.root = -1;
    this.tdp.pool.rcuReclaim();
    this.syncCounters();
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_free_obsolete_roots */
  kvmMmuFreeObsoleteRoots(vcpu: Vcpu): void {
    const m = vcpu.mmu;
    if (m.root >= 0 && (this.tdp.pool.role[m.root]! & ROLE_INVALID) !== 0) {
      kvmTdpMmuPutRoot(this.tdp, m.root);
      m.root = -1;
      this.tdp.pool.rcuReclaim();
      this.syncCounters();
    }
  }

  /** A fault that has its pfn and has not yet taken mmu_lock: see guest_access_step.ts#beginFault. */
  vcpuBeginAccess(vcpu: Vcpu, gpa: number, kind: AccessKind): { finish(): AccessResult } {
    return beginFault(this, vcpu, gpa, kind);
  }

  /** A guest access driven step by step: see guest_access_step.ts#beginAccessStep. */
  vcpuAccessStep(vcpu: Vcpu, gpa: number, kind: AccessKind): AccessStep {
    return beginAccessStep(this, vcpu, gpa, kind);
  }

  /** The guest touches gpa: see guest_access.ts. */
  vcpuAccess(vcpu: Vcpu, gpa: number, kind: AccessKind, opts?: AccessOptions): AccessResult {
    return vcpuAccess(this, vcpu, gpa, kind, opts);
  }

  /** A validated access for the batched calls (kvm/access_batch.ts): nothing allocated when it completes. */
  vcpuAccessInto(
    vcpu: Vcpu,
    gpa: number,
    kind: AccessKind,
    opts: AccessOptions | undefined,
    hit: AccessHit,
  ): AccessResult | null {
    const r = vcpuAccessCore(this, vcpu, gpa, kind, opts);
    if (r === null) {
      hit.pfn = accessHit.pfn;
      hit.level = accessHit.level;
      hit.memtype = accessHit.memtype;
    }
    return r;
  }

  /** vcpu.access's fast path: see guest_access_fast.ts. */
  vcpuAccessFast(vcpu: Vcpu, gpa: number, write: boolean, hit: AccessHit): boolean {
    return vcpuAccessFast(this, vcpu, gpa, write, hit);
  }

  /** A run of 4K-stride accesses in bulk: see guest_access_bulk.ts. */
  vcpuAccessBulk(
    vcpu: Vcpu,
    gpa: number,
    n: number,
    write: boolean,
    out: AccessBatchOut | undefined,
    off: number,
  ): number {
    return vcpuAccessBulk(this, vcpu, gpa, n, write, out, off);
  }

  /**
   * Nuke-and-pave: invalidate every direct root (never a TDX mirror root), make every vCPU drop its
   * root, then zap the invalidated roots' SPTEs before returning — with no TLB flush, because the
   * vCPUs flush when they load their new roots.
   * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_zap_all_fast
   */
  kvmMmuZapAllFast(): void {
    this.mmuValidGen ^= 1;
    if (this.trace)
      this.trace({ name: 'kvm_mmu_zap_all_fast', mmuValidGen: this.mmuValidGen, mmuUsedPages: 0 });
    kvmTdpMmuInvalidateRoots(this.tdp, KVM_DIRECT_ROOTS);
    this.vm.kvmMakeAllCpusRequest(KVM_REQ_MMU_FREE_OBSOLETE_ROOTS);
    // The invalidated roots are zapped under the read lock, yielding as they go; every vCPU already has
    // the request to drop its root.
    this.vm.mmuLockYield(false, true);
    kvmTdpMmuZapInvalidatedRoots(this.tdp, true);
    this.syncCounters();
  }

  /**
   * The precise zap: unmap the slot's gfns, private and shared, in every root of its address space
   * (valid and invalid); flush if anything mapped was zapped.
   * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_zap_memslot
   */
  kvmMmuZapMemslot(slot: KvmMemorySlot): void {
    let flush = this.kvmUnmapGfnRange({
      slot,
      start: slot.baseGfn,
      end: (slot.baseGfn + slot.npages) as typeof slot.baseGfn,
      attrFilter: KVM_FILTER_PRIVATE | KVM_FILTER_SHARED,
      mayBlock: true,
    });
    // A waiting party (vm.onMmuLockDrop) ran inside the walk, at its first resched point
    // (tdp_mmu_iter_cond_resched flushed what was zapped before it yielded); no resched point follows
    // the walk's last SPTE.
    // kvm_mmu_zap_memslot_pages_and_flush: no shadow pages exist on a TDP-only VM, so only the flush.
    // BUG precise-zap-no-flush: the zap forgets the flush, so vCPU TLBs keep the slot's translations.
    if (hasBug(this.vm.cfg, 'precise-zap-no-flush')) return;
    if (flush) this.vm.flushRemoteTlbs();
  }

  /** The RFC's KVM_MEM_ZAP_LEAFS_ONLY path: kvm_tdp_mmu_unmap_gfn_range over the slot, then a full flush. */
  kvmMmuZapMemslotLeafs(slot: KvmMemorySlot): void {
    this.kvmMmuZapMemslot(slot);
  }

  /**
   * Zap the mappings of [range.start, range.end) in the slot's address space; true if a TLB flush is owed.
   * @kernel arch/x86/kvm/mmu/mmu.c#kvm_unmap_gfn_range
   */
  kvmUnmapGfnRange(range: KvmGfnRange): boolean {
    const { slot, start, end, mayBlock } = range;
    let flush = false;
    // kvm_gfn_range_filter_to_root_types: without mirrored TDP everything lives in direct roots.
    if (!this.vm.info.hasMirroredTdp)
      flush = kvmTdpMmuUnmapGfnRange(this.tdp, slot.asId, start, end, KVM_DIRECT_ROOTS, mayBlock, flush);
    else {
      // TDX: private gfns are mapped in the mirror roots at their own gfn, shared ones in the direct
      // roots with the shared bit set (the kernel's tdp_iter adds it as gfn_bits; the engine leaves that
      // to its callers).
      if (range.attrFilter & KVM_FILTER_PRIVATE)
        flush = kvmTdpMmuUnmapGfnRange(this.tdp, slot.asId, start, end, KVM_MIRROR_ROOTS, mayBlock, flush);
      if (range.attrFilter & KVM_FILTER_SHARED) {
        const bits = this.vm.arch.gfnDirectBits;
        flush = kvmTdpMmuUnmapGfnRange(
          this.tdp,
          slot.asId,
          start + bits,
          end + bits,
          KVM_DIRECT_ROOTS,
          mayBlock,
          flush,
        );
      }
    }
    this.syncCounters();
    return flush;
  }

  /** @kernel arch/x86/kvm/x86.c#kvm_mmu_slot_apply_flags */
  kvmMmuSlotApplyFlags(old: KvmMemorySlot | null, nu: KvmMemorySlot | null, change: KvmMrChange): void {
    if (change !== 'FLAGS_ONLY' || nu === null || nu.flags & KVM_MEM_READONLY) return;
    const was = (old!.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
    const now = (nu.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
    if (was === now) return;
    if (!now) {
      this.kvmMmuRecoverHugePages(nu);
      return;
    }
    // With INITIALLY_SET userspace re-arms logging through CLEAR_DIRTY_LOG; nothing to protect now.
    if (this.vm.manualDirtyLogProtect & KVM_DIRTY_LOG_INITIALLY_SET) return;
    if (this.vm.cfg.pml) {
      // PML: clear D-bits at 4K (the CPU logs the next write) and write-protect huge leafs (split on write).
      kvmTdpMmuClearDirtySlot(this.tdp, nu.asId, nu.baseGfn, nu.npages);
      kvmTdpMmuWrprotSlot(this.tdp, nu.asId, nu.baseGfn, nu.npages, 2);
    } else {
      kvmTdpMmuWrprotSlot(this.tdp, nu.asId, nu.baseGfn, nu.npages, 1);
    }
    // kvm_flush_remote_tlbs_memslot, unconditionally (6.18 and linux-next): "a flush is almost always
    // going to be necessary", and flushing anyway lets the helpers skip the subtle MMU-writable checks.
    this.vm.flushRemoteTlbs();
  }

  /**
   * Dirty logging stopped: 4K mappings no longer need to be 4K. From 6.13 the TDP MMU replaces each page
   * table that could be a huge leaf with the leaf in place and flushes the slot once; 6.12 zapped those
   * tables instead (one flush per zap), leaving the huge mapping to the next fault.
   * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_recover_huge_pages
   */
  kvmMmuRecoverHugePages(slot: KvmMemorySlot): void {
    const vm = this.vm;
    const maxLevel = (gfn: number): number => kvmMmuMaxMappingLevel(vm, slot, gfn);
    const end = slot.baseGfn + slot.npages;
    if (vm.cfg.kernel < '6.13') {
      // kvm_mmu_zap_collapsible_sptes → kvm_tdp_mmu_zap_collapsible_sptes (v6.12)
      kvmTdpMmuZapCollapsibleSptes(this.tdp, slot.asId, slot.baseGfn, end, maxLevel);
    } else {
      // Each root's recover_huge_pages_range flushes the slot itself (kvm_flush_remote_tlbs_memslot).
      kvmTdpMmuRecoverHugePages(this.tdp, slot.asId, slot.baseGfn, end, maxLevel);
    }
    this.syncCounters();
  }

  /**
   * Every swap bumps the generation; MMIO SPTEs carry 19 bits of it. When those bits wrap, old MMIO
   * SPTEs could look current again, so everything is zapped.
   * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_invalidate_mmio_sptes
   */
  kvmMmuInvalidateMmioSptes(gen: number): void {
    let g = gen % (MMIO_SPTE_GEN_MASK + 1);
    g -= g % this.vm.nrAs; // the address-space modifier is not part of the MMIO generation
    if (g === 0) this.kvmMmuZapAllFast();
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_arch_mmu_enable_log_dirty_pt_masked */
  kvmArchMmuEnableLogDirtyPtMasked(slot: KvmMemorySlot, gfnOffset: number, mask: number): void {
    kvmTdpMmuClearDirtyPtMasked(this.tdp, slot.asId, slot.baseGfn + gfnOffset, mask, !this.vm.cfg.pml);
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_arch_flush_shadow_all */
  kvmArchFlushShadowAll(): void {
    kvmTdpMmuZapAll(this.tdp);
    this.syncCounters();
  }

  /** Nothing per slot on a TDP-only VM (no rmaps to free). @kernel arch/x86/kvm/x86.c#kvm_arch_free_memslot */
  kvmArchFreeMemslot(_slot: KvmMemorySlot): void {}

  /** Record that gfn was mapped; true if it had been mapped before (so this fault is a refault). */
  noteMapped(gfn: number): boolean {
    return this.everMapped.testAndSet(gfn);
  }

  /** Copy the engine's counters into the VM's stats and model counters. */
  syncCounters(): void {
    const s = this.vm.stats;
    const t = this.tdp;
    s.pages_4k = t.pages[0]!;
    s.pages_2m = t.pages[1]!;
    s.pages_1g = t.pages[2]!;
    const m = this.vm.model;
    m.sptes_zapped_4k = t.leafsZapped[0]!;
    m.sptes_zapped_2m = t.leafsZapped[1]!;
    m.sptes_zapped_1g = t.leafsZapped[2]!;
    let nonleaf = 0;
    for (let l = 0; l < 5; l++) nonleaf += t.sptesZapped[l]! - t.leafsZapped[l]!;
    m.sptes_zapped_nonleaf = nonleaf;
    m.pt_pages_allocated = t.spAllocated;
    m.pt_pages_freed = t.spFreed;
    m.roots_allocated = t.rootsAllocated;
  }

  /** Engine counters (inspection). */
  engineStats(): Record<string, number> {
    return tdpMmuStats(this.tdp);
  }
}
