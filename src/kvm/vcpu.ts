/**
 * A vCPU fd: its stats and the requests other code makes of it (TLB flush, free obsolete roots, kicks).
 * The guest-access path (vcpu.access) is added by the MMU layer.
 *
 * Kernel counterpart: struct kvm_vcpu (include/linux/kvm_host.h), kvm_make_request / kvm_vcpu_kick.
 */
import type { VmState } from './vm_state.ts';
import type { KvmMemorySlot } from './kvm_host.ts';
import { LAST_USED_SLOT, LAST_USED_SLOT_GEN } from './memslots.ts';
import { Tlb } from '../host/tlb.ts';
import type {
  AccessBatchOptions,
  AccessBatchResult,
  AccessHit,
  AccessKind,
  AccessResult,
} from './api_types.ts';
import { accessList, accessRange } from './access_batch.ts';
import { exportStats, newVcpuStats, VCPU_STAT_NAMES, VCPU_STAT_NAMES_PVM } from './kvm_stats.ts';
import {
  kvmMtrrGetMsr,
  kvmMtrrSetMsr,
  mtrrDefTypeValue,
  mtrrVarValues,
  newVcpuMemtypeState,
  MSR_MTRRdefType,
  MSR_MTRRphysBase0,
} from '../x86/mtrr.ts';
import { cr0FromArg, kvmSetCr0, type Cr0Arg } from '../x86/memtype.ts';
import { tdgMemPageAccept, type TdxAcceptResult } from '../x86/tdx_mem.ts';
import { snpPvalidate, type PvalidateResult } from '../x86/sev.ts';
import { KvmError } from './kvm_error.ts';
import {
  argBool,
  argInt,
  argOpts,
  argU64Big,
  formatValue,
  isPlainObject,
  readAccessKind,
  readAccessOpts,
  readGpa,
} from './args.ts';

/** KVM_REQ_* bits the model uses (arch/x86/include/asm/kvm_host.h). */
export const KVM_REQ_TLB_FLUSH = 1 << 0;
export const KVM_REQ_MMU_FREE_OBSOLETE_ROOTS = 1 << 1;
/**
 * KVM_REQUEST_NO_ACTION | KVM_REQUEST_WAIT | KVM_REQUEST_NO_WAKEUP: only gets every vCPU out of the guest
 * (tdx_track); kvm_make_all_cpus_request never sets it in vcpu->requests.
 */
export const KVM_REQ_OUTSIDE_GUEST_MODE = 1 << 2;
/**
 * Request flags (include/linux/kvm_host.h): KVM_REQ_TLB_FLUSH, KVM_REQ_MMU_FREE_OBSOLETE_ROOTS and
 * KVM_REQ_OUTSIDE_GUEST_MODE are all KVM_REQUEST_WAIT | KVM_REQUEST_NO_WAKEUP.
 */
const MODEL_REQ_WAIT = KVM_REQ_TLB_FLUSH | KVM_REQ_MMU_FREE_OBSOLETE_ROOTS | KVM_REQ_OUTSIDE_GUEST_MODE;

/** vcpu->mode values (include/linux/kvm_host.h). */
export const OUTSIDE_GUEST_MODE = 0;
export const IN_GUEST_MODE = 1;
export const EXITING_GUEST_MODE = 2;
export const READING_SHADOW_PAGE_TABLES = 3;
export type VcpuMode = 0 | 1 | 2 | 3;

/** Where the MMU's fast path leaves what an access reached (read at once). */
const fastHit: AccessHit = { pfn: 0, level: 1, memtype: 0 };

