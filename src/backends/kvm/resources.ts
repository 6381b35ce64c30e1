/**
 * Ownership of real kernel resources (fds, mappings) held by the real-KVM backend, so that every one is
 * released exactly once: by its owner's close() / [Symbol.dispose], or, as a last resort, when the
 * process exits.
 *
 * Kernel counterpart: none; this is the VMM-side bookkeeping the kernel would otherwise do at process
 * exit (fput of every fd, exit_mmap). We release explicitly because a test run creates hundreds of VMs in
 * one process, and because a leaked VM fd keeps its guest memory accounting alive until exit.
 */
import {
  check,
  getLibc,
  MAP_ANONYMOUS,
  MAP_NORESERVE,
  MAP_PRIVATE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
} from './libc.ts';

export interface Resource {
  readonly label: string;
  release(): void;
}

const live = new Set<Resource>();
let exitHookInstalled = false;

/** Track a resource until it is released. */
export function own(r: Resource): Resource {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Newest first, so vCPU fds close before their VM fd and mappings go after the fds that use them.
    process.on('exit', () => {
      for (const x of [...live].reverse()) releaseQuietly(x);
    });
  }
  live.add(r);
  return r;
}

/** Release a tracked resource once; later calls are no-ops. */
export function release(r: Resource): void {
  if (!live.delete(r)) return;
  r.release();
}

function releaseQuietly(r: Resource): void {
  live.delete(r);
  try {
    r.release();
  } catch {
    // at exit there is nobody to report to; the kernel reclaims the rest
  }
}

/** How many resources are live (for leak tests). */
export function liveResourceCount(): number {
  return live.size;
}

/** An owned file descriptor. */
export function ownFd(fd: number, label: string): Resource {
  return own({ label: `${label} fd ${fd}`, release: () => void getLibc().close(fd) });
}

let mappingLog: [number, number][] | null = null;

/**
 * Start (or stop, with false) recording every [addr, len) the backend maps; returns the log. Leak tests
 * use it to tell the backend's mappings apart from the ones V8 and malloc make meanwhile.
 */
export function recordMappings(on = true): [number, number][] {
  mappingLog = on ? [] : null;
  return mappingLog ?? [];
}

/** An owned mapping (anonymous memory, the kvm_run page, scratch). */
export function ownMapping(addr: number, len: number, label: string): Resource {
  mappingLog?.push([addr, len]);
  return own({
    label: `${label} mapping 0x${addr.toString(16)}+0x${len.toString(16)}`,
    release: () => void getLibc().munmap(addr, len),
  });
}

/**
 * A growable scratch buffer for ioctl structs that carry a user pointer (dirty bitmaps): the buffer is
 * placed so that it ends exactly at a PROT_NONE guard page. A caller-supplied bitmap shorter than what the
 * kernel copies then faults in copy_from_user/copy_to_user and the kernel returns EFAULT, as it would for
 * a short buffer in C, instead of reading or writing whatever follows.
 */
export class GuardedScratch {
  private addr = 0;
  private len = 0; // usable bytes before the guard page
  private res: Resource | null = null;

  constructor(private readonly label: string) {}

  /** Return the address of an n-byte buffer that ends at the guard page, and a view of it. */
  place(n: number): { addr: number; bytes: Uint8Array } {
    if (n > this.len) this.grow(n);
    const at = this.addr + this.len - n;
    return { addr: at, bytes: new Uint8Array(getLibc().view(at, Math.max(n, 0))) };
  }

  private grow(n: number): void {
    this.dispose();
    const c = getLibc();
    const usable = Math.ceil(Math.max(n, 1) / 4096) * 4096;
    const total = usable + 4096;
    const a = check(
      c.mmap(0, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
      'mmap',
      () => `scratch ${total}`,
    );
    this.res = ownMapping(a, total, this.label);
    check(c.mprotect(a + usable, 4096, PROT_NONE), 'mprotect', () => 'scratch guard page');
    this.addr = a;
    this.len = usable;
  }

  dispose(): void {
    if (this.res) release(this.res);
    this.res = null;
    this.addr = 0;
    this.len = 0;
  }
}
