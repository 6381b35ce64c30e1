/**
 * Intel TDX as KVM drives it for one TD: the TD's lifecycle (initialized → runnable at
 * KVM_TDX_FINALIZE_VM), its HKID, the Secure EPT as the TDX module keeps it (which private gfns it maps,
 * and whether the guest has accepted each page), and the external page-table hooks the TDP MMU calls on
 * mirror roots. Each hook issues the SEAMCALLs the kernel issues, counted per kind:
 *   link_external_spt    TDH.MEM.SEPT.ADD                                  (a mirror table was linked)
 *   set_external_spte    TDH.MEM.PAGE.AUG once the TD runs (page PENDING until the guest accepts it),
 *                        TDH.MEM.PAGE.ADD before (KVM_TDX_INIT_MEM_REGION; page MAPPED, no accept)
 *   remove_external_spte TDH.MEM.RANGE.BLOCK, TDH.MEM.TRACK (once the TD runs), TDH.MEM.PAGE.REMOVE,
 *                        TDH.PHYMEM.PAGE.WBINVD, then the page is cleared: its content is gone
 *   free_external_spt    TDH.PHYMEM.PAGE.RECLAIM, legal only once the HKID is released (teardown)
 * So a runnable TD loses 4 SEAMCALLs per removed 4K private page (3 before it runs: no TRACK).
 *
 * Kernel counterpart: arch/x86/kvm/vmx/tdx.c (tdx_sept_link_private_spt, tdx_sept_set_private_spte,
 * tdx_mem_page_aug, tdx_mem_page_add, tdx_sept_remove_private_spte with tdx_sept_zap_private_spte,
 * tdx_track and tdx_sept_drop_private_spte, tdx_sept_free_private_spt, tdx_td_finalize, and
 * tdx_handle_ept_violation's "guest access before accepting" check).
 * Simplifications: SEAMCALLs never fail or contend (no TDX_OPERAND_BUSY, so no retry and no
 * kick-and-wait); 4K private pages only, as upstream; the TD is initialized at KVM_CREATE_VM (no
 * KVM_TDX_INIT_VM / INIT_VCPU) and the first guest access finalizes it if the VMM has not; no teardown
 * (HKID release, control-page reclaim). See docs/simplifications.md.
 */
import type { TdpExternalHooks } from './mmu/tdp_mmu_state.ts';
import type { VmState } from '../kvm/vm_state.ts';
import { KVM_REQ_OUTSIDE_GUEST_MODE } from '../kvm/vcpu.ts';
import type { AccessResult } from '../kvm/api_types.ts';
import { KvmError, hex } from '../kvm/kvm_error.ts';

export const TDX_SEAMCALLS = [
  'TDH.MEM.SEPT.ADD',
  'TDH.MEM.PAGE.AUG',
  'TDH.MEM.PAGE.ADD',
  'TDH.MR.EXTEND',
  'TDH.MR.FINALIZE',
  'TDH.MEM.RANGE.BLOCK',
  'TDH.MEM.TRACK',
  'TDH.MEM.PAGE.REMOVE',
  'TDH.PHYMEM.PAGE.WBINVD',
  'TDH.PHYMEM.PAGE.RECLAIM',
] as const;
export type TdxSeamcall = (typeof TDX_SEAMCALLS)[number];

/** S-EPT leaf state of a private gfn in the TDX module (the subset KVM can observe). */
export const SEPT_FREE = 0;
/** Mapped by TDH.MEM.PAGE.AUG; a guest access before TDG.MEM.PAGE.ACCEPT is a pending EPT violation. */
export const SEPT_PENDING = 1;
/** Mapped and usable: accepted by the guest, or added with TDH.MEM.PAGE.ADD before the TD ran. */
export const SEPT_MAPPED = 2;

const EIO = -5;
const EINVAL = -22;
const CHUNK_SHIFT = 16;
const CHUNK = 1 << CHUNK_SHIFT;

/** kvm_tdx->state, for the two states the model goes through. */
export type TdState = 'initialized' | 'runnable';

/** struct kvm_tdx (what the model needs) plus the TDX module's S-EPT leaf states for this TD. */
export class KvmTdx implements TdpExternalHooks {
  state: TdState = 'initialized';
  /** The TD's private key id is assigned from TD creation until teardown. */
  hkidAssigned = true;
  /** kvm_tdx->page_add_src: set only while KVM_TDX_INIT_MEM_REGION maps a page (TDH.MEM.PAGE.ADD). */
  pageAddSrc = false;
  readonly seamcalls = Object.fromEntries(TDX_SEAMCALLS.map((k) => [k, 0])) as Record<TdxSeamcall, number>;
  /** Private pages in the S-EPT, by state. */
  pendingPages = 0;
  mappedPages = 0;
  /** Guest TDG.MEM.PAGE.ACCEPT calls that accepted a page. */
  accepts = 0;
  /** Why the TD died, if a pending EPT violation killed it. */
  deadReason = '';
  /** S-EPT leaf state per private gfn, 65536 gfns per chunk. */
  private readonly sept = new Map<number, Uint8Array>();
  private lastKey = -1;
  private last: Uint8Array = new Uint8Array(0);

