/**
 * guest_memfd files as KVM sees them: creation, binding a range of the file to a memslot, unbinding,
 * and handing out (and preparing) the page behind a gfn. fallocate and hole punching are in
 * guest_memfd_file.ts; page contents and pfns are the host-memory layer's business.
 *
 * Kernel counterpart: virt/kvm/guest_memfd.c (kvm_gmem_create, __kvm_gmem_create, kvm_gmem_bind,
 * kvm_gmem_unbind, kvm_gmem_get_supported_flags). See shared/reference/memslot-abi.md §2.5, §5.2.
 */
import {
  GUEST_MEMFD_FLAG_INIT_SHARED,
  GUEST_MEMFD_FLAG_MMAP,
  KVM_MEMSLOT_GMEM_ONLY,
  PAGE_SIZE,
} from '../uapi/kvm.ts';
import type { KvmMemorySlot } from './kvm_host.ts';
import type { VmState } from './vm_state.ts';
import { KvmError, hex } from './kvm_error.ts';
import { isUnaligned, type U64 } from './args.ts';
import { kvmArchGmemPrepare } from '../x86/sev.ts';

/** One open file of the model process, as the fd table holds it. */
export type ModelFile =
  | { kind: 'kvm'; id: number }
  | { kind: 'vm'; id: number; vmId: number }
  | { kind: 'vcpu'; id: number; vmId: number }
  | { kind: 'memfd'; id: number; size: number }
  /** a VFIO group or container file (iommu/vfio.ts) */
  | { kind: 'vfio'; id: number }
  /** a KVM_CREATE_DEVICE device fd (kvm/kvm_vfio.ts) */
  | { kind: 'kvm-device'; id: number; vmId: number }
  | KvmGmemFile;

export interface KvmGmemBindingRange {
  /** first and last+1 page offset in the file */
  start: number;
  end: number;
  slot: KvmMemorySlot;
}

/** struct kvm_gmem + its inode, as far as the memslot ABI needs it. */
export interface KvmGmemFile {
  kind: 'guest_memfd';
  id: number;
  vmId: number;
  /** i_size in bytes */
  size: number;
  flags: number;
  /** the bindings xarray, as sorted disjoint page ranges */
  bindings: KvmGmemBindingRange[];
  /** the file's page cache: page index → host pfn */
  pages: Map<number, number>;
  /**
   * Pages allocated by fallocate but not yet prepared for the guest (folio not uptodate): the first
   * private fault or populate prepares them. Every other page in `pages` is prepared.
   */
  unprepared: Set<number>;
  /** struct kvm_gmem.kvm: the VM that created the file (its MMU is invalidated on punch hole). */
  kvm: VmState;
}

export interface GmemVm {
  readonly id: number;
  readonly hasPrivateMem: boolean;
  readonly kernel: string;
  /** the host's guest_memfd build: CONFIG_KVM_GUEST_MEMFD and the flags it supports */
  readonly cfg: { readonly guestMemfd: boolean; readonly guestMemfdFlags: number };
}

/**
 * `hostFlags` is what the build supports for /dev/kvm (HostConfig.guestMemfdFlags).
 * @kernel virt/kvm/guest_memfd.c#kvm_gmem_get_supported_flags
 */
export function kvmGmemGetSupportedFlags(vmHasPrivateMem: boolean | null, hostFlags: number): number {
  let flags = hostFlags & GUEST_MEMFD_FLAG_MMAP;
  // x86 kvm_arch_supports_gmem_init_shared(): only VMs without private memory (or /dev/kvm itself).
  if (vmHasPrivateMem !== true) flags |= hostFlags & GUEST_MEMFD_FLAG_INIT_SHARED;
  return flags;
}

