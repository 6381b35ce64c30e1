/**
 * struct kvm for one VM: its memslot sets (two per address space), the counters the memslot code keeps,
 * the MMU-invalidation state, stats, vCPUs, and the arch hooks wired to x86/. The uAPI methods are on
 * kvm_main.ts#Vm, which extends this.
 *
 * Kernel counterpart: include/linux/kvm_host.h (struct kvm), virt/kvm/kvm_main.c#kvm_create_vm,
 * arch/x86/kvm/x86.c#kvm_arch_init_vm.
 */
import type { VmType } from '../uapi/kvm_x86.ts';
import type { HostConfig } from './host_profile.ts';
import type { Kvm } from './kvm_main.ts';
import type { KvmArchMemslotHooks, KvmMemorySlot } from './kvm_host.ts';
import type { ErrnoName } from '../uapi/errno.ts';
import type { KvmMrChange } from '../uapi/kvm.ts';
import type { ModelFile } from './guest_memfd.ts';
import { KVM_REQ_OUTSIDE_GUEST_MODE, KVM_REQ_TLB_FLUSH, type Vcpu } from './vcpu.ts';
import { KvmMemslots } from './memslots.ts';
import { asGfn } from '../types/addr.ts';
import { KvmError } from './kvm_error.ts';
import { argInt, argOneOf, argOpts, formatValue } from './args.ts';
import { RangeMap } from './range_map.ts';
import { newModelVmCounters, newVmStats, type ModelVmCounterName } from './kvm_stats.ts';
import { vmTypeInfo, type VmTypeInfo } from '../x86/vm_types.ts';
import {
  initialDisabledQuirks,
  kvmArchCommitMemoryRegion,
  kvmArchFlushShadowMemslot,
  kvmArchPrepareMemoryRegion,
  tdxGfnDirectBits,
  type KvmArch,
  type ZapDesign,
} from '../x86/x86.ts';
import type { KvmMmuOps } from '../x86/mmu_ops.ts';
import { createMmu } from '../x86/mmu/mmu_create.ts';
import { KvmMmuNotifier } from './mmu_notifier.ts';
import { sevGuestMemoryReclaimed } from '../x86/sev.ts';

export interface VmOptions {
  /** How DELETE/MOVE choose between zap-all and precise zap: the 6.12+ quirk (default), the VM type, or the RFC slot flag. */
  zapDesign?: ZapDesign;
}

/** Check createVm's model options (not a kernel argument: a bad one is a TypeError). */
export function validateVmOptions(opts: unknown): asserts opts is VmOptions {
  const o = argOpts('createVm', opts, ['zapDesign']);
  if (o['zapDesign'] !== undefined) argOneOf('createVm', 'zapDesign', o['zapDesign'], ZAP_DESIGNS);
}
const ZAP_DESIGNS = ['quirk', 'vm-type', 'slot-flag'] as const;

/** A recorded WARN_ON_ONCE / KVM_BUG_ON. */
export interface KvmWarning {
  kind: 'warn' | 'bug';
  id: string;
  message: string;
}