export class Vcpu {
  readonly vm: VmState;
  readonly vcpuId: number;
  readonly fd: number;
  readonly stats = newVcpuStats();
  /** vcpu->requests */
  requests = 0;
  /** kvm_vcpu_kick() count (model counter). */
  kicks = 0;
  /**
   * vcpu->mode: IN_GUEST_MODE while the guest executes (from VM entry to the next VM exit), OUTSIDE while
   * KVM handles an exit or the vCPU thread is out of KVM_RUN. A remote flush IPIs only vCPUs that are not
   * OUTSIDE (kvm_request_needs_ipi), and counts remote_tlb_flush only if it sent one.
   */
  mode: VcpuMode = OUTSIDE_GUEST_MODE;
  /**
   * Model knob: the vCPU thread stays in KVM_RUN between accesses (a guest that keeps executing while
   * other threads change memslots or host mappings), so after an access that did not exit to userspace
   * the vCPU is IN_GUEST_MODE. Off (the default), each access is one KVM_RUN that returns, as with the
   * real-KVM harness: the vCPU is outside the guest between accesses. Scenarios turn it on.
   */
  running = false;
  /** struct kvm_mmu's roots (pool indexes, -1 = INVALID_PAGE) */
  readonly mmu = { root: -1, mirrorRoot: -1 };
  /** The vCPU's TLB: translations survive until a flush or a root load reaches it. */
  readonly tlb = new Tlb();
  /** HF_SMM_MASK: the vCPU uses address space 1 while in SMM. */
  smm = false;
  /** Guest CR3 (vcpu->arch.cr3): the guest's page-table root; used by the shadow MMU (4-level paging). */
  cr3 = 0;
  /** Memory-type inputs: guest CR0 (reset: CD=NW=1), MTRRs and PAT (vcpu->arch.cr0, mtrr_state, pat). */
  readonly memtype = newVcpuMemtypeState();
  /** The vCPU fd was closed: KVM_RUN and the register ioctls are EBADF. */
  fdClosed = false;
  /** vcpu->last_used_slot, last_used_slot_gen: kvm_vcpu_gfn_to_memslot's cache (KvmMemslots.vcpuGfnToMemslot). */
  [LAST_USED_SLOT]: KvmMemorySlot | null = null;
  [LAST_USED_SLOT_GEN] = 0;

  constructor(vm: VmState, vcpuId: number, fd: number) {
    this.vm = vm;
    this.vcpuId = vcpuId;
    this.fd = fd;
  }

  /** The memslot address space the vCPU currently uses. @kernel arch/x86/include/asm/kvm_host.h#kvm_arch_vcpu_memslots_id */
  asId(): number {
    return this.smm && this.vm.nrAs > 1 ? 1 : 0;
  }

  /**
   * The guest touches gpa. Returns the host page it reached (pfn, leaf level, EPT memtype) or the exit
   * KVM would produce. `private` overrides how the access is classified on private-memory VMs (SNP's
   * C-bit); by default SW_PROTECTED/SNP accesses follow the gfn's attribute and TDX accesses the GPA's
   * shared bit. On a VM without private memory (DEFAULT) `private` changes nothing: KVM never sees a
   * private fault there (only SNP, TDX and SW_PROTECTED set PFERR_PRIVATE_ACCESS), on either MMU.
   */
  access(gpa: number, kind: AccessKind, opts?: { private?: boolean }): AccessResult {
    if (this.fdClosed) closedFd('KVM_RUN', this.fd);
    // Cheap checks first: the hot path pays two typeofs and a compare.
    if (typeof gpa !== 'number' || !(gpa >= 0 && gpa < 2 ** 52) || !Number.isInteger(gpa))
      readGpa('access', gpa);
    if (kind !== 'read' && kind !== 'write' && kind !== 'exec') readAccessKind('access', kind);
    // The MMU's fast path makes what it can (an exec or an access with options never) with the same
    // effects as the full path below, or nothing at all.
    const mmu = this.vm.mmu;
    if (
      opts === undefined &&
      kind !== 'exec' &&
      mmu.vcpuAccessFast !== undefined &&
      mmu.vcpuAccessFast(this, gpa, kind === 'write', fastHit)
    )
      return { exit: 'none', pfn: fastHit.pfn, level: fastHit.level, memtype: fastHit.memtype };
    return this.afterAccess(
      this.vm.mmu.vcpuAccess(
        this,
        gpa,
        kind,
        opts === undefined ? undefined : readAccessOpts('access', opts),
      ),
    );
  }

  private afterAccess(r: AccessResult): AccessResult {
    this.accessEnded(r.exit === 'none');
    return r;
  }

  /**
   * Where the vCPU is once an access is over: still in the guest (running, and the access completed) or
   * out of KVM_RUN. vcpu.access and the batched calls both end each access here.
   */
  accessEnded(completed: boolean): void {
    this.mode = this.running && completed ? IN_GUEST_MODE : OUTSIDE_GUEST_MODE;
  }

