/**
 * What this /dev/kvm is, probed rather than recognised: every model option that the kernel exposes is
 * read from the kernel itself (KVM_CHECK_EXTENSION on /dev/kvm and on a VM fd, module parameters, one
 * behavioural probe), and the host facts the model cannot express are named. The result configures the
 * model (`new Kvm(profile.modelOptions)`) for every differential test and for `zaplab conformance`, so
 * they follow whatever kernel build they find (the development machines' changed from 6.18.44 build
 * v669, with guest_memfd, to build v1272, without it).
 *
 * Kernel counterparts: virt/kvm/kvm_main.c#kvm_vm_ioctl_check_extension_generic and
 * arch/x86/kvm/x86.c#kvm_vm_ioctl_check_extension (the caps), /sys/module/kvm/parameters (tdp_mmu,
 * eager_page_split), /sys/module/kvm_intel/parameters/pml, and /proc/cpuinfo's physical address width
 * (boot_cpu_data.x86_phys_bits, which kvm_mmu_max_gfn() follows with TDP).
 */
import { existsSync, readFileSync } from 'node:fs';
import { release as osRelease } from 'node:os';
import { KERNEL_VERSIONS, type KernelVersion, type KvmOptions } from '../../kvm/host_profile.ts';
import { KvmError } from '../../kvm/kvm_error.ts';
import { KVM_CAP, KVM_MEM_GUEST_MEMFD, KVM_USER_MEM_SLOTS } from '../../uapi/kvm.ts';
import { KVM_X86_VALID_QUIRKS } from '../../uapi/kvm_x86.ts';

/** The /dev/kvm surface the probe needs (RealKvm; structurally typed so tests can fake a host). */
export interface ProbeTarget {
  apiVersion(): number;
  checkExtension(cap: number): number;
  vcpuMmapSize(): number;
  createVm(type?: number): ProbeVm;
}
export interface ProbeVm {
  checkExtension(cap: number): number;
  createGuestMemfd(a: { size: number; flags: number }): number;
  setUserMemoryRegion2(r: Record<string, number>): void;
  close(): void;
}

/** One model option and the host fact it was read from. */
export interface Derivation {
  option: keyof KvmOptions;
  value: unknown;
  from: string;
}

/** What /dev/kvm reports, and the model options that describe it. */
export interface RealHostProfile {
  kernel: string;
  apiVersion: number;
  /** kvm_pvm is the vendor module (nested PVM host) */
  pvm: boolean;
  /** /sys/module/kvm/parameters/tdp_mmu */
  tdpMmu: boolean;
  /** tdp_enabled, as KVM_CAP_PRE_FAULT_MEMORY exposes it (x86 returns tdp_enabled) */
  tdpEnabled: boolean;
  /** KVM_CAP_VM_TYPES bitmask and the types it names */
  vmTypes: number;
  vmTypeList: number[];
  /** KVM_CAP_DISABLE_QUIRKS2: kvm_caps.supported_quirks */
  supportedQuirks: number;
  /** KVM_CAP_MULTI_ADDRESS_SPACE on /dev/kvm (0 is reported as 1) */
  addressSpaces: number;
  /** KVM_CAP_X86_SMM */
  smm: boolean;
  /** KVM_CAP_MEMORY_ATTRIBUTES (supported attribute bits) */
  memoryAttributes: number;
  /** KVM_CAP_GUEST_MEMFD on /dev/kvm: the kernel was built with CONFIG_KVM_GUEST_MEMFD */
  guestMemfd: boolean;
  /** KVM_CAP_GUEST_MEMFD_FLAGS on /dev/kvm */
  guestMemfdFlags: number;
  /**
   * Does clearing KVM_MEM_GUEST_MEMFD on a bound slot fail (the 6.19 fix)? Probed by doing it on a
   * scratch VM; null where the host has no guest_memfd (the question cannot arise).
   */
  gmemFlagsFix: boolean | null;
  /** KVM_CAP_NR_MEMSLOTS (user slot ids are 0 .. nrMemslots-1) */
  nrMemslots: number;
  readonlyMem: boolean;
  userMemory2: boolean;
  manualDirtyLogProtect: number;
  dirtyLogRing: number;
  memoryFaultInfo: boolean;
  nrVcpus: number;
  maxVcpus: number;
  maxVcpuId: number;
  vcpuMmapSize: number;
  /** host physical address width (/proc/cpuinfo), or null if unreadable */
  physBits: number | null;
  /** /sys/module/kvm/parameters/eager_page_split, null if absent */
  eagerPageSplit: boolean | null;
  /** /sys/module/kvm_intel/parameters/pml, null if absent (not a VMX host, or no such parameter) */
  pml: boolean | null;
  /** Options for the model's `new Kvm(opts)` that reproduce this host. */
  modelOptions: KvmOptions;
  /** Each model option and where it came from. */
  derivation: Derivation[];
  /** Host facts the model cannot express (each a sentence). Empty when the model describes the host fully. */
  unrepresentable: string[];
}

