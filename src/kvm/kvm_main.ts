/**
 * The model "/dev/kvm": Kvm (the device), Vm (a VM fd) and Vcpu (a vCPU fd), with the ioctl entry points
 * of the public API. Each entry point checks the VM is alive, copies its argument in, and hands off to
 * the module that mirrors the kernel function.
 *
 * Kernel counterpart: virt/kvm/kvm_main.c (kvm_dev_ioctl, kvm_vm_ioctl, kvm_create_vm,
 * kvm_vm_ioctl_create_vcpu), arch/x86/kvm/x86.c (kvm_arch_init_vm).
 * Simplifications: one process (no mm check: the "different process → EIO" rule is not modelled),
 * no ENOMEM; see docs/simplifications.md.
 */
import { KVM_API_VERSION } from '../uapi/kvm.ts';
import type { VmType } from '../uapi/kvm_x86.ts';
import type {
  KvmClearDirtyLog,
  KvmCreateGuestMemfd,
  KvmEnableCap,
  KvmMemoryAttributes,
  KvmUserspaceMemoryRegion,
  KvmUserspaceMemoryRegion2,
} from './api_types.ts';
import { resolveHostConfig, type HostConfig, type KvmOptions } from './host_profile.ts';
import { HostMm } from '../host/host_mm.ts';
import { KvmError, hex, rawIoctl, type Reject } from './kvm_error.ts';
import { argBool, argInt, argOpts, copyIn, formatValue, readGpa, readU32, readU64 } from './args.ts';
import { shadowMmuOf } from '../x86/mmu/shadow_mmu.ts';
import type { GuestPageTables } from '../x86/mmu/guest_paging.ts';
import { checkExtension, enableCap, supportedVmTypes } from '../x86/x86_caps.ts';
import { VmState, validateVmOptions, type VmOptions } from './vm_state.ts';
import { kvmVmIoctlSetMemoryRegion } from './set_memory_region.ts';
import { kvmGetDirtyLogProtect, kvmClearDirtyLogProtect } from './dirty_log.ts';
import { kvmGmemCreateCheck, type ModelFile } from './guest_memfd.ts';
import { kvmVmIoctlSetMemAttributes } from './mem_attributes.ts';
import { Vcpu } from './vcpu.ts';
import { exportStats, VM_STAT_NAMES, VM_STAT_NAMES_PVM } from './kvm_stats.ts';
import { Vfio } from '../iommu/vfio.ts';
import { kvmIoctlCreateDevice, type KvmCreateDevice, type KvmVfioDevice } from './kvm_vfio.ts';
import { kvmGmemRelease, vfsFallocate } from './guest_memfd_file.ts';
import { tdxVcpuInitMemRegion } from '../x86/tdx_mem.ts';
import type { RmpEntry } from '../x86/sev.ts';

export class Kvm {
  readonly cfg: HostConfig;
  readonly host: HostMm;
  private vfioHost: Vfio | undefined;
  /** The process's fd table: /dev/kvm, VM and vCPU fds, guest_memfds, plain memfds. */
  private readonly files = new Map<number, ModelFile>();
  private nextFd = 3;
  /** What closing an fd does to the object behind it (a VM or vCPU fd: its ioctls become EBADF). */
  private readonly closeHooks = new Map<number, () => void>();
  private nextVmId = 1;
  readonly fd: number;

  constructor(opts: KvmOptions = {}) {
    this.cfg = resolveHostConfig(opts);
    this.host = new HostMm();
    this.fd = this.installFd((id) => ({ kind: 'kvm', id }));
  }

  /** The host's VFIO and IOMMUs (iommu/vfio.ts), created on first use. */
  get vfio(): Vfio {
    return (this.vfioHost ??= new Vfio(this));
  }

  /** @kernel virt/kvm/kvm_main.c#kvm_dev_ioctl (KVM_GET_API_VERSION) */
  apiVersion(): number {
    this.checkOpen('KVM_GET_API_VERSION');
    return KVM_API_VERSION;
  }

  /** KVM_CHECK_EXTENSION on /dev/kvm. */
  checkExtension(cap: number): number {
    this.checkOpen('KVM_CHECK_EXTENSION');
    return checkExtension(this.cfg, null, readU32('KVM_CHECK_EXTENSION', 'cap', cap));
  }

