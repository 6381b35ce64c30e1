/**
 * KVM_SET_USER_MEMORY_REGION(2): copy-in, every validation step in the kernel's order with the
 * kernel's errno, the change-type decision, and the hand-off to the update protocol.
 *
 * Kernel counterpart: virt/kvm/kvm_main.c (kvm_vm_ioctl's SET_USER_MEMORY_REGION(2) cases,
 * kvm_vm_ioctl_set_memory_region, kvm_set_memory_region, check_memory_region_flags,
 * kvm_check_memslot_overlap). See shared/reference/memslot-abi.md §2.1–2.3, §2.6.
 */
import {
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_MAX_NR_PAGES,
  KVM_MEM_READONLY,
  KVM_MEM_SLOTS_NUM,
  KVM_MEM_ZAP_LEAFS_ONLY,
  KVM_SET_USER_MEMORY_REGION_V1_FLAGS,
  KVM_USER_MEM_SLOTS,
  PAGE_SIZE,
  type KvmMrChange,
} from '../uapi/kvm.ts';
import { asGfn, asHva } from '../types/addr.ts';
import type { KvmMemorySlot } from './kvm_host.ts';
import { newMemslot } from './memslots.ts';
import { kvmSetMemslot, type SetMemslotVm } from './set_memslot.ts';
import { kvmGmemBind, kvmGmemUnbind, type GmemVm, type ModelFile } from './guest_memfd.ts';
import { KvmError, hex, reject, type Reject } from './kvm_error.ts';
import {
  addWrapsU64,
  copyIn,
  isPlainObject,
  isUnaligned,
  num,
  readFd,
  readU32,
  readU64,
  sumExceeds,
  unknownField,
  type StructSpec,
  type U64,
} from './args.ts';
import type { HostConfig } from './host_profile.ts';
import type { ZapDesign } from '../x86/x86.ts';
import type { VmTypeInfo } from '../x86/vm_types.ts';

const REGION_V1: StructSpec = {
  slot: 'u32',
  flags: 'u32',
  guestPhysAddr: 'u64',
  memorySize: 'u64',
  userspaceAddr: 'u64',
};
const REGION_V2: StructSpec = {
  ...REGION_V1,
  guestMemfdOffset: 'u64',
  guestMemfd: 'fd',
  pad1: 'u32',
  pad2: 'u64',
};

/** struct kvm_userspace_memory_region2 after copy-in. */
export interface Region2 {
  slot: number;
  flags: number;
  guestPhysAddr: U64;
  memorySize: U64;
  userspaceAddr: U64;
  guestMemfdOffset: U64;
  guestMemfd: number;
}

export interface SetRegionVm extends SetMemslotVm, GmemVm {
  readonly cfg: HostConfig;
  readonly info: VmTypeInfo;
  readonly zapDesign: ZapDesign;
  /** kvm->vm_dead or a KVM_BUG_ON: every VM ioctl fails with EIO */
  readonly dead: boolean;
  /** the VM fd was closed: EBADF before anything else */
  readonly fdClosed: boolean;
  lookupFd(fd: number): ModelFile | undefined;
}

/**
 * Copy the struct in: V1 zeroes a region2 and copies 32 bytes, so the gmem fields read as 0. The same
 * checks, in the same order, with the same messages as `copyIn` with REGION_V1/REGION_V2 (tested equal in
 * set_memory_region_copyin.property.test.ts), without its generic record: named reads, no key array.
 */
export function copyInRegion(syscall: string, arg: unknown, v2: boolean): Region2 {
  if (!isPlainObject(arg)) return copyInRegionGeneric(syscall, arg, v2); // throws EFAULT
  // Object.keys order, without the array: for-in visits own keys first, in the same order; an inherited
  // enumerable name is not a field of the argument (Object.keys would not list it).
  for (const k in arg) {
    if (!(v2 ? isRegion2Field(k) : isRegion1Field(k)) && Object.hasOwn(arg, k))
      unknownField(syscall, k, v2 ? REGION_V2 : REGION_V1);
  }
  const slot = readU32(syscall, 'slot', arg['slot']);
  const flags = readU32(syscall, 'flags', arg['flags']);
  const guestPhysAddr = readU64(syscall, 'guestPhysAddr', arg['guestPhysAddr']);
  const memorySize = readU64(syscall, 'memorySize', arg['memorySize']);
  const userspaceAddr = readU64(syscall, 'userspaceAddr', arg['userspaceAddr']);
  if (!v2)
    return { slot, flags, guestPhysAddr, memorySize, userspaceAddr, guestMemfdOffset: 0, guestMemfd: 0 };
  const guestMemfdOffset = readU64(syscall, 'guestMemfdOffset', arg['guestMemfdOffset']);
  const guestMemfd = readFd(syscall, 'guestMemfd', arg['guestMemfd']);
  readU32(syscall, 'pad1', arg['pad1']);
  readU64(syscall, 'pad2', arg['pad2']);
  return { slot, flags, guestPhysAddr, memorySize, userspaceAddr, guestMemfdOffset, guestMemfd };
}

