/**
 * The real /dev/kvm behind the public API: `new RealKvm()` is to /dev/kvm what the model's `new Kvm()`
 * is to a modelled one (apiVersion, checkExtension, createVm, host), plus hostProfile(), which derives a
 * model configuration from what this kernel reports.
 *
 * Kernel counterpart: virt/kvm/kvm_main.c#kvm_dev_ioctl (KVM_GET_API_VERSION, KVM_CHECK_EXTENSION,
 * KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE) and arch/x86/kvm/x86.c#kvm_vm_ioctl_check_extension. Everything
 * it opens is released by close() / [Symbol.dispose] (VMs first, then host mappings and fds), and, for
 * anything a caller forgot, at process exit (resources.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { release as osRelease } from 'node:os';
import { readU32, readU64 } from '../../kvm/args.ts';
import { KvmError, hex } from '../../kvm/kvm_error.ts';
import { KVM_CAP, KVM_IOCTL } from '../../uapi/kvm.ts';
import { check, getLibc, O_CLOEXEC, O_RDWR } from './libc.ts';
import { RealHost } from './real_host.ts';
import { RealVm, type RealVmOptions } from './real_vm.ts';
import { ownFd, release, type Resource } from './resources.ts';

export interface RealKvmOptions extends RealVmOptions {
  /** device path (default /dev/kvm) */
  path?: string;
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
  guestMemfd: boolean;
  /** KVM_CAP_GUEST_MEMFD_FLAGS */
  guestMemfdFlags: number;
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
  /** Options for the model's `new Kvm(opts)` that reproduce this host. */
  modelOptions: {
    profile: 'upstream-6.18' | 'pvm-6.18';
    tdpMmu: boolean;
    vmTypes: number;
    smm: boolean;
    supportedQuirks: number;
    memoryAttributes: boolean;
    maxVcpus: number;
    maxVcpuId: number;
  };
}

export class RealKvm {
  readonly fd: number;
  readonly host = new RealHost();
  private readonly res: Resource;
  private readonly vms = new Set<RealVm>();
  private closed = false;
  private mmapSize = -1;

  constructor(readonly opts: RealKvmOptions = {}) {
    const path = opts.path ?? '/dev/kvm';
    const c = getLibc();
    this.fd = check(c.open(path, O_RDWR | O_CLOEXEC), 'open', () => path);
    this.res = ownFd(this.fd, path);
  }

  static open(opts: RealKvmOptions = {}): RealKvm {
    return new RealKvm(opts);
  }

  private live(name: string): number {
    if (this.closed) throw new KvmError('EBADF', name, '/dev/kvm has been closed');
    return this.fd;
  }

  /** KVM_GET_API_VERSION */
  apiVersion(): number {
    return check(
      getLibc().ioctlInt(this.live('KVM_GET_API_VERSION'), KVM_IOCTL.KVM_GET_API_VERSION, 0),
      'KVM_GET_API_VERSION',
      () => '',
    );
  }

  /** KVM_CHECK_EXTENSION on /dev/kvm */
  checkExtension(cap: number): number {
    const v = readU32('KVM_CHECK_EXTENSION', 'cap', cap);
    return check(
      getLibc().ioctlInt(this.live('KVM_CHECK_EXTENSION'), KVM_IOCTL.KVM_CHECK_EXTENSION, v),
      'KVM_CHECK_EXTENSION',
      () => `cap ${v}`,
    );
  }

  /** KVM_GET_VCPU_MMAP_SIZE (cached) */
  vcpuMmapSize(): number {
    if (this.mmapSize < 0) {
      this.mmapSize = check(
        getLibc().ioctlInt(this.live('KVM_GET_VCPU_MMAP_SIZE'), KVM_IOCTL.KVM_GET_VCPU_MMAP_SIZE, 0),
        'KVM_GET_VCPU_MMAP_SIZE',
        () => '',
      );
    }
    return this.mmapSize;
  }

  /** KVM_CREATE_VM(type). `opts` override the RealKvm-wide harness/cpuid options for this VM. */
  createVm(type: number | bigint = 0, opts: RealVmOptions = {}): RealVm {
    const t = readU64('KVM_CREATE_VM', 'type', type);
    // The ioctl argument is an unsigned long; values past 2^53 cannot be valid types (x86 needs < 32),
    // so any of them is passed as one out-of-range value and fails with the kernel's own errno.
    const arg = typeof t === 'bigint' ? 0xffff_ffff : t;
    const mmapSize = this.vcpuMmapSize();
    const fd = check(
      getLibc().ioctlInt(this.live('KVM_CREATE_VM'), KVM_IOCTL.KVM_CREATE_VM, arg),
      'KVM_CREATE_VM',
      () => `type ${hex(t)}`,
    );
    const merged: RealVmOptions = {
      ...this.opts,
      ...opts,
      harness: { ...this.opts.harness, ...opts.harness },
    };
    const vm = new RealVm(fd, Number(arg), this.host, this.fd, mmapSize, merged);
    this.vms.add(vm);
    return vm;
  }

