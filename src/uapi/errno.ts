/**
 * Linux errno numbers used at the KVM uAPI (x86-64, include/uapi/asm-generic/errno-base.h, errno.h).
 * Data only; pinned by uapi/uapi.test.ts.
 */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EFBIG: 27,
  EINVAL: 22,
  ENOSPC: 28,
  ESPIPE: 29,
  ENOTTY: 25,
  EBADFD: 77,
  EOPNOTSUPP: 95,
} as const;

export type ErrnoName = keyof typeof ERRNO;

const byNumber = new Map<number, ErrnoName>(
  (Object.entries(ERRNO) as [ErrnoName, number][]).map(([k, v]) => [v, k]),
);

/** errno number → name, for errors coming back from the real kernel. */
export function errnoName(errno: number): ErrnoName | `E${number}` {
  return byNumber.get(errno) ?? `E${errno}`;
}