function isRegion1Field(k: string): boolean {
  return (
    k === 'slot' || k === 'flags' || k === 'guestPhysAddr' || k === 'memorySize' || k === 'userspaceAddr'
  );
}
function isRegion2Field(k: string): boolean {
  return isRegion1Field(k) || k === 'guestMemfdOffset' || k === 'guestMemfd' || k === 'pad1' || k === 'pad2';
}

/** The same copy-in through the generic `copyIn`: the reference the fast one is tested against. */
export function copyInRegionGeneric(syscall: string, arg: unknown, v2: boolean): Region2 {
  const r = copyIn(syscall, arg, v2 ? REGION_V2 : REGION_V1) as Record<string, U64 | number>;
  return {
    slot: r['slot'] as number,
    flags: r['flags'] as number,
    guestPhysAddr: r['guestPhysAddr']!,
    memorySize: r['memorySize']!,
    userspaceAddr: r['userspaceAddr']!,
    guestMemfdOffset: (r['guestMemfdOffset'] ?? 0) as U64,
    guestMemfd: (r['guestMemfd'] ?? 0) as number,
  };
}

/** @kernel virt/kvm/kvm_main.c#check_memory_region_flags */
export function checkMemoryRegionFlags(vm: SetRegionVm, flags: number): boolean {
  let valid = KVM_MEM_LOG_DIRTY_PAGES;
  // 6.18 accepts the flag on every VM type when built with CONFIG_KVM_GUEST_MEMFD
  // (IS_ENABLED(CONFIG_KVM_GUEST_MEMFD)); before, only private-memory VMs took it. Without guest_memfd the
  // flag is simply not valid: EINVAL here, before the fd is looked at.
  if (vm.cfg.guestMemfd && (vm.cfg.kernel >= '6.18' || vm.info.hasPrivateMem)) valid |= KVM_MEM_GUEST_MEMFD;
  // The May 2024 RFC's flag exists only in the slot-flag design, and only with the TDP MMU.
  if (vm.zapDesign === 'slot-flag' && vm.cfg.tdpMmu) valid |= KVM_MEM_ZAP_LEAFS_ONLY;
  // Dirty logging of guest_memfd slots is not supported.
  if (flags & KVM_MEM_GUEST_MEMFD) valid &= ~KVM_MEM_LOG_DIRTY_PAGES;
  // READONLY is incompatible with guest_memfd and with protected guest state.
  if (!vm.info.hasProtectedState && !(flags & KVM_MEM_GUEST_MEMFD)) valid |= KVM_MEM_READONLY;
  return (flags & ~valid) === 0;
}

function einval(syscall: string, msg: string): never {
  throw new KvmError('EINVAL', syscall, msg);
}

/**
 * The ioctl: KVM_SET_USER_MEMORY_REGION (v2 = false) or KVM_SET_USER_MEMORY_REGION2.
 * @kernel virt/kvm/kvm_main.c#kvm_vm_ioctl_set_memory_region
 */