  constructor(readonly vm: VmState) {}

  private chunk(gfn: number, create: boolean): Uint8Array | undefined {
    const k = Math.floor(gfn / CHUNK);
    if (k === this.lastKey) return this.last;
    let c = this.sept.get(k);
    if (c === undefined) {
      if (!create) return undefined;
      this.sept.set(k, (c = new Uint8Array(CHUNK)));
    }
    this.lastKey = k;
    this.last = c;
    return c;
  }

  /** The S-EPT leaf state of private gfn (SEPT_FREE, SEPT_PENDING or SEPT_MAPPED). */
  septState(gfn: number): number {
    return this.chunk(gfn, false)?.[gfn % CHUNK] ?? SEPT_FREE;
  }

  /** The guest may touch gfn: its S-EPT leaf is mapped and accepted. */
  isAccepted(gfn: number): boolean {
    return this.septState(gfn) === SEPT_MAPPED;
  }

  private setSept(gfn: number, s: number): void {
    const c = this.chunk(gfn, true)!;
    const i = gfn % CHUNK;
    const old = c[i]!;
    if (old === SEPT_PENDING) this.pendingPages--;
    else if (old === SEPT_MAPPED) this.mappedPages--;
    if (s === SEPT_PENDING) this.pendingPages++;
    else if (s === SEPT_MAPPED) this.mappedPages++;
    c[i] = s;
  }

  /** KVM_BUG_ON(cond) with the message built only when it fires (these checks run on every fault). */
  private bug(cond: boolean, id: string, msg: () => string): boolean {
    return cond && this.vm.kvmBugOn(true, id, msg());
  }

  private seamcall(kind: TdxSeamcall): void {
    this.seamcalls[kind]++;
    this.vm.countModel('seamcalls');
  }

  /** TDH.MEM.SEPT.ADD: the TDX module gets the page-table page behind a new mirror table. @kernel arch/x86/kvm/vmx/tdx.c#tdx_sept_link_private_spt */
  linkExternalSpt(_gfn: number, _level: number, _externalSpt: number): number {
    this.seamcall('TDH.MEM.SEPT.ADD');
    return 0;
  }

  /**
   * A mirror leaf was installed. Before the TD runs only KVM_TDX_INIT_MEM_REGION maps private memory, with
   * TDH.MEM.PAGE.ADD (the page is measured content, mapped and usable); afterwards a fault maps it with
   * TDH.MEM.PAGE.AUG, and the page stays pending until the guest accepts it.
   * @kernel arch/x86/kvm/vmx/tdx.c#tdx_sept_set_private_spte
   */
  setExternalSpte(gfn: number, level: number, pfn: number): number {
    const vm = this.vm;
    if (
      this.bug(
        level !== 1,
        'INV-TDX-4K',
        () => `private mapping of gfn ${hex(gfn)} at level ${level}: TDX maps 4K only`,
      )
    )
      return EIO;
    if (this.state === 'runnable') {
      this.seamcall('TDH.MEM.PAGE.AUG');
      this.setSept(gfn, SEPT_PENDING);
      return 0;
    }
    // tdx_mem_page_add: only INIT_MEM_REGION may map before finalization; anything else is a KVM bug.
    if (
      this.bug(
        !this.pageAddSrc,
        'INV-TDX-PREFAULT',
        () => `private fault on gfn ${hex(gfn)} before the TD is finalized`,
      )
    )
      return EIO;
    this.seamcall('TDH.MEM.PAGE.ADD');
    vm.kvm.host.pfns.write(pfn); // the source page is copied in
    this.setSept(gfn, SEPT_MAPPED);
    return 0;
  }

