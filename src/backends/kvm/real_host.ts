/**
 * The VMM's address space on the real backend: anonymous mappings that back memslots, memfds, and
 * host-side reads/writes of guest memory.
 *
 * Kernel counterpart: mm/mmap.c (mmap/munmap), mm/madvise.c (MADV_HUGEPAGE), fs/proc/task_mmu.c
 * (/proc/self/pagemap for the host pfn behind an hva). This is the real-backend twin of the model's
 * host/ layer: same method names, real syscalls. Ordinary mappings are MAP_NORESERVE so that large,
 * mostly untouched slots cost no commit charge (the selftests do the same); hugetlb ones are not.
 */
import { KvmError, hex } from '../../kvm/kvm_error.ts';
import {
  check,
  F_GETFD,
  getLibc,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_HUGE_1GB,
  MAP_HUGE_2MB,
  MAP_HUGETLB,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  O_CLOEXEC,
  PROT_READ,
  PROT_WRITE,
} from './libc.ts';
import { ownFd, ownMapping, release, type Resource } from './resources.ts';

export type Backing = '4k' | '2m' | '1g' | 'thp';
const SZ_2M = 2 << 20;
const SZ_1G = 1 << 30;

interface Mapping {
  hva: number;
  len: number;
  backing: Backing;
  res: Resource;
}

export class RealHost {
  private readonly maps = new Map<number, Mapping>();
  private readonly fds = new Map<number, Resource>();
  private pagemapFd = -1;
  private pagemapRes: Resource | null = null;

  /**
   * mmap(NULL, length, RW, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE) and return the hva.
   * '2m'/'1g' use hugetlbfs pages (ENOMEM unless the host has reserved some); 'thp' is a 2 MiB-aligned
   * mapping with MADV_HUGEPAGE.
   */
  mmap(length: number, opts: { backing?: Backing } = {}): number {
    const backing = opts.backing ?? '4k';
    if (!Number.isSafeInteger(length) || length <= 0)
      throw new KvmError('EINVAL', 'mmap', `length ${String(length)}`);
    const c = getLibc();
    const base = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    const detail = () => `length ${hex(length)} backing ${backing}`;
    let hva: number;
    if (backing === '2m' || backing === '1g') {
      // No MAP_NORESERVE here: hugetlb pages are reserved at mmap time, so a host without free huge
      // pages fails now with ENOMEM instead of delivering SIGBUS at the first touch.
      const huge = backing === '2m' ? MAP_HUGETLB | MAP_HUGE_2MB : MAP_HUGETLB | MAP_HUGE_1GB;
      hva = check(
        c.mmap(0, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | huge, -1, 0),
        'mmap',
        detail,
      );
    } else if (backing === 'thp') {
      hva = this.mmapAligned(length, SZ_2M, detail);
      if (c.madvise(hva, length, MADV_HUGEPAGE) === -1) {
        const e = c.errno();
        c.munmap(hva, length); // a failed call leaks nothing
        throw new KvmError(e, 'madvise', `MADV_HUGEPAGE ${detail()}`);
      }
    } else if (backing === '4k') {
      hva = check(c.mmap(0, length, PROT_READ | PROT_WRITE, base, -1, 0), 'mmap', detail);
    } else {
      throw new KvmError('EINVAL', 'mmap', `unknown backing '${String(backing)}'`);
    }
    const res = ownMapping(hva, length, `host ${backing}`);
    this.maps.set(hva, { hva, len: length, backing, res });
    return hva;
  }

  /** mmap(NULL, length, RW, MAP_SHARED, fd, offset): e.g. a guest_memfd created with GUEST_MEMFD_FLAG_MMAP. */
  mmapFd(fd: number, length: number, offset = 0): number {
    const c = getLibc();
    const hva = check(
      c.mmap(0, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset),
      'mmap',
      () => `fd ${fd} length ${hex(length)} offset ${hex(offset)}`,
    );
    this.maps.set(hva, { hva, len: length, backing: '4k', res: ownMapping(hva, length, `fd ${fd}`) });
    return hva;
  }

  /** Over-map by `align`, then trim head and tail so the result is aligned (as QEMU does for THP). */
  private mmapAligned(length: number, align: number, detail: () => string): number {
    const c = getLibc();
    const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    const raw = check(c.mmap(0, length + align, PROT_READ | PROT_WRITE, flags, -1, 0), 'mmap', detail);
    const hva = Math.ceil(raw / align) * align;
    if (hva > raw) c.munmap(raw, hva - raw);
    const tail = raw + length + align - (hva + length);
    if (tail > 0) c.munmap(hva + length, tail);
    return hva;
  }