export function kvmVmIoctlSetMemoryRegion(vm: SetRegionVm, arg: unknown, v2: boolean): Reject | null {
  const syscall = v2 ? 'KVM_SET_USER_MEMORY_REGION2' : 'KVM_SET_USER_MEMORY_REGION';
  if (vm.fdClosed) return reject('EBADF', () => 'the VM fd is closed');
  if (vm.dead) return reject('EIO', () => 'the VM is dead (bugged or killed)');
  const mem = copyInRegion(syscall, arg, v2);
  if (!v2 && mem.flags & ~KVM_SET_USER_MEMORY_REGION_V1_FLAGS) {
    return reject(
      'EINVAL',
      () =>
        `flags ${hex(mem.flags)} are not valid for KVM_SET_USER_MEMORY_REGION (only ${hex(KVM_SET_USER_MEMORY_REGION_V1_FLAGS)})`,
    );
  }
  if ((mem.slot & 0xffff) >= KVM_USER_MEM_SLOTS) {
    return reject(
      'EINVAL',
      () => `slot id ${hex(mem.slot & 0xffff)} >= KVM_USER_MEM_SLOTS (${hex(KVM_USER_MEM_SLOTS)})`,
    );
  }
  return kvmSetMemoryRegion(vm, mem, syscall);
}

/** B1–B9: the checks that do not look at existing slots. */
function sanityCheck(vm: SetRegionVm, mem: Region2): Reject | null {
  if (!checkMemoryRegionFlags(vm, mem.flags)) {
    return reject('EINVAL', () => `flags ${hex(mem.flags)} not valid for a ${vm.info.name} VM`);
  }
  const asId = mem.slot >>> 16;
  const id = mem.slot & 0xffff;
  const { memorySize: size, guestPhysAddr: gpa, userspaceAddr: uaddr } = mem;
  if (isUnaligned(size, PAGE_SIZE))
    return reject('EINVAL', () => `memory_size ${hex(size)} is not a multiple of PAGE_SIZE`);
  if (isUnaligned(gpa, PAGE_SIZE))
    return reject('EINVAL', () => `guest_phys_addr ${hex(gpa)} is not page aligned`);
  if (isUnaligned(uaddr, PAGE_SIZE))
    return reject('EINVAL', () => `userspace_addr ${hex(uaddr)} is not page aligned`);
  // access_ok(): the range must not wrap and must end inside the user address space.
  if (addWrapsU64(uaddr, size) || sumExceeds(uaddr, size, vm.cfg.userAddrLimit)) {
    return reject(
      'EINVAL',
      () =>
        `userspace_addr ${hex(uaddr)} + memory_size ${hex(size)} fails access_ok (limit ${hex(vm.cfg.userAddrLimit)})`,
    );
  }
  if (mem.flags & KVM_MEM_GUEST_MEMFD) {
    const off = mem.guestMemfdOffset;
    if (isUnaligned(off, PAGE_SIZE) || addWrapsU64(off, size)) {
      return reject(
        'EINVAL',
        () => `guest_memfd_offset ${hex(off)} is unaligned or wraps with memory_size ${hex(size)}`,
      );
    }
  }
  if (asId >= vm.nrAs || id >= KVM_MEM_SLOTS_NUM) {
    return reject('EINVAL', () => `address space ${asId} (VM has ${vm.nrAs}) or slot id ${id} out of range`);
  }
  if (addWrapsU64(gpa, size))
    return reject('EINVAL', () => `guest_phys_addr ${hex(gpa)} + memory_size ${hex(size)} wraps`);
  if (id < KVM_USER_MEM_SLOTS && (typeof size === 'bigint' || size / PAGE_SIZE > KVM_MEM_MAX_NR_PAGES)) {
    return reject('EINVAL', () => `memory_size ${hex(size)} exceeds KVM_MEM_MAX_NR_PAGES pages`);
  }
  return null;
}

