/**
 * A TD's private memory from the VMM's and the guest's side:
 *  - KVM_TDX_INIT_MEM_REGION (before the TD runs) populates the initial image: guest_memfd hands out
 *    each page, a private fault maps it in the mirror root, and the TDX hooks add it to the S-EPT with
 *    TDH.MEM.PAGE.ADD (plus TDH.MR.EXTEND when measured). Such pages need no accept.
 *  - TDG.MEM.PAGE.ACCEPT (the guest, once the TD runs) turns a page KVM augmented (TDH.MEM.PAGE.AUG,
 *    pending) into one it may use; on a gpa with nothing mapped yet the TDX module first exits with an
 *    EPT violation, KVM faults the page in (AUG), and the guest retries the accept.
 *
 * Kernel counterpart: arch/x86/kvm/vmx/tdx.c (tdx_vcpu_init_mem_region, tdx_gmem_post_populate,
 * tdx_handle_ept_violation), virt/kvm/guest_memfd.c#kvm_gmem_populate. TDG.MEM.PAGE.ACCEPT is the TDX
 * module's guest interface (accept at 4K only here).
 * Simplifications: the source page of INIT_MEM_REGION is not modelled (the added page just gets new
 * content); no 2M accept; ACCEPT's operand errors other than "shared gpa" are not modelled.
 */
import type { Vcpu } from '../kvm/vcpu.ts';
import type { AccessResult } from '../kvm/api_types.ts';
import { KVM_MEMORY_ATTRIBUTE_PRIVATE } from '../uapi/kvm.ts';
import { KvmError, hex } from '../kvm/kvm_error.ts';
import { readU64 } from '../kvm/args.ts';
import { kvmGmemAllocate, kvmGmemIsPrepared } from '../kvm/guest_memfd_file.ts';
import type { KvmGmemFile } from '../kvm/guest_memfd.ts';
import type { X86Mmu } from './mmu/mmu.ts';
import { kvmTdpMmuGetWalk, type TdpWalkResult } from './mmu/tdp_mmu.ts';
import { spteToPfn } from './mmu/spte.ts';
import { newPageFault, kvmTdpMmuPageFault, RET_PF_FIXED } from './mmu/page_fault.ts';
import { vcpuEnterGuest, finishFault } from './mmu/guest_access.ts';
import { SEPT_MAPPED, SEPT_PENDING, type KvmTdx } from './tdx.ts';

const PAGE = 4096;
const walk: TdpWalkResult = { lo: 0, hi: 0, level: 0 };

function tdOf(vcpu: Vcpu, syscall: string): KvmTdx {
  const tdx = vcpu.vm.arch.tdx;
  // KVM_MEMORY_ENCRYPT_OP on a VM that is not a TD.
  if (tdx === undefined) throw new KvmError('ENOTTY', syscall, `VM type ${vcpu.vm.info.name} is not a TD`);
  return tdx;
}

/** TDX private gpas are those without the shared bit. @kernel arch/x86/kvm/vmx/tdx.h#vt_is_tdx_private_gpa */
function isPrivateGfn(vcpu: Vcpu, gfn: number): boolean {
  const bits = vcpu.vm.arch.gfnDirectBits;
  return Math.floor(gfn / bits) % 2 === 0;
}

/**
 * KVM_TDX_INIT_MEM_REGION on vcpu: add nrPages private pages from gpa to the TD before it runs. Pages
 * before a failing one stay added, as in the kernel (which reports the progress in the argument).
 * @kernel arch/x86/kvm/vmx/tdx.c#tdx_vcpu_init_mem_region
 */
export function tdxVcpuInitMemRegion(
  vcpu: Vcpu,
  gpaIn: number | bigint,
  nrPagesIn: number | bigint,
  opts: { measure?: boolean } = {},
): void {
  const sc = 'KVM_TDX_INIT_MEM_REGION';
  const vm = vcpu.vm;
  const tdx = tdOf(vcpu, sc);
  vm.checkAlive(sc);
  const gpa = readU64(sc, 'gpa', gpaIn);
  const nr = readU64(sc, 'nr_pages', nrPagesIn);
  // Once the TD is finalized its initial memory is fixed.
  if (tdx.state === 'runnable') throw new KvmError('EINVAL', sc, 'the TD is already finalized');
  if (typeof gpa === 'bigint' || typeof nr === 'bigint' || gpa % PAGE !== 0 || nr === 0)
    throw new KvmError('EINVAL', sc, `gpa ${hex(gpa)} unaligned or nr_pages ${hex(nr)} zero or too large`);
  const first = gpa / PAGE;
  const last = first + nr - 1;
  if (!Number.isSafeInteger(last * PAGE) || !isPrivateGfn(vcpu, first) || !isPrivateGfn(vcpu, last))
    throw new KvmError('EINVAL', sc, `[${hex(gpa)}, +${hex(nr)} pages) is not all private gpas`);
  const mmu = vm.mmu as X86Mmu;
  for (let gfn = first; gfn <= last; gfn++) {
    tdxGmemPopulateOne(vcpu, mmu, tdx, gfn, sc);
    if (opts.measure) tdx.measurePage();
  }
}

/**
 * One page of kvm_gmem_populate with tdx_gmem_post_populate as the callback.
 * @kernel virt/kvm/guest_memfd.c#kvm_gmem_populate
 */
