/**
 * Malformed arguments at every public ioctl entry point (DESIGN.md Public API): a value that is not what
 * the C struct or integer argument could hold — not an object, null, an array, a negative number, a
 * fraction, NaN, a value past its field's width, an unknown field, a wrong type — must throw KvmError with
 * EINVAL (EFAULT where the argument is not a struct object at all: a bad user pointer), never another
 * exception and never a return, and must leave the VMs exactly as they were: layout, generations, dirty
 * bitmaps, attributes, enabled caps, vCPUs, stats and the fd table.
 *
 * Each entry point has a well-formed "base" argument that would succeed and change state (checked by a
 * control test), and each malformed case changes one thing in it, so a model that coerced the bad value
 * instead of rejecting it would visibly succeed.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, KvmError, type Vm } from '../../src/index.ts';
import { ERRNO, type ErrnoName } from '../../src/uapi/errno.ts';
import {
  KVM_CAP,
  KVM_MEM_GUEST_MEMFD as GMEM,
  KVM_MEM_LOG_DIRTY_PAGES as LOG,
  KVM_MEMORY_ATTRIBUTE_PRIVATE as PRIVATE,
} from '../../src/uapi/kvm.ts';
import { KVM_X86_DEFAULT_VM, KVM_X86_SW_PROTECTED_VM } from '../../src/uapi/kvm_x86.ts';

// ---- the world every case runs in --------------------------------------------------------------

interface Env {
  kvm: Kvm;
  /** DEFAULT VM: two address spaces, manual dirty-log protect with INITIALLY_SET, a gmem slot, a vCPU. */
  vm: Vm;
  /** SW_PROTECTED VM with a PRIVATE attribute range (the only VM type where attributes can be set). */
  pvm: Vm;
  gmemFd: number;
}

/** Deterministic: every fresh world hands out the same fd numbers, so a base built on one fits another. */
function makeEnv(): Env {
  const kvm = new Kvm();
  const vm = kvm.createVm(KVM_X86_DEFAULT_VM);
  vm.enableCap({ cap: KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [3] });
  const gmemFd = vm.createGuestMemfd({ size: 0x10000, flags: 0 });
  vm.setUserMemoryRegion({
    slot: 0,
    flags: LOG,
    guestPhysAddr: 0,
    memorySize: 0x2000,
    userspaceAddr: 0x100000,
  });
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memorySize: 0x10000, userspaceAddr: 0x200000 });
  vm.setUserMemoryRegion({
    slot: (1 << 16) | 0,
    guestPhysAddr: 0,
    memorySize: 0x1000,
    userspaceAddr: 0x100000,
  });
  vm.setUserMemoryRegion2({
    slot: 2,
    flags: GMEM,
    guestPhysAddr: 0x200000,
    memorySize: 0x4000,
    userspaceAddr: 0x300000,
    guestMemfd: gmemFd,
    guestMemfdOffset: 0,
  });
  vm.createVcpu(1);
  const pvm = kvm.createVm(KVM_X86_SW_PROTECTED_VM);
  pvm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 0x4000, userspaceAddr: 0x100000 });
  pvm.setMemoryAttributes({ address: 0x1000, size: 0x2000, attributes: PRIVATE, flags: 0 });
  return { kvm, vm, pvm, gmemFd };
}

/** Everything a rejected call must not touch, as plain data. */
function snapshot(env: Env): unknown {
  return [env.vm, env.pvm].map((vm) => ({
    as: Array.from({ length: vm.nrAs }, (_, as) => ({
      generation: vm.memslotsGeneration(as),
      slots: vm.memslots(as).map((s) => ({
        id: s.id,
        asId: s.asId,
        baseGfn: s.baseGfn,
        npages: s.npages,
        userspaceAddr: s.userspaceAddr,
        flags: s.flags,
        dirty: s.dirtyBitmap === null ? null : Array.from(s.dirtyBitmap),
        gmem: s.gmem === null ? null : [s.gmem.file.id, s.gmem.pgoff],
      })),
    })),
    attributes: vm.memAttrs.runs(),
    disabledQuirks: vm.arch.disabledQuirks,
    manualDirtyLogProtect: vm.manualDirtyLogProtect,
    dirtyRingSize: vm.dirtyRingSize,
    vcpus: vm.vcpus.map((v) => v.vcpuId),
    dead: vm.dead,
    stats: vm.getStats(),
    model: vm.getModelStats(),
  }));
}