  /**
   * KVM_CREATE_VM. `opts.zapDesign` picks the DELETE/MOVE zap ABI being modelled.
   * @kernel virt/kvm/kvm_main.c#kvm_create_vm
   */
  createVm(type: number = 0, opts: VmOptions = {}): Vm {
    this.checkOpen('KVM_CREATE_VM');
    const t = readU64('KVM_CREATE_VM', 'type', type);
    const supported = supportedVmTypes(this.cfg);
    if (typeof t === 'bigint' || t >= 32 || !(supported & (1 << t))) {
      throw new KvmError(
        'EINVAL',
        'KVM_CREATE_VM',
        `VM type ${hex(t)} not in KVM_CAP_VM_TYPES ${hex(supported)}`,
      );
    }
    validateVmOptions(opts); // before any fd exists, so a bad option leaks nothing
    const vmId = this.nextVmId++;
    const fd = this.installFd((id) => ({ kind: 'vm', id, vmId }));
    const vm = new Vm(this, vmId, fd, t as VmType, opts);
    this.onClose(fd, () => (vm.fdClosed = true));
    return vm;
  }

  /** A regular memfd (memfd_create) of `size` bytes (its ftruncate): a file that is not a guest_memfd. */
  memfdCreate(size = 0): number {
    const n = argInt('memfdCreate', 'size', size);
    return this.installFd((id) => ({ kind: 'memfd', id, size: n }));
  }

  /** /dev/kvm itself was closed: its ioctls are EBADF (VMs created before live on). */
  private checkOpen(syscall: string): void {
    if (!this.files.has(this.fd)) throw new KvmError('EBADF', syscall, `/dev/kvm fd ${this.fd} is closed`);
  }

  /**
   * fallocate(fd, mode, offset, len): on a guest_memfd, FALLOC_FL_KEEP_SIZE allocates pages ahead and
   * FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE frees them after zapping their mappings (uapi/falloc.ts).
   * @kernel virt/kvm/guest_memfd.c#kvm_gmem_fallocate
   */
  fallocate(fd: number, mode: number, offset: number | bigint, len: number | bigint): void {
    const file = this.files.get(fd);
    if (file === undefined) throw new KvmError('EBADF', 'fallocate', `fd ${formatValue(fd)} is not open`);
    vfsFallocate(file, mode, offset, len);
  }

  /**
   * close(fd). The model holds one reference per file, so this is the last one: a guest_memfd is released
   * (its bound memslots stay, but lose their backing: guest_memfd_file.ts#kvmGmemRelease).
   */
  close(fd: number): void {
    const file = this.files.get(fd);
    if (file === undefined || !this.files.delete(fd))
      throw new KvmError('EBADF', 'close', `fd ${formatValue(fd)} is not open`);
    if (file.kind === 'guest_memfd') kvmGmemRelease(file);
    const hook = this.closeHooks.get(fd);
    if (hook !== undefined) {
      this.closeHooks.delete(fd);
      hook();
    }
  }

  /** Run `hook` when fd is closed (the model's file release). */
  onClose(fd: number, hook: () => void): void {
    this.closeHooks.set(fd, hook);
  }

  lookupFd(fd: number): ModelFile | undefined {
    return this.files.get(fd);
  }

  /** fds handed out so far (fds are never reused): an fd table that has not grown since holds no new file */
  get fdsInstalled(): number {
    return this.nextFd - 3;
  }

  installFd(make: (id: number) => ModelFile): number {
    const fd = this.nextFd++;
    this.files.set(fd, make(fd));
    return fd;
  }
}

function throwIf(r: Reject | null, syscall: string): void {
  if (r !== null) throw new KvmError(r.code, syscall, r.detail());
}

/** A VM fd and its ioctls. The state and the hooks live in VmState; this class is the uAPI surface. */
export class Vm extends VmState {
  /** KVM_CHECK_EXTENSION on the VM fd. */
  checkExtension(cap: number): number {
    this.checkAlive('KVM_CHECK_EXTENSION');
    return checkExtension(this.cfg, this, readU32('KVM_CHECK_EXTENSION', 'cap', cap));
  }

  /** KVM_SET_USER_MEMORY_REGION; throws KvmError on failure. */
  setUserMemoryRegion(region: KvmUserspaceMemoryRegion): void {
    throwIf(kvmVmIoctlSetMemoryRegion(this, region, false), 'KVM_SET_USER_MEMORY_REGION');
  }

  /** KVM_SET_USER_MEMORY_REGION2; throws KvmError on failure. */
  setUserMemoryRegion2(region: KvmUserspaceMemoryRegion2): void {
    throwIf(kvmVmIoctlSetMemoryRegion(this, region, true), 'KVM_SET_USER_MEMORY_REGION2');
  }

  /**
   * The raw ioctl convention: returns 0 or -errno instead of throwing. Same checks, same state changes;
   * for sweeps that issue millions of calls, where a JS exception per rejection would dominate.
   */
  ioctlSetUserMemoryRegion(region: KvmUserspaceMemoryRegion2, v2 = false): number {
    return rawIoctl(() => kvmVmIoctlSetMemoryRegion(this, region, v2));
  }

