/**
 * KVM_CHECK_EXTENSION on /dev/kvm and on a VM fd, and KVM_ENABLE_CAP for the caps the memslot machinery
 * cares about (quirks, manual dirty-log protect, the dirty ring).
 *
 * Kernel counterpart: virt/kvm/kvm_main.c#kvm_vm_ioctl_check_extension_generic,
 * #kvm_vm_ioctl_enable_cap_generic, #kvm_vm_ioctl_enable_dirty_log_ring, arch/x86/kvm/x86.c
 * #kvm_vm_ioctl_check_extension, #kvm_vm_ioctl_enable_cap. See memslot-abi.md §1.6, §4.4–4.5, §6.2.
 */
import {
  KVM_CAP,
  KVM_DIRTY_LOG_MANUAL_CAPS,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_DIRTY_LOG_INITIALLY_SET,
  KVM_USER_MEM_SLOTS,
  PAGE_SIZE,
} from '../uapi/kvm.ts';
import { KVM_X86_VALID_QUIRKS } from '../uapi/kvm_x86.ts';
import type { HostConfig } from '../kvm/host_profile.ts';
import { kvmGmemGetSupportedFlags } from '../kvm/guest_memfd.ts';
import { KvmError, hex } from '../kvm/kvm_error.ts';
import type { U64 } from '../kvm/args.ts';
import type { VmTypeInfo } from './vm_types.ts';

/** struct kvm_dirty_gfn is 16 bytes; KVM_DIRTY_RING_MAX_ENTRIES = 65536; KVM_DIRTY_RING_RSVD_ENTRIES = 64. */
const KVM_DIRTY_GFN_SIZE = 16;
const KVM_DIRTY_RING_MAX_ENTRIES = 65536;
const KVM_DIRTY_RING_RSVD_ENTRIES = 64;
/** PML buffer entries a vCPU may still produce after the ring fills (kvm_cpu_dirty_log_size). */
const PML_LOG_NR_ENTRIES = 512;

export interface CapVm {
  readonly info: VmTypeInfo;
  readonly nrAs: number;
}

/** VM types this host supports, after dropping those that need the TDP MMU when it is off. */
export function supportedVmTypes(cfg: HostConfig): number {
  return cfg.tdpMmu ? cfg.vmTypes : cfg.vmTypes & 0b1101; // SW_PROTECTED, SNP and TDX need the TDP MMU
}

/** kvm_caps.supported_quirks as KVM_CAP_DISABLE_QUIRKS2 reports it. */
export function supportedQuirks(cfg: HostConfig): number {
  return cfg.kernel < '6.15' ? KVM_X86_VALID_QUIRKS & 0x1ff : cfg.supportedQuirks;
}

/**
 * @kernel virt/kvm/kvm_main.c#kvm_vm_ioctl_check_extension_generic
 * @kernel arch/x86/kvm/x86.c#kvm_vm_ioctl_check_extension
 */
export function checkExtension(cfg: HostConfig, vm: CapVm | null, cap: number): number {
  const C = KVM_CAP;
  switch (cap) {
    case C.KVM_CAP_USER_MEMORY:
    case C.KVM_CAP_USER_MEMORY2:
    case C.KVM_CAP_DESTROY_MEMORY_REGION_WORKS:
    case C.KVM_CAP_JOIN_MEMORY_REGIONS_WORKS:
    case C.KVM_CAP_SYNC_MMU:
    case C.KVM_CAP_DISABLE_QUIRKS:
    case C.KVM_CAP_MEMORY_FAULT_INFO:
    case C.KVM_CAP_BINARY_STATS_FD:
      return 1;
    case C.KVM_CAP_NR_MEMSLOTS:
      return KVM_USER_MEM_SLOTS;
    case C.KVM_CAP_NR_VCPUS:
      return Math.min(cfg.onlineCpus, cfg.maxVcpus);
    case C.KVM_CAP_MAX_VCPUS:
      return cfg.maxVcpus;
    case C.KVM_CAP_MAX_VCPU_ID:
      return cfg.maxVcpuId;
    case C.KVM_CAP_READONLY_MEM:
      return vm === null || !vm.info.hasProtectedState ? 1 : 0;
    case C.KVM_CAP_X86_SMM:
      return cfg.smm ? 1 : 0;
    case C.KVM_CAP_MULTI_ADDRESS_SPACE:
      // Only compiled in when KVM_MAX_NR_ADDRESS_SPACES > 1 (CONFIG_KVM_SMM).
      return cfg.smm ? (vm === null ? 2 : vm.nrAs) : 0;
    case C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2:
      return KVM_DIRTY_LOG_MANUAL_CAPS;
    case C.KVM_CAP_DIRTY_LOG_RING:
    case C.KVM_CAP_DIRTY_LOG_RING_ACQ_REL:
      return KVM_DIRTY_RING_MAX_ENTRIES * KVM_DIRTY_GFN_SIZE;
    case C.KVM_CAP_DISABLE_QUIRKS2:
      return supportedQuirks(cfg);
    case C.KVM_CAP_MEMORY_ATTRIBUTES:
      if (!cfg.memoryAttributes) return 0;
      return vm === null || vm.info.hasPrivateMem ? 8 : 0;
    // Both are compiled only with CONFIG_KVM_GUEST_MEMFD (kvm_vm_ioctl_check_extension_generic).
    case C.KVM_CAP_GUEST_MEMFD:
      if (!cfg.guestMemfd) return 0;
      return cfg.kernel >= '6.18' || vm === null || vm.info.hasPrivateMem ? 1 : 0;
    case C.KVM_CAP_GUEST_MEMFD_FLAGS:
      if (!cfg.guestMemfd) return 0;
      return kvmGmemGetSupportedFlags(vm === null ? null : vm.info.hasPrivateMem, cfg.guestMemfdFlags);
    case C.KVM_CAP_VM_TYPES:
      return supportedVmTypes(cfg);
    case C.KVM_CAP_PRE_FAULT_MEMORY:
      return cfg.tdp ? 1 : 0; // tdp_enabled
    default:
      return 0;
  }
}

