/**
 * The batched guest-access calls, vcpu.accessRange and vcpu.accessList: many accesses in one call with
 * the same semantics, results and stats as calling vcpu.access for each address in order (an exit does
 * not stop the batch; the optional callback sees each result before the next access runs). Arguments are
 * validated in full before the first access, so a bad call changes nothing. A completed access allocates
 * nothing: it goes through the MMU's vcpuAccessInto (one copy of the access path) and lands in the
 * optional typed-array outputs. With no callback, runs of 4K-stride accesses may go through the MMU's
 * vcpuAccessBulk instead (x86/mmu/guest_access_bulk.ts: the same steps per access, the per-run work
 * done once); it makes what it can and leaves the rest to vcpuAccessInto.
 *
 * Kernel counterpart: none (a guest touching many pages between two looks from userspace); each access
 * is the model's vcpu.access.
 */
import type { Vcpu } from './vcpu.ts';
import {
  ACCESS_EXITS,
  type AccessBatchOptions,
  type AccessBatchResult,
  type AccessHit,
  type AccessKind,
  type AccessResult,
} from './api_types.ts';
import { argOpts, formatValue, readAccessKind } from './args.ts';

const GPA_LIMIT = 2 ** 52;
const EXIT_CODE: Record<string, number> = Object.fromEntries(ACCESS_EXITS.map((e, i) => [e, i]));

function checkKind(kind: unknown, what: string): asserts kind is AccessKind {
  readAccessKind(what, kind);
}

function checkOptions(opts: AccessBatchOptions, n: number, what: string): void {
  argOpts(what, opts, ['private', 'stride', 'onResult', 'out']);
  if (opts.private !== undefined && typeof opts.private !== 'boolean')
    throw new TypeError(`${what}: private must be a boolean (got ${formatValue(opts.private)})`);
  if (opts.onResult !== undefined && typeof opts.onResult !== 'function')
    throw new TypeError(`${what}: onResult must be a function`);
  const out = opts.out;
  if (out === undefined) return;
  if (typeof out !== 'object' || out === null) throw new TypeError(`${what}: out must be an object`);
  const want = { exit: Uint8Array, pfn: Float64Array, level: Uint8Array, memtype: Uint8Array } as const;
  for (const [k, ctor] of Object.entries(want)) {
    const a = (out as Record<string, unknown>)[k];
    if (a === undefined) continue;
    if (!(a instanceof ctor)) throw new TypeError(`${what}: out.${k} must be a ${ctor.name}`);
    if (a.length < n)
      throw new RangeError(`${what}: out.${k} has ${a.length} entries, the batch makes ${n} accesses`);
  }
}

const isGpa = (v: unknown): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v < GPA_LIMIT;

/** vcpu.accessRange(gpa, count, kind, opts): count accesses at gpa, gpa + stride, … */
export function accessRange(
  vcpu: Vcpu,
  gpa: number,
  count: number,
  kind: AccessKind,
  opts: AccessBatchOptions = {},
): AccessBatchResult {
  checkKind(kind, 'accessRange');
  if (!Number.isSafeInteger(count) || count < 0)
    throw new RangeError(`accessRange: count must be a non-negative integer (got ${formatValue(count)})`);
  checkOptions(opts, count, 'accessRange');
  const stride = opts.stride ?? 4096;
  if (!Number.isSafeInteger(stride) || stride <= 0)
    throw new RangeError(`accessRange: stride must be a positive integer (got ${formatValue(stride)})`);
  if (!isGpa(gpa) || (count > 0 && !isGpa(gpa + (count - 1) * stride)))
    throw new RangeError(
      `accessRange: [${formatValue(gpa)}, +${count} × ${stride}) is not a range of guest physical addresses`,
    );
  return run(vcpu, null, gpa, stride, count, kind, opts);
}