/** The next fd number the process would get; a failed call must not have installed a file. */
function nextFd(kvm: Kvm): number {
  const fd = kvm.memfdCreate();
  kvm.close(fd);
  return fd + 1;
}

// ---- entry points --------------------------------------------------------------------------------

type FieldKind = 'u32' | 'u64' | 'fd' | 'bytes' | 'args';

interface Entry {
  /** how the test names it */
  name: string;
  /** KvmError.syscall it must report (null for the raw -errno API) */
  syscall: string | null;
  call(env: Env, arg: unknown): unknown;
  /** struct argument: a well-formed value that would succeed, and its fields' kinds */
  base: (env: Env) => unknown;
  fields?: Record<string, FieldKind>;
}

/** The raw API returns -errno; turn it into the throwing convention so both are checked alike. */
function raw(r: number): number {
  if (r < 0) throw new KvmError(-r, 'raw ioctl', 'returned -errno');
  return r;
}

const REGION1_FIELDS: Record<string, FieldKind> = {
  slot: 'u32',
  flags: 'u32',
  guestPhysAddr: 'u64',
  memorySize: 'u64',
  userspaceAddr: 'u64',
};
const REGION2_FIELDS: Record<string, FieldKind> = {
  ...REGION1_FIELDS,
  guestMemfdOffset: 'u64',
  guestMemfd: 'fd',
  pad1: 'u32',
  pad2: 'u64',
};
const region1Base = () => ({
  slot: 5,
  flags: 0,
  guestPhysAddr: 0x400000,
  memorySize: 0x1000,
  userspaceAddr: 0x400000,
});
const region2Base = (env: Env) => ({
  slot: 6,
  flags: GMEM,
  guestPhysAddr: 0x500000,
  memorySize: 0x1000,
  userspaceAddr: 0x500000,
  guestMemfd: env.gmemFd,
  guestMemfdOffset: 0x8000,
  pad1: 0,
  pad2: 0,
});

const STRUCT_ENTRIES: Entry[] = [
  {
    name: 'vm.setUserMemoryRegion',
    syscall: 'KVM_SET_USER_MEMORY_REGION',
    call: (e, a) => e.vm.setUserMemoryRegion(a as never),
    base: region1Base,
    fields: REGION1_FIELDS,
  },
  {
    name: 'vm.setUserMemoryRegion2',
    syscall: 'KVM_SET_USER_MEMORY_REGION2',
    call: (e, a) => e.vm.setUserMemoryRegion2(a as never),
    base: region2Base,
    fields: REGION2_FIELDS,
  },
  {
    name: 'vm.ioctlSetUserMemoryRegion (raw, v1)',
    syscall: null,
    call: (e, a) => raw(e.vm.ioctlSetUserMemoryRegion(a as never, false)),
    base: region1Base,
    fields: REGION1_FIELDS,
  },
  {
    name: 'vm.ioctlSetUserMemoryRegion (raw, v2)',
    syscall: null,
    call: (e, a) => raw(e.vm.ioctlSetUserMemoryRegion(a as never, true)),
    base: region2Base,
    fields: REGION2_FIELDS,
  },
  {
    name: 'vm.createGuestMemfd',
    syscall: 'KVM_CREATE_GUEST_MEMFD',
    call: (e, a) => e.vm.createGuestMemfd(a as never),
    base: () => ({ size: 0x1000, flags: 0 }),
    fields: { size: 'u64', flags: 'u64', reserved: 'bytes' },
  },
  {
    name: 'vm.setMemoryAttributes',
    syscall: 'KVM_SET_MEMORY_ATTRIBUTES',
    call: (e, a) => e.pvm.setMemoryAttributes(a as never),
    base: () => ({ address: 0x100000, size: 0x1000, attributes: PRIVATE, flags: 0 }),
    fields: { address: 'u64', size: 'u64', attributes: 'u64', flags: 'u64' },
  },
  {
    name: 'vm.enableCap',
    syscall: 'KVM_ENABLE_CAP',
    call: (e, a) => e.vm.enableCap(a as never),
    // DISABLE_QUIRKS2(SLOT_ZAP_ALL): succeeds and changes disabled_quirks.
    base: () => ({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, flags: 0, args: [0x80] }),
    fields: { cap: 'u32', flags: 'u32', args: 'args', pad: 'bytes' },
  },
  {
    name: 'vm.clearDirtyLog',
    syscall: 'KVM_CLEAR_DIRTY_LOG',
    call: (e, a) => e.vm.clearDirtyLog(a as never),
    // Slot 0 has 2 pages, all dirty (INITIALLY_SET): clearing them changes its bitmap.
    base: () => ({ slot: 0, firstPage: 0, numPages: 2, bitmap: new Uint8Array(8).fill(0xff) }),
    fields: { slot: 'u32', numPages: 'u32', firstPage: 'u64', bitmap: 'bytes' },
  },
];

