/**
 * KvmError: what a failing ioctl throws, on the model and on the real-KVM backend alike.
 * `code` is the errno name, `errno` the Linux number, `syscall` the ioctl name, and the message names
 * the failed check and its values in hex.
 */
import { ERRNO, errnoName, type ErrnoName } from '../uapi/errno.ts';
import { formatValue } from './args.ts';

export class KvmError extends Error {
  override readonly name = 'KvmError';
  readonly code: ErrnoName | `E${number}`;
  readonly errno: number;
  readonly syscall: string;

  constructor(code: ErrnoName | number, syscall: string, detail: string) {
    const name = typeof code === 'number' ? errnoName(code) : code;
    const num = typeof code === 'number' ? code : ERRNO[code];
    const message = `${syscall}: ${name}: ${detail}`;
    // An errno is an expected result, not a crash: no stack capture (the message names the failed check
    // instead). A stackTraceLimit of 0 still walks the stack (V8 looks for this constructor's frame;
    // that walk was ~20% of a rejected ioctl); a limit that is not a number skips the capture entirely,
    // and `stack` is then set to what V8 prints for an error with no frames.
    const limit = Error.stackTraceLimit;
    (Error as { stackTraceLimit: unknown }).stackTraceLimit = undefined;
    super(message);
    Error.stackTraceLimit = limit;
    this.stack = `KvmError: ${message}`;
    this.code = name;
    this.errno = num;
    this.syscall = syscall;
  }
}

/**
 * Format a u64-ish value as the kernel's printk %llx would, for messages. Safe on any value: a caller's
 * bad argument (a Symbol, a null-prototype object) is described, never converted.
 */
export function hex(v: number | bigint): string {
  if (typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v)))
    return v < 0 ? `-0x${(-v).toString(16)}` : `0x${v.toString(16)}`;
  return formatValue(v);
}

/**
 * A rejection decided on a hot path, before any state changed: the errno plus a message built only if
 * someone reads it. The throwing API turns it into a KvmError; the raw API returns -errno.
 */
export interface Reject {
  readonly code: ErrnoName;
  readonly detail: () => string;
}

export function reject(code: ErrnoName, detail: () => string): Reject {
  return { code, detail };
}

/** Run an ioctl body the raw way: 0 on success, -errno on failure (as the syscall returns). */
export function rawIoctl(body: () => Reject | null | void): number {
  try {
    const r = body();
    return r ? -ERRNO[r.code] : 0;
  } catch (e) {
    if (e instanceof KvmError) return -e.errno;
    throw e;
  }
}
