/**
 * A VM on the real /dev/kvm: the VM-fd ioctls of the public API (memslots, guest_memfd, memory
 * attributes, enable-cap, dirty log, binary stats, vCPU creation), with arguments normalised by the same
 * copy-in code as the model (kvm/args.ts), so a malformed argument fails identically on both backends.
 *
 * Kernel counterpart: virt/kvm/kvm_main.c#kvm_vm_ioctl and arch/x86/kvm/x86.c#kvm_arch_vm_ioctl, seen
 * from userspace. The VM remembers the slots it set successfully (the kernel offers no way to read them
 * back) because KVM_GET_DIRTY_LOG copies ALIGN(npages, 64)/8 bytes out and the caller must size the
 * buffer, and because guest accesses need a slot's hva.
 */
import { copyIn, readU32, type U64 } from '../../kvm/args.ts';
import type {
  KvmClearDirtyLog,
  KvmCreateGuestMemfd,
  KvmEnableCap,
  KvmMemoryAttributes,
  KvmUserspaceMemoryRegion,
  KvmUserspaceMemoryRegion2,
} from '../../kvm/api_types.ts';
import { KvmError, hex } from '../../kvm/kvm_error.ts';
import { KVM_IOCTL, STRUCT_SIZE } from '../../uapi/kvm.ts';
import { BinaryStatsFd, openBinaryStatsFd } from './binary_stats.ts';
import { DEFAULT_HARNESS, GuestHarness, type HarnessConfig } from './guest_harness.ts';
import { CPUID_ENTRY_SIZE, cstruct, encodeRegion2, KVM_GET_SUPPORTED_CPUID } from './kvm_structs.ts';
import { check, getLibc } from './libc.ts';
import type { RealHost } from './real_host.ts';
import { RealVcpu } from './real_vcpu.ts';
import { GuardedScratch, own, ownFd, release, type Resource } from './resources.ts';
import {
  copyInClearDirtyLog,
  describeRegion,
  encodeClearDirtyLog,
  encodeCreateGuestMemfd,
  encodeDirtyLog,
  encodeEnableCap,
  encodeMemoryAttributes,
  REGION,
  REGION2,
  type Region,
} from './vm_args.ts';

/** A memslot as last set successfully through this object. */
export interface TrackedSlot {
  slot: number;
  flags: number;
  guestPhysAddr: number;
  memorySize: number;
  userspaceAddr: number;
  guestMemfd: number | null;
  guestMemfdOffset: number;
}

export interface RealVmOptions {
  /** Only 'quirk' exists in a real kernel (6.12+); the model's other designs are rejected here. */
  zapDesign?: 'quirk';
  /** Where the guest-access harness puts its own memslot (installed on the first access). */
  harness?: Partial<HarnessConfig>;
  /**
   * KVM_SET_CPUID2 with KVM_GET_SUPPORTED_CPUID on each new vCPU. Without it the vCPU has no CPUID
   * leaves, so its MAXPHYADDR is 36 and guest accesses must stay below 64 GiB (above, the harness's
   * PTEs have reserved bits set and the access ends in a triple fault). Default false: the recorded
   * stat deltas were taken without it.
   */
  cpuid?: boolean;
}

const u64n = (v: U64): number => (typeof v === 'bigint' ? Number(v) : v);

export class RealVm {
  private closed = false;
  private readonly res: Resource;
  private readonly tracked = new Map<number, TrackedSlot>();
  private readonly vcpus = new Map<number, RealVcpu>();
  private readonly gmemFds: { fd: number; res: Resource }[] = [];
  private readonly scratch = new GuardedScratch('dirty bitmap scratch');
  private stats: { bsf: BinaryStatsFd; res: Resource } | null = null;
  private harnessState: { h: GuestHarness; res: Resource } | null = null;
  private readonly region = cstruct(STRUCT_SIZE.kvm_userspace_memory_region2);
  private readonly region1 = {
    bytes: this.region.bytes.subarray(0, STRUCT_SIZE.kvm_userspace_memory_region),
    dv: new DataView(this.region.bytes.buffer, 0, STRUCT_SIZE.kvm_userspace_memory_region),
  };
  readonly harnessConfig: HarnessConfig;