const SCALAR_ENTRIES: Entry[] = [
  {
    name: 'vm.getDirtyLog',
    syscall: 'KVM_GET_DIRTY_LOG',
    call: (e, a) => e.vm.getDirtyLog(a as never),
    base: () => 0,
  },
  {
    name: 'vm.createVcpu',
    syscall: 'KVM_CREATE_VCPU',
    call: (e, a) => e.vm.createVcpu(a as never),
    base: () => 2,
  },
  {
    name: 'vm.checkExtension',
    syscall: 'KVM_CHECK_EXTENSION',
    call: (e, a) => e.vm.checkExtension(a as never),
    base: () => KVM_CAP.KVM_CAP_USER_MEMORY,
  },
  {
    name: 'kvm.checkExtension',
    syscall: 'KVM_CHECK_EXTENSION',
    call: (e, a) => e.kvm.checkExtension(a as never),
    base: () => KVM_CAP.KVM_CAP_USER_MEMORY,
  },
  {
    name: 'kvm.createVm',
    syscall: 'KVM_CREATE_VM',
    call: (e, a) => e.kvm.createVm(a as never),
    base: () => KVM_X86_DEFAULT_VM,
  },
];

// ---- malformed values ----------------------------------------------------------------------------

const fn = () => ({});
/** Wrong JS types for any integer. */
const WRONG_TYPES: unknown[] = [
  '0',
  '5',
  '',
  '0x1000',
  true,
  false,
  null,
  {},
  [],
  [5],
  Object(5),
  Object(5n),
  Symbol('x'),
  fn,
  new Date(0),
];
const U32_BAD: unknown[] = [
  -1,
  -4096,
  0.5,
  1.5,
  NaN,
  Infinity,
  -Infinity,
  2 ** 32, // one past the field width
  2 ** 32 + 5,
  2 ** 53 + 4096,
  2 ** 64,
  1e300,
  2n ** 32n,
  -1n,
  2n ** 64n,
  ...WRONG_TYPES,
];
const U64_BAD: unknown[] = [
  -1,
  -4096,
  0.5,
  4096.5,
  NaN,
  Infinity,
  -Infinity,
  2 ** 53 + 4096, // past 2^53 as a number: must be a bigint
  2 ** 64,
  1e300,
  -1n,
  -4096n,
  2n ** 64n, // one past the field width
  2n ** 64n + 4096n,
  2n ** 100n,
  ...WRONG_TYPES,
];
/** An fd field: a u32, where -1 (as C callers write it) is accepted as 0xffffffff. */
const FD_BAD: unknown[] = U32_BAD.filter((v) => v !== -1).concat([-2]);
const BYTES_BAD: unknown[] = [
  [0xff, 0xff],
  'ff',
  5,
  true,
  {},
  new Uint16Array(8),
  new ArrayBuffer(8),
  new DataView(new ArrayBuffer(8)),
];
const ARGS_BAD: unknown[] = [
  'abc',
  5,
  {},
  { 0: 0x80, length: 1 }, // array-like, not an array
  null,
  new BigUint64Array([0x80n]),
  [1, 2, 3, 4, 5], // more than args[4]
  [-1],
  [0.5],
  [NaN],
  [Infinity],
  [2n ** 64n],
  [-1n],
  ['128'],
  [null],
  [true],
  [[0x80]],
  [0x80, -1],
  [0x80, 0, 0, 2 ** 64],
];
const BAD_BY_KIND: Record<FieldKind, unknown[]> = {
  u32: U32_BAD,
  u64: U64_BAD,
  fd: FD_BAD,
  bytes: BYTES_BAD,
  args: ARGS_BAD,
};

