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
import { readU32, readU64 } from '../../kvm/args.ts';
import { KvmError, hex } from '../../kvm/kvm_error.ts';
import { KVM_CAP, KVM_IOCTL } from '../../uapi/kvm.ts';
import { probeHost, type RealHostProfile } from './host_probe.ts';
import { check, getLibc, O_CLOEXEC, O_RDWR } from './libc.ts';
import { RealHost } from './real_host.ts';
import { RealVm, type RealVmOptions } from './real_vm.ts';
import { ownFd, release, type Resource } from './resources.ts';

export interface RealKvmOptions extends RealVmOptions {
  /** device path (default /dev/kvm) */
  path?: string;
}

export type { RealHostProfile } from './host_probe.ts';

export class RealKvm {
  readonly fd: number;
  readonly host = new RealHost();
  private readonly res: Resource;
  private readonly vms = new Set<RealVm>();
  private closed = false;
  private mmapSize = -1;
  private profile: RealHostProfile | undefined;

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

  /**
   * What this /dev/kvm is and the model options that describe it, probed from the kernel (host_probe.ts);
   * computed once per RealKvm (the probe creates a scratch VM).
   */
  hostProfile(): RealHostProfile {
    this.live('hostProfile');
    this.profile ??= probeHost(this);
    return this.profile;
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
