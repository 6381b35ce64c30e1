/**
 * What `new Kvm(opts)` models: the host kernel and its configuration. Profiles bundle the options of a
 * known host; individual options override them.
 *
 * 'upstream-6.18': a VMX/EPT host with the TDP MMU, all six VM types, SMM (two address spaces), memory
 *   attributes, a 46-bit MAXPHYADDR (4-level EPT) and the 6.18 memslot ABI (including its guest_memfd
 *   flag-clearing acceptance, memslot-abi.md §2.2).
 * 'pvm-6.18': the development machines' real /dev/kvm (shared/reference/real-kvm-host.md): shadow MMU,
 *   DEFAULT VM only, no SMM, quirks 0x5ff, no memory attributes, and the 6.19 guest_memfd fix backported.
 */
import { GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP } from '../uapi/kvm.ts';
import { KVM_X86_VALID_QUIRKS } from '../uapi/kvm_x86.ts';
import { formatValue, isPlainObject } from './args.ts';
import { kvmOptionChecks, validateKvmOptions } from './kvm_options.ts';

/** The guest_memfd creation flags 6.18 knows (MMAP, INIT_SHARED); earlier kernels took none. */
const GMEM_FLAGS_6_18 = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
/** VM types whose Kconfig selects KVM_GUEST_MEMFD: SW_PROTECTED (1), SNP (4), TDX (5). */
const PRIVATE_MEM_VM_TYPES = (1 << 1) | (1 << 4) | (1 << 5);

export type KernelVersion = '6.12' | '6.15' | '6.17' | '6.18' | '6.19';
/** The versions whose differences the model follows, oldest first. */
export const KERNEL_VERSIONS: readonly KernelVersion[] = ['6.12', '6.15', '6.17', '6.18', '6.19'];

/**
 * Known historical KVM bugs the model can switch back on, each a small marked branch at the place the
 * kernel bug lived (docs/invariants.md, "Historical bugs"), so the invariant checker can be shown to catch it:
 *   'vfio-2019-memtype'          no EPT zap on a guest CR0.CD toggle with non-coherent DMA (v5.3, x86.c#kvm_post_set_cr0)
 *   'precise-zap-no-flush'       kvm_mmu_zap_memslot without kvm_flush_remote_tlbs (mmu.c)
 *   'fault-no-seq-recheck'       is_page_fault_stale skips mmu_invalidate_retry_gfn (mmu.c)
 *   'fault-ignores-invalid-slot' the fault maps gfns of a KVM_MEMSLOT_INVALID slot (mmu.c#kvm_mmu_faultin_pfn)
 *   'gmem-flag-clear-uaf'        6.12–6.18 accept clearing KVM_MEM_GUEST_MEMFD (kvm_main.c#kvm_set_memory_region)
 *   'shadow-2019-precise-zap'    v5.1's precise memslot zap: every valid page whose base gfn is in the slot (mmu.c)
 *   'shadow-leafs-only-zap'      6.12-rc1: the precise memslot zap drops leafs only, shadow pages stay (mmu.c)
 *   'no-lpage-mixed'             KVM_LPAGE_MIXED_FLAG never set: huge leafs over mixed attributes (mmu.c)
 */
export const BUG_NAMES = [
  'vfio-2019-memtype',
  'precise-zap-no-flush',
  'fault-no-seq-recheck',
  'fault-ignores-invalid-slot',
  'gmem-flag-clear-uaf',
  /** The v5.1 precise memslot zap of the shadow MMU (the sp->gfn filter, 4e103134b862; reverted in 5.3). */
  'shadow-2019-precise-zap',
  /**
   * 6.12-rc1's quirk-off path (aa8d1f48d353) zapped only leaf SPTEs, on the shadow MMU too: pages that
   * shadow guest tables outlive their slot (fixed in 6.12-rc2 by fcd1ec9cb59c).
   */
  'shadow-leafs-only-zap',
  /**
   * The model before issue #12 (not a shipped kernel): hugepage_set_mixed never runs, so a shared huge
   * leaf can cover a PRIVATE gfn (mmu.c#kvm_arch_post_set_memory_attributes does it since 6.8).
   */
  'no-lpage-mixed',
] as const;
export type BugName = (typeof BUG_NAMES)[number];