  constructor(
    readonly fd: number,
    readonly type: number,
    readonly host: RealHost,
    readonly kvmFd: number,
    readonly vcpuMmapSize: number,
    readonly opts: RealVmOptions = {},
  ) {
    this.res = ownFd(fd, `vm(type ${type})`);
    const zd: string | undefined = opts.zapDesign;
    if (zd !== undefined && zd !== 'quirk') {
      release(this.res);
      throw new TypeError(
        `zapDesign '${zd}' is a model-only ABI; the real kernel implements 'quirk' (KVM_X86_QUIRK_SLOT_ZAP_ALL)`,
      );
    }
    this.harnessConfig = { ...DEFAULT_HARNESS, ...(opts.harness ?? {}) };
  }

  private live(name: string): number {
    if (this.closed) throw new KvmError('EBADF', name, 'the VM has been closed');
    return this.fd;
  }

  /** KVM_CHECK_EXTENSION on the VM fd */
  checkExtension(cap: number): number {
    const c = readU32('KVM_CHECK_EXTENSION', 'cap', cap);
    const fd = this.live('KVM_CHECK_EXTENSION');
    return check(
      getLibc().ioctlInt(fd, KVM_IOCTL.KVM_CHECK_EXTENSION, c),
      'KVM_CHECK_EXTENSION',
      () => `cap ${c}`,
    );
  }

  /** KVM_SET_USER_MEMORY_REGION */
  setUserMemoryRegion(arg: KvmUserspaceMemoryRegion): void {
    const r = copyIn('KVM_SET_USER_MEMORY_REGION', arg, REGION);
    this.setRegion('KVM_SET_USER_MEMORY_REGION', r, false);
  }

  /** KVM_SET_USER_MEMORY_REGION2 */
  setUserMemoryRegion2(arg: KvmUserspaceMemoryRegion2): void {
    const r = copyIn('KVM_SET_USER_MEMORY_REGION2', arg, REGION2);
    this.setRegion('KVM_SET_USER_MEMORY_REGION2', r, true);
  }

  /**
   * The raw ioctl convention, as on the model's Vm: 0 or -errno, no exception (a JS exception costs
   * several times the syscall). Malformed arguments are -EINVAL/-EFAULT exactly as the throwing form.
   */
  ioctlSetUserMemoryRegion(region: KvmUserspaceMemoryRegion2, v2 = false): number {
    const name = v2 ? 'KVM_SET_USER_MEMORY_REGION2' : 'KVM_SET_USER_MEMORY_REGION';
    let r: Region;
    try {
      // (no object spreads on this path: a spread costs more than the syscall)
      r = v2 ? copyIn(name, region, REGION2) : copyIn(name, region, REGION);
      this.live(name);
    } catch (e) {
      if (e instanceof KvmError) return -e.errno;
      throw e;
    }
    const err = this.setRegionErrno(r, v2);
    return err ? -err : 0;
  }

  private setRegion(name: string, r: Region, v2: boolean): void {
    this.live(name);
    const err = this.setRegionErrno(r, v2);
    if (err) {
      throw new KvmError(err, name, describeRegion(r, v2));
    }
  }

  /** Issue the ioctl; on success mirror the change in the tracked slots. Returns 0 or the errno. */
  private setRegionErrno(r: Region, v2: boolean): number {
    const c = getLibc();
    // V1 uses its own 32-byte view, so encodeRegion2 writes only the V1 fields.
    const { bytes, dv } = v2 ? this.region : this.region1;
    bytes.fill(0);
    encodeRegion2(dv, r);
    const req = v2 ? KVM_IOCTL.KVM_SET_USER_MEMORY_REGION2 : KVM_IOCTL.KVM_SET_USER_MEMORY_REGION;
    if (c.ioctlBuf(this.fd, req, bytes) === -1) return c.errno();
    this.track(r, v2);
    return 0;
  }

  private track(r: Region, v2: boolean): void {
    const size = u64n(r.memorySize);
    if (size === 0) this.tracked.delete(r.slot);
    else {
      const gmem = v2 && r.flags & 4 ? (r.guestMemfd ?? 0) : null;
      this.tracked.set(r.slot, {
        slot: r.slot,
        flags: r.flags,
        guestPhysAddr: u64n(r.guestPhysAddr),
        memorySize: size,
        userspaceAddr: u64n(r.userspaceAddr),
        guestMemfd: gmem,
        guestMemfdOffset: u64n(r.guestMemfdOffset ?? 0),
      });
    }
  }