/** @kernel virt/kvm/kvm_main.c#kvm_set_memory_region */
export function kvmSetMemoryRegion(vm: SetRegionVm, mem: Region2, syscall: string): Reject | null {
  const bad = sanityCheck(vm, mem);
  if (bad !== null) return bad;
  const asId = mem.slot >>> 16;
  const id = mem.slot & 0xffff;
  const old = vm.activeMemslots(asId).idToMemslot(id);

  if (mem.memorySize === 0) {
    if (old === null || old.npages === 0) {
      return reject(
        'EINVAL',
        () => `cannot delete memslot ${id}: it does not exist in address space ${asId}`,
      );
    }
    if (vm.nrMemslotPages < old.npages)
      throw new KvmError('EIO', syscall, 'nr_memslot_pages underflow (kernel WARN)');
    apply(vm, old, null, 'DELETE', syscall);
    return null;
  }

  // gpa is page aligned, so gpa / 4096 < 2^52 is an exact number even when gpa itself is a bigint;
  // a gfn beyond kvm_mmu_max_gfn() is rejected by kvm_arch_prepare_memory_region, as in the kernel.
  const gpa = mem.guestPhysAddr;
  const baseGfn = typeof gpa === 'bigint' ? Number(gpa / BigInt(PAGE_SIZE)) : gpa / PAGE_SIZE;
  const npages = num(mem.memorySize) / PAGE_SIZE;
  const hva = num(mem.userspaceAddr);
  const change = decideChange(vm, old, mem, baseGfn, npages, hva, syscall);
  if (change === null) return null; // identical request: nothing to do, no generation change

  if (change === 'CREATE' || change === 'MOVE') {
    const other = vm.activeMemslots(asId).overlapsOther(id, baseGfn, baseGfn + npages);
    if (other !== null) {
      throw new KvmError(
        'EEXIST',
        syscall,
        `gfn range [${hex(baseGfn)}, ${hex(baseGfn + npages)}) overlaps memslot ${other.id} [${hex(other.baseGfn)}, ${hex(other.baseGfn + other.npages)})`,
      );
    }
  }
  if (
    vm.zapDesign === 'slot-flag' &&
    vm.info.hasMirroredTdp &&
    mem.flags & KVM_MEM_GUEST_MEMFD &&
    !(mem.flags & KVM_MEM_ZAP_LEAFS_ONLY)
  ) {
    // The RFC made the flag mandatory for TDX private slots: zap-all cannot touch the mirror root.
    einval(syscall, 'a TDX guest_memfd slot must carry KVM_MEM_ZAP_LEAFS_ONLY in the slot-flag design');
  }
  const nu = newMemslot(asId, id, asGfn(baseGfn), npages, asHva(hva), mem.flags);
  if (mem.flags & KVM_MEM_GUEST_MEMFD) {
    kvmGmemBind(vm, nu, vm.lookupFd(mem.guestMemfd), mem.guestMemfd, mem.guestMemfdOffset, syscall);
  }
  try {
    apply(vm, old, nu, change, syscall);
  } catch (e) {
    kvmGmemUnbind(nu);
    throw e;
  }
  return null;
}

/** B14: CREATE, MOVE, FLAGS_ONLY, or null for the silent no-op. */
function decideChange(
  vm: SetRegionVm,
  old: KvmMemorySlot | null,
  mem: Region2,
  baseGfn: number,
  npages: number,
  hva: number,
  syscall: string,
): KvmMrChange | null {
  if (old === null) return 'CREATE';
  if (mem.flags & KVM_MEM_GUEST_MEMFD)
    einval(syscall, `memslot ${old.id} exists; guest_memfd slots can only be deleted`);
  // 6.12–6.18 compare only READONLY, so clearing GUEST_MEMFD slips through as FLAGS_ONLY (fixed in 6.19).
  const mask = vm.cfg.gmemFlagsFix ? KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD : KVM_MEM_READONLY;
  if (hva !== old.userspaceAddr || npages !== old.npages || (mem.flags ^ old.flags) & mask) {
    einval(
      syscall,
      `memslot ${old.id} exists with userspace_addr ${hex(old.userspaceAddr)}, npages ${hex(old.npages)}, flags ${hex(old.flags & 0xffff)}: only the gpa and LOG_DIRTY_PAGES may change`,
    );
  }
  if (baseGfn !== old.baseGfn) return 'MOVE';
  if (mem.flags !== old.flags) return 'FLAGS_ONLY';
  return null;
}

function apply(
  vm: SetRegionVm,
  old: KvmMemorySlot | null,
  nu: KvmMemorySlot | null,
  change: KvmMrChange,
  syscall: string,
): void {
  const r = kvmSetMemslot(vm, old, nu, change);
  if (r !== null) {
    const s = (nu ?? old)!;
    throw new KvmError(
      r as 'EINVAL',
      syscall,
      `kvm_arch_prepare_memory_region rejected the ${change} of memslot ${s.id} at gfn ${hex(s.baseGfn)} (+${hex(s.npages)} pages): beyond kvm_mmu_max_gfn() or an aliased gfn`,
    );
  }
}