export interface KvmOptions {
  profile?: 'upstream-6.18' | 'pvm-6.18';
  /** Which memslot-ABI behaviour to follow where versions differ (memslot-abi.md §0.3). */
  kernel?: KernelVersion;
  /** Reject clearing KVM_MEM_GUEST_MEMFD on an existing gmem slot (the 6.19-rc1 fix). */
  gmemFlagsFix?: boolean;
  /**
   * tdp_enabled: the host has EPT/NPT and KVM uses it. With tdpMmu false on such a host, EPT is built by
   * the shadow MMU's code out of direct shadow pages (kvm.tdp_mmu=N; the only MMU before 5.10, so the
   * one the 2019 VFIO regression ran on). false = shadow paging.
   */
  tdp?: boolean;
  /** kvm.tdp_mmu: the TDP MMU builds EPT (needs tdp). */
  tdpMmu?: boolean;
  /** Bitmask of supported VM types (KVM_CAP_VM_TYPES). */
  vmTypes?: number;
  smm?: boolean;
  /** kvm_caps.supported_quirks (KVM_CAP_DISABLE_QUIRKS2). */
  supportedQuirks?: number;
  /** Host MAXPHYADDR: with TDP, kvm_mmu_max_gfn() = 2^(bits-12) - 1. Shadow paging uses 52. */
  maxPhyAddr?: number;
  /** access_ok() ceiling (USER_PTR_MAX). */
  userAddrLimit?: number;
  /** CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES */
  memoryAttributes?: boolean;
  /**
   * CONFIG_KVM_GUEST_MEMFD. false = a kernel built without guest_memfd (the development machines' build
   * v1272): KVM_CAP_GUEST_MEMFD(_FLAGS) are 0, KVM_CREATE_GUEST_MEMFD is ENOTTY, KVM_MEM_GUEST_MEMFD fails
   * check_memory_region_flags (EINVAL), and the VM types that need private memory (SW_PROTECTED, SNP,
   * TDX all select it) are not offered.
   */
  guestMemfd?: boolean;
  /**
   * KVM_CAP_GUEST_MEMFD_FLAGS on /dev/kvm (kvm_gmem_get_supported_flags(NULL)): GUEST_MEMFD_FLAG_MMAP (1)
   * | GUEST_MEMFD_FLAG_INIT_SHARED (2). Default: both on 6.18+, none before; 0 without guestMemfd. A VM
   * with private memory never offers INIT_SHARED.
   */
  guestMemfdFlags?: number;
  /** PML available (dirty logging clears D-bits rather than write-protecting at 4K). */
  pml?: boolean;
  /** kvm.eager_page_split module parameter */
  eagerPageSplit?: boolean;
  /** num_online_cpus(): KVM_CAP_NR_VCPUS answers min(onlineCpus, maxVcpus) */
  onlineCpus?: number;
  /** KVM_CAP_MAX_VCPUS / KVM_CAP_MAX_VCPU_ID */
  maxVcpus?: number;
  maxVcpuId?: number;
  /**
   * EPT memory types as v5.x–6.10 computed them: with non-coherent DMA, honour guest CR0.CD and the guest
   * MTRRs (and zap on MTRR writes, cap huge pages to MTRR-uniform ranges). Upstream removed this in 6.11
   * (0a7b73559b39, e1548088ff54), so it is false for every modelled kernel; set it to replay the 2019
   * VFIO failure (mmu-zap.md §6.7). See src/x86/mtrr.ts.
   */
  honorGuestMtrrs?: boolean;
  /**
   * With honorGuestMtrrs: zap all EPT on a guest CR0.CD toggle whenever non-coherent DMA is present, even
   * with KVM_X86_QUIRK_CD_NW_CLEARED enabled (Yan Zhao's Nov 2024 test patch on v5.3-rc4). false = the
   * shipped code, which zapped only with the quirk disabled.
   */
  cdToggleZap?: boolean;
  /** Historical bugs to switch back on (BUG_NAMES); an unknown name is a TypeError. */
  bugs?: readonly BugName[];
}