  /** The slots set through this VM (including the access harness's, once installed), by slot number. */
  slots(): ReadonlyMap<number, Readonly<TrackedSlot>> {
    return this.tracked;
  }

  /** The as_id-0 slot containing gpa, if any. */
  slotForGpa(gpa: number): Readonly<TrackedSlot> | null {
    for (const s of this.tracked.values()) {
      if (s.slot >>> 16 === 0 && gpa >= s.guestPhysAddr && gpa < s.guestPhysAddr + s.memorySize) return s;
    }
    return null;
  }

  /** KVM_CREATE_GUEST_MEMFD; the fd is owned by this VM (closed with it) and closable via kvm.close(fd). */
  createGuestMemfd(arg: KvmCreateGuestMemfd): number {
    const name = 'KVM_CREATE_GUEST_MEMFD';
    const e = encodeCreateGuestMemfd(arg);
    const gfd = check(
      getLibc().ioctlBuf(this.live(name), KVM_IOCTL.KVM_CREATE_GUEST_MEMFD, e.bytes),
      name,
      e.detail,
    );
    this.host.adoptFd(gfd, 'guest_memfd');
    this.gmemFds.push({ fd: gfd, res: this.host.fdResource(gfd)! });
    return gfd;
  }

  /** KVM_SET_MEMORY_ATTRIBUTES */
  setMemoryAttributes(arg: KvmMemoryAttributes): void {
    const name = 'KVM_SET_MEMORY_ATTRIBUTES';
    const e = encodeMemoryAttributes(arg);
    check(getLibc().ioctlBuf(this.live(name), KVM_IOCTL.KVM_SET_MEMORY_ATTRIBUTES, e.bytes), name, e.detail);
  }

  /** KVM_ENABLE_CAP on the VM fd; args are up to 4 u64 (missing ones are 0). */
  enableCap(arg: KvmEnableCap): void {
    const e = encodeEnableCap(arg);
    check(
      getLibc().ioctlBuf(this.live('KVM_ENABLE_CAP'), KVM_IOCTL.KVM_ENABLE_CAP, e.bytes),
      'KVM_ENABLE_CAP',
      e.detail,
    );
  }

  /** KVM_GET_DIRTY_LOG: the slot's bitmap, ALIGN(npages, 64)/8 bytes, kernel bit order. */
  getDirtyLog(slotArg: number): Uint8Array {
    const name = 'KVM_GET_DIRTY_LOG';
    const slot = readU32(name, 'slot', slotArg);
    const fd = this.live(name);
    const t = this.tracked.get(slot);
    const n = t ? Math.ceil(t.memorySize / 4096 / 64) * 8 : 0;
    // An untracked slot cannot have a bitmap; pass NULL so a kernel that disagreed would EFAULT, not scribble.
    const buf = n ? this.scratch.place(n) : { addr: 0, bytes: new Uint8Array(0) };
    check(
      getLibc().ioctlBuf(fd, KVM_IOCTL.KVM_GET_DIRTY_LOG, encodeDirtyLog(slot, buf.addr)),
      name,
      () => `slot ${hex(slot)}`,
    );
    return buf.bytes.slice();
  }

  /** KVM_CLEAR_DIRTY_LOG. A bitmap shorter than ALIGN(numPages, 64)/8 bytes faults (EFAULT), as in C. */
  clearDirtyLog(arg: KvmClearDirtyLog): void {
    const name = 'KVM_CLEAR_DIRTY_LOG';
    const a = copyInClearDirtyLog(arg);
    const fd = this.live(name);
    let addr = 0; // no bitmap: NULL, which the kernel's copy_from_user rejects with EFAULT
    if (a.bitmap) {
      const b = this.scratch.place(a.bitmap.length);
      b.bytes.set(a.bitmap);
      addr = b.addr;
    }
    const e = encodeClearDirtyLog(a, addr);
    check(getLibc().ioctlBuf(fd, KVM_IOCTL.KVM_CLEAR_DIRTY_LOG, e.bytes), name, e.detail);
  }