/** A struct argument that is not an object at all: a bad user pointer. */
const NON_OBJECTS: unknown[] = [
  undefined,
  null,
  0,
  1,
  -1,
  0x1000,
  NaN,
  'slot',
  '',
  true,
  false,
  1n,
  Symbol('s'),
  fn,
];

// ---- the check -----------------------------------------------------------------------------------

function show(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'symbol' || typeof v === 'function') return String(v);
  if (v instanceof Date) return 'Date';
  if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return v.constructor.name;
  if (Array.isArray(v) || (typeof v === 'object' && v !== null)) {
    try {
      return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `${x}n` : x));
    } catch {
      return Object.prototype.toString.call(v);
    }
  }
  return String(v);
}

interface Case {
  label: string;
  arg: unknown;
  allowed: readonly ErrnoName[];
}

/**
 * Run each case on one world; return a line per case that broke the contract (so a failure lists them
 * all). Each call must throw a KvmError with an allowed code, its errno number and the entry point's
 * syscall name, and must leave the snapshot and the fd table unchanged.
 */
function violations(entry: Entry, cases: readonly Case[]): string[] {
  const env = makeEnv();
  const out: string[] = [];
  for (const c of cases) {
    const before = snapshot(env);
    const fdBefore = nextFd(env.kvm);
    let verdict: string | null = null;
    try {
      const r = entry.call(env, c.arg);
      verdict = `returned ${show(r)} instead of throwing`;
    } catch (e) {
      if (!(e instanceof KvmError)) {
        verdict = `threw ${(e as Error)?.name ?? typeof e}: ${(e as Error)?.message ?? String(e)}`;
      } else if (!c.allowed.includes(e.code as ErrnoName)) {
        verdict = `threw ${e.code}, expected ${c.allowed.join(' or ')} (${e.message})`;
      } else if (e.errno !== ERRNO[e.code as ErrnoName]) {
        verdict = `KvmError ${e.code} carries errno ${e.errno}`;
      } else if (entry.syscall !== null && e.syscall !== entry.syscall) {
        verdict = `KvmError names syscall ${e.syscall}, expected ${entry.syscall}`;
      }
    }
    const after = snapshot(env);
    try {
      expect(after).toEqual(before);
    } catch {
      verdict = `${verdict ?? 'rejected correctly'} but changed VM state`;
    }
    // nextFd() itself consumed one fd number.
    if (nextFd(env.kvm) !== fdBefore + 1) verdict = `${verdict ?? 'rejected correctly'} but installed an fd`;
    if (verdict !== null) out.push(`${entry.name}(${c.label}): ${verdict}`);
  }
  return out;
}

const EINVAL: readonly ErrnoName[] = ['EINVAL'];
const EFAULT: readonly ErrnoName[] = ['EFAULT'];
const EITHER: readonly ErrnoName[] = ['EINVAL', 'EFAULT'];

function withField(base: unknown, field: string, v: unknown): Record<string, unknown> {
  return { ...(base as Record<string, unknown>), [field]: v };
}

// ---- struct entry points -------------------------------------------------------------------------

