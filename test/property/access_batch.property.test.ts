/**
 * Property: the batched guest-access calls (vcpu.accessRange, vcpu.accessList) are a loop of vcpu.access.
 * Two identical models run the same random workload — memslot creates/deletes (zap-all and precise),
 * dirty logging, host migrations and mprotects (notifier zaps), MMIO holes, a read-only slot, vCPUs entering
 * and leaving SMM, accesses of every kind on two vCPUs — one making each batch one call, the other calling access() per address. After
 * every batch the per-access results (from `out` typed arrays and from `onResult`) must equal the loop's,
 * and at the end every VM stat, vCPU stat and model counter must be equal too. Batches without a callback
 * (which may take the MMU's bulk path, kvm/access_batch.ts) are checked through `out` and the totals, and
 * at the end the whole model state must hash equal (kvm/state_hash.ts: every object, array and typed
 * array reachable from the Kvm, page tables, host pages, TLBs, caches and iterators included).
 *
 * Replay a failure: fast-check prints `seed` and `path`; pass them to fc.assert's options.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  ACCESS_EXITS,
  Kvm,
  KvmError,
  type AccessKind,
  type AccessResult,
  type Vcpu,
  type Vm,
} from '../../src/index.ts';
import { stateHash } from '../../src/kvm/state_hash.ts';

const MiB = 1 << 20;
/** gpas the workload touches: two RAM slots (one 2M-backed), a read-only slot, and MMIO holes. */
const RAM0 = 0x0;
const RAM1 = 0x40000000;
const ROM = 0xfff00000;
const HOLE = 0x80000000;

interface Model {
  kvm: Kvm;
  vm: Vm;
  vcpus: Vcpu[];
  hva: number[];
  slot1: boolean;
}

function build(): Model {
  const kvm = new Kvm();
  const vm = kvm.createVm(0);
  const hva = [
    kvm.host.mmap(16 * MiB, { backing: '4k' }),
    kvm.host.mmap(8 * MiB, { backing: 'thp' }),
    kvm.host.mmap(MiB),
  ];
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: RAM0, memorySize: 16 * MiB, userspaceAddr: hva[0]! });
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: RAM1, memorySize: 8 * MiB, userspaceAddr: hva[1]! });
  vm.setUserMemoryRegion({ slot: 2, flags: 2, guestPhysAddr: ROM, memorySize: MiB, userspaceAddr: hva[2]! });
  return { kvm, vm, vcpus: [vm.createVcpu(0), vm.createVcpu(1)], hva, slot1: true };
}

/** What a batch hands back besides its totals: a callback and `out` arrays, `out` only, or nothing. */
type Observe = 'callback' | 'out' | 'none';
type Op =
  | {
      op: 'range';
      vcpu: number;
      gpa: number;
      count: number;
      stride: number;
      kind: AccessKind;
      observe: Observe;
    }
  | { op: 'list'; vcpu: number; gpas: number[]; kind: AccessKind; observe: Observe }
  | { op: 'slot1'; present: boolean; logDirty: boolean }
  | { op: 'quirkOff' }
  | { op: 'migrate'; region: number; page: number; pages: number }
  | { op: 'mprotect'; page: number; writable: boolean }
  | { op: 'smm'; vcpu: number; on: boolean };

