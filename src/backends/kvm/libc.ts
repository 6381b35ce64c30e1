/**
 * The syscall layer of the real-KVM backend: open/close/ioctl/mmap/munmap/madvise/read/pread/fcntl/
 * memfd_create from glibc, called through koffi.
 *
 * Kernel counterpart: the userspace side of the syscalls a VMM makes (what QEMU's kvm-all.c does with
 * glibc). koffi is an optional dependency and is loaded here, lazily, with createRequire: nothing else in
 * the project imports this file unless it asks for the real backend, so the model never loads koffi.
 *
 * errno: koffi saves the thread's errno right after each foreign call and `koffi.errno()` returns it
 * (verified: close(-1) → EBADF, KVM_CREATE_VM on a VM fd → ENOTTY). It is read only when a call returned
 * -1, because a successful call leaves errno stale. Addresses are plain JS numbers (uintptr_t/intptr_t):
 * user addresses are below 2^47, so they are exact.
 */
import { createRequire } from 'node:module';
import { KvmError } from '../../kvm/kvm_error.ts';

/** The subset of koffi's API this backend uses (typed here so tsc works without koffi's types loaded). */
interface Koffi {
  load(path: string): { func(sig: string): (...args: unknown[]) => unknown };
  errno(): number;
  view(ptr: number, len: number): ArrayBuffer;
}

/** A user buffer handed to the kernel: koffi passes a typed array's data pointer (offset included). */
export type UserBuf = Uint8Array;

export interface Libc {
  open(path: string, flags: number): number;
  close(fd: number): number;
  /** ioctl(fd, req, ptr) with a user buffer */
  ioctlBuf(fd: number, req: number, buf: UserBuf): number;
  /** ioctl(fd, req, unsigned long) with an integer argument (or a raw user address) */
  ioctlInt(fd: number, req: number, arg: number): number;
  /**
   * ioctlInt on one of koffi's worker threads: the promise gets the return value (errno is that
   * thread's and is not kept). What lets a vCPU sit in KVM_RUN while this thread issues other ioctls.
   */
  ioctlIntAsync(fd: number, req: number, arg: number): Promise<number>;
  mmap(addr: number, len: number, prot: number, flags: number, fd: number, off: number): number;
  munmap(addr: number, len: number): number;
  madvise(addr: number, len: number, advice: number): number;
  mprotect(addr: number, len: number, prot: number): number;
  read(fd: number, buf: UserBuf, n: number): number;
  pread(fd: number, buf: UserBuf, n: number, off: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, len: number): number;
  errno(): number;
  /** An ArrayBuffer over process memory [addr, addr+len), without copying. */
  view(addr: number, len: number): ArrayBuffer;
}

// Linux x86-64 values (asm-generic / x86 uapi).
export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_HUGETLB = 0x40000;
export const MAP_HUGE_2MB = 21 << 26;
export const MAP_HUGE_1GB = 30 << 26;
export const MADV_HUGEPAGE = 14;
export const MADV_NOHUGEPAGE = 15;
export const F_GETFD = 1;
export const F_GETFL = 3;
export const MFD_CLOEXEC = 1;

let libc: Libc | null = null;
let loadError: string | null = null;

function loadKoffi(): Koffi {
  // createRequire rather than a static import: koffi is optional and must not load with the model.
  const require = createRequire(import.meta.url);
  return require('koffi') as Koffi;
}

/** Load koffi and bind glibc once. Throws Error (not KvmError) if koffi or libc is unavailable. */
export function getLibc(): Libc {
  if (libc) return libc;
  if (loadError) throw new Error(loadError);
  let k: Koffi;
  try {
    k = loadKoffi();
  } catch (e) {
    loadError = `koffi (optional dependency) could not be loaded: ${(e as Error).message}`;
    throw new Error(loadError);
  }
  const lib = k.load('libc.so.6');
  const f = (sig: string) => lib.func(sig) as (...a: unknown[]) => number;
  const open = f('int open(const char *path, int flags, int mode)');
  const close = f('int close(int fd)');
  // ioctl is variadic in C; on x86-64 SysV a fixed third argument is passed the same way (rdx), so two
  // fixed prototypes (pointer / integer) are exact and faster than koffi's variadic path.
  const ioctlP = f('int ioctl(int fd, unsigned long req, void *arg)');
  const ioctlI = f('int ioctl(int fd, unsigned long req, uintptr_t arg)');
  const ioctlIAsync = (ioctlI as unknown as { async(...a: unknown[]): void }).async.bind(ioctlI);
  const mmap = f('intptr_t mmap(uintptr_t addr, size_t len, int prot, int flags, int fd, int64_t off)');
  const munmap = f('int munmap(uintptr_t addr, size_t len)');
  const madvise = f('int madvise(uintptr_t addr, size_t len, int advice)');
  const mprotect = f('int mprotect(uintptr_t addr, size_t len, int prot)');
  const read = f('intptr_t read(int fd, void *buf, size_t n)');
  const pread = f('intptr_t pread(int fd, void *buf, size_t n, int64_t off)');
  const fcntl = f('int fcntl(int fd, int cmd, long arg)');
  const memfd = f('int memfd_create(const char *name, unsigned int flags)');
  const ftruncate = f('int ftruncate(int fd, int64_t len)');
  libc = {
    open: (p, fl) => open(p, fl, 0),
    close: (fd) => close(fd),
    ioctlBuf: (fd, req, buf) => ioctlP(fd, req, buf),
    ioctlInt: (fd, req, arg) => ioctlI(fd, req, arg),
    ioctlIntAsync: (fd, req, arg) =>
      new Promise<number>((resolve, reject) =>
        ioctlIAsync(fd, req, arg, (err: unknown, r: number) => (err ? reject(err as Error) : resolve(r))),
      ),
    mmap: (a, l, p, fl, fd, o) => mmap(a, l, p, fl, fd, o),
    munmap: (a, l) => munmap(a, l),
    madvise: (a, l, adv) => madvise(a, l, adv),
    mprotect: (a, l, p) => mprotect(a, l, p),
    read: (fd, b, n) => read(fd, b, n),
    pread: (fd, b, n, o) => pread(fd, b, n, o),
    fcntl: (fd, c, a) => fcntl(fd, c, a),
    memfdCreate: (n, fl) => memfd(n, fl),
    ftruncate: (fd, l) => ftruncate(fd, l),
    errno: () => k.errno(),
    view: (a, l) => k.view(a, l),
  };
  return libc;
}

/** Whether the backend can run here, and if not, why (for test skips and CLI messages). */
export function realKvmAvailability(path = '/dev/kvm'): { ok: true } | { ok: false; reason: string } {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return {
      ok: false,
      reason: `real KVM backend needs linux/x64 (this is ${process.platform}/${process.arch})`,
    };
  }
  let c: Libc;
  try {
    c = getLibc();
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  const fd = c.open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return { ok: false, reason: `open(${path}) failed: ${errnoStr(c.errno())}` };
  c.close(fd);
  return { ok: true };
}

function errnoStr(e: number): string {
  return new KvmError(e, 'open', '').code;
}

/**
 * Run a syscall that returns -1 on failure and throw KvmError(errno, name, detail()) if it does.
 * `detail` is a thunk so that a rejected call costs no string formatting until it is thrown.
 */
export function check(ret: number, name: string, detail: () => string): number {
  if (ret === -1) {
    const e = getLibc().errno();
    throw new KvmError(e, name, detail());
  }
  return ret;
}
