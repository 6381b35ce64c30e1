/**
 * Runs the shared ABI cases (cases.ts) on any backend with the public API shape: the model's Kvm or the
 * real-KVM backend's RealKvm (structurally typed here, so this file loads no koffi). Each call's outcome
 * is 'OK' or the errno name, with the data for GET_DIRTY_LOG ('OK 16B [0-99]': bitmap size and the set
 * bit ranges) and CHECK_EXTENSION (the value), so the same strings compare the model, the kernel and a
 * recording. Only KvmError counts as an outcome; anything else is a harness bug and propagates.
 */
import { KvmError } from '../kvm/kvm_error.ts';
import {
  type AbiCase,
  type Call,
  describeCall,
  type FdRef,
  type HostFacts,
  type HvaRef,
  notApplicable,
} from './case_types.ts';

type U64 = number | bigint;
/** The VM-fd surface both backends share (kvm_main.ts Vm, backends/kvm/real_vm.ts RealVm). */
export interface AbiVm {
  readonly fd: number;
  setUserMemoryRegion(r: {
    slot: number;
    flags: number;
    guestPhysAddr: U64;
    memorySize: U64;
    userspaceAddr: U64;
  }): void;
  setUserMemoryRegion2(r: Record<string, U64 | undefined>): void;
  createGuestMemfd(a: { size: U64; flags: U64 }): number;
  setMemoryAttributes(a: { address: U64; size: U64; attributes: U64; flags?: U64 }): void;
  enableCap(a: { cap: number; flags?: number; args?: U64[] }): void;
  getDirtyLog(slot: number): Uint8Array;
  clearDirtyLog(a: { slot: number; firstPage: U64; numPages: number; bitmap?: Uint8Array }): void;
  checkExtension(cap: number): number;
}
/** The /dev/kvm surface both backends share. */
export interface AbiKvm {
  readonly fd: number;
  readonly host: { mmap(length: number): number };
  createVm(type?: number): AbiVm;
  memfdCreate(size?: number): number;
  close(fd: number): void;
}

/** The backing buffer each case's `buf` refers to (MAP_NORESERVE on the real host). */
export const CASE_BUF_SIZE = 8 << 20;

export interface CallResult {
  call: string;
  result: string;
  /** the model's memslot generation of AS0 after the call, where the case asserts one (model only) */
  gen?: number;
  /** wall time of this call, ns (not recorded: the timing is per machine) */
  ns?: number;
}
export interface CaseRun {
  id: string;
  /** why the case did not run on this host (its needs), or absent when it ran */
  na?: string;
  results: CallResult[];
  /** wall time of the calls themselves (setup excluded), ns */
  ns: number;
  /** ioctls made (an R1many step is `count` of them), for a per-call cost */
  ioctls: number;
}

/** A case that cannot be carried out as written (e.g. it names an fd no earlier call made). */
export class CaseHarnessError extends Error {}

/**
 * The outcome of one call: 'OK', the errno name, or OK plus its data. A harness problem becomes an
 * outcome too ('harness error: …'), so one broken case is a disagreement row, never an aborted run;
 * anything else (a model crash) propagates.
 */
export function outcomeOf(f: () => string | void): string {
  try {
    return f() ?? 'OK';
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    if (e instanceof CaseHarnessError) return `harness error: ${e.message}`;
    throw e;
  }
}

/** 'OK <bytes>B [a-b,c]': a dirty bitmap's size and its set bits as ranges, kernel bit order. */
export function describeBitmap(bm: Uint8Array): string {
  const parts: string[] = [];
  let start = -1;
  const n = bm.length * 8;
  for (let i = 0; i <= n; i++) {
    const set = i < n && (bm[i >> 3]! >> (i & 7)) & 1;
    if (set && start < 0) start = i;
    if (!set && start >= 0) {
      parts.push(start === i - 1 ? String(start) : `${start}-${i - 1}`);
      start = -1;
    }
  }
  return `OK ${bm.length}B [${parts.join(',')}]`;
}

interface Ctx {
  kvm: AbiKvm;
  vm: AbiVm;
  other: AbiVm | null;
  base: number;
  fds: Map<string, number>;
  /** memfds made by the case and still open: the case's VM does not own them, so runCase closes them */
  memfds: Set<string>;
}