export class VmState implements KvmArchMemslotHooks {
  readonly kvm: Kvm;
  readonly id: number;
  readonly fd: number;
  readonly type: VmType;
  readonly info: VmTypeInfo;
  readonly cfg: HostConfig;
  readonly zapDesign: ZapDesign;
  readonly kernel: string;
  readonly hasPrivateMem: boolean;
  /** kvm_arch_nr_memslot_as_ids() */
  readonly nrAs: number;
  readonly arch: KvmArch;
  /** kvm->__memslots[as][0..1] and which of the two is active */
  private readonly sets: [KvmMemslots, KvmMemslots][] = [];
  private readonly activeIdx: (0 | 1)[] = [];
  nrMemslotPages = 0;
  nrMemslotsDirtyLogging = 0;
  manualDirtyLogProtect = 0;
  dirtyRingSize = 0;
  readonly dirtyRingWithBitmap = false;
  createdVcpus = 0;
  /** kvm->mn_active_invalidate_count and the mmu_invalidate_* fields (virt/kvm/kvm_main.c). */
  mnActiveInvalidateCount = 0;
  mmuInvalidateInProgress = 0;
  mmuInvalidateSeq = 0;
  mmuInvalidateRangeStart = 0;
  mmuInvalidateRangeEnd = 0;
  /** kvm->mem_attr_array */
  readonly memAttrs = new RangeMap();
  readonly stats = newVmStats();
  readonly model = newModelVmCounters();
  readonly vcpus: Vcpu[] = [];
  /** kvm->devices: KVM_CREATE_DEVICE devices (the kvm-vfio device, kvm/kvm_vfio.ts) */
  readonly devices: { readonly name: string }[] = [];
  readonly warnings: KvmWarning[] = [];
  /** kvm->vm_dead (set by KVM_BUG_ON or a TDX fatal error): every ioctl then fails with EIO. */
  dead = false;
  /** The VM fd was closed: every ioctl on it is EBADF (the struct kvm lives on while vCPU fds hold it). */
  fdClosed = false;
  bugged = false;
  readonly mmu: KvmMmuOps;
  /** Model hook: runs while a DELETE/MOVE has its INVALID slot published (a concurrent vCPU's view). */
  onInvalidWindow: ((slot: KvmMemorySlot) => void) | undefined = undefined;
  /**
   * Model hook: runs once, at the first point where a zap that may block drops mmu_lock to reschedule (a
   * memslot flush, or a blockable MMU-notifier zap): a concurrent vCPU's or notifier's view of the
   * half-done zap. Unset, the model never yields there. docs/simplifications.md says which resched
   * point each walk uses.
   */
  onMmuLockDrop: ((resumeGfn?: number) => void) | undefined = undefined;
  /**
   * Stepping hook (explore/): asked at each resched point of a memslot flush while onMmuLockDrop is set,
   * "does anyone contend for mmu_lock here?" (need_resched / rwlock_needbreak). false = the loop goes on
   * without dropping the lock (and without the flush that only a yield forces). Unset = always yield.
   */
  mmuLockContended: (() => boolean) | undefined = undefined;
  /**
   * Stepping hook (explore/): the two waits in kvm_swap_active_memslots — 'mn-invalidate' before the
   * swap (for mn_active_invalidate_count to drop) and 'srcu' after publishing the new set
   * (synchronize_srcu: vCPUs that may still use the old set finish first). A scheduler runs other
   * threads there. Unset = no wait (the sequential model has no other thread).
   */
  onMemslotsWait: ((what: 'mn-invalidate' | 'srcu') => void) | undefined = undefined;
  get hooks(): KvmArchMemslotHooks {
    return this;
  }

  constructor(kvm: Kvm, id: number, fd: number, type: VmType, opts: VmOptions) {
    validateVmOptions(opts);
    const design = opts.zapDesign ?? 'quirk';
    this.kvm = kvm;
    this.id = id;
    this.fd = fd;
    this.type = type;
    this.cfg = kvm.cfg;
    this.kernel = kvm.cfg.kernel;
    this.info = vmTypeInfo(type);
    this.hasPrivateMem = this.info.hasPrivateMem;
    this.zapDesign = design;
    // Two address spaces (normal + SMM) only with SMM support and without private memory.
    this.nrAs = this.cfg.smm && !this.info.hasPrivateMem ? 2 : 1;
    // kvm_create_vm initializes every possible address space, generation = as_id, before the arch knows
    // the VM type; ids beyond nrAs are simply never used.
    for (let as = 0; as < this.nrAs; as++) {
      this.sets.push([new KvmMemslots(0, as), new KvmMemslots(1, as)]);
      this.activeIdx.push(0);
    }
    this.arch = {
      info: this.info,
      cfg: this.cfg,
      zapDesign: design,
      disabledQuirks: initialDisabledQuirks(this.cfg, this.info),
      gfnDirectBits: this.info.hasMirroredTdp ? tdxGfnDirectBits(this.cfg) : 0,
      nRequestedMmuPages: 0,
      nMaxMmuPages: 64,
      noncoherentDmaCount: 0,
    };
    this.mmu = createMmu(this);
    // kvm_init_mmu_notifier(): from now on host mm events reach this VM.
    kvm.host.registerNotifier(new KvmMmuNotifier(this));
  }

  activeMemslots(asId: number): KvmMemslots {
    const s = this.sets[asId];
    if (s === undefined)
      throw new RangeError(
        `memslots: address space ${formatValue(asId)} does not exist (VM has ${this.nrAs})`,
      );
    return s[this.activeIdx[asId]!];
  }
  inactiveMemslots(asId: number): KvmMemslots {
    return this.sets[asId]![(this.activeIdx[asId]! ^ 1) as 0 | 1];
  }
  flipActive(asId: number): void {
    this.activeIdx[asId] = (this.activeIdx[asId]! ^ 1) as 0 | 1;
  }

