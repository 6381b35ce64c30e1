/**
 * The kvm-vfio pseudo device (KVM_CREATE_DEVICE with KVM_DEV_TYPE_VFIO): userspace tells KVM which VFIO
 * group files the VM uses, and KVM registers non-coherent DMA when any of them cannot guarantee coherent
 * DMA, which makes the x86 MMU honour guest memory types (see x86/mtrr.ts, x86/memtype.ts).
 *
 * Kernel counterpart: virt/kvm/vfio.c (kvm_vfio_create, kvm_vfio_file_add, kvm_vfio_file_del,
 * kvm_vfio_update_coherency, kvm_vfio_release), virt/kvm/kvm_main.c#kvm_ioctl_create_device.
 * Simplifications: only KVM_DEV_TYPE_VFIO exists; KVM_CREATE_DEVICE_TEST is not modelled; no SPAPR TCE;
 * kvm_arch_start/end_assignment (assigned-device count) are not modelled; the device is released by
 * release() (closing its fd) rather than at VM destruction.
 */
import { KvmError, hex } from './kvm_error.ts';
import { copyIn } from './args.ts';
import type { VmState } from './vm_state.ts';
import {
  KVM_CREATE_DEVICE_TEST,
  KVM_DEV_TYPE_VFIO,
  KVM_DEV_VFIO_FILE,
  KVM_DEV_VFIO_FILE_ADD,
  KVM_DEV_VFIO_FILE_DEL,
} from '../uapi/vfio.ts';
import { kvmArchRegisterNoncoherentDma, kvmArchUnregisterNoncoherentDma } from '../x86/memtype.ts';

/** struct kvm_create_device */
export interface KvmCreateDevice {
  type: number;
  flags?: number;
}

/** struct kvm_device_attr, with the file descriptor the attribute points at. */
export interface KvmDeviceAttr {
  group: number;
  attr: number;
  fd: number;
}

/** struct kvm_vfio behind a kvm_device. */
export class KvmVfioDevice {
  readonly name = 'kvm-vfio';
  /** The VFIO files added, in order (kv->file_list). */
  readonly files: number[] = [];
  /** kv->noncoherent */
  noncoherent = false;
  released = false;

  constructor(
    readonly vm: VmState,
    readonly fd: number,
  ) {}

  /** KVM_SET_DEVICE_ATTR. @kernel virt/kvm/vfio.c#kvm_vfio_set_attr */
  setAttr(arg: KvmDeviceAttr): void {
    const sc = 'KVM_SET_DEVICE_ATTR';
    if (this.released) throw new KvmError('EBADF', sc, 'the kvm-vfio device was released');
    const a = copyIn(sc, arg, { flags: 'u32', group: 'u32', attr: 'u64', fd: 'fd' });
    if (a.group !== KVM_DEV_VFIO_FILE) throw new KvmError('ENXIO', sc, `attribute group ${hex(a.group)}`);
    if (a.attr === KVM_DEV_VFIO_FILE_ADD) return this.fileAdd(a.fd);
    if (a.attr === KVM_DEV_VFIO_FILE_DEL) return this.fileDel(a.fd);
    throw new KvmError('ENXIO', sc, `attribute ${hex(a.attr)}`);
  }

  /** KVM_DEV_VFIO_FILE_ADD. @kernel virt/kvm/vfio.c#kvm_vfio_file_add */
  fileAdd(fd: number): void {
    const sc = 'KVM_SET_DEVICE_ATTR';
    if (this.released) throw new KvmError('EBADF', sc, 'the kvm-vfio device was released');
    const vfio = this.vm.kvm.vfio;
    vfio.lookupFile(fd, sc); // fget: EBADF if not open
    // kvm_vfio_file_is_valid: a group (or device) file; a container fd is not one.
    if (!vfio.fileIsValid(fd)) throw new KvmError('EINVAL', sc, `fd ${hex(fd)} is not a VFIO group file`);
    if (this.files.includes(fd)) throw new KvmError('EEXIST', sc, `fd ${hex(fd)} was already added`);
    this.files.push(fd);
    this.updateCoherency();
  }

  /** KVM_DEV_VFIO_FILE_DEL. @kernel virt/kvm/vfio.c#kvm_vfio_file_del */
  fileDel(fd: number): void {
    const sc = 'KVM_SET_DEVICE_ATTR';
    if (this.released) throw new KvmError('EBADF', sc, 'the kvm-vfio device was released');
    this.vm.kvm.vfio.lookupFile(fd, sc);
    const i = this.files.indexOf(fd);
    // Coherency is re-evaluated even when the file was not found, as the kernel does.
    if (i >= 0) this.files.splice(i, 1);
    this.updateCoherency();
    if (i < 0) throw new KvmError('ENOENT', sc, `fd ${hex(fd)} was not added`);
  }

  /** close() of the device fd. @kernel virt/kvm/vfio.c#kvm_vfio_release */
  release(): void {
    if (this.released) return;
    this.files.length = 0;
    this.updateCoherency();
    this.released = true;
    const devs = this.vm.devices;
    devs.splice(devs.indexOf(this), 1);
  }

  /**
   * Re-test every file and register or unregister non-coherent DMA once for the whole device: groups can
   * share IOMMU domains, so adding one may change the coherency of another.
   * @kernel virt/kvm/vfio.c#kvm_vfio_update_coherency
   */
  private updateCoherency(): void {
    const vfio = this.vm.kvm.vfio;
    const noncoherent = this.files.some((fd) => !vfio.fileEnforcedCoherent(fd));
    if (noncoherent === this.noncoherent) return;
    this.noncoherent = noncoherent;
    if (noncoherent) kvmArchRegisterNoncoherentDma(this.vm);
    else kvmArchUnregisterNoncoherentDma(this.vm);
  }
}

/** KVM_CREATE_DEVICE. @kernel virt/kvm/kvm_main.c#kvm_ioctl_create_device */
export function kvmIoctlCreateDevice(vm: VmState, cd: KvmCreateDevice): KvmVfioDevice {
  const sc = 'KVM_CREATE_DEVICE';
  vm.checkAlive(sc);
  const c = copyIn(sc, cd, { type: 'u32', fd: 'u32', flags: 'u32' });
  // With KVM_CREATE_DEVICE_TEST the kernel only answers whether the type exists; this API returns a
  // device, so the flag is refused rather than a device created behind the caller's back.
  if (c.flags & KVM_CREATE_DEVICE_TEST)
    throw new TypeError(`${sc}: KVM_CREATE_DEVICE_TEST is not modelled (it would create no device)`);
  if (c.type !== KVM_DEV_TYPE_VFIO) throw new KvmError('ENODEV', sc, `device type ${c.type} is not modelled`);
  // kvm_vfio_create: only one VFIO device per VM.
  if (vm.devices.some((d) => d.name === 'kvm-vfio'))
    throw new KvmError('EBUSY', sc, 'the VM already has a kvm-vfio device');
  const fd = vm.kvm.installFd((id) => ({ kind: 'kvm-device', id, vmId: vm.id }));
  const dev = new KvmVfioDevice(vm, fd);
  vm.devices.push(dev);
  return dev;
}
