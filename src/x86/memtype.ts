/**
 * The x86.c side of guest memory types: guest CR0 writes (kvm_set_cr0's CD/NW checks and the zap
 * kvm_post_set_cr0 did on a CD toggle), the non-coherent-DMA count the kvm-vfio device drives (with the
 * zap KVM does when the first non-coherent device arrives or the last one leaves), and the effective
 * memory type the CPU uses for an access (EPT type combined with the guest PAT type).
 *
 * Kernel counterpart: arch/x86/kvm/x86.c (kvm_set_cr0, kvm_post_set_cr0,
 * kvm_arch_register_noncoherent_dma, kvm_arch_unregister_noncoherent_dma,
 * kvm_noncoherent_dma_assignment_start_or_stop). Versions: with `honorGuestMtrrs` the v5.3 code (a CD
 * toggle zaps all EPT only if KVM_X86_QUIRK_CD_NW_CLEARED is disabled; `cdToggleZap` applies Yan Zhao's
 * Nov 2024 test patch, which zaps whenever non-coherent DMA is present; no zap on (un)registration);
 * otherwise 6.11+ (CR0.CD no longer reaches the EPT memtype; (un)registration zaps all when KVM may be
 * ignoring guest PAT — always on an EPT host before 6.15, with KVM_X86_QUIRK_IGNORE_GUEST_PAT from 6.15).
 * Simplifications: only CR0.CD/NW/PG/PE are checked; the rest of CR0 (and its MMU-role effects) is not
 * modelled.
 */
import { Vcpu } from '../kvm/vcpu.ts';
import { argBool, argInt, formatValue } from '../kvm/args.ts';
import type { VmState } from '../kvm/vm_state.ts';
import { kvmCheckHasQuirk } from './x86.ts';
import { hasBug } from '../kvm/host_profile.ts';
import { KVM_X86_QUIRK_CD_NW_CLEARED, KVM_X86_QUIRK_IGNORE_GUEST_PAT } from '../uapi/kvm_x86.ts';
import { kvmZapGfnRange, GFN_ALL_END } from './mmu/zap_gfn_range.ts';
import { kvmArchHasNoncoherentDma, X86_CR0_CD, X86_CR0_NW } from './mtrr.ts';

const X86_CR0_PE = 1 << 0;
const X86_CR0_ET = 1 << 4;
const X86_CR0_PG = 2 ** 31;

/** vcpu.setCr0's argument: a whole CR0 value, or CD (and NW, which follows CD unless given). */
export type Cr0Arg = number | { cd: boolean; nw?: boolean };

/** Resolve a Cr0Arg against the vCPU's current CR0. */
export function cr0FromArg(vcpu: Vcpu, arg: Cr0Arg): number {
  if (typeof arg === 'number') {
    if (!Number.isInteger(arg) || arg < 0 || arg >= 2 ** 64) throw new RangeError(`CR0 ${arg} is not a u64`);
    return arg;
  }
  const cd = arg.cd;
  const nw = arg.nw ?? cd;
  let v = vcpu.memtype.cr0 % 2 ** 32;
  v = cd ? v | X86_CR0_CD : v & ~X86_CR0_CD;
  v = nw ? v | X86_CR0_NW : v & ~X86_CR0_NW;
  return v >>> 0;
}

/**
 * MOV to CR0 by the guest (or KVM_SET_SREGS). Returns 0, or 1 when the write #GPs.
 * @kernel arch/x86/kvm/x86.c#kvm_set_cr0
 */
export function kvmSetCr0(vcpu: Vcpu, cr0: number): number {
  if (cr0 >= 2 ** 32) return 1; // reserved high bits
  cr0 = (cr0 | X86_CR0_ET) >>> 0;
  if (cr0 & X86_CR0_NW && !(cr0 & X86_CR0_CD)) return 1;
  if (cr0 >= X86_CR0_PG && !(cr0 & X86_CR0_PE)) return 1;
  const old = vcpu.memtype.cr0;
  vcpu.memtype.cr0 = cr0;
  kvmPostSetCr0(vcpu, old, cr0);
  return 0;
}

/**
 * The memory-type half of kvm_post_set_cr0: with guest MTRRs honoured and non-coherent DMA, the EPT
 * memtype of every SPTE depends on CR0.CD, so a toggle must zap them. v5.3 zapped only when the
 * CD_NW_CLEARED quirk was disabled — yet with the quirk enabled the memtype still changes (WB|IPAT while
 * CD=1, the guest MTRR type after), which is the stale memtype of the 2019 VFIO reports.
 * @kernel arch/x86/kvm/x86.c#kvm_post_set_cr0
 */