  /** Current generation of an address space's active memslot set. */
  memslotsGeneration(asId = 0): number {
    return this.activeMemslots(argInt('memslotsGeneration', 'asId', asId, 0, this.nrAs - 1)).generation;
  }

  /** The active slots of an address space in gfn order (inspection; not a kernel interface). */
  memslots(asId = 0): KvmMemorySlot[] {
    return this.activeMemslots(argInt('memslots', 'asId', asId, 0, this.nrAs - 1)).all();
  }

  lookupFd(fd: number): ModelFile | undefined {
    return this.kvm.lookupFd(fd);
  }

  checkAlive(syscall: string): void {
    if (this.fdClosed) throw new KvmError('EBADF', syscall, `VM fd ${this.fd} is closed`);
    if (this.dead) throw new KvmError('EIO', syscall, 'the VM is dead (bugged or killed)');
  }

  countModel(name: ModelVmCounterName, n = 1): void {
    this.model[name] += n;
  }

  /** WARN_ON_ONCE: record, continue. Returns cond so it can sit in an if, as in the kernel. */
  warnOnce(cond: boolean, id: string, message: string): boolean {
    if (cond && !this.warnings.some((w) => w.id === id)) this.warnings.push({ kind: 'warn', id, message });
    return cond;
  }

  /** KVM_BUG_ON: mark the VM bugged and dead; later ioctls fail with EIO. */
  kvmBugOn(cond: boolean, id: string, message: string): boolean {
    if (cond) {
      this.warnings.push({ kind: 'bug', id, message });
      this.bugged = true;
      this.dead = true;
    }
    return cond;
  }

  /** @kernel virt/kvm/kvm_main.c#kvm_mmu_invalidate_begin */
  mmuInvalidateBegin(): void {
    this.mmuInvalidateInProgress++;
    if (this.mmuInvalidateInProgress === 1) {
      this.mmuInvalidateRangeStart = -1; // INVALID_GPA
      this.mmuInvalidateRangeEnd = -1;
    }
  }

  /** @kernel virt/kvm/kvm_main.c#kvm_mmu_invalidate_range_add */
  mmuInvalidateRangeAdd(start: number, end: number): void {
    if (this.mmuInvalidateRangeStart === -1) {
      this.mmuInvalidateRangeStart = start;
      this.mmuInvalidateRangeEnd = end;
    } else {
      // Fully tracking multiple ranges isn't worth it: widen to cover all of them.
      this.mmuInvalidateRangeStart = Math.min(this.mmuInvalidateRangeStart, start);
      this.mmuInvalidateRangeEnd = Math.max(this.mmuInvalidateRangeEnd, end);
    }
  }

  /**
   * Widen the in-progress invalidation to [start, end) of `slot`, then zap its mappings there; true if a
   * TLB flush is owed. The one step the MMU notifier, attribute conversions and guest_memfd hole
   * punching share.
   * @kernel virt/kvm/kvm_main.c#kvm_mmu_unmap_gfn_range
   */
  kvmMmuUnmapGfnRange(
    slot: KvmMemorySlot,
    start: number,
    end: number,
    attrFilter: number,
    mayBlock = true,
  ): boolean {
    this.mmuInvalidateRangeAdd(start, end);
    return this.mmu.kvmUnmapGfnRange({
      slot,
      start: asGfn(start),
      end: asGfn(end),
      attrFilter,
      mayBlock,
    });
  }

  /** @kernel virt/kvm/kvm_main.c#kvm_mmu_invalidate_end */
  mmuInvalidateEnd(): void {
    // The sequence count moves before in_progress drops, so a fault that snapshotted the old count retries.
    this.mmuInvalidateSeq++;
    this.mmuInvalidateInProgress--;
    this.kvmBugOn(
      this.mmuInvalidateInProgress < 0,
      'INV-NOTIFIER-001',
      'mmu_invalidate_in_progress went negative',
    );
  }