  /** KVM_CREATE_GUEST_MEMFD → the new fd. @kernel virt/kvm/guest_memfd.c#kvm_gmem_create */
  createGuestMemfd(arg: KvmCreateGuestMemfd): number {
    const syscall = 'KVM_CREATE_GUEST_MEMFD';
    this.checkAlive(syscall);
    const a = copyIn(syscall, arg, { size: 'u64', flags: 'u64', reserved: 'bytes' });
    const { size, flags } = kvmGmemCreateCheck(this, a.size, a.flags);
    return this.kvm.installFd((id) => ({
      kind: 'guest_memfd',
      id,
      vmId: this.id,
      size,
      flags,
      bindings: [],
      pages: new Map(),
      unprepared: new Set(),
      kvm: this,
    }));
  }

  /**
   * KVM_TDX_INIT_MEM_REGION (a vCPU ioctl; `vcpu` defaults to the first): add nrPages private pages from
   * gpa to the TD before it runs (TDH.MEM.PAGE.ADD, plus TDH.MR.EXTEND with `measure`). The gfns need the
   * PRIVATE attribute and a guest_memfd slot; the pages need no accept.
   * @kernel arch/x86/kvm/vmx/tdx.c#tdx_vcpu_init_mem_region
   */
  tdxInitMemRegion(
    gpa: number | bigint,
    nrPages: number | bigint,
    opts: { measure?: boolean; vcpu?: Vcpu } = {},
  ): void {
    const sc = 'KVM_TDX_INIT_MEM_REGION';
    this.checkAlive(sc);
    const o = argOpts('tdxInitMemRegion', opts, ['measure', 'vcpu']);
    const measure = argBool('tdxInitMemRegion', 'measure', o['measure'], false);
    if (o['vcpu'] !== undefined && !this.vcpus.includes(o['vcpu'] as Vcpu))
      throw new TypeError(`tdxInitMemRegion: vcpu must be a vCPU of this VM (got ${formatValue(o['vcpu'])})`);
    const vcpu = (o['vcpu'] as Vcpu | undefined) ?? this.vcpus[0];
    if (vcpu === undefined)
      throw new KvmError('EINVAL', 'KVM_TDX_INIT_MEM_REGION', 'a vCPU ioctl: create a vCPU first');
    tdxVcpuInitMemRegion(vcpu, gpa, nrPages, { measure });
  }

  /**
   * KVM_TDX_FINALIZE_VM: the initial image is fixed and vCPUs may run. (The model's first guest access
   * finalizes a TD that was not finalized explicitly.) @kernel arch/x86/kvm/vmx/tdx.c#tdx_td_finalize
   */
  tdxFinalizeVm(): void {
    const sc = 'KVM_TDX_FINALIZE_VM';
    this.checkAlive(sc);
    const tdx = this.arch.tdx;
    if (tdx === undefined) throw new KvmError('ENOTTY', sc, `VM type ${this.info.name} is not a TD`);
    tdx.finalize(sc);
  }

  /** TDX counters: SEAMCALLs per kind, S-EPT pages pending / mapped, guest accepts. Empty for other VMs. */
  tdxStats(): Record<string, number> {
    return this.arch.tdx?.stats() ?? {};
  }

  /** The SNP RMP entry of host page pfn for this guest (unassigned on other VM types). */
  snpRmpEntry(pfn: number): RmpEntry {
    argInt('snpRmpEntry', 'pfn', pfn);
    return this.arch.snp?.entry(pfn) ?? { assigned: false, validated: false, gpa: 0, asid: 0 };
  }

  /** KVM_SET_MEMORY_ATTRIBUTES */
  setMemoryAttributes(arg: KvmMemoryAttributes): void {
    kvmVmIoctlSetMemAttributes(this, arg);
  }

  /** KVM_ENABLE_CAP on the VM fd. */
  enableCap(arg: KvmEnableCap): void {
    const syscall = 'KVM_ENABLE_CAP';
    this.checkAlive(syscall);
    if (typeof arg !== 'object' || arg === null)
      throw new KvmError('EFAULT', syscall, 'argument must be a struct object');
    const { args, ...rest } = arg as KvmEnableCap & Record<string, unknown>;
    const a = copyIn(syscall, rest, { cap: 'u32', flags: 'u32', pad: 'bytes' });
    if (args !== undefined && (!Array.isArray(args) || args.length > 4)) {
      throw new KvmError('EINVAL', syscall, 'args must be an array of at most 4 u64 values');
    }
    const vals = (args ?? []).map((v, i) => readU64(syscall, `args[${i}]`, v));
    enableCap(this, a.cap, a.flags, vals);
  }