/** The greatest modelled kernel version not newer than `release` (e.g. '6.18.44-fc-v1272' → '6.18'). */
export function modelKernelFor(release: string): { version: KernelVersion; note: string | null } {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m)
    return { version: '6.18', note: `kernel release '${release}' is not major.minor…; modelled as 6.18` };
  const num = (v: string) => {
    const [a, b] = v.split('.').map(Number);
    return a! * 1000 + b!;
  };
  const host = Number(m[1]) * 1000 + Number(m[2]);
  const fit = [...KERNEL_VERSIONS].reverse().find((v) => num(v) <= host);
  const oldest = KERNEL_VERSIONS[0]!;
  const newest = KERNEL_VERSIONS[KERNEL_VERSIONS.length - 1]!;
  if (!fit)
    return {
      version: oldest,
      note: `kernel ${m[1]}.${m[2]} predates the oldest modelled version ${oldest}; modelled as ${oldest}`,
    };
  if (host > num(newest))
    return {
      version: fit,
      note: `kernel ${m[1]}.${m[2]} is newer than the newest modelled version ${newest}; modelled as ${newest}`,
    };
  return { version: fit, note: null };
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}
function readBoolParam(path: string): boolean | null {
  const v = readText(path)?.trim();
  return v === undefined ? null : v === 'Y' || v === '1';
}
function physBits(): number | null {
  const m = /address sizes\s*:\s*(\d+) bits physical/.exec(readText('/proc/cpuinfo') ?? '');
  return m ? Number(m[1]) : null;
}

/**
 * The 6.19 guest_memfd fix (kvm_set_memory_region compares KVM_MEM_GUEST_MEMFD as well as READONLY for a
 * FLAGS_ONLY change) is a behaviour, not a capability: bind a scratch guest_memfd slot, then ask to clear
 * the flag. EINVAL = fixed; success = the 6.12–6.18 behaviour.
 */
function probeGmemFlagsFix(kvm: ProbeTarget): boolean {
  const vm = kvm.createVm(0);
  try {
    const fd = vm.createGuestMemfd({ size: 0x200000, flags: 0 });
    const region = {
      slot: 0,
      guestPhysAddr: 0x1_0000_0000,
      memorySize: 0x200000,
      userspaceAddr: 0,
      guestMemfd: fd,
      guestMemfdOffset: 0,
    };
    vm.setUserMemoryRegion2({ ...region, flags: KVM_MEM_GUEST_MEMFD });
    try {
      vm.setUserMemoryRegion2({ ...region, flags: 0 });
      return false;
    } catch (e) {
      if (e instanceof KvmError && e.code === 'EINVAL') return true;
      throw e;
    }
  } finally {
    vm.close();
  }
}