export function kvmPostSetCr0(vcpu: Vcpu, oldCr0: number, cr0: number): void {
  if (!((cr0 ^ oldCr0) & X86_CR0_CD)) return;
  const vm = vcpu.vm;
  // 6.11+ (e1548088ff54): CR0.CD no longer feeds vmx_get_mt_mask, so nothing can go stale. v5.3's
  // kvm_set_cr0 asked for non-coherent DMA only, not tdp_enabled: it zapped under shadow paging too
  // (tdp_enabled joined the test with kvm_mmu_honors_guest_mtrrs in 6.6).
  if (!vm.cfg.honorGuestMtrrs || !kvmArchHasNoncoherentDma(vm)) return;
  // BUG vfio-2019-memtype: as v5.3 shipped with the quirk enabled by default, no zap on the toggle.
  if (hasBug(vm.cfg, 'vfio-2019-memtype')) return;
  if (vm.cfg.cdToggleZap || !kvmCheckHasQuirk(vm.arch, KVM_X86_QUIRK_CD_NW_CLEARED))
    kvmZapGfnRange(vm, 0, GFN_ALL_END);
}

/**
 * The first non-coherent device arrived or the last one left: SPTEs built with the other "ignore guest
 * PAT" answer are now wrong, so zap them all.
 * @kernel arch/x86/kvm/x86.c#kvm_noncoherent_dma_assignment_start_or_stop
 */
function kvmNoncoherentDmaAssignmentStartOrStop(vm: VmState): void {
  // v5.3 only counted: the zap came with 6.6 (Yan Zhao, "KVM: x86/mmu: Zap KVM TDP when noncoherent DMA
  // assignment starts/stops").
  if (vm.cfg.honorGuestMtrrs) return;
  const mayIgnoreGuestPat =
    vm.cfg.kernel < '6.15' ? vm.cfg.tdp : kvmCheckHasQuirk(vm.arch, KVM_X86_QUIRK_IGNORE_GUEST_PAT);
  if (mayIgnoreGuestPat) kvmZapGfnRange(vm, 0, GFN_ALL_END);
}

/** @kernel arch/x86/kvm/x86.c#kvm_arch_register_noncoherent_dma */
export function kvmArchRegisterNoncoherentDma(vm: VmState): void {
  if (++vm.arch.noncoherentDmaCount === 1) kvmNoncoherentDmaAssignmentStartOrStop(vm);
}

/** @kernel arch/x86/kvm/x86.c#kvm_arch_unregister_noncoherent_dma */
export function kvmArchUnregisterNoncoherentDma(vm: VmState): void {
  if (--vm.arch.noncoherentDmaCount === 0) kvmNoncoherentDmaAssignmentStartOrStop(vm);
}

/** The PAT type of entry `index` (0–7, selected by a guest PTE's PAT/PCD/PWT bits). */
export function guestPatType(vcpu: Vcpu, index: number): number {
  if (!(vcpu instanceof Vcpu))
    throw new TypeError(`guestPatType: vcpu must be a Vcpu (got ${formatValue(vcpu)})`);
  argInt('guestPatType', 'index', index, 0, 7);
  return Number((vcpu.memtype.pat >> BigInt(index * 8)) & 7n);
}

// Effective type for EPT type (row) × PAT type (column: UC WC - - WT WP WB UC-), SDM vol. 3 table
// "Effective Page-Level Memory Types"; EPT takes the MTRR's place. -1: reserved combination.
const EFFECTIVE: Record<number, readonly number[]> = {
  0: [0, 1, -1, -1, 0, 0, 0, 0],
  1: [0, 1, -1, -1, 0, 0, 1, 1],
  4: [0, 1, -1, -1, 4, 5, 4, 0],
  5: [0, 1, -1, -1, 4, 5, 5, 1],
  6: [0, 1, -1, -1, 4, 5, 6, 0],
};

/**
 * The memory type an access actually uses: the EPT type alone with IPAT, else the EPT type combined
 * with the guest PAT type (guest MTRRs play no part under EPT).
 */
export function effectiveMemtype(eptType: number, ipat: boolean, patType: number): number {
  argInt('effectiveMemtype', 'eptType', eptType, 0, 7);
  if (typeof ipat !== 'boolean') argBool('effectiveMemtype', 'ipat', ipat, false);
  argInt('effectiveMemtype', 'patType', patType, 0, 7);
  if (ipat) return eptType;
  const row = EFFECTIVE[eptType];
  const t = row?.[patType];
  if (t === undefined || t < 0)
    throw new RangeError(
      `effectiveMemtype: EPT type ${eptType} with PAT type ${patType} is a reserved combination`,
    );
  return t;
}