  /** KVM_GET_DIRTY_LOG → the bitmap (ALIGN(npages, 64) / 8 bytes, kernel bit order). */
  getDirtyLog(slot: number): Uint8Array {
    this.checkAlive('KVM_GET_DIRTY_LOG');
    return kvmGetDirtyLogProtect(this, readU32('KVM_GET_DIRTY_LOG', 'slot', slot));
  }

  /** KVM_CLEAR_DIRTY_LOG */
  clearDirtyLog(arg: KvmClearDirtyLog): void {
    const syscall = 'KVM_CLEAR_DIRTY_LOG';
    this.checkAlive(syscall);
    const a = copyIn(syscall, arg, { slot: 'u32', numPages: 'u32', firstPage: 'u64', bitmap: 'bytes' });
    kvmClearDirtyLogProtect(this, a);
  }

  /** The binary stats of the VM fd as { name: value }. */
  getStats(): Record<string, number> {
    return exportStats(this.stats, VM_STAT_NAMES, this.cfg.profile === 'pvm-6.18' ? VM_STAT_NAMES_PVM : []);
  }

  /** The model's own counters (zaps by kind, page-table pages, refaults, …): not kernel stats. */
  getModelStats(): Record<string, number> {
    return { ...this.model };
  }

  /**
   * The VMM stores gPTE `gpte` (a 53-bit value: address bits and flags, no NX) as entry `index` of the
   * guest page table at `tableGpa`, through its own mapping of guest memory: KVM is not told (no write
   * tracking, no emulation), as with any VMM write. Shadow-paging hosts only (host tdp: false), where
   * the model keeps gPTEs (docs/simplifications.md: guest page tables).
   */
  writeGuestPte(tableGpa: number, index: number, gpte: number): void {
    const t = guestTables(this, 'writeGuestPte', tableGpa, index);
    if (typeof gpte !== 'number' || !Number.isSafeInteger(gpte) || gpte < 0)
      throw new (typeof gpte === 'number' ? RangeError : TypeError)(
        `writeGuestPte: gpte must be an integer in [0, 2^53) (got ${formatValue(gpte)})`,
      );
    t.write(Math.floor(tableGpa / 4096), index, gpte);
  }

  /** The gPTE at entry `index` of the guest page table at `tableGpa` (shadow-paging hosts only). */
  readGuestPte(tableGpa: number, index: number): number {
    return guestTables(this, 'readGuestPte', tableGpa, index).read(Math.floor(tableGpa / 4096), index);
  }

  /** KVM_CREATE_DEVICE; only KVM_DEV_TYPE_VFIO (the kvm-vfio device) is modelled. */
  createDevice(cd: KvmCreateDevice): KvmVfioDevice {
    return kvmIoctlCreateDevice(this, cd);
  }

  /** KVM_CREATE_VCPU. @kernel virt/kvm/kvm_main.c#kvm_vm_ioctl_create_vcpu */
  createVcpu(id: number): Vcpu {
    const syscall = 'KVM_CREATE_VCPU';
    this.checkAlive(syscall);
    const vid = readU32(syscall, 'id', id);
    if (vid >= this.cfg.maxVcpuId)
      throw new KvmError('EINVAL', syscall, `vcpu id ${vid} >= KVM_MAX_VCPU_IDS ${this.cfg.maxVcpuId}`);
    if (this.vcpus.length >= this.cfg.maxVcpus)
      throw new KvmError('EINVAL', syscall, `already ${this.vcpus.length} vCPUs (KVM_MAX_VCPUS)`);
    if (this.vcpus.some((v) => v.vcpuId === vid))
      throw new KvmError('EEXIST', syscall, `vcpu ${vid} already exists`);
    const fd = this.kvm.installFd((fid) => ({ kind: 'vcpu', id: fid, vmId: this.id }));
    const v = new Vcpu(this, vid, fd);
    this.kvm.onClose(fd, () => (v.fdClosed = true));
    this.vcpus.push(v);
    this.createdVcpus++;
    return v;
  }
}

/** The guest page tables a VMM write reaches, after checking the arguments and the host. */
function guestTables(vm: Vm, fn: string, tableGpa: number, index: number): GuestPageTables {
  const gpa = readGpa(fn, tableGpa, 'tableGpa');
  if (gpa % 4096) throw new RangeError(`${fn}: tableGpa 0x${gpa.toString(16)} is not page-aligned`);
  argInt(fn, 'index', index, 0, 511);
  const mmu = shadowMmuOf(vm);
  if (mmu === null || mmu.tdpEnabled)
    throw new TypeError(`${fn}: guest page tables are modelled under shadow paging only (host tdp: false)`);
  return mmu.gpt;
}