  /**
   * A mirror leaf was zapped: block the gpa, track (new TD epoch, every vCPU kicked so none keeps an old
   * translation), remove the page from the S-EPT, write back and invalidate its cache lines under the
   * TD's key, and clear it. The guest's data is gone; a refault maps a page it must accept again.
   * @kernel arch/x86/kvm/vmx/tdx.c#tdx_sept_remove_private_spte
   */
  removeExternalSpte(gfn: number, level: number, pfn: number): number {
    const vm = this.vm;
    // The HKID is released only after every private page is gone: a removal without one is a KVM bug.
    if (
      this.bug(
        !this.hkidAssigned,
        'INV-TDX-HKID',
        () => `private page ${hex(gfn)} removed after the HKID was released`,
      )
    )
      return EINVAL;
    if (
      this.bug(
        level !== 1,
        'INV-TDX-4K',
        () => `private leaf of gfn ${hex(gfn)} at level ${level}: TDX maps 4K only`,
      )
    )
      return EIO;
    this.seamcall('TDH.MEM.RANGE.BLOCK');
    // tdx_track: before the TD runs no vCPU can hold a translation, so there is nothing to track.
    if (this.state === 'runnable') {
      this.seamcall('TDH.MEM.TRACK');
      // Every vCPU out of the guest (an IPI, so a VM exit, for those in it); the TDX module flushes the
      // TD's TLB at the next entry (new epoch), which the model serves as a TLB-flush request.
      vm.kvmMakeAllCpusRequest(KVM_REQ_OUTSIDE_GUEST_MODE);
      for (const v of vm.vcpus) v.requestTlbFlush();
    }
    this.seamcall('TDH.MEM.PAGE.REMOVE');
    // Cache lines still tagged with the TD's key must not be written back over the host's later use.
    this.seamcall('TDH.PHYMEM.PAGE.WBINVD');
    vm.kvm.host.pfns.write(pfn); // tdx_clear_page: MOVDIR64B zeroes, the content is lost
    this.setSept(gfn, SEPT_FREE);
    vm.countModel('tdx_private_pages_removed');
    return 0;
  }

  /**
   * A mirror page table is being freed. KVM never frees S-EPT tables while the TD is live (the TDX module
   * could still walk them); only after the HKID is released may the page be reclaimed.
   * @kernel arch/x86/kvm/vmx/tdx.c#tdx_sept_free_private_spt
   */
  freeExternalSpt(gfn: number, level: number, _externalSpt: number): number {
    if (
      this.vm.kvmBugOn(
        this.hkidAssigned,
        'INV-TDX-FREE-SPT',
        `S-EPT table at gfn ${hex(gfn)} level ${level} freed while the TD is live`,
      )
    )
      return EINVAL;
    this.seamcall('TDH.PHYMEM.PAGE.RECLAIM');
    return 0;
  }

  /** KVM_TDX_FINALIZE_VM: the initial image is measured and fixed; vCPUs may run. @kernel arch/x86/kvm/vmx/tdx.c#tdx_td_finalize */
  finalize(syscall = 'KVM_TDX_FINALIZE_VM'): void {
    if (!this.hkidAssigned || this.state === 'runnable')
      throw new KvmError('EINVAL', syscall, `TD state is ${this.state}: already finalized`);
    this.seamcall('TDH.MR.FINALIZE');
    this.state = 'runnable';
  }

  /** TDH.MR.EXTEND over one 4K page: 16 chunks of 256 bytes. */
  measurePage(): void {
    for (let i = 0; i < 16; i++) this.seamcall('TDH.MR.EXTEND');
  }

  /** TDG.MEM.PAGE.ACCEPT completed on a pending page: the TDX module zeroes it and maps it for the guest. */
  acceptPending(gfn: number, pfn: number): void {
    this.setSept(gfn, SEPT_MAPPED);
    this.vm.kvm.host.pfns.write(pfn);
    this.accepts++;
  }

  /**
   * The guest touched a private page that is mapped but not accepted. With SEPT_VE_DISABLE (the only TD
   * attribute KVM supports) the TDX module exits instead of injecting #VE, and KVM kills the VM: every
   * later ioctl fails with EIO.
   * @kernel arch/x86/kvm/vmx/tdx.c#tdx_handle_ept_violation
   */
  pendingEptViolation(gpa: number): AccessResult {
    const vm = this.vm;
    vm.countModel('tdx_unaccepted_accesses');
    this.deadReason = `guest access before accepting ${hex(gpa)} (pending S-EPT entry, SEPT_VE_DISABLE)`;
    vm.dead = true; // kvm_vm_dead
    return { exit: 'vm_dead', gpa, reason: this.deadReason };
  }

  /** Per-SEAMCALL counts and S-EPT page states (inspection). */
  stats(): Record<string, number> {
    return {
      ...this.seamcalls,
      pending_pages: this.pendingPages,
      mapped_pages: this.mappedPages,
      accepts: this.accepts,
    };
  }
}

/** tdx_vm_init: the TD's TDX state, whose hooks the caller installs on the TDP MMU. @kernel arch/x86/kvm/vmx/tdx.c#tdx_vm_init */
export function tdxVmInit(vm: VmState): KvmTdx {
  const tdx = new KvmTdx(vm);
  vm.arch.tdx = tdx;
  return tdx;
}
