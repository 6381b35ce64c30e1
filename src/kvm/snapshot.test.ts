/**
 * Snapshots: the mechanics on small graphs, then the property the explorer relies on: for random
 * workloads on a Kvm (memslot ioctls, guest accesses, host mm events, dirty logs; TDP and shadow MMU),
 * snapshot → more random work → restore gives a state deep-equal to the snapshot's (every object,
 * property, Map/Set entry and typed-array byte reachable from the Kvm and its checker), and the restored
 * model then behaves exactly as a freshly built one that ran the same history.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Kvm, KvmError, type Vm, type Vcpu } from '../index.ts';
import { Checker } from '../check/checker.ts';
import { KVM_MEM_LOG_DIRTY_PAGES } from '../uapi/kvm.ts';
import { snapshot, SNAPSHOT_EXTENTS } from './snapshot.ts';
import { SNAPSHOT_WRITTEN, WRITTEN, WrittenRange, type SnapshotWritten } from './written_range.ts';
// the canonical dump the explorer's restore test uses: every property with its attributes, Map/Set order, bytes
import { graphDump as dump } from '../../test/explore/graph_dump.ts';

describe('snapshot mechanics', () => {
  it('restores properties, added and deleted keys, arrays, Maps, Sets and typed arrays in place', () => {
    const shared = { n: 1 };
    const root = {
      a: 1,
      s: 'x',
      list: [shared, 2],
      m: new Map<string, unknown>([['k', shared]]),
      set: new Set([1, 2]),
      t: new Int32Array([1, 2, 3]),
      nested: { shared, f: new Float64Array(2) },
    };
    const before = dump([root]);
    const snap = snapshot([root]);
    const list = root.list;
    root.a = 2;
    root.s = 'y';
    (root as Record<string, unknown>)['added'] = 1;
    delete (root.nested as Partial<typeof root.nested>).f;
    shared.n = 5;
    root.list.push(3);
    root.list[0] = { n: 9 };
    root.m.set('k2', 1);
    root.m.delete('k');
    root.set.add(3);
    root.t[1] = 99;
    root.list = [];
    snap.restore();
    expect(dump([root])).toEqual(before);
    expect(root.list).toBe(list); // identity kept
    expect([root.a, root.s, shared.n, root.t[1], [...root.m.keys()], 'added' in root]).toEqual([
      1,
      'x',
      1,
      2,
      ['k'],
      false,
    ]);
  });

  it('restores through per-shape restorers: symbol, numeric and __proto__ keys, shared shapes, -0 and NaN', () => {
    const tag = Symbol('tag');
    class Pt {
      x = 1;
      y = 2;
    }
    const own = JSON.parse('{"__proto__": 1, "a": 2}') as Record<string, unknown>;
    const root = {
      pts: [new Pt(), new Pt(), new Pt()],
      rec: { [tag]: 'sym', 7: 'seven', k: -0, nan: NaN } as Record<PropertyKey, unknown>,
      own,
      m: new Map<unknown, unknown>([
        [NaN, -0],
        ['b', 1],
      ]),
      s: new Set<unknown>([-0, 'x']),
    };
    root.pts[1]!.x = 10; // same class and keys as the others, different values
    const before = dump([root]);
    const snap = snapshot([root]);
    for (const p of root.pts) [p.x, p.y] = [5, 6];
    root.rec[tag] = 'changed';
    root.rec[7] = 'changed';
    root.rec['k'] = 0;
    root.rec['nan'] = 0;
    root.rec[Symbol('added')] = 1;
    own['__proto__'] = 9;
    root.m.set(NaN, 0);
    root.m.delete('b');
    root.m.set('b', 1); // same entries, another order
    root.s.delete(0);
    root.s.add(0); // the same member, re-added at the end
    snap.restore();
    expect(dump([root])).toEqual(before);
    expect([root.pts.map((p) => p.x), Object.getPrototypeOf(own) === Object.prototype]).toEqual([
      [1, 10, 1],
      true,
    ]);
    expect([Object.getOwnPropertySymbols(root.rec).length, [...root.m.keys()]]).toEqual([1, [NaN, 'b']]);
  });

  it('copies an owner-declared typed array only up to the larger extent, and the result is exact', () => {
    class Owner {
      used = 2;
      big = new Int32Array(8);
      [SNAPSHOT_EXTENTS](): [Int32Array, number][] {
        return [[this.big, this.used]];
      }
    }
    const o = new Owner();
    o.big.set([1, 2]);
    const before = dump([o]);
    const snap = snapshot([o]);
    o.big.set([7, 7, 7, 7]);
    o.used = 4;
    snap.restore();
    expect([o.used, [...o.big]]).toEqual([2, [1, 2, 0, 0, 0, 0, 0, 0]]);
    expect(dump([o])).toEqual(before);
    // a write past both extents (the owner broke its promise) is not restored: the extent is trusted
    o.big[7] = 5;
    snap.restore();
    expect(o.big[7]).toBe(5);
  });

  it('copies an owner-noted written range (now or at the snapshot) back, and the result is exact', () => {
    class Owner implements SnapshotWritten {
      readonly [WRITTEN] = new WrittenRange();
      a = new Int32Array(16);
      b = new Uint8Array(8);
      [SNAPSHOT_WRITTEN](): [ArrayBufferView, number][] {
        // b's element 0 is index 8 of the range's numbering
        return [
          [this.a, 0],
          [this.b, 8],
        ];
      }
      put(i: number, v: number): void {
        if (i < 16) this.a[i] = v;
        if (i >= 8) this.b[i - 8] = v;
        this[WRITTEN].note(i);
      }
    }
    const o = new Owner();
    o.put(3, 1);
    o.put(9, 2);
    const before = dump([o]);
    const snap = snapshot([o]);
    o.put(12, 5);
    o.put(3, 7);
    o.put(15, 6);
    snap.restore();
    expect(dump([o])).toEqual(before);
    expect([o[WRITTEN].lo, o[WRITTEN].hi, o.a[3], o.a[12], o.b[4], o.b[7]]).toEqual([3, 10, 1, 0, 0, 0]);
    // after a restore, a write inside the range the snapshot had is undone too
    o.put(4, 8);
    snap.restore();
    expect(dump([o])).toEqual(before);
    // the range is trusted: a write nobody noted, outside the range then and now, is not undone
    o.a[14] = 9;
    snap.restore();
    expect(o.a[14]).toBe(9);
    o.a[14] = 0;
    // two snapshots of one owner: each restore is exact, in any order
    o.put(13, 4);
    const later = dump([o]);
    const snap2 = snapshot([o]);
    o.put(0, 3);
    snap.restore();
    expect(dump([o])).toEqual(before);
    snap2.restore();
    expect(dump([o])).toEqual(later);
    o.put(1, 1);
    snap.restore();
    expect(dump([o])).toEqual(before);
  });

  it('leaves opaque objects, frozen arrays and accessors alone, restores many times', () => {
    const opaque = { x: 1 };
    const frozen = Object.freeze([{ y: 1 }]);
    let hidden = 0;
    const root = {
      opaque,
      frozen,
      get acc() {
        return hidden;
      },
      set acc(v: number) {
        hidden = v;
      },
    };
    const snap = snapshot([root], { opaque: [opaque] });
    opaque.x = 2;
    frozen[0]!.y = 2;
    root.acc = 3;
    snap.restore();
    snap.restore();
    expect([opaque.x, frozen[0]!.y, hidden]).toEqual([2, 1, 3]);
  });

  it('refuses state it cannot see into, naming where it is', () => {
    expect(() => snapshot([{ a: { w: new WeakMap() } }])).toThrow(/root 0\.a\.w is a WeakMap/);
    function* g(): Generator<number> {
      yield 1;
    }
    expect(() => snapshot([{ list: [g()] }])).toThrow(/root 0\.list\[0\] is a generator/);
  });
});

const MiB = 1 << 20;
const REGION = 2 * MiB;
const BASES = [0, 2 * MiB, 8 * MiB, 3 * MiB];

type Cmd =
  | { op: 'create'; slot: number; base: number; dirty: boolean }
  | { op: 'delete'; slot: number }
  | { op: 'move'; slot: number; base: number }
  | { op: 'access'; vcpu: number; base: number; page: number; write: boolean }
  | { op: 'munmap' | 'thpSplit'; region: number; page: number }
  | { op: 'migrate'; region: number; page: number }
  | { op: 'dirtyLog'; slot: number };

const slot = fc.integer({ min: 0, max: 2 });
const base = fc.integer({ min: 0, max: BASES.length - 1 });
const page = fc.integer({ min: 0, max: REGION / 4096 - 1 });
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  {
    arbitrary: fc.record({ op: fc.constant('create' as const), slot, base, dirty: fc.boolean() }),
    weight: 2,
  },
  fc.record({ op: fc.constant('delete' as const), slot }),
  fc.record({ op: fc.constant('move' as const), slot, base }),
  {
    arbitrary: fc.record({
      op: fc.constant('access' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      base,
      page,
      write: fc.boolean(),
    }),
    weight: 5,
  },
  fc.record({ op: fc.constantFrom('munmap' as const, 'thpSplit' as const), region: slot, page }),
  fc.record({ op: fc.constant('migrate' as const), region: slot, page }),
  fc.record({ op: fc.constant('dirtyLog' as const), slot }),
);

interface World {
  kvm: Kvm;
  vm: Vm;
  vcpus: Vcpu[];
  regions: number[];
  checker: Checker;
}

function build(tdp: boolean): World {
  const kvm = new Kvm(tdp ? {} : { profile: 'pvm-6.18' });
  const vm = kvm.createVm(0);
  const regions = [0, 1, 2].map(() => kvm.host.mmap(REGION, { backing: 'thp' }));
  const vcpus = [vm.createVcpu(0), vm.createVcpu(1)];
  const checker = new Checker(kvm, { audit: 'points' });
  checker.watch(vm);
  return { kvm, vm, vcpus, regions, checker };
}

/** Run the commands; what each returned (or its errno), for comparing behaviour. */
function work(w: World, cmds: Cmd[]): string[] {
  const { kvm, vm, vcpus, regions, checker } = w;
  const set = (s: number, gpa: number, flags: number, size = REGION): void =>
    vm.setUserMemoryRegion({
      slot: s,
      flags,
      guestPhysAddr: gpa,
      memorySize: size,
      userspaceAddr: regions[s]!,
    });
  return cmds.map((c, i) => {
    checker.setStep(`${i}:${c.op}`);
    try {
      switch (c.op) {
        case 'create':
          set(c.slot, BASES[c.base]!, c.dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0);
          return 'ok';
        case 'delete':
          set(c.slot, 0, 0, 0);
          return 'ok';
        case 'move':
          set(c.slot, BASES[c.base]!, vm.memslots().find((m) => m.id === c.slot)?.flags ?? 0);
          return 'ok';
        case 'access': {
          const gpa = BASES[c.base]! + c.page * 4096;
          const r = vcpus[c.vcpu]!.access(gpa, c.write ? 'write' : 'read');
          checker.onAccess(vcpus[c.vcpu]!, gpa, c.write ? 'write' : 'read', r);
          return JSON.stringify(r);
        }
        case 'munmap':
          kvm.host.munmap(regions[c.region]! + c.page * 4096, 4096);
          return 'ok';
        case 'thpSplit':
          kvm.host.thpSplit(regions[c.region]! + c.page * 4096);
          return 'ok';
        case 'migrate':
          kvm.host.migrate(regions[c.region]! + c.page * 4096, 4096);
          return 'ok';
        case 'dirtyLog':
          return [...vm.getDirtyLog(c.slot)].join(',');
      }
    } catch (e) {
      if (!(e instanceof KvmError) && !(e instanceof RangeError)) throw e;
      return e instanceof KvmError ? e.code : 'RangeError';
    } finally {
      checker.auditPoint('postStep');
    }
  });
}