function hvaOf(ctx: Ctx, r: HvaRef): number {
  return typeof r === 'number' ? r : ctx.base + r.buf;
}
function fdOf(ctx: Ctx, r: FdRef): number {
  if (typeof r === 'number') return r;
  if (r === 'kvm') return ctx.kvm.fd;
  if (r === 'vm') return ctx.vm.fd;
  const fd = ctx.fds.get(r);
  if (fd === undefined)
    throw new CaseHarnessError(`fd '${r}' was never created (the call that makes it failed or did not run)`);
  return fd;
}
function otherVm(ctx: Ctx): AbiVm {
  ctx.other ??= ctx.kvm.createVm(0);
  return ctx.other;
}

/** Perform one call; the return value (if any) is the outcome's data form. */
function perform(ctx: Ctx, c: Call): string | void {
  const { vm } = ctx;
  switch (c.op) {
    case 'R1':
      return vm.setUserMemoryRegion({
        slot: c.slot,
        flags: c.flags,
        guestPhysAddr: c.gpa,
        memorySize: c.size,
        userspaceAddr: hvaOf(ctx, c.hva),
      });
    case 'R2':
      return vm.setUserMemoryRegion2({
        slot: c.slot,
        flags: c.flags,
        guestPhysAddr: c.gpa,
        memorySize: c.size,
        userspaceAddr: hvaOf(ctx, c.hva),
        guestMemfd: fdOf(ctx, c.fd),
        guestMemfdOffset: c.off,
        pad1: c.pad?.[0],
        pad2: c.pad?.[1],
      });
    case 'R1many':
      return r1Many(ctx, c);
    case 'gmem': {
      const fd = vm.createGuestMemfd({ size: c.size, flags: c.flags });
      if (c.as) ctx.fds.set(c.as, fd);
      return;
    }
    case 'gmemNone': {
      // Should the kernel make one after all, close it: the case's expectation already says it should not.
      const fd = vm.createGuestMemfd({ size: c.size, flags: c.flags });
      ctx.kvm.close(fd);
      return;
    }
    case 'gmemOther':
      ctx.fds.set(c.as, otherVm(ctx).createGuestMemfd({ size: c.size, flags: 0 }));
      return;
    case 'R2other':
      return otherVm(ctx).setUserMemoryRegion2({
        slot: c.slot,
        flags: c.flags,
        guestPhysAddr: c.gpa,
        memorySize: c.size,
        guestMemfd: fdOf(ctx, c.fd),
        guestMemfdOffset: c.off,
      });
    case 'memfd':
      ctx.fds.set(c.as, ctx.kvm.memfdCreate(c.size));
      ctx.memfds.add(c.as);
      return;
    case 'close':
      ctx.memfds.delete(c.fd);
      return ctx.kvm.close(fdOf(ctx, c.fd));
    case 'dirty':
      return describeBitmap(vm.getDirtyLog(c.slot));
    case 'clear': {
      let bitmap: Uint8Array | undefined;
      if (c.bytes !== null) {
        bitmap = new Uint8Array(c.bytes);
        if (Array.isArray(c.fill)) bitmap.set(c.fill);
        else bitmap.fill(c.fill ?? 0);
      }
      return vm.clearDirtyLog({
        slot: c.slot,
        firstPage: c.first,
        numPages: c.num,
        ...(bitmap ? { bitmap } : {}),
      });
    }
    case 'cap':
      return vm.enableCap({ cap: c.cap, flags: c.flags ?? 0, args: c.args });
    case 'check':
      return String(vm.checkExtension(c.cap));
    case 'attrs':
      return vm.setMemoryAttributes({
        address: c.address,
        size: c.size,
        attributes: c.attributes,
        flags: c.flags ?? 0,
      });
  }
}

/** Many V1 calls as one step: 'OK' if all succeed, else the first failure as 'ERRNO@slot'. */
function r1Many(ctx: Ctx, c: Extract<Call, { op: 'R1many' }>): string {
  const hva = hvaOf(ctx, c.hva);
  for (let i = 0; i < c.count; i++) {
    const slot = c.first + i;
    const r = outcomeOf(() =>
      ctx.vm.setUserMemoryRegion({
        slot,
        flags: 0,
        guestPhysAddr: (c.gpaBase ?? 0) + i * c.gpaStep,
        memorySize: c.size,
        userspaceAddr: hva,
      }),
    );
    if (r !== 'OK') return `${r}@${slot}`;
  }
  return 'OK';
}

/**
 * Run one case on a fresh DEFAULT VM of `kvm`. `base` is the case buffer's hva (CASE_BUF_SIZE bytes,
 * mapped once per backend by the caller). `generation` (model only) reads the AS0 generation for calls
 * that assert one. `closeVm` releases what the case made (RealVm.close; the model needs nothing).
 */
