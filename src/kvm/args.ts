/**
 * Copy-in of ioctl arguments: JS objects standing in for the C structs userspace passes.
 *
 * Kernel counterpart: copy_from_user() of the ioctl argument in virt/kvm/kvm_main.c#kvm_vm_ioctl.
 * A non-object argument is a bad user pointer (EFAULT). A field that is not a non-negative integer that
 * fits its C type is EINVAL, as is an unknown field name (the model's own strictness: a typo must not
 * silently become a zeroed field). Fields not given are 0, as in a zeroed C struct.
 *
 * u64 values stay JS numbers while they are safe integers (the hot path never allocates a bigint) and
 * become bigints only beyond 2^53; `U64` is that union and the helpers below do exact u64 arithmetic.
 */
import { KvmError } from './kvm_error.ts';

export type U64 = number | bigint;
const U64_MAX = (1n << 64n) - 1n;

export type FieldKind = 'u32' | 'u64' | 'fd' | 'bytes';
export type StructSpec = Readonly<Record<string, FieldKind>>;

function bad(syscall: string, field: string, what: string): never {
  throw new KvmError('EINVAL', syscall, `field '${field}' ${what}`);
}

/**
 * Describe any value for an error message without calling into it: no toString/valueOf, no getters,
 * no Symbol.toPrimitive (a null-prototype object, a Symbol or a boxed bigint must not throw here).
 */
export function formatValue(v: unknown): string {
  switch (typeof v) {
    case 'number':
    case 'boolean':
    case 'undefined':
      return String(v);
    case 'bigint':
      return `${v.toString()}n`;
    case 'string':
      return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
    case 'symbol':
      return 'a symbol';
    case 'function':
      return 'a function';
    default:
      if (v === null) return 'null';
      try {
        return Array.isArray(v) ? 'an array' : 'an object';
      } catch {
        return 'a revoked proxy';
      }
  }
}

export function readU64(syscall: string, field: string, v: unknown): U64 {
  if (v === undefined) return 0;
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0)
      bad(syscall, field, `must be a u64 (got ${formatValue(v)}); use a bigint past 2^53`);
    return v;
  }
  if (typeof v === 'bigint') {
    if (v < 0n || v > U64_MAX) bad(syscall, field, `does not fit in a u64 (got ${v})`);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  return bad(syscall, field, `must be a number or bigint (got ${formatValue(v)})`);
}

export function readU32(syscall: string, field: string, v: unknown): number {
  if (v === undefined) return 0;
  if (typeof v === 'bigint') v = v <= 0xffffffffn && v >= 0n ? Number(v) : -1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    bad(syscall, field, `must be a u32 (got ${formatValue(v)})`);
  }
  return v;
}

/** A file-descriptor field: a u32 in the struct, but -1 (as C callers write it) is accepted as 0xffffffff. */
export function readFd(syscall: string, field: string, v: unknown): number {
  if (v === -1) return 0xffffffff;
  return readU32(syscall, field, v);
}

/**
 * Copy a struct argument in: check it is an object with only known fields, and read each field.
 * Returns a plain record of normalized values.
 */
export function copyIn<S extends StructSpec>(
  syscall: string,
  arg: unknown,
  spec: S,
): { [K in keyof S]: S[K] extends 'u32' | 'fd' ? number : S[K] extends 'bytes' ? Uint8Array | null : U64 } {
  if (!isPlainObject(arg)) {
    throw new KvmError('EFAULT', syscall, `argument must be a plain struct object (got ${describe(arg)})`);
  }
  const src = arg;
  for (const k of Object.keys(src)) if (!Object.hasOwn(spec, k)) unknownField(syscall, k, spec);
  const out: Record<string, unknown> = {};
  for (const k in spec) {
    const kind = spec[k];
    const v = src[k];
    if (kind === 'u32') out[k] = readU32(syscall, k, v);
    else if (kind === 'fd') out[k] = readFd(syscall, k, v);
    else if (kind === 'bytes') {
      if (v === undefined || v === null) out[k] = null;
      else if (v instanceof Uint8Array) out[k] = v;
      else throw new KvmError('EFAULT', syscall, `field '${k}' must be a Uint8Array (a user buffer)`);
    } else out[k] = readU64(syscall, k, v);
  }
  return out as never;
}

/** EINVAL for an argument field that is not a field of the struct `spec`. */
export function unknownField(syscall: string, field: string, spec: StructSpec): never {
  return bad(syscall, field, `is not a field of this struct (fields: ${Object.keys(spec).join(', ')})`);
}

/** A struct stands for C memory: only plain objects (or null-prototype ones) qualify, not Maps, Dates, arrays. */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function describe(v: unknown): string {
  if (typeof v !== 'object' || v === null) return formatValue(v);
  return Array.isArray(v) ? 'an array' : 'a non-plain object';
}

// ---- exact u64 arithmetic on U64 values -------------------------------------------------------

export const isBig = (v: U64): v is bigint => typeof v === 'bigint';
export const toBig = (v: U64): bigint => (typeof v === 'bigint' ? v : BigInt(v));