  /**
   * `count` accesses at gpa, gpa + stride, … (stride 4096 unless given) in one call: the same results and
   * stats as calling access() for each in order, without an object per access. Totals come back; each
   * access's exit/pfn/level/memtype go to `opts.out` typed arrays and `opts.onResult` if given.
   */
  accessRange(gpa: number, count: number, kind: AccessKind, opts?: AccessBatchOptions): AccessBatchResult {
    if (this.fdClosed) closedFd('KVM_RUN', this.fd);
    return accessRange(this, gpa, count, kind, opts);
  }

  /** One access per entry of gpas, in order, in one call: as accessRange. */
  accessList(gpas: ArrayLike<number>, kind: AccessKind, opts?: AccessBatchOptions): AccessBatchResult {
    if (this.fdClosed) closedFd('KVM_RUN', this.fd);
    return accessList(this, gpas, kind, opts);
  }

  /**
   * TDX guest: TDG.MEM.PAGE.ACCEPT of the private page at gpa (4K). A page KVM augmented is accepted (and
   * zeroed); an unmapped one is faulted in first (EPT violation → TDH.MEM.PAGE.AUG). A private access
   * before the accept kills the TD. See x86/tdx_mem.ts.
   */
  tdxAccept(gpa: number): TdxAcceptResult {
    if (this.fdClosed) closedFd('KVM_RUN', this.fd);
    if (this.vm.arch.tdx === undefined)
      throw new TypeError(`tdxAccept: TDG.MEM.PAGE.ACCEPT needs a TD (VM type ${this.vm.info.name})`);
    return tdgMemPageAccept(this, readGpa('tdxAccept', gpa));
  }

  /** SNP guest: PVALIDATE of the private page at gpa (faulted in if needed); sets the RMP validated bit. */
  snpPvalidate(gpa: number, validate = true): PvalidateResult {
    if (this.fdClosed) closedFd('KVM_RUN', this.fd);
    const snp = this.vm.arch.snp;
    if (snp === undefined)
      throw new TypeError(`snpPvalidate: PVALIDATE needs an SNP guest (VM type ${this.vm.info.name})`);
    const g = readGpa('snpPvalidate', gpa);
    return snpPvalidate(this, snp, g, argBool('snpPvalidate', 'validate', validate, true));
  }

  /**
   * The guest writes CR0: a whole value, or `{ cd, nw? }` (NW follows CD unless given). Returns 0, or 1
   * when the write #GPs. @kernel arch/x86/kvm/x86.c#kvm_set_cr0
   */
  setCr0(cr0: Cr0Arg): number {
    if (this.fdClosed) closedFd('KVM_SET_SREGS', this.fd);
    return kvmSetCr0(this, cr0FromArg(this, readCr0Arg(cr0)));
  }

  /** WRMSR of an MTRR or PAT MSR; 0, or 1 when it #GPs. @kernel arch/x86/kvm/mtrr.c#kvm_mtrr_set_msr */
  setMsr(index: number, data: number | bigint): number {
    if (this.fdClosed) closedFd('KVM_SET_MSRS', this.fd);
    const i = argInt('setMsr', 'index', index, 0, 0xffffffff);
    return kvmMtrrSetMsr(this, i, argU64Big('setMsr', 'data', data));
  }

  /** RDMSR of an MTRR or PAT MSR. @kernel arch/x86/kvm/mtrr.c#kvm_mtrr_get_msr */
  getMsr(index: number): bigint {
    if (this.fdClosed) closedFd('KVM_GET_MSRS', this.fd);
    return kvmMtrrGetMsr(this, argInt('getMsr', 'index', index, 0, 0xffffffff));
  }

  /** WRMSR(MTRRdefType): the default type, MTRRs enabled unless `enabled: false`, fixed ranges if `fixed`. */
  setMtrrDefType(type: number, opts: { enabled?: boolean; fixed?: boolean } = {}): number {
    const t = argInt('setMtrrDefType', 'type', type, 0, 0xff);
    const o = argOpts('setMtrrDefType', opts, ['enabled', 'fixed']);
    const enabled = argBool('setMtrrDefType', 'enabled', o['enabled'], true);
    const fixed = argBool('setMtrrDefType', 'fixed', o['fixed'], false);
    return this.setMsr(MSR_MTRRdefType, mtrrDefTypeValue(t, { enabled, fixed }));
  }