/** Probe `kvm` (a RealKvm) and derive the model configuration. */
export function probeHost(kvm: ProbeTarget): RealHostProfile {
  const C = KVM_CAP;
  const cap = (n: number) => kvm.checkExtension(n);
  const vmTypes = cap(C.KVM_CAP_VM_TYPES);
  const as = cap(C.KVM_CAP_MULTI_ADDRESS_SPACE);
  const guestMemfd = cap(C.KVM_CAP_GUEST_MEMFD) !== 0;
  const p: Omit<RealHostProfile, 'modelOptions' | 'derivation' | 'unrepresentable'> = {
    kernel: osRelease(),
    apiVersion: kvm.apiVersion(),
    pvm: existsSync('/sys/module/kvm_pvm'),
    tdpMmu: readBoolParam('/sys/module/kvm/parameters/tdp_mmu') === true,
    tdpEnabled: cap(C.KVM_CAP_PRE_FAULT_MEMORY) !== 0,
    vmTypes,
    vmTypeList: [...Array(32).keys()].filter((i) => (vmTypes >>> i) & 1),
    supportedQuirks: cap(C.KVM_CAP_DISABLE_QUIRKS2),
    addressSpaces: as === 0 ? 1 : as,
    smm: cap(C.KVM_CAP_X86_SMM) !== 0,
    memoryAttributes: cap(C.KVM_CAP_MEMORY_ATTRIBUTES),
    guestMemfd,
    guestMemfdFlags: cap(C.KVM_CAP_GUEST_MEMFD_FLAGS),
    gmemFlagsFix: guestMemfd ? probeGmemFlagsFix(kvm) : null,
    nrMemslots: cap(C.KVM_CAP_NR_MEMSLOTS),
    readonlyMem: cap(C.KVM_CAP_READONLY_MEM) !== 0,
    userMemory2: cap(C.KVM_CAP_USER_MEMORY2) !== 0,
    manualDirtyLogProtect: cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
    dirtyLogRing: cap(C.KVM_CAP_DIRTY_LOG_RING),
    memoryFaultInfo: cap(C.KVM_CAP_MEMORY_FAULT_INFO) !== 0,
    nrVcpus: cap(C.KVM_CAP_NR_VCPUS),
    maxVcpus: cap(C.KVM_CAP_MAX_VCPUS),
    maxVcpuId: cap(C.KVM_CAP_MAX_VCPU_ID),
    vcpuMmapSize: kvm.vcpuMmapSize(),
    physBits: physBits(),
    eagerPageSplit: readBoolParam('/sys/module/kvm/parameters/eager_page_split'),
    pml: readBoolParam('/sys/module/kvm_intel/parameters/pml'),
  };
  return { ...p, ...deriveModel(p) };
}