  /**
   * A zap loop reaches a resched point holding `flush` (zapped SPTEs not yet flushed). If a concurrent
   * party waits (onMmuLockDrop is set), the loop flushes first when it is written to (flush_on_yield),
   * drops mmu_lock and lets the party run. Returns what the loop still owes.
   * @kernel arch/x86/kvm/mmu/mmu.c#__walk_slot_rmaps (cond_resched_rwlock_write; tdp_mmu_iter_cond_resched)
   */
  mmuLockYield(flush: boolean, flushOnYield: boolean): boolean {
    const party = this.onMmuLockDrop;
    if (party === undefined) return flush;
    if (this.mmuLockContended !== undefined && !this.mmuLockContended()) return flush;
    if (flush && flushOnYield) {
      this.flushRemoteTlbs();
      flush = false;
    }
    this.runMmuLockParty();
    return flush;
  }

  /**
   * mmu_lock is dropped: the waiting party (onMmuLockDrop, taken off first) runs. `resumeGfn`: where a
   * TDP walk that yielded inside its SPTE walk resumes (the gfns from there on are not zapped yet).
   */
  runMmuLockParty(resumeGfn?: number): void {
    const party = this.onMmuLockDrop;
    if (party === undefined) return;
    this.onMmuLockDrop = undefined;
    party(resumeGfn);
  }

  /**
   * Every vCPU flushes before it runs the guest again. remote_tlb_flush counts only a flush that reached a
   * vCPU in the guest (an IPI went out): kvm_arch_flush_remote_tlbs has no hook on the modelled hosts
   * (no Hyper-V enlightened flush), so kvm_make_all_cpus_request decides.
   * @kernel virt/kvm/kvm_main.c#kvm_flush_remote_tlbs
   */
  flushRemoteTlbs(): void {
    this.stats.remote_tlb_flush_requests++;
    if (this.kvmMakeAllCpusRequest(KVM_REQ_TLB_FLUSH)) this.stats.remote_tlb_flush++;
  }

  /**
   * Set `req` on every vCPU and IPI those kvm_request_needs_ipi picks; true if any IPI was sent. Each
   * vCPU is taken to run on its own pCPU, and the requester is never one of them (a vCPU handling its
   * own exit is OUTSIDE_GUEST_MODE). TLB-flush IPIs are counted in tlb_flush_ipis.
   * @kernel virt/kvm/kvm_main.c#kvm_make_all_cpus_request
   */
  kvmMakeAllCpusRequest(req: number): boolean {
    let ipis = 0;
    for (const v of this.vcpus) {
      if (!(req & KVM_REQ_OUTSIDE_GUEST_MODE)) v.makeRequest(req); // KVM_REQUEST_NO_ACTION
      if (v.kvmRequestNeedsIpi(req)) ipis++;
    }
    if (req & KVM_REQ_TLB_FLUSH) this.model.tlb_flush_ipis += ipis;
    return ipis > 0;
  }

  enableLogDirtyPtMasked(slot: KvmMemorySlot, offset: number, mask: number): void {
    this.mmu.kvmArchMmuEnableLogDirtyPtMasked(slot, offset, mask);
  }

  kvmArchFreeMemslot(slot: KvmMemorySlot): void {
    this.mmu.kvmArchFreeMemslot(slot);
  }

  // ---- KvmArchMemslotHooks: the x86 implementations ------------------------------------------

  kvmArchPrepareMemoryRegion(
    old: KvmMemorySlot | null,
    nu: KvmMemorySlot | null,
    change: KvmMrChange,
  ): ErrnoName | null {
    return kvmArchPrepareMemoryRegion(this, old, nu, change);
  }
  kvmArchFlushShadowMemslot(old: KvmMemorySlot): void {
    kvmArchFlushShadowMemslot(this, old);
  }
  kvmArchCommitMemoryRegion(old: KvmMemorySlot | null, nu: KvmMemorySlot | null, change: KvmMrChange): void {
    kvmArchCommitMemoryRegion(this, old, nu, change);
  }
  /** @kernel arch/x86/kvm/x86.c#kvm_arch_guest_memory_reclaimed */
  kvmArchGuestMemoryReclaimed(): void {
    sevGuestMemoryReclaimed(this);
  }
  /**
   * After every memslot swap (so twice for DELETE and MOVE): invalidate MMIO SPTEs if the generation
   * wrapped, then kvm_vcpu_kick every vCPU ("force re-initialization of steal_time cache"). No request is
   * made: a vCPU in the guest just takes the IPI's exit and re-enters (Vcpu.kick).
   * @kernel arch/x86/kvm/x86.c#kvm_arch_memslots_updated
   */
  kvmArchMemslotsUpdated(_asId: number, gen: number): void {
    this.mmu.kvmMmuInvalidateMmioSptes(gen);
    for (const v of this.vcpus) v.kick();
  }
}