/** v % 2^shift != 0 */
export function isUnaligned(v: U64, align: number): boolean {
  return typeof v === 'bigint' ? v % BigInt(align) !== 0n : v % align !== 0;
}

/** a + b overflows u64. Two safe integers can never wrap. */
export function addWrapsU64(a: U64, b: U64): boolean {
  if (typeof a === 'number' && typeof b === 'number') return false;
  return toBig(a) + toBig(b) > U64_MAX;
}

/** a + b as a U64-precision comparison against a limit: a + b > limit. */
export function sumExceeds(a: U64, b: U64, limit: number): boolean {
  if (typeof a === 'number' && typeof b === 'number') return a + b > limit; // rounding past 2^53 cannot cross a limit < 2^53
  return toBig(a) + toBig(b) > BigInt(limit);
}

/** The value as a number, for values already proven < 2^53. */
export function num(v: U64): number {
  return typeof v === 'bigint' ? Number(v) : v;
}

// ---- arguments of the model's non-ioctl entry points (guest actions, host mm, VFIO helpers) -------
// These are not C structs: a value of the wrong type is a TypeError and a value out of range a
// RangeError, each naming the entry point and the argument. They are cheap (typeof first) so the
// guest-access hot path can use them.

function typeErr(fn: string, name: string, want: string, v: unknown): never {
  throw new TypeError(`${fn}: ${name} must be ${want} (got ${formatValue(v)})`);
}
function rangeErr(fn: string, name: string, want: string, v: unknown): never {
  throw new RangeError(`${fn}: ${name} must be ${want} (got ${formatValue(v)})`);
}

/** An integer argument in [min, max] (a number; bigints are accepted when `bigints` and in range). */
export function argInt(fn: string, name: string, v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= min && v <= max) return v;
  } else typeErr(fn, name, `an integer in [${min}, ${max}]`, v);
  return rangeErr(fn, name, `an integer in [${min}, ${max}]`, v);
}

/** A u64 argument as a bigint: a non-negative safe-integer number or a bigint below 2^64. */
export function argU64Big(fn: string, name: string, v: unknown): bigint {
  if (typeof v === 'bigint') {
    if (v >= 0n && v <= U64_MAX) return v;
  } else if (typeof v === 'number') {
    if (Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  } else typeErr(fn, name, 'a u64 (a number or a bigint)', v);
  return rangeErr(fn, name, 'a u64 (a safe integer ≥ 0, or a bigint below 2^64)', v);
}

/** A guest physical address: a safe integer in [0, 2^52). */
export function readGpa(fn: string, v: unknown, name = 'gpa'): number {
  if (typeof v === 'number' && v >= 0 && v < 2 ** 52 && Number.isInteger(v)) return v;
  if (typeof v !== 'number') typeErr(fn, name, 'a guest physical address (a number below 2^52)', v);
  return rangeErr(fn, name, 'a guest physical address (an integer in [0, 2^52))', v);
}

/** A host virtual address or length: a safe integer in [0, 2^47] (4-level host paging). */
export function readHostNumber(fn: string, name: string, v: unknown): number {
  if (typeof v === 'number' && v >= 0 && v <= 2 ** 47 && Number.isInteger(v)) return v;
  if (typeof v !== 'number') typeErr(fn, name, 'a number', v);
  return rangeErr(fn, name, 'an integer in [0, 2^47]', v);
}

/** A boolean argument; `undefined` gives the default. */
export function argBool(fn: string, name: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v === 'boolean') return v;
  return typeErr(fn, name, 'a boolean', v);
}

/** One of a fixed set of strings. */
export function argOneOf<T extends string>(fn: string, name: string, v: unknown, allowed: readonly T[]): T {
  if (allowed.includes(v as T)) return v as T;
  return typeErr(fn, name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, v);
}

/**
 * An options bag: undefined (no options) or a plain object whose keys are all in `keys`. Returns it
 * (or an empty object) so the caller reads the fields it validated.
 */
export function argOpts(fn: string, v: unknown, keys: readonly string[]): Record<string, unknown> {
  if (v === undefined) return EMPTY;
  if (!isPlainObject(v)) return typeErr(fn, 'options', `an object with keys ${keys.join(', ')}`, v);
  for (const k in v)
    if (!keys.includes(k)) throw new TypeError(`${fn}: unknown option '${k}' (options: ${keys.join(', ')})`);
  return v;
}
const EMPTY: Record<string, unknown> = Object.freeze({});

/** The access kind of a guest access. */
export function readAccessKind(fn: string, v: unknown): 'read' | 'write' | 'exec' {
  if (v === 'read' || v === 'write' || v === 'exec') return v;
  return typeErr(fn, 'kind', "'read', 'write' or 'exec'", v);
}

/** vcpu.access's options: undefined, or `{ private?: boolean }`. */
export function readAccessOpts(fn: string, v: unknown): { private?: boolean } | undefined {
  if (v === undefined) return undefined;
  const o = argOpts(fn, v, ['private']);
  const p = o['private'];
  if (p !== undefined && typeof p !== 'boolean') typeErr(fn, 'private', 'a boolean', p);
  return o as { private?: boolean };
}