  /** WRMSR of variable MTRR i (PhysBase, then PhysMask): [base, base + size) as `type`, or null to disable. */
  setMtrrVar(i: number, range: { base: number; size: number; type: number } | null): number {
    argInt('setMtrrVar', 'i', i, 0, 7);
    if (range !== null) {
      const r = argOpts('setMtrrVar', range, ['base', 'size', 'type']);
      argInt('setMtrrVar', 'base', r['base']);
      argInt('setMtrrVar', 'size', r['size']);
      argInt('setMtrrVar', 'type', r['type'], 0, 0xff);
    }
    const [base, mask] = mtrrVarValues(this, range);
    return this.setMsr(MSR_MTRRphysBase0 + 2 * i, base) || this.setMsr(MSR_MTRRphysBase0 + 2 * i + 1, mask);
  }

  /**
   * The guest loads CR3 (MOV CR3): on a shadow-paging host the vCPU then runs on the tables at gpa, and
   * vcpu.access takes guest virtual addresses. @kernel arch/x86/kvm/x86.c#kvm_set_cr3
   */
  setCr3(gpa: number): void {
    if (this.fdClosed) closedFd('KVM_SET_SREGS', this.fd);
    if (readGpa('setCr3', gpa) % 4096)
      throw new RangeError(`setCr3: CR3 0x${gpa.toString(16)} is not a page-aligned gpa`);
    this.cr3 = gpa;
    (this.vm.mmu as { kvmMmuNewPgd?(v: Vcpu): void }).kvmMmuNewPgd?.(this);
  }

  /**
   * Start an access whose EPT violation runs the fault up to the point where it has its pfn and has not
   * yet taken mmu_lock (after kvm_mmu_faultin_pfn); `finish()` takes the lock, rechecks staleness,
   * installs the SPTE and completes the access. Between the two the caller can run what a concurrent
   * thread would (host mm events, memslot updates): the race is_page_fault_stale exists for.
   */
  beginAccess(gpa: number, kind: AccessKind): { finish(): AccessResult } {
    if (this.fdClosed) closedFd('KVM_RUN', this.fd);
    const g = readGpa('beginAccess', gpa);
    const k = readAccessKind('beginAccess', kind);
    const begin = this.vm.mmu.vcpuBeginAccess;
    if (begin === undefined)
      throw new TypeError('beginAccess: stepwise faults are modelled for the TDP MMU only');
    const step = begin.call(this.vm.mmu, this, g, k);
    return { finish: () => this.afterAccess(step.finish()) };
  }

  /**
   * The explorer's stepping hook: one attempt at an access, stopped where the kernel lets other threads
   * in. `result` is set when no fault was needed; otherwise `finish()` runs the locked half of the fault
   * and returns the exit, or null when the guest re-executes the instruction (then call again). Null
   * where the MMU does not model it (the shadow MMU: use access()).
   */
  accessStep(
    gpa: number,
    kind: AccessKind,
  ): { result: AccessResult | null; finish(): AccessResult | null } | null {
    if (this.fdClosed) closedFd('KVM_RUN', this.fd);
    const g = readGpa('accessStep', gpa);
    const k = readAccessKind('accessStep', kind);
    const begin = this.vm.mmu.vcpuAccessStep;
    if (begin === undefined) return null;
    const step = begin.call(this.vm.mmu, this, g, k);
    // Each attempt ends where vcpu.access's would (accessEnded): a re-execution leaves KVM_RUN's loop
    // outside guest mode until the next attempt's VM entry.
    if (step.result !== null) {
      this.accessEnded(step.result.exit === 'none');
      return step;
    }
    return {
      result: null,
      finish: () => {
        const r = step.finish();
        this.accessEnded(r !== null && r.exit === 'none');
        return r;
      },
    };
  }

  /** kvm_make_request(KVM_REQ_TLB_FLUSH, vcpu) */
  requestTlbFlush(): void {
    this.requests |= KVM_REQ_TLB_FLUSH;
  }

  /** kvm_make_request(req, vcpu) */
  makeRequest(req: number): void {
    this.requests |= req;
  }