export interface HostConfig {
  readonly profile: 'upstream-6.18' | 'pvm-6.18';
  readonly kernel: KernelVersion;
  readonly gmemFlagsFix: boolean;
  readonly tdp: boolean;
  readonly tdpMmu: boolean;
  readonly vmTypes: number;
  readonly smm: boolean;
  readonly supportedQuirks: number;
  readonly maxPhyAddr: number;
  readonly userAddrLimit: number;
  readonly memoryAttributes: boolean;
  readonly guestMemfd: boolean;
  readonly guestMemfdFlags: number;
  readonly pml: boolean;
  readonly eagerPageSplit: boolean;
  readonly onlineCpus: number;
  readonly maxVcpus: number;
  readonly maxVcpuId: number;
  readonly honorGuestMtrrs: boolean;
  readonly cdToggleZap: boolean;
  readonly bugs: readonly BugName[];
}

/** Is historical bug `name` switched on? (An empty list costs one length check on hot paths.) */
export function hasBug(cfg: { readonly bugs: readonly BugName[] }, name: BugName): boolean {
  return cfg.bugs.length !== 0 && cfg.bugs.includes(name);
}

const PROFILES: Record<HostConfig['profile'], Omit<HostConfig, 'profile'>> = {
  'upstream-6.18': {
    kernel: '6.18',
    gmemFlagsFix: false,
    tdp: true,
    tdpMmu: true,
    vmTypes: 0b111111,
    smm: true,
    supportedQuirks: KVM_X86_VALID_QUIRKS,
    maxPhyAddr: 46,
    userAddrLimit: 0x7ffffffff000,
    memoryAttributes: true,
    guestMemfd: true,
    guestMemfdFlags: GMEM_FLAGS_6_18,
    pml: true,
    eagerPageSplit: true,
    onlineCpus: 2,
    maxVcpus: 1024,
    maxVcpuId: 4096,
    honorGuestMtrrs: false,
    cdToggleZap: false,
    bugs: [],
  },
  'pvm-6.18': {
    kernel: '6.18',
    gmemFlagsFix: true,
    tdp: false,
    tdpMmu: false,
    vmTypes: 0b1,
    smm: false,
    supportedQuirks: 0x5ff,
    maxPhyAddr: 52,
    userAddrLimit: 0x7ffffffff000,
    memoryAttributes: false,
    guestMemfd: true,
    guestMemfdFlags: GMEM_FLAGS_6_18,
    pml: false,
    eagerPageSplit: true,
    onlineCpus: 2,
    maxVcpus: 1024,
    maxVcpuId: 4096,
    honorGuestMtrrs: false,
    cdToggleZap: false,
    bugs: [],
  },
};

const OPTION_CHECKS = kvmOptionChecks(Object.keys(PROFILES), KERNEL_VERSIONS);

/** Resolve options into a complete, validated host configuration. Throws TypeError on bad options. */
export function resolveHostConfig(opts: KvmOptions = {}): HostConfig {
  const raw: unknown = opts;
  if (!isPlainObject(raw)) throw new TypeError(`Kvm: options must be an object (got ${formatValue(raw)})`);
  validateKvmOptions(raw, OPTION_CHECKS);
  const profile = opts.profile ?? 'upstream-6.18';
  const base =
    typeof profile === 'string' && Object.hasOwn(PROFILES, profile) ? PROFILES[profile] : undefined;
  if (!base)
    throw new TypeError(
      `Kvm: unknown profile ${formatValue(profile)} (known: ${Object.keys(PROFILES).join(', ')})`,
    );
  const cfg: HostConfig = { profile, ...base, ...stripUndefined(opts) } as HostConfig;
  if (opts.kernel !== undefined && opts.gmemFlagsFix === undefined) {
    (cfg as { gmemFlagsFix: boolean }).gmemFlagsFix = opts.kernel === '6.19';
  }
  (cfg as { bugs: readonly BugName[] }).bugs = resolveBugs(opts.bugs);
  resolveGuestMemfd(cfg as { -readonly [K in keyof HostConfig]: HostConfig[K] }, opts);
  // tdp_mmu_enabled = tdp_mmu_allowed && tdp_enabled: without TDP the module parameter does nothing, but
  // asking for both at once is a contradiction worth naming.
  if (opts.tdp === false && opts.tdpMmu === true)
    throw new TypeError('Kvm: tdpMmu: true needs tdp (EPT/NPT)');
  if (!cfg.tdp) (cfg as { tdpMmu: boolean }).tdpMmu = false;
  applyBugSwitches(cfg as { -readonly [K in keyof HostConfig]: HostConfig[K] }, opts);
  if (!(cfg.vmTypes & 1)) throw new TypeError('Kvm: vmTypes must include KVM_X86_DEFAULT_VM (bit 0)');
  if (cfg.cdToggleZap && !cfg.honorGuestMtrrs)
    throw new TypeError('Kvm: cdToggleZap needs honorGuestMtrrs: CR0.CD reaches EPT memtypes only with it');
  if (!Number.isInteger(cfg.maxPhyAddr) || cfg.maxPhyAddr < 36 || cfg.maxPhyAddr > 52) {
    throw new TypeError(
      `Kvm: maxPhyAddr must be an integer in [36, 52] (got ${formatValue(cfg.maxPhyAddr)})`,
    );
  }
  return Object.freeze(cfg);
}