const kindArb = fc.constantFrom<AccessKind>('read', 'write', 'exec');
const observeArb = fc.constantFrom<Observe>('callback', 'out', 'none');
const gpaArb = fc.oneof(
  fc.integer({ min: 0, max: 16 * 256 - 1 }).map((p) => RAM0 + p * 4096),
  fc.integer({ min: 0, max: 8 * 256 - 1 }).map((p) => RAM1 + p * 4096),
  fc.integer({ min: 0, max: 255 }).map((p) => ROM + p * 4096),
  fc.integer({ min: 0, max: 255 }).map((p) => HOLE + p * 4096 + (p % 7)),
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('range' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      gpa: gpaArb,
      count: fc.integer({ min: 0, max: 1200 }),
      stride: fc.constantFrom(4096, 4096, 8192, 3 * 4096, 2 * MiB),
      kind: kindArb,
      observe: observeArb,
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('list' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      gpas: fc.array(gpaArb, { maxLength: 200 }),
      kind: kindArb,
      observe: observeArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('slot1' as const),
      present: fc.boolean(),
      logDirty: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'quirkOff' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('migrate' as const),
      region: fc.integer({ min: 0, max: 1 }),
      page: fc.integer({ min: 0, max: 2047 }),
      pages: fc.integer({ min: 1, max: 64 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('mprotect' as const),
      page: fc.integer({ min: 0, max: 4000 }),
      writable: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('smm' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      on: fc.boolean(),
    }),
  },
);

/** The range clipped so its last gpa stays a guest physical address (both sides see the same batch). */
const rangeGpas = (o: Extract<Op, { op: 'range' }>): number[] =>
  Array.from({ length: o.count }, (_, i) => o.gpa + i * o.stride);

function host(m: Model, o: Op): void {
  if (o.op === 'slot1') {
    if (m.slot1) m.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: RAM1, memorySize: 0 });
    m.slot1 = o.present;
    if (o.present)
      m.vm.setUserMemoryRegion({
        slot: 1,
        flags: o.logDirty ? 1 : 0,
        guestPhysAddr: RAM1,
        memorySize: 8 * MiB,
        userspaceAddr: m.hva[1]!,
      });
  } else if (o.op === 'quirkOff') {
    m.vm.enableCap({ cap: 213, args: [0x80] });
  } else if (o.op === 'migrate') {
    const size = o.region === 0 ? 16 * MiB : 8 * MiB;
    const len = Math.min(o.pages * 4096, size - ((o.page * 4096) % size));
    m.kvm.host.migrate(m.hva[o.region]! + ((o.page * 4096) % size), len);
  } else if (o.op === 'mprotect') {
    m.kvm.host.mprotect(m.hva[0]! + o.page * 4096, 4096, o.writable);
  } else if (o.op === 'smm') {
    m.vcpus[o.vcpu]!.smm = o.on; // the next VM entry switches the vCPU to the other address space's root
  }
}

/** Slot 1's dirty bitmap, or the errno when it does not log. */
function dirtyLog(m: Model): unknown {
  try {
    return m.vm.getDirtyLog(1);
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    return e.code;
  }
}

/** A result as comparable data (exits keep every field). */
const norm = (r: AccessResult): unknown => ({ ...r });

describe('batched access = a loop of vcpu.access', () => {
  it('same per-access results and the same stats on random workloads (fast-check)', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 25 }), (ops) => {
        const a = build();
        const b = build();
        for (const o of ops) {
          if (o.op !== 'range' && o.op !== 'list') {
            host(a, o);
            host(b, o);
            continue;
          }
          const gpas = o.op === 'range' ? rangeGpas(o) : o.gpas;
          const want = gpas.map((g) => norm(b.vcpus[o.vcpu]!.access(g, o.kind)));
          const n = gpas.length;
          const out = {
            exit: new Uint8Array(n),
            pfn: new Float64Array(n),
            level: new Uint8Array(n),
            memtype: new Uint8Array(n),
          };
          const seen: unknown[] = [];
          const onResult = (i: number, r: AccessResult): void => void (seen[i] = norm(r));
          const v = a.vcpus[o.vcpu]!;
          const opts = o.observe === 'callback' ? { out, onResult } : o.observe === 'out' ? { out } : {};
          const res =
            o.op === 'range'
              ? v.accessRange(o.gpa, o.count, o.kind, { stride: o.stride, ...opts })
              : v.accessList(Float64Array.from(o.gpas), o.kind, opts);
          if (o.observe === 'callback') expect(seen).toEqual(want);
          if (o.observe !== 'none') {
            const fromOut = Array.from({ length: n }, (_, i) =>
              out.exit[i] === 0
                ? { exit: 'none', pfn: out.pfn[i], level: out.level[i], memtype: out.memtype[i] }
                : ACCESS_EXITS[out.exit[i]!],
            );
            expect(fromOut).toEqual(
              want.map((r) => ((r as { exit: string }).exit === 'none' ? r : (r as { exit: string }).exit)),
            );
          }
          const exits = want.filter((r) => (r as { exit: string }).exit !== 'none');
          expect(res).toEqual({
            count: n,
            none: n - exits.length,
            exits: exits.length,
            firstExit: exits[0] ?? null,
            firstExitIndex: exits.length ? want.indexOf(exits[0]) : -1,
          });
        }
        expect(a.vm.getStats()).toEqual(b.vm.getStats());
        expect(a.vm.getModelStats()).toEqual(b.vm.getModelStats());
        for (let i = 0; i < 2; i++) expect(a.vcpus[i]!.getStats()).toEqual(b.vcpus[i]!.getStats());
        expect(dirtyLog(a)).toEqual(dirtyLog(b));
        expect(stateHash([a.kvm, a.vm, a.vcpus])).toBe(stateHash([b.kvm, b.vm, b.vcpus]));
      }),
      { numRuns: Number(process.env.FC_RUNS ?? 60) },
    );
  });
});

