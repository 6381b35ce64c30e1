/**
 * Scenario numbers: integers, "0x…" hex strings, or sizes with a binary suffix ("64K", "2M", "4G").
 * Its own module so every schema file can use it without an import cycle. Model-only file.
 */
import { z } from 'zod';
import { ERRNO } from '../uapi/errno.ts';

const SUFFIX: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** "0x1000", "64K", 4096 → 4096; anything else is a validation issue naming what was expected. */
export const num = z.union([z.number(), z.string()]).transform((v, ctx): number => {
  let n = NaN;
  if (typeof v === 'number') n = v;
  else if (/^0x[0-9a-f_]+$/i.test(v)) n = parseInt(v.slice(2).replace(/_/g, ''), 16);
  else {
    const m = /^(\d+)([KMGT])i?B?$/i.exec(v) ?? /^(\d+)$/.exec(v);
    if (m) n = Number(m[1]) * (m[2] ? SUFFIX[m[2].toUpperCase()]! : 1);
  }
  if (!Number.isSafeInteger(n) || n < 0) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a non-negative integer, hex ("0x…") or size ("64K", "2M", "4G"); got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return n;
});

/**
 * A step's expected failure: the errno name its call must fail with (e.g. EEXIST). Without it, a call
 * that fails makes the run's verdict 'error'.
 */
export const expectErrno = z
  .enum(Object.keys(ERRNO) as [keyof typeof ERRNO])
  .optional()
  .describe(
    "the errno the step's call must fail with (e.g. EEXIST); without it a failing call makes the run's verdict 'error'",
  );