describe.each(STRUCT_ENTRIES)('$name with a malformed struct argument', (entry) => {
  it('control: the well-formed base argument succeeds (so each case below differs only in its defect)', () => {
    const env = makeEnv();
    const before = snapshot(env);
    const fdBefore = nextFd(env.kvm);
    expect(() => entry.call(env, entry.base(env))).not.toThrow();
    const changed =
      JSON.stringify(snapshot(env), (_k, x: unknown) => (typeof x === 'bigint' ? `${x}` : x)) !==
        JSON.stringify(before, (_k, x: unknown) => (typeof x === 'bigint' ? `${x}` : x)) ||
      nextFd(env.kvm) !== fdBefore + 1;
    expect(changed, 'the base call must have a visible effect').toBe(true);
  });

  it('not an object (undefined, null, numbers, strings, booleans, bigint, symbol, function) → EFAULT', () => {
    const cases = NON_OBJECTS.map((arg) => ({ label: show(arg), arg, allowed: EFAULT }));
    expect(violations(entry, cases)).toEqual([]);
  });

  it('an array or typed array instead of the struct → EFAULT or EINVAL', () => {
    const env = makeEnv();
    const b = Object.values(entry.base(env) as object);
    const cases = [[], b, new Uint8Array(160), new BigUint64Array(20)].map((arg) => ({
      label: show(arg),
      arg,
      allowed: EITHER,
    }));
    expect(violations(entry, cases)).toEqual([]);
  });

  it('unknown field names (typos, C spellings, fields of another struct) → EINVAL', () => {
    const env = makeEnv();
    const base = entry.base(env) as Record<string, unknown>;
    const names = [
      'foo',
      'Slot',
      'SIZE',
      'guest_phys_addr',
      'memory_size',
      'userspace_addr',
      'dirty_bitmap',
      'args0',
      '',
    ];
    // V1 is 32 bytes: the region2 fields do not exist in it.
    if (entry.fields === REGION1_FIELDS) names.push('guestMemfd', 'guestMemfdOffset', 'pad1', 'pad2');
    const cases = names
      .filter((n) => !(n in (entry.fields ?? {})))
      .map((n) => ({ label: `+${JSON.stringify(n)}`, arg: { ...base, [n]: 0 }, allowed: EINVAL }));
    // A struct made only of an unknown name is not a zeroed struct.
    cases.push({ label: 'only unknown', arg: { bogus: 1 } as never, allowed: EINVAL });
    expect(violations(entry, cases)).toEqual([]);
  });

  it('each field in turn: negative, fractional, NaN, ±Infinity, past its width, wrong type → EINVAL', () => {
    const env = makeEnv();
    const base = entry.base(env);
    const cases: Case[] = [];
    for (const [field, kind] of Object.entries(entry.fields ?? {})) {
      for (const v of BAD_BY_KIND[kind]) {
        // A user-buffer field holding a non-buffer is a bad pointer: EFAULT is as right as EINVAL.
        const allowed = kind === 'bytes' ? EITHER : EINVAL;
        cases.push({ label: `${field}: ${show(v)}`, arg: withField(base, field, v), allowed });
      }
    }
    expect(cases.length).toBeGreaterThan(20);
    expect(violations(entry, cases)).toEqual([]);
  });
});

describe('unknown field names that are Object.prototype member names', () => {
  // DESIGN.md (Public API) and src/kvm/args.ts: an unknown field name is EINVAL. A name that merely
  // exists on Object.prototype (constructor, toString, …, or an own "__proto__" key as JSON.parse makes
  // it) is no field of any KVM struct either, so it must be rejected like any other unknown name.
  it('constructor, toString, valueOf, hasOwnProperty, isPrototypeOf, own __proto__ → EINVAL at every struct entry point', () => {
    const names = ['constructor', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf'];
    const all: string[] = [];
    for (const entry of STRUCT_ENTRIES) {
      const base = entry.base(makeEnv()) as Record<string, unknown>;
      const cases: Case[] = names.map((n) => ({ label: `+${n}`, arg: { ...base, [n]: 0 }, allowed: EINVAL }));
      const json = JSON.parse('{"__proto__": 0}') as Record<string, unknown>;
      cases.push({ label: '+own __proto__', arg: Object.assign(json, base), allowed: EINVAL });
      all.push(...violations(entry, cases));
    }
    expect(all).toEqual([]);
  });
});

describe('vm.clearDirtyLog: a user buffer shorter than num_pages needs', () => {
  it('→ EFAULT or EINVAL, bitmap untouched', () => {
    const entry = STRUCT_ENTRIES.find((e) => e.name === 'vm.clearDirtyLog')!;
    const cases = [new Uint8Array(0), new Uint8Array(4)].map((bitmap) => ({
      label: `bitmap: Uint8Array(${bitmap.length})`,
      arg: { slot: 0, firstPage: 0, numPages: 2, bitmap },
      allowed: EITHER,
    }));
    expect(violations(entry, cases)).toEqual([]);
  });
});

// ---- integer-argument entry points ---------------------------------------------------------------

describe.each(SCALAR_ENTRIES)('$name with a malformed integer argument', (entry) => {
  it('control: the well-formed argument is accepted', () => {
    const env = makeEnv();
    expect(() => entry.call(env, entry.base(env))).not.toThrow();
  });

  it('negative, fractional, NaN, ±Infinity, past 32/64 bits, wrong type (incl. objects, null) → EINVAL', () => {
    const bad = entry.name === 'kvm.createVm' ? U64_BAD : U32_BAD;
    const cases = bad.map((arg) => ({ label: show(arg), arg, allowed: EINVAL }));
    expect(violations(entry, cases)).toEqual([]);
  });
});