/** The VM state enable-cap changes. */
export interface EnableCapVm {
  readonly cfg: HostConfig;
  readonly arch: { disabledQuirks: number };
  manualDirtyLogProtect: number;
  dirtyRingSize: number;
  readonly createdVcpus: number;
}

/** @kernel arch/x86/kvm/x86.c#kvm_vm_ioctl_enable_cap (+ the generic caps of kvm_main.c) */
export function enableCap(vm: EnableCapVm, cap: number, flags: number, args: readonly U64[]): void {
  const syscall = 'KVM_ENABLE_CAP';
  const a0 = args[0] ?? 0;
  const cfg = vm.cfg;
  switch (cap) {
    case KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: {
      const allowed = KVM_DIRTY_LOG_MANUAL_CAPS;
      const bad =
        flags !== 0 ||
        typeof a0 === 'bigint' ||
        (a0 & ~allowed) !== 0 ||
        ((a0 & KVM_DIRTY_LOG_INITIALLY_SET) !== 0 && (a0 & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) === 0);
      if (bad)
        throw new KvmError(
          'EINVAL',
          syscall,
          `MANUAL_DIRTY_LOG_PROTECT2 flags ${hex(flags)} args[0] ${hex(a0)} (allowed 0, 1, 3)`,
        );
      vm.manualDirtyLogProtect = a0;
      return;
    }
    case KVM_CAP.KVM_CAP_DIRTY_LOG_RING:
    case KVM_CAP.KVM_CAP_DIRTY_LOG_RING_ACQ_REL:
      // kvm_vm_ioctl_enable_dirty_log_ring(kvm, u32 size) gets cap->args[0]: C truncates it to 32 bits.
      return enableDirtyLogRing(vm, Number(BigInt(a0) & 0xffffffffn), a0);
    case KVM_CAP.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP:
      // x86 does not select CONFIG_HAVE_KVM_DIRTY_RING_WITH_BITMAP.
      throw new KvmError('EINVAL', syscall, 'DIRTY_LOG_RING_WITH_BITMAP is not supported on x86');
  }
  // arch caps: the x86 handler rejects any cap.flags first.
  if (flags !== 0) throw new KvmError('EINVAL', syscall, `cap ${cap}: flags ${hex(flags)} must be 0`);
  const supported = supportedQuirks(cfg);
  switch (cap) {
    case KVM_CAP.KVM_CAP_DISABLE_QUIRKS2:
      if (typeof a0 === 'bigint' || a0 > 0xffffffff || (a0 & ~supported) !== 0) {
        throw new KvmError(
          'EINVAL',
          syscall,
          `DISABLE_QUIRKS2 args[0] ${hex(a0)} has bits outside the supported quirks ${hex(supported)}`,
        );
      }
      applyDisabledQuirks(vm, a0 & supported);
      return;
    case KVM_CAP.KVM_CAP_DISABLE_QUIRKS: {
      // v1 never validated its argument; unsupported bits are masked off.
      const low = typeof a0 === 'bigint' ? Number(a0 & 0xffffffffn) : a0 % 2 ** 32;
      applyDisabledQuirks(vm, low & supported);
      return;
    }
  }
  throw new KvmError('EINVAL', syscall, `capability ${cap} cannot be enabled on a VM`);
}

function applyDisabledQuirks(vm: EnableCapVm, bits: number): void {
  // 6.15+ ORs the bits in (a quirk cannot be re-enabled); 6.12–6.14 overwrote the mask.
  vm.arch.disabledQuirks = vm.cfg.kernel >= '6.15' ? vm.arch.disabledQuirks | bits : bits;
}

/** `size` is already the u32 the kernel function takes. @kernel virt/kvm/kvm_main.c#kvm_vm_ioctl_enable_dirty_log_ring */
function enableDirtyLogRing(vm: EnableCapVm, size: number, arg: U64): void {
  const syscall = 'KVM_ENABLE_CAP';
  // Name what the kernel saw when the u32 cut changed the value (args[0] 0x200000000 is size 0).
  const cut = BigInt(arg) === BigInt(size) ? '' : ` (args[0] ${hex(arg)} cut to u32)`;
  const rsvd = (KVM_DIRTY_RING_RSVD_ENTRIES + (vm.cfg.pml ? PML_LOG_NR_ENTRIES : 0)) * KVM_DIRTY_GFN_SIZE;
  const max = KVM_DIRTY_RING_MAX_ENTRIES * KVM_DIRTY_GFN_SIZE;
  if (size === 0 || !Number.isInteger(Math.log2(size))) {
    throw new KvmError('EINVAL', syscall, `dirty ring size ${hex(size)}${cut} is not a power of two`);
  }
  if (size < rsvd || size < PAGE_SIZE)
    throw new KvmError(
      'EINVAL',
      syscall,
      `dirty ring size ${hex(size)}${cut} below ${hex(Math.max(rsvd, PAGE_SIZE))}`,
    );
  if (size > max) throw new KvmError('E2BIG', syscall, `dirty ring size ${hex(size)} above ${hex(max)}`);
  if (vm.dirtyRingSize) throw new KvmError('EINVAL', syscall, 'the dirty ring size can be set only once');
  if (vm.createdVcpus)
    throw new KvmError('EINVAL', syscall, 'the dirty ring must be enabled before any vCPU is created');
  vm.dirtyRingSize = size;
}
