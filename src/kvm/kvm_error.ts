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
    // An errno is an expected result, not a crash: skip the stack capture, which would cost ~20x the
    // rest of a rejected ioctl. The message names the failed check instead.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(`${syscall}: ${name}: ${detail}`);
    Error.stackTraceLimit = limit;
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