  /** Derive a model configuration from what /dev/kvm reports (capabilities + module parameters). */
  hostProfile(): RealHostProfile {
    const cap = (n: number) => this.checkExtension(n);
    const C = KVM_CAP;
    const vmTypes = cap(C.KVM_CAP_VM_TYPES);
    const as = cap(C.KVM_CAP_MULTI_ADDRESS_SPACE);
    const pvm = existsSync('/sys/module/kvm_pvm');
    const tdpMmu = readParam('/sys/module/kvm/parameters/tdp_mmu') === 'Y';
    const p: Omit<RealHostProfile, 'modelOptions'> = {
      kernel: osRelease(),
      apiVersion: this.apiVersion(),
      pvm,
      tdpMmu,
      tdpEnabled: cap(C.KVM_CAP_PRE_FAULT_MEMORY) !== 0,
      vmTypes,
      vmTypeList: [...Array(32).keys()].filter((i) => (vmTypes >>> i) & 1),
      supportedQuirks: cap(C.KVM_CAP_DISABLE_QUIRKS2),
      addressSpaces: as === 0 ? 1 : as,
      smm: cap(C.KVM_CAP_X86_SMM) !== 0,
      memoryAttributes: cap(C.KVM_CAP_MEMORY_ATTRIBUTES),
      guestMemfd: cap(C.KVM_CAP_GUEST_MEMFD) !== 0,
      guestMemfdFlags: cap(C.KVM_CAP_GUEST_MEMFD_FLAGS),
      nrMemslots: cap(C.KVM_CAP_NR_MEMSLOTS),
      readonlyMem: cap(C.KVM_CAP_READONLY_MEM) !== 0,
      userMemory2: cap(C.KVM_CAP_USER_MEMORY2) !== 0,
      manualDirtyLogProtect: cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
      dirtyLogRing: cap(C.KVM_CAP_DIRTY_LOG_RING),
      memoryFaultInfo: cap(C.KVM_CAP_MEMORY_FAULT_INFO) !== 0,
      nrVcpus: cap(C.KVM_CAP_NR_VCPUS),
      maxVcpus: cap(C.KVM_CAP_MAX_VCPUS),
      maxVcpuId: cap(C.KVM_CAP_MAX_VCPU_ID),
      vcpuMmapSize: this.vcpuMmapSize(),
    };
    // 'pvm-6.18' is the profile written for exactly this kind of host (shadow MMU, DEFAULT only, no SMM);
    // the explicit fields below override it either way, so a different host is still described exactly.
    const profile = !tdpMmu && vmTypes === 1 && !p.smm ? 'pvm-6.18' : 'upstream-6.18';
    return {
      ...p,
      modelOptions: {
        profile,
        tdpMmu,
        vmTypes,
        smm: p.smm && p.addressSpaces > 1,
        supportedQuirks: p.supportedQuirks,
        memoryAttributes: p.memoryAttributes !== 0,
        maxVcpus: p.maxVcpus,
        maxVcpuId: p.maxVcpuId,
      },
    };
  }

  /** memfd_create: a regular file that is not a guest_memfd (as the model's kvm.memfdCreate). */
  memfdCreate(size = 0): number {
    this.live('memfd_create');
    return this.host.memfdCreate('zaplab', size);
  }

  /**
   * close(fd) closes one fd this backend handed out (a guest_memfd, a memfd), as the model's
   * kvm.close(fd). close() with no argument closes everything: every VM (vCPUs, guest_memfds, stats
   * fds), then the host's mappings and fds, then /dev/kvm.
   */
  close(fd?: number): void {
    if (fd !== undefined) {
      this.live('close');
      this.host.close(fd);
      return;
    }
    if (this.closed) return;
    this.closed = true;
    for (const vm of this.vms) vm.close();
    this.vms.clear();
    this.host.closeAll();
    release(this.res);
  }
  [Symbol.dispose](): void {
    this.close();
  }
}

function readParam(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}