  /**
   * Whether a request must IPI this vCPU: a waiting request (TLB flush, free obsolete roots) must wait for
   * any vCPU not OUTSIDE_GUEST_MODE (also one reading shadow page tables locklessly), others only kick
   * one IN_GUEST_MODE. kvm_vcpu_exiting_guest_mode() moves IN_GUEST_MODE to EXITING_GUEST_MODE on the way.
   * @kernel virt/kvm/kvm_main.c#kvm_request_needs_ipi
   */
  kvmRequestNeedsIpi(req: number): boolean {
    const mode = this.mode;
    if (mode === IN_GUEST_MODE) {
      this.mode = EXITING_GUEST_MODE; // kvm_vcpu_exiting_guest_mode: cmpxchg
      // Every request that gets here IPIs a vCPU in the guest, and the IPI is an external-interrupt VM
      // exit. The vCPU stays EXITING until its next access, where the model enters the guest again and
      // services the request (a further IPI before that finds it out of the guest: no second exit).
      this.stats.exits++;
      this.stats.irq_exits++;
    }
    if (req & MODEL_REQ_WAIT) return mode !== OUTSIDE_GUEST_MODE;
    return mode === IN_GUEST_MODE;
  }

  /**
   * kvm_vcpu_kick(vcpu) = __kvm_vcpu_kick(vcpu, false). kvm_vcpu_wake_up finds no blocked vCPU (the model
   * never halts); kvm_arch_vcpu_should_kick moves IN_GUEST_MODE to EXITING_GUEST_MODE and, if the vCPU was
   * in the guest, a reschedule IPI goes to its pCPU (each vCPU has its own, and the kicker is never the
   * vCPU itself). The IPI is an external interrupt: the vCPU takes a VM exit (`exits`, `irq_exits`) and
   * vcpu_run enters the guest again. A vCPU outside the guest, or already EXITING
   * (an earlier IPI is making it exit), gets no IPI and takes no extra exit.
   * @kernel virt/kvm/kvm_main.c#__kvm_vcpu_kick
   */
  kick(): void {
    this.kicks++;
    if (this.kvmArchVcpuShouldKick()) this.externalInterruptExit();
  }

  /** cmpxchg(IN_GUEST_MODE → EXITING_GUEST_MODE) succeeded. @kernel arch/x86/kvm/x86.c#kvm_arch_vcpu_should_kick */
  private kvmArchVcpuShouldKick(): boolean {
    if (this.mode !== IN_GUEST_MODE) return false;
    this.mode = EXITING_GUEST_MODE; // kvm_vcpu_exiting_guest_mode
    return true;
  }

  /**
   * A kick's IPI reaches the vCPU in the guest: VM exit (vcpu_enter_guest: ++exits), the exit handler
   * counts the external interrupt (++irq_exits) and returns 1, so vcpu_run enters the guest again at once:
   * the vCPU is back IN_GUEST_MODE. Nothing is left for that entry to service: every request the model
   * makes of other vCPUs goes through kvm_make_all_cpus_request, which would have moved this one to
   * EXITING (no kick then); requests a vCPU set on itself are serviced at its next access.
   * @kernel arch/x86/kvm/vmx/vmx.c#handle_external_interrupt
   */
  private externalInterruptExit(): void {
    this.stats.exits++;
    this.stats.irq_exits++;
    // Out of the guest for the exit, back in once vcpu_run re-enters: nobody looks in between.
    this.mode = IN_GUEST_MODE;
  }

  /** The binary stats of the vCPU fd as { name: value }. */
  getStats(): Record<string, number> {
    return exportStats(
      this.stats,
      VCPU_STAT_NAMES,
      this.vm.cfg.profile === 'pvm-6.18' ? VCPU_STAT_NAMES_PVM : [],
    );
  }
}

function closedFd(syscall: string, fd: number): never {
  throw new KvmError('EBADF', syscall, `vCPU fd ${fd} is closed`);
}

/** setCr0's argument: a u64 CR0 value, or `{ cd: boolean, nw?: boolean }`. */
function readCr0Arg(v: unknown): Cr0Arg {
  if (typeof v === 'number') return argInt('setCr0', 'cr0', v);
  if (!isPlainObject(v))
    throw new TypeError(`setCr0: cr0 must be a number or { cd, nw? } (got ${formatValue(v)})`);
  const o = argOpts('setCr0', v, ['cd', 'nw']);
  if (typeof o['cd'] !== 'boolean')
    throw new TypeError(`setCr0: cd must be a boolean (got ${formatValue(o['cd'])})`);
  const nw = o['nw'] === undefined ? undefined : argBool('setCr0', 'nw', o['nw'], false);
  return nw === undefined ? { cd: o['cd'] } : { cd: o['cd'], nw };
}
