/**
 * KvmError: what a failing ioctl throws, on the model and on the real-KVM backend alike.
 * `code` is the errno name, `errno` the Linux number, `syscall` the ioctl name, and the message names
 * the failed check and its values in hex.
 */
import { ERRNO, errnoName, type ErrnoName } from '../uapi/errno.ts';

export class KvmError extends Error {
  override readonly name = 'KvmError';
  readonly code: ErrnoName | `E${number}`;
  readonly errno: number;
  readonly syscall: string;

  constructor(code: ErrnoName | number, syscall: string, detail: string) {
    const name = typeof code === 'number' ? errnoName(code) : code;
    const num = typeof code === 'number' ? code : ERRNO[code];
    super(`${syscall}: ${name}: ${detail}`);
    this.code = name;
    this.errno = num;
    this.syscall = syscall;
  }
}

/** Format a u64-ish value as the kernel's printk %llx would, for messages. */
export function hex(v: number | bigint): string {
  return '0x' + v.toString(16);
}