/** The model options a probed host implies, how each was found, and what the model cannot express. */
export function deriveModel(
  p: Omit<RealHostProfile, 'modelOptions' | 'derivation' | 'unrepresentable'>,
): Pick<RealHostProfile, 'modelOptions' | 'derivation' | 'unrepresentable'> {
  const derivation: Derivation[] = [];
  const unrepresentable: string[] = [];
  const set = (option: keyof KvmOptions, value: unknown, from: string) =>
    derivation.push({ option, value, from });
  const kernel = modelKernelFor(p.kernel);
  if (kernel.note) unrepresentable.push(kernel.note);

  // The profile only supplies what no probe reaches (userAddrLimit); every other field is set explicitly.
  set(
    'profile',
    p.pvm ? 'pvm-6.18' : 'upstream-6.18',
    p.pvm ? '/sys/module/kvm_pvm exists' : 'no kvm_pvm module',
  );
  set('kernel', kernel.version, `uname release ${p.kernel}`);
  set('tdp', p.tdpEnabled, `KVM_CAP_PRE_FAULT_MEMORY = ${p.tdpEnabled ? 1 : 0} (x86 returns tdp_enabled)`);
  set('tdpMmu', p.tdpEnabled && p.tdpMmu, `/sys/module/kvm/parameters/tdp_mmu = ${p.tdpMmu ? 'Y' : 'N'}`);
  set('vmTypes', p.vmTypes, `KVM_CAP_VM_TYPES = 0x${p.vmTypes.toString(16)}`);
  set(
    'smm',
    p.smm && p.addressSpaces > 1,
    `KVM_CAP_X86_SMM = ${p.smm ? 1 : 0}, KVM_CAP_MULTI_ADDRESS_SPACE = ${p.addressSpaces}`,
  );
  set('supportedQuirks', p.supportedQuirks, `KVM_CAP_DISABLE_QUIRKS2 = 0x${p.supportedQuirks.toString(16)}`);
  set(
    'memoryAttributes',
    p.memoryAttributes !== 0,
    `KVM_CAP_MEMORY_ATTRIBUTES = 0x${p.memoryAttributes.toString(16)}`,
  );
  set('guestMemfd', p.guestMemfd, `KVM_CAP_GUEST_MEMFD = ${p.guestMemfd ? 1 : 0}`);
  set(
    'guestMemfdFlags',
    p.guestMemfd ? p.guestMemfdFlags : 0,
    `KVM_CAP_GUEST_MEMFD_FLAGS = 0x${p.guestMemfdFlags.toString(16)}`,
  );
  if (p.gmemFlagsFix !== null)
    set(
      'gmemFlagsFix',
      p.gmemFlagsFix,
      `clearing KVM_MEM_GUEST_MEMFD on a bound scratch slot: ${p.gmemFlagsFix ? 'EINVAL' : 'accepted'}`,
    );
  set('maxVcpus', p.maxVcpus, `KVM_CAP_MAX_VCPUS = ${p.maxVcpus}`);
  set('maxVcpuId', p.maxVcpuId, `KVM_CAP_MAX_VCPU_ID = ${p.maxVcpuId}`);
  set('onlineCpus', p.nrVcpus, `KVM_CAP_NR_VCPUS = ${p.nrVcpus} (min(num_online_cpus(), KVM_MAX_VCPUS))`);
  if (p.physBits !== null && p.physBits >= 36 && p.physBits <= 52)
    set('maxPhyAddr', p.physBits, `/proc/cpuinfo: ${p.physBits} bits physical`);
  if (p.eagerPageSplit !== null)
    set('eagerPageSplit', p.eagerPageSplit, '/sys/module/kvm/parameters/eager_page_split');
  if (p.pml !== null) set('pml', p.pml, '/sys/module/kvm_intel/parameters/pml');
  else set('pml', false, 'no /sys/module/kvm_intel/parameters/pml (not a VMX host with PML)');

  if (p.tdpMmu && !p.tdpEnabled)
    unrepresentable.push('tdp_mmu=Y without tdp_enabled: KVM uses the shadow MMU; modelled so');
  if (p.nrMemslots !== KVM_USER_MEM_SLOTS)
    unrepresentable.push(
      `KVM_CAP_NR_MEMSLOTS = ${p.nrMemslots}; the model has ${KVM_USER_MEM_SLOTS} user slots per address space`,
    );
  if (p.vmTypes & ~0x3f)
    unrepresentable.push(`VM types 0x${(p.vmTypes & ~0x3f).toString(16)} beyond the six modelled x86 types`);
  if (p.supportedQuirks & ~KVM_X86_VALID_QUIRKS)
    unrepresentable.push(
      `quirk bits 0x${(p.supportedQuirks & ~KVM_X86_VALID_QUIRKS).toString(16)} are accepted by the model but have no modelled effect`,
    );
  if (p.memoryAttributes & ~8)
    unrepresentable.push(
      `memory attribute bits 0x${(p.memoryAttributes & ~8).toString(16)} other than PRIVATE`,
    );
  if (p.pvm)
    unrepresentable.push(
      'kvm_pvm: guest code at CPL0 is emulated without creating SPTEs; the model has no instruction emulator (MMU comparisons run CPL3 guests)',
    );
  if (p.physBits === null)
    unrepresentable.push('host MAXPHYADDR unreadable from /proc/cpuinfo; the profile default is used');
  unrepresentable.push(
    'USER_PTR_MAX (access_ok ceiling) is not exposed by KVM; the model assumes 0x7ffffffff000 (4-level paging)',
  );
  const modelOptions = Object.fromEntries(derivation.map((d) => [d.option, d.value])) as KvmOptions;
  return { modelOptions, derivation, unrepresentable };
}

/** The probe as text: host facts, then each model option with its source, then what the model cannot say. */
export function formatProbe(p: RealHostProfile): string {
  const out = [
    `host kernel ${p.kernel} (API ${p.apiVersion})${p.pvm ? ', kvm_pvm' : ''}`,
    '',
    'model options (from what the host reports):',
  ];
  const w = Math.max(...p.derivation.map((d) => String(d.option).length));
  for (const d of p.derivation) {
    const hexOpt = d.option === 'vmTypes' || d.option === 'supportedQuirks' || d.option === 'guestMemfdFlags';
    const v = hexOpt && typeof d.value === 'number' ? `0x${d.value.toString(16)}` : JSON.stringify(d.value);
    out.push(`  ${String(d.option).padEnd(w)}  ${v.padEnd(16)}  ← ${d.from}`);
  }
  out.push('', 'not expressible in the model:');
  for (const u of p.unrepresentable) out.push(`  - ${u}`);
  return out.join('\n') + '\n';
}