/** Validate KVM_CREATE_GUEST_MEMFD arguments. @kernel virt/kvm/guest_memfd.c#kvm_gmem_create */
export function kvmGmemCreateCheck(vm: GmemVm, size: U64, flags: U64): { size: number; flags: number } {
  const syscall = 'KVM_CREATE_GUEST_MEMFD';
  // Without CONFIG_KVM_GUEST_MEMFD the ioctl is not compiled into kvm_vm_ioctl: the arch handler's default.
  if (!vm.cfg.guestMemfd) throw new KvmError('ENOTTY', syscall, 'this kernel has no CONFIG_KVM_GUEST_MEMFD');
  const supported = kvmGmemGetSupportedFlags(vm.hasPrivateMem, vm.cfg.guestMemfdFlags);
  if (typeof flags === 'bigint' || flags & ~supported || flags > 0xffffffff) {
    throw new KvmError('EINVAL', syscall, `flags ${hex(flags)} not in the supported set ${hex(supported)}`);
  }
  // size is a loff_t: values with bit 63 set are negative.
  if (size === 0 || typeof size === 'bigint' || isUnaligned(size, PAGE_SIZE)) {
    throw new KvmError('EINVAL', syscall, `size ${hex(size)} must be positive and page aligned`);
  }
  return { size, flags };
}

/**
 * Bind [offset, offset + npages pages) of `file` to `slot`.
 * @kernel virt/kvm/guest_memfd.c#kvm_gmem_bind
 */
export function kvmGmemBind(
  vm: GmemVm,
  slot: KvmMemorySlot,
  file: ModelFile | undefined,
  fd: number,
  offset: U64,
  syscall: string,
): void {
  if (file === undefined) throw new KvmError('EBADF', syscall, `guest_memfd ${fd} is not an open file`);
  if (file.kind !== 'guest_memfd') {
    throw new KvmError('EINVAL', syscall, `fd ${fd} is a ${file.kind} file, not a guest_memfd`);
  }
  if (file.vmId !== vm.id) throw new KvmError('EINVAL', syscall, `guest_memfd ${fd} belongs to another VM`);
  const bytes = slot.npages * PAGE_SIZE;
  if (typeof offset === 'bigint' || isUnaligned(offset, PAGE_SIZE) || offset + bytes > file.size) {
    throw new KvmError(
      'EINVAL',
      syscall,
      `guest_memfd_offset ${hex(offset)} + size ${hex(bytes)} is unaligned or past the file size ${hex(file.size)}`,
    );
  }
  const start = offset / PAGE_SIZE;
  const end = start + slot.npages;
  const clash = file.bindings.find((b) => b.start < end && start < b.end);
  if (clash) {
    throw new KvmError(
      'EINVAL',
      syscall,
      `guest_memfd pages [${hex(start)}, ${hex(end)}) already bound to memslot ${clash.slot.id}`,
    );
  }
  file.bindings.push({ start, end, slot });
  file.bindings.sort((x, y) => x.start - y.start);
  slot.gmem = { file, pgoff: start };
  if (file.flags & GUEST_MEMFD_FLAG_MMAP) slot.flags |= KVM_MEMSLOT_GMEM_ONLY;
}

/** @kernel virt/kvm/guest_memfd.c#kvm_gmem_unbind */
export function kvmGmemUnbind(slot: KvmMemorySlot): void {
  const b = slot.gmem;
  if (b === null) return;
  const file = b.file as KvmGmemFile;
  file.bindings = file.bindings.filter((r) => r.slot !== slot);
  slot.gmem = null;
}

/**
 * The pfn of the guest_memfd page backing `gfn` of `slot`, allocated on first use and prepared for the
 * guest the first time it is handed out (a punched-out page is allocated afresh). Null without a binding.
 * @kernel virt/kvm/guest_memfd.c#kvm_gmem_get_pfn
 */
export function kvmGmemGetPfn(
  pool: { alloc(n: number): number },
  slot: KvmMemorySlot,
  gfn: number,
): number | null {
  const b = slot.gmem;
  if (b === null) return null;
  const file = b.file as KvmGmemFile;
  const index = b.pgoff + (gfn - slot.baseGfn);
  let pfn = file.pages.get(index);
  if (pfn === undefined) {
    pfn = pool.alloc(1);
    file.pages.set(index, pfn);
  } else if (file.unprepared.size === 0 || !file.unprepared.delete(index)) return pfn;
  // kvm_gmem_prepare_folio: first use by the guest; on SNP this assigns the page in the RMP.
  kvmArchGmemPrepare(file.kvm.arch, gfn, pfn);
  return pfn;
}