/** vcpu.accessList(gpas, kind, opts): one access per entry of gpas, in order. */
export function accessList(
  vcpu: Vcpu,
  gpas: ArrayLike<number>,
  kind: AccessKind,
  opts: AccessBatchOptions = {},
): AccessBatchResult {
  checkKind(kind, 'accessList');
  if (typeof gpas !== 'object' || gpas === null || !Number.isSafeInteger(gpas.length))
    throw new TypeError('accessList: gpas must be an array or typed array of guest physical addresses');
  const n = gpas.length;
  for (let i = 0; i < n; i++)
    if (!isGpa(gpas[i]))
      throw new RangeError(
        `accessList: gpas[${i}] = ${formatValue(gpas[i])} is not a guest physical address`,
      );
  checkOptions(opts, n, 'accessList');
  return run(vcpu, gpas, 0, 0, n, kind, opts);
}

const hitResult = { exit: 'none' as const, pfn: 0, level: 1 as 1 | 2 | 3, memtype: 0 };

function run(
  vcpu: Vcpu,
  gpas: ArrayLike<number> | null,
  start: number,
  stride: number,
  n: number,
  kind: AccessKind,
  opts: AccessBatchOptions,
): AccessBatchResult {
  const mmu = vcpu.vm.mmu;
  const into = mmu.vcpuAccessInto;
  const aopts = opts.private === undefined ? {} : { private: opts.private };
  const { exit: outExit, pfn: outPfn, level: outLevel, memtype: outMt } = opts.out ?? {};
  const onResult = opts.onResult;
  const hit: AccessHit = { pfn: 0, level: 1, memtype: 0 };
  const res: AccessBatchResult = { count: n, none: 0, exits: 0, firstExit: null, firstExitIndex: -1 };
  // With nothing to call between two accesses, the MMU may make runs of 4K-stride accesses in bulk.
  const bulk =
    gpas === null && stride === 4096 && onResult === undefined && opts.private === undefined
      ? mmu.vcpuAccessBulk
      : undefined;
  // Otherwise each access may take the MMU's fast path first, as vcpu.access does: a hit or a 4K first
  // touch made with the full path's effects, or nothing changed (then the full path makes it).
  const fast = opts.private === undefined && kind !== 'exec' ? mmu.vcpuAccessFast : undefined;
  const write = kind === 'write';
  for (let i = 0; i < n; i++) {
    if (bulk !== undefined) {
      const k = bulk.call(mmu, vcpu, start + i * stride, n - i, write, opts.out, i);
      res.none += k;
      i += k;
      if (i === n) break;
    }
    const gpa = gpas === null ? start + i * stride : gpas[i]!;
    let r: AccessResult | null;
    if (fast !== undefined && fast.call(mmu, vcpu, gpa, write, hit)) r = null;
    else if (into !== undefined) r = into.call(mmu, vcpu, gpa, kind, aopts, hit);
    else {
      r = mmu.vcpuAccess(vcpu, gpa, kind, aopts);
      if (r.exit === 'none') {
        hit.pfn = r.pfn;
        hit.level = r.level;
        hit.memtype = r.memtype;
        r = null;
      }
    }
    vcpu.accessEnded(r === null);
    if (r === null) {
      res.none++;
      if (outExit !== undefined) outExit[i] = 0;
      if (outPfn !== undefined) outPfn[i] = hit.pfn;
      if (outLevel !== undefined) outLevel[i] = hit.level;
      if (outMt !== undefined) outMt[i] = hit.memtype;
      if (onResult !== undefined) {
        hitResult.pfn = hit.pfn;
        hitResult.level = hit.level;
        hitResult.memtype = hit.memtype;
        onResult(i, hitResult);
      }
      continue;
    }
    res.exits++;
    if (res.firstExit === null) {
      res.firstExit = r;
      res.firstExitIndex = i;
    }
    if (outExit !== undefined) outExit[i] = EXIT_CODE[r.exit] ?? 255;
    if (outPfn !== undefined) outPfn[i] = 0;
    if (outLevel !== undefined) outLevel[i] = 0;
    if (outMt !== undefined) outMt[i] = 0;
    onResult?.(i, r);
  }
  return res;
}