const observe = (w: World): string =>
  JSON.stringify([
    w.vm.getStats(),
    w.vcpus.map((v) => v.getStats()),
    w.vm.memslots(),
    w.checker.violations.map((v) => v.id),
  ]);

describe('snapshot of a Kvm (fast-check): restore gives the snapshot state back, and the same future', () => {
  it('snapshot → random work → restore is deep-equal; the restored model runs like a fresh one', () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.array(cmd, { minLength: 1, maxLength: 14 }),
        fc.array(cmd, { minLength: 1, maxLength: 14 }),
        fc.array(cmd, { minLength: 1, maxLength: 14 }),
        fc.array(cmd, { minLength: 1, maxLength: 14 }),
        (tdp, setup, mutate, mutate2, future) => {
          const w = build(tdp);
          work(w, setup);
          const roots = [w.kvm, w.checker, w.vcpus];
          const before = dump(roots);
          const snap = snapshot(roots);
          work(w, mutate);
          snap.restore();
          expect(dump(roots)).toEqual(before);
          // again from the restored state (written ranges as the restore put them back)
          work(w, mutate2);
          snap.restore();
          expect(dump(roots)).toEqual(before);
          // the restored model and a fresh one with the same history agree on what comes next
          const fresh = build(tdp);
          work(fresh, setup);
          expect(work(w, future)).toEqual(work(fresh, future));
          expect(observe(w)).toEqual(observe(fresh));
        },
      ),
      { numRuns: 40 },
    );
  }, 120_000);
});