  /** KVM_SET_NR_MMU_PAGES */
  setNrMmuPages(n: number): void {
    const v = readU32('KVM_SET_NR_MMU_PAGES', 'n', n);
    check(
      getLibc().ioctlInt(this.live('KVM_SET_NR_MMU_PAGES'), KVM_IOCTL.KVM_SET_NR_MMU_PAGES, v),
      'KVM_SET_NR_MMU_PAGES',
      () => `${hex(v)}`,
    );
  }

  private statsFd(): BinaryStatsFd {
    this.stats ??= openBinaryStatsFd(this.live('KVM_GET_STATS_FD'), 'vm');
    return this.stats.bsf;
  }

  /** VM binary stats as { name: value } (scalar stats only; see binary_stats.ts). */
  getStats(): Record<string, number> {
    return this.statsFd().read();
  }
  /** Every VM stat with its descriptor (header, type, unit, histograms as arrays). */
  getStatsFd(): BinaryStatsFd {
    return this.statsFd();
  }

  /** KVM_CREATE_VCPU */
  createVcpu(id: number): RealVcpu {
    const name = 'KVM_CREATE_VCPU';
    const v = readU32(name, 'id', id);
    const vfd = check(
      getLibc().ioctlInt(this.live(name), KVM_IOCTL.KVM_CREATE_VCPU, v),
      name,
      () => `id ${hex(v)}`,
    );
    const vcpu = new RealVcpu(this, v, vfd); // owns vfd; releases it itself if its setup fails
    this.vcpus.set(v, vcpu);
    return vcpu;
  }

  private cpuid: Uint8Array | null = null;

  /** KVM_GET_SUPPORTED_CPUID on /dev/kvm as a struct kvm_cpuid2 image (cached per VM). */
  supportedCpuid(): Uint8Array {
    if (this.cpuid) return this.cpuid;
    const max = 256;
    const b = new Uint8Array(8 + max * CPUID_ENTRY_SIZE);
    new DataView(b.buffer).setUint32(0, max, true);
    check(
      getLibc().ioctlBuf(this.kvmFd, KVM_GET_SUPPORTED_CPUID, b),
      'KVM_GET_SUPPORTED_CPUID',
      () => `nent ${max}`,
    );
    const n = new DataView(b.buffer).getUint32(0, true);
    this.cpuid = b.slice(0, 8 + n * CPUID_ENTRY_SIZE);
    return this.cpuid;
  }

  /** The access harness of this VM, installed (memslot + code + tables) on first use. */
  harness(): GuestHarness {
    if (this.harnessState) return this.harnessState.h;
    const cfg = this.harnessConfig;
    const hva = this.host.mmap(cfg.size);
    try {
      const h = new GuestHarness(cfg, this.host.view(hva, cfg.size));
      this.setUserMemoryRegion({
        slot: cfg.slot,
        guestPhysAddr: cfg.gpa,
        memorySize: cfg.size,
        userspaceAddr: hva,
      });
      this.harnessState = { h, res: own({ label: 'harness', release: () => this.host.munmap(hva) }) };
      return h;
    } catch (e) {
      this.host.munmap(hva);
      if (e instanceof KvmError && (e.code === 'EEXIST' || e.code === 'EINVAL')) {
        throw new KvmError(
          e.code,
          e.syscall,
          `${e.message.slice(`${e.syscall}: ${e.code}: `.length)} (installing the access harness: pass another harness.gpa/slot)`,
        );
      }
      throw e;
    }
  }

  /** Close the vCPUs, guest_memfds, stats fd, the VM fd, and the harness memory (in that order). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const v of this.vcpus.values()) v.close();
    this.vcpus.clear();
    for (const g of this.gmemFds) this.host.forgetFd(g.fd, g.res);
    if (this.stats) release(this.stats.res);
    this.scratch.dispose();
    release(this.res);
    if (this.harnessState) release(this.harnessState.res);
    this.tracked.clear();
  }
  [Symbol.dispose](): void {
    this.close();
  }
  get isClosed(): boolean {
    return this.closed;
  }
  /** @internal used by RealVcpu */
  vcpuClosed(id: number): void {
    this.vcpus.delete(id);
  }
}