/**
 * guest_memfd follows the kernel build: without CONFIG_KVM_GUEST_MEMFD there are no creation flags and no
 * private-memory VM types (their Kconfig entries select it), so those defaults are dropped and an explicit
 * request for them is a contradiction.
 */
function resolveGuestMemfd(
  cfg: { -readonly [K in keyof HostConfig]: HostConfig[K] },
  opts: KvmOptions,
): void {
  if (typeof cfg.guestMemfd !== 'boolean')
    throw new TypeError(`Kvm: guestMemfd must be a boolean, got ${typeof cfg.guestMemfd}`);
  if (opts.guestMemfdFlags === undefined)
    cfg.guestMemfdFlags = cfg.guestMemfd && cfg.kernel >= '6.18' ? GMEM_FLAGS_6_18 : 0;
  const f = cfg.guestMemfdFlags;
  if (!Number.isInteger(f) || f < 0 || (f & ~GMEM_FLAGS_6_18) !== 0)
    throw new TypeError(
      `Kvm: guestMemfdFlags must be a subset of 0x${GMEM_FLAGS_6_18.toString(16)} (MMAP | INIT_SHARED), got ${String(f)}`,
    );
  if (cfg.guestMemfd) return;
  if (f !== 0)
    throw new TypeError(
      'Kvm: guestMemfdFlags needs guestMemfd: a kernel without guest_memfd reports no flags',
    );
  if (opts.vmTypes === undefined) cfg.vmTypes &= ~PRIVATE_MEM_VM_TYPES;
  else if (cfg.vmTypes & PRIVATE_MEM_VM_TYPES)
    throw new TypeError(
      'Kvm: vmTypes SW_PROTECTED, SNP and TDX need guestMemfd (their Kconfig selects KVM_GUEST_MEMFD)',
    );
}

function resolveBugs(bugs: unknown): readonly BugName[] {
  if (bugs === undefined) return Object.freeze([]);
  if (!Array.isArray(bugs)) throw new TypeError('Kvm: bugs must be an array of bug names');
  for (const b of bugs)
    if (!(BUG_NAMES as readonly unknown[]).includes(b))
      throw new TypeError(`Kvm: unknown bug ${formatValue(b)} (known: ${BUG_NAMES.join(', ')})`);
  return Object.freeze([...new Set(bugs as BugName[])]);
}

/** Bugs that are a configuration of existing version switches rather than a branch of their own. */
function applyBugSwitches(cfg: { -readonly [K in keyof HostConfig]: HostConfig[K] }, opts: KvmOptions): void {
  // BUG gmem-flag-clear-uaf: the 6.12–6.18 B14(b) check, which compares only READONLY.
  if (cfg.bugs.includes('gmem-flag-clear-uaf')) {
    if (opts.gmemFlagsFix === true)
      throw new TypeError("Kvm: bug 'gmem-flag-clear-uaf' contradicts gmemFlagsFix: true");
    cfg.gmemFlagsFix = false;
  }
  // BUG vfio-2019-memtype: v5.3's memtypes (guest MTRRs and CR0.CD honoured with non-coherent DMA) and
  // no zap on the CD toggle (memtype.ts#kvmPostSetCr0 carries the branch).
  if (cfg.bugs.includes('vfio-2019-memtype')) {
    if (opts.honorGuestMtrrs === false || opts.cdToggleZap === true)
      throw new TypeError("Kvm: bug 'vfio-2019-memtype' needs honorGuestMtrrs and no cdToggleZap");
    cfg.honorGuestMtrrs = true;
    cfg.cdToggleZap = false;
  }
}

function stripUndefined(o: object): object {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