function tdxGmemPopulateOne(vcpu: Vcpu, mmu: X86Mmu, tdx: KvmTdx, gfn: number, sc: string): void {
  const vm = vcpu.vm;
  const slot = vm.activeMemslots(0).searchMemslots(gfn);
  if (slot === null || slot.gmem === null)
    throw new KvmError('EINVAL', sc, `gfn ${hex(gfn)} is not in a guest_memfd memslot`);
  // __kvm_gmem_get_pfn gets the folio first (allocating it), so a page refused below stays in the file,
  // unprepared. A prepared page already holds guest data (or was faulted in): populate would overwrite it.
  const b = slot.gmem;
  const index = b.pgoff + (gfn - slot.baseGfn);
  kvmGmemAllocate(b.file as KvmGmemFile, index, index + 1);
  if (kvmGmemIsPrepared(slot, gfn)) throw new KvmError('EEXIST', sc, `gfn ${hex(gfn)} is already populated`);
  if ((vm.memAttrs.get(gfn) & KVM_MEMORY_ATTRIBUTE_PRIVATE) === 0)
    throw new KvmError('EINVAL', sc, `gfn ${hex(gfn)} does not have the PRIVATE attribute`);
  // kvm_tdp_map_page: a private write fault on the mirror root, at 4K, with page_add_src set so the
  // TDX hook adds the page (TDH.MEM.PAGE.ADD) rather than augmenting it.
  mmu.kvmMmuReload(vcpu);
  const fault = newPageFault(gfn * PAGE, gfn, true, false, true);
  tdx.pageAddSrc = true;
  const r = kvmTdpMmuPageFault(mmu, vcpu, fault);
  tdx.pageAddSrc = false;
  if (r !== RET_PF_FIXED)
    throw new KvmError('EIO', sc, `mapping gfn ${hex(gfn)} failed: ${fault.retryReason}`);
  mmu.noteMapped(gfn);
}

/** TDG.MEM.PAGE.ACCEPT's outcome: the guest's status (with the page it now owns), or the VM exit. */
export type TdxAcceptResult =
  | { exit: 'none'; status: 'success' | 'already_accepted' | 'invalid_operand'; pfn: number }
  | Exclude<AccessResult, { exit: 'none' }>;

/** The pfn the vCPU's mirror root maps gfn to (the S-EPT leaf). */
function mirrorPfn(mmu: X86Mmu, vcpu: Vcpu, gfn: number): number {
  const root = vcpu.mmu.mirrorRoot;
  return root >= 0 && kvmTdpMmuGetWalk(mmu.tdp, root, gfn, walk) ? spteToPfn(walk.lo, walk.hi) : -1;
}

/**
 * The guest accepts the private page at gpa (TDG.MEM.PAGE.ACCEPT at 4K). Pending → accepted (the TDX
 * module zeroes it); already accepted → the TDX_PAGE_ALREADY_ACCEPTED status; not mapped → EPT
 * violation, KVM's private fault (TDH.MEM.PAGE.AUG), and the accept is retried.
 */
export function tdgMemPageAccept(vcpu: Vcpu, gpa: number): TdxAcceptResult {
  const vm = vcpu.vm;
  const tdx = vm.arch.tdx;
  if (tdx === undefined) throw new TypeError(`TDG.MEM.PAGE.ACCEPT needs a TD (VM type ${vm.info.name})`);
  if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa >= 2 ** 52)
    throw new RangeError(`gpa ${String(gpa)} is not a guest physical address`);
  if (vm.dead) return { exit: 'vm_dead', gpa, reason: tdx.deadReason || 'the VM is dead' };
  if (tdx.state !== 'runnable') tdx.finalize('KVM_RUN'); // as vcpu.access: the first run finalizes
  const gfn = Math.floor(gpa / PAGE);
  if (!isPrivateGfn(vcpu, gfn)) return { exit: 'none', status: 'invalid_operand', pfn: -1 };
  const mmu = vm.mmu as X86Mmu;
  const c = { hwGfn: gfn, gfn, isPrivate: true };
  for (let tries = 0; tries < 8; tries++) {
    vcpuEnterGuest(mmu, vcpu);
    const s = tdx.septState(gfn);
    if (s === SEPT_MAPPED)
      return { exit: 'none', status: 'already_accepted', pfn: mirrorPfn(mmu, vcpu, gfn) };
    if (s === SEPT_PENDING) {
      const pfn = mirrorPfn(mmu, vcpu, gfn);
      tdx.acceptPending(gfn, pfn);
      return { exit: 'none', status: 'success', pfn };
    }
    // Nothing in the S-EPT: an EPT violation (accept type). TDX treats every S-EPT violation as a write.
    vcpu.stats.exits++;
    vcpu.stats.pf_taken++;
    const fault = newPageFault(gfn * PAGE, gfn, true, false, true);
    const done = finishFault(mmu, vcpu, fault, kvmTdpMmuPageFault(mmu, vcpu, fault), gfn * PAGE, c);
    if (done !== null && done.exit !== 'none') return done;
    if (vm.dead) return { exit: 'vm_dead', gpa, reason: 'the VM is dead (KVM_BUG_ON)' };
  }
  return { exit: 'retry', gpa, reason: 'TDG.MEM.PAGE.ACCEPT still faulting after 8 tries' };
}