describe('batched access: argument checks (nothing runs on a bad call)', () => {
  const setup = () => {
    const m = build();
    return { m, v: m.vcpus[0]! };
  };
  it('rejects a bad kind, count, stride, gpa, list entry or output array, before any access', () => {
    const { m, v } = setup();
    const bad: [() => unknown, RegExp][] = [
      [
        () => v.accessRange(0, 4, 'fetch' as AccessKind),
        /accessRange: kind must be 'read', 'write' or 'exec' \(got "fetch"\)/,
      ],
      [() => v.accessRange(0, -1, 'read'), /count must be a non-negative integer \(got -1\)/],
      [() => v.accessRange(0, 1.5, 'read'), /count must be a non-negative integer \(got 1.5\)/],
      [() => v.accessRange(0, 4, 'read', { stride: 0 }), /stride must be a positive integer \(got 0\)/],
      [() => v.accessRange(-4096, 4, 'read'), /is not a range of guest physical addresses/],
      [() => v.accessRange(2 ** 52 - 4096, 2, 'read'), /is not a range of guest physical addresses/],
      [() => v.accessList([0, 4096, NaN], 'write'), /gpas\[2\] = NaN is not a guest physical address/],
      [() => v.accessList(null as unknown as number[], 'write'), /gpas must be an array or typed array/],
      [
        () => v.accessList([0, 4096], 'read', { out: { pfn: new Float64Array(1) } }),
        /out.pfn has 1 entries, the batch makes 2 accesses/,
      ],
      [
        () => v.accessList([0], 'read', { out: { exit: new Int8Array(1) as unknown as Uint8Array } }),
        /out.exit must be a Uint8Array/,
      ],
      [() => v.accessList([0], 'read', { private: 1 as unknown as boolean }), /private must be a boolean/],
    ];
    for (const [f, msg] of bad) expect(f).toThrow(msg);
    // The valid first accesses of the rejected list did not run.
    expect(v.getStats().pf_taken).toBe(0);
    expect(m.vm.getStats().pages_4k).toBe(0);
  });
  it('count 0 and an empty list do nothing', () => {
    const { v } = setup();
    expect(v.accessRange(0, 0, 'read')).toEqual({
      count: 0,
      none: 0,
      exits: 0,
      firstExit: null,
      firstExitIndex: -1,
    });
    expect(v.accessList([], 'read')).toEqual({
      count: 0,
      none: 0,
      exits: 0,
      firstExit: null,
      firstExitIndex: -1,
    });
    expect(v.getStats().pf_taken).toBe(0);
  });
  it('on the shadow MMU (no batched fast path) it is the same loop', () => {
    const mk = () => {
      const kvm = new Kvm({ tdpMmu: false });
      const vm = kvm.createVm(0);
      vm.setUserMemoryRegion({
        slot: 0,
        guestPhysAddr: 0,
        memorySize: 4 * MiB,
        userspaceAddr: kvm.host.mmap(4 * MiB),
      });
      return { vm, v: vm.createVcpu(0) };
    };
    const a = mk();
    const b = mk();
    const gpas = [0, 0x1000, 0x200000, 0x1000, 0x500000, 0x3ff000];
    const out = { pfn: new Float64Array(6), exit: new Uint8Array(6) };
    const r = a.v.accessList(gpas, 'write', { out });
    const want = gpas.map((g) => b.v.access(g, 'write'));
    expect(Array.from(out.pfn)).toEqual(want.map((w) => (w.exit === 'none' ? w.pfn : 0)));
    expect(r.exits).toBe(1);
    expect(r.firstExitIndex).toBe(4);
    expect(r.firstExit).toEqual({ exit: 'mmio', gpa: 0x500000, write: true });
    expect(a.v.getStats()).toEqual(b.v.getStats());
    expect(a.vm.getStats()).toEqual(b.vm.getStats());
  });
});