export function runCase(
  kvm: AbiKvm,
  base: number,
  c: AbiCase,
  hooks: { generation?: (vm: AbiVm) => number; closeVm?: (vm: AbiVm) => void } = {},
): CaseRun {
  const ctx: Ctx = { kvm, vm: kvm.createVm(0), other: null, base, fds: new Map(), memfds: new Set() };
  const results: CallResult[] = [];
  let ns = 0n;
  let ioctls = 0;
  try {
    for (const s of c.steps) {
      const t0 = process.hrtime.bigint();
      const result = outcomeOf(() => perform(ctx, s.call));
      const dt = process.hrtime.bigint() - t0;
      ns += dt;
      ioctls += s.call.op === 'R1many' ? s.call.count : 1;
      const r: CallResult = { call: describeCall(s.call), result, ns: Number(dt) };
      if ('gen' in s.call && s.call.gen !== undefined && hooks.generation) r.gen = hooks.generation(ctx.vm);
      results.push(r);
    }
  } finally {
    // guest_memfds belong to their VM and close with it; plain memfds are closed here.
    for (const name of ctx.memfds) kvm.close(ctx.fds.get(name)!);
    if (ctx.other) hooks.closeVm?.(ctx.other);
    hooks.closeVm?.(ctx.vm);
  }
  return { id: c.id, results, ns: Number(ns), ioctls };
}

/** Run each case that applies to a host with `facts`; the others come back with `na` and no results. */
export function runCases(
  kvm: AbiKvm,
  base: number,
  cases: readonly AbiCase[],
  facts: HostFacts,
  hooks: Parameters<typeof runCase>[3] = {},
): CaseRun[] {
  return cases.map((c) => {
    const na = notApplicable(c, facts);
    return na === null ? runCase(kvm, base, c, hooks) : { id: c.id, na, results: [], ns: 0, ioctls: 0 };
  });
}

export interface Disagreement {
  case: string;
  index: number;
  call: string;
  model: string;
  kernel: string;
}

/** One row per case: how the two sides compared. */
export interface CaseVerdict {
  case: string;
  status: 'agree' | 'disagree' | 'n/a';
  /** calls compared (0 when n/a) */
  calls: number;
  /** for n/a: why */
  reason?: string;
}

/**
 * Every call whose outcome differs between two runs of the same cases (matched by case id and index),
 * and a verdict per case. A case not applicable on either side is not compared; applicable on one side
 * only (the two hosts disagree about a feature) is a disagreement.
 */
export function compareRuns(
  model: readonly CaseRun[],
  kernel: readonly CaseRun[],
): { compared: number; diffs: Disagreement[]; cases: CaseVerdict[] } {
  const byId = new Map(kernel.map((r) => [r.id, r]));
  const diffs: Disagreement[] = [];
  const cases: CaseVerdict[] = [];
  let compared = 0;
  for (const m of model) {
    const k = byId.get(m.id);
    if (!k) {
      diffs.push({
        case: m.id,
        index: -1,
        call: '(case)',
        model: m.na ? 'n/a' : 'ran',
        kernel: 'not recorded',
      });
      cases.push({ case: m.id, status: 'disagree', calls: 0 });
      continue;
    }
    if (m.na !== undefined || k.na !== undefined) {
      if (m.na !== undefined && k.na !== undefined)
        cases.push({ case: m.id, status: 'n/a', calls: 0, reason: k.na });
      else {
        diffs.push({
          case: m.id,
          index: -1,
          call: '(case)',
          model: m.na ? `n/a: ${m.na}` : 'ran',
          kernel: k.na ? `n/a: ${k.na}` : 'ran',
        });
        cases.push({ case: m.id, status: 'disagree', calls: 0 });
      }
      continue;
    }
    const before = diffs.length;
    const n = Math.max(m.results.length, k.results.length);
    for (let i = 0; i < n; i++) {
      const a = m.results[i];
      const b = k.results[i];
      compared++;
      if (a?.call !== b?.call || a?.result !== b?.result) {
        diffs.push({
          case: m.id,
          index: i,
          call: a?.call ?? b?.call ?? '?',
          model: a?.result ?? '—',
          kernel: b?.result ?? '—',
        });
      }
    }
    cases.push({ case: m.id, status: diffs.length > before ? 'disagree' : 'agree', calls: n });
  }
  return { compared, diffs, cases };
}
