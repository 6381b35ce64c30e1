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
import { KVM_X86_VALID_QUIRKS } from '../uapi/kvm_x86.ts';

export type KernelVersion = '6.12' | '6.15' | '6.17' | '6.18' | '6.19';

export interface KvmOptions {
  profile?: 'upstream-6.18' | 'pvm-6.18';
  /** Which memslot-ABI behaviour to follow where versions differ (memslot-abi.md §0.3). */
  kernel?: KernelVersion;
  /** Reject clearing KVM_MEM_GUEST_MEMFD on an existing gmem slot (the 6.19-rc1 fix). */
  gmemFlagsFix?: boolean;
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
  /** PML available (dirty logging clears D-bits rather than write-protecting at 4K). */
  pml?: boolean;
  /** kvm.eager_page_split module parameter */
  eagerPageSplit?: boolean;
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
}

export interface HostConfig {
  readonly profile: 'upstream-6.18' | 'pvm-6.18';
  readonly kernel: KernelVersion;
  readonly gmemFlagsFix: boolean;
  readonly tdpMmu: boolean;
  readonly vmTypes: number;
  readonly smm: boolean;
  readonly supportedQuirks: number;
  readonly maxPhyAddr: number;
  readonly userAddrLimit: number;
  readonly memoryAttributes: boolean;
  readonly pml: boolean;
  readonly eagerPageSplit: boolean;
  readonly maxVcpus: number;
  readonly maxVcpuId: number;
  readonly honorGuestMtrrs: boolean;
  readonly cdToggleZap: boolean;
}

const PROFILES: Record<HostConfig['profile'], Omit<HostConfig, 'profile'>> = {
  'upstream-6.18': {
    kernel: '6.18',
    gmemFlagsFix: false,
    tdpMmu: true,
    vmTypes: 0b111111,
    smm: true,
    supportedQuirks: KVM_X86_VALID_QUIRKS,
    maxPhyAddr: 46,
    userAddrLimit: 0x7ffffffff000,
    memoryAttributes: true,
    pml: true,
    eagerPageSplit: true,
    maxVcpus: 1024,
    maxVcpuId: 4096,
    honorGuestMtrrs: false,
    cdToggleZap: false,
  },
  'pvm-6.18': {
    kernel: '6.18',
    gmemFlagsFix: true,
    tdpMmu: false,
    vmTypes: 0b1,
    smm: false,
    supportedQuirks: 0x5ff,
    maxPhyAddr: 52,
    userAddrLimit: 0x7ffffffff000,
    memoryAttributes: false,
    pml: false,
    eagerPageSplit: true,
    maxVcpus: 1024,
    maxVcpuId: 4096,
    honorGuestMtrrs: false,
    cdToggleZap: false,
  },
};

const KEYS = new Set<string>(['profile', ...Object.keys(PROFILES['upstream-6.18'])]);

/** Resolve options into a complete, validated host configuration. Throws TypeError on bad options. */
export function resolveHostConfig(opts: KvmOptions = {}): HostConfig {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('Kvm options must be an object');
  for (const k of Object.keys(opts)) {
    if (!KEYS.has(k)) throw new TypeError(`unknown Kvm option '${k}' (known: ${[...KEYS].join(', ')})`);
  }
  const profile = opts.profile ?? 'upstream-6.18';
  const base = PROFILES[profile];
  if (!base) throw new TypeError(`unknown profile '${String(profile)}'`);
  const cfg: HostConfig = { profile, ...base, ...stripUndefined(opts) } as HostConfig;
  if (opts.kernel !== undefined && opts.gmemFlagsFix === undefined) {
    (cfg as { gmemFlagsFix: boolean }).gmemFlagsFix = opts.kernel === '6.19';
  }
  if (!(cfg.vmTypes & 1)) throw new TypeError('vmTypes must include KVM_X86_DEFAULT_VM (bit 0)');
  if (cfg.cdToggleZap && !cfg.honorGuestMtrrs)
    throw new TypeError('cdToggleZap needs honorGuestMtrrs: CR0.CD reaches EPT memtypes only with it');
  if (!Number.isInteger(cfg.maxPhyAddr) || cfg.maxPhyAddr < 36 || cfg.maxPhyAddr > 52) {
    throw new TypeError(`maxPhyAddr must be an integer in [36, 52], got ${cfg.maxPhyAddr}`);
  }
  return Object.freeze(cfg);
}

function stripUndefined(o: object): object {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