  /** munmap a mapping made by mmap(), by its start hva. */
  munmap(hva: number): void {
    const m = this.maps.get(hva);
    if (!m)
      throw new KvmError('EINVAL', 'munmap', `${hex(hva)} is not the start of a mapping made by host.mmap`);
    this.maps.delete(hva);
    release(m.res);
  }

  /** The mapping that contains [hva, hva+len), or null. */
  mappingOf(hva: number, len = 1): { hva: number; len: number; backing: Backing } | null {
    for (const m of this.maps.values()) if (hva >= m.hva && hva + len <= m.hva + m.len) return m;
    return null;
  }

  /** A live view of process memory; only inside mappings made here (anything else could SIGSEGV). */
  view(hva: number, len: number): Uint8Array {
    if (!this.mappingOf(hva, len)) {
      throw new KvmError('EFAULT', 'host.view', `${hex(hva)}+${hex(len)} is not inside a host.mmap mapping`);
    }
    return new Uint8Array(getLibc().view(hva, len));
  }
  read(hva: number, len: number): Uint8Array {
    return this.view(hva, len).slice();
  }
  write(hva: number, bytes: Uint8Array): void {
    this.view(hva, bytes.length).set(bytes);
  }

  /** memfd_create: an ordinary shmem file (for "bind a non-guest_memfd fd" cases). */
  memfdCreate(name = 'zaplab', size = 0): number {
    const c = getLibc();
    const fd = check(c.memfdCreate(name, MFD_CLOEXEC), 'memfd_create', () => name);
    if (size > 0 && c.ftruncate(fd, size) === -1) {
      const e = c.errno();
      c.close(fd);
      throw new KvmError(e, 'ftruncate', `memfd ${fd} size ${hex(size)}`);
    }
    this.adoptFd(fd, 'memfd');
    return fd;
  }

  /** Take ownership of an fd (released by close() or at exit). */
  adoptFd(fd: number, label: string): void {
    this.fds.set(fd, ownFd(fd, label));
  }

  /** close(2) an fd this host owns (a guest_memfd, a memfd). */
  close(fd: number): void {
    const r = this.fds.get(fd);
    if (!r) throw new KvmError('EBADF', 'close', `fd ${fd} is not owned by this host`);
    this.fds.delete(fd);
    release(r);
  }

  /** The resource behind an owned fd (so an owner can release exactly that file later). */
  fdResource(fd: number): Resource | undefined {
    return this.fds.get(fd);
  }

  /** Release `res` and drop fd from the table if it still refers to that same file (fd numbers are reused). */
  forgetFd(fd: number, res: Resource): void {
    if (this.fds.get(fd) === res) this.fds.delete(fd);
    release(res);
  }

  /** Whether fd is open in this process at all (fcntl(F_GETFD)); for leak checks. */
  isOpenFd(fd: number): boolean {
    return getLibc().fcntl(fd, F_GETFD, 0) !== -1;
  }

  /** Whether fd is an fd this host owns and has not closed. */
  ownsFd(fd: number): boolean {
    return this.fds.has(fd);
  }

  /**
   * The host pfn currently mapped at hva (from /proc/self/pagemap; needs CAP_SYS_ADMIN for the pfn
   * bits), or null when the page is not present. This is the pfn KVM's SPTE points at.
   */
  pagemapPfn(hva: number): number | null {
    const c = getLibc();
    if (this.pagemapFd < 0) {
      this.pagemapFd = check(c.open('/proc/self/pagemap', O_CLOEXEC), 'open', () => '/proc/self/pagemap');
      this.pagemapRes = ownFd(this.pagemapFd, 'pagemap');
    }
    const b = new Uint8Array(8);
    check(c.pread(this.pagemapFd, b, 8, Math.floor(hva / 4096) * 8), 'pread', () => `pagemap ${hex(hva)}`);
    const v = new DataView(b.buffer).getBigUint64(0, true);
    if (!(v >> 63n)) return null;
    const pfn = Number(v & ((1n << 55n) - 1n));
    return pfn === 0 ? null : pfn; // 0 without CAP_SYS_ADMIN
  }

  /** Release every mapping and fd (the owning RealKvm calls this on close). */
  closeAll(): void {
    for (const m of this.maps.values()) release(m.res);
    this.maps.clear();
    for (const r of this.fds.values()) release(r);
    this.fds.clear();
    if (this.pagemapRes) release(this.pagemapRes);
    this.pagemapRes = null;
    this.pagemapFd = -1;
  }
}
