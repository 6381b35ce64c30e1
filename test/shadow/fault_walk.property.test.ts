/**
 * Property: the shadow MMU fault path's specialised steps (shadow_fault_paths.ts) are the general ones.
 * Two identical shadow-paging models run the same random workload; in one the fault path uses its
 * specialised steps (walkAddrFault, shadow_fault_walk.ts; the root cache, shadow_roots.ts#rootOf), in the
 * other the general ones (walkAddrGeneric with the fault path's WalkEnv; a Map lookup per VM entry).
 * Every access's result and every call's error must be equal, and after every step the hash of the
 * whole model state (guest tables with their A/D bits, shadow pages, rmaps, dirty bitmaps, stats, host
 * pages) and each vCPU's last-used memslot (a cache the state hash leaves out; the kernel's walk and data
 * lookups share it) must be equal too; the root cache must hold only what `roots` holds.
 *
 * The workload: guest tables spread over two table slots (so the walk's lookups move between slots),
 * identity maps of data pages, of the table pages themselves (writes to shadowed tables), of a hole and
 * of a 2M guest page; random gPTE rewrites (flags, not present, huge, redirected) made by the host
 * (unseen by KVM) or by the guest (trapped when the table is shadowed); the second table slot made
 * read-only, dirty-logged (and its log read), deleted (tables in no memslot) and restored; the data slot
 * deleted and restored; a second CR3; SMM entry and exit (address space 1 with its own memslots).
 *
 * Replay a failure: fast-check prints `seed` and `path`; pass them to fc.assert's options.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Kvm, type Vm } from '../../src/kvm/kvm_main.ts';
import type { Vcpu } from '../../src/kvm/vcpu.ts';
import type { AccessKind } from '../../src/kvm/api_types.ts';
import { stateHash } from '../../src/kvm/state_hash.ts';
import { LAST_USED_SLOT, LAST_USED_SLOT_GEN, newMemslot } from '../../src/kvm/memslots.ts';
import {
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_MEMSLOT_INVALID,
  KVM_USER_MEM_SLOTS,
} from '../../src/uapi/kvm.ts';
import { asGfn, asHva } from '../../src/types/addr.ts';
import { newGuestWalker, walkAddrGeneric, type WalkEnv } from '../../src/x86/mmu/guest_paging.ts';
import { walkAddrFault } from '../../src/x86/mmu/shadow_fault_walk.ts';
import { guestWritePte, shadowFaultPaths } from '../../src/x86/mmu/paging_tmpl.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import { ROOT_CACHE_ROOT, ROOT_CACHE_VCPU } from '../../src/x86/mmu/shadow_roots.ts';
import { attempt } from '../property/access_workload.ts';

const PAGE = 4096;
const MiB = 1 << 20;
const A = 0; // table pool A: slot 0, gpa 0, 1 MiB
const B = 0x20_0000; // table pool B: slot 2, 1 MiB (made read-only, dirty-logged, deleted)
const DATA = 0x4000_0000; // slot 1, 4 MiB
const HOLE = 0x8000_0000; // no slot
const SMRAM = 0x30_0000; // address space 1 only: slot 0 of AS1, 1 MiB
const AS1 = 1 << 16;
const P = 1;
const W = 2;
const U = 4;
const AC = 0x20;
const D = 0x40;
const PS = 0x80;
const RWU = P | W | U;

/** The tables: [gpa, index, initial gPTE] (identity maps; see the header). */
const CR3 = A;
const CR3_ALT = A + 6 * PAGE;
const TABLES: [number, number, number][] = [
  [CR3, 0, A + PAGE + RWU], // PML4[0] → PDPT in A
  [CR3_ALT, 0, A + PAGE + RWU],
  [A + PAGE, 0, B + RWU], // PDPT[0] (gva 0..1G) → PD in B
  [A + PAGE, 1, B + PAGE + RWU], // PDPT[1] (gva 1G..2G) → PD in B
  [A + PAGE, 2, A + 7 * PAGE + RWU], // PDPT[2] (gva 2G..3G) → PD in A
  [B, 0, A + 4 * PAGE + RWU], // PD[0] of gva 0: PT in A mapping the table pools' first pages
  [B + PAGE, 0, A + 2 * PAGE + RWU], // gva 1G: PT in A
  [B + PAGE, 1, B + 2 * PAGE + RWU], // gva 1G+2M: PT in B
  [B + PAGE, 2, DATA + 2 * MiB + RWU + PS], // gva 1G+4M: a 2M guest page onto the data slot's second half
  [A + 7 * PAGE, 0, A + 5 * PAGE + RWU], // gva 2G: PT in A mapping the hole
];
for (let i = 0; i < 8; i++) {
  TABLES.push([A + 4 * PAGE, i, A + i * PAGE + RWU]); // gva i*4K → table pool A page i
  TABLES.push([A + 4 * PAGE, 256 + i, B + i * PAGE + RWU]); // gva 1M + i*4K → pool B page i
  TABLES.push([A + 5 * PAGE, i, HOLE + i * PAGE + RWU]);
}
for (let i = 0; i < 24; i++) {
  TABLES.push([A + 2 * PAGE, i, DATA + i * PAGE + RWU]);
  TABLES.push([B + 2 * PAGE, i, DATA + MiB + i * PAGE + RWU]);
}
/** The gvas accessed: data pages in both PTs, the 2M guest page, table pages, the hole, unmapped. */
const GVAS = [
  ...Array.from({ length: 24 }, (_, i) => DATA + i * PAGE),
  ...Array.from({ length: 24 }, (_, i) => DATA + 2 * MiB + i * PAGE),
  DATA + 4 * MiB,
  DATA + 4 * MiB + 5 * PAGE,
  ...Array.from({ length: 8 }, (_, i) => i * PAGE),
  ...Array.from({ length: 8 }, (_, i) => MiB + i * PAGE),
  0x8000_0000,
  0x8000_0000 + 3 * PAGE,
  0x8000_0000 + 100 * PAGE,
  0xc000_0000,
  2 ** 47 - PAGE,
];

interface Model {
  vm: Vm;
  vcpus: Vcpu[];
  hvaB: number;
  hvaData: number;
  hvaSmram: number;
}

function build(): Model {
  const kvm = new Kvm({ tdp: false });
  const vm = kvm.createVm(0);
  const hvaA = kvm.host.mmap(MiB);
  const hvaB = kvm.host.mmap(MiB);
  const hvaData = kvm.host.mmap(4 * MiB);
  const hvaSmram = kvm.host.mmap(MiB);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: A, memorySize: MiB, userspaceAddr: hvaA });
  vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: B, memorySize: MiB, userspaceAddr: hvaB });
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: DATA, memorySize: 4 * MiB, userspaceAddr: hvaData });
  // Address space 1 (SMM): the same memory plus SMRAM.
  vm.setUserMemoryRegion({ slot: AS1 | 0, guestPhysAddr: A, memorySize: MiB, userspaceAddr: hvaA });
  vm.setUserMemoryRegion({ slot: AS1 | 2, guestPhysAddr: B, memorySize: MiB, userspaceAddr: hvaB });
  vm.setUserMemoryRegion({ slot: AS1 | 1, guestPhysAddr: DATA, memorySize: 4 * MiB, userspaceAddr: hvaData });
  vm.setUserMemoryRegion({ slot: AS1 | 3, guestPhysAddr: SMRAM, memorySize: MiB, userspaceAddr: hvaSmram });
  for (const [t, i, g] of TABLES) vm.writeGuestPte(t, i, g);
  const vcpus = [vm.createVcpu(0), vm.createVcpu(1)];
  for (const v of vcpus) v.setCr3(CR3);
  return { vm, vcpus, hvaB, hvaData, hvaSmram };
}

type Op =
  | { op: 'access'; vcpu: number; gva: number; kind: AccessKind }
  | { op: 'run'; vcpu: number; gva: number; count: number; kind: AccessKind }
  | { op: 'poke'; t: number; flags: number; target: number; tracked: boolean }
  | { op: 'slotB'; how: 'readonly' | 'dirty' | 'plain' | 'delete' | 'getlog' }
  | { op: 'data'; how: 'delete' | 'restore' }
  | { op: 'cr3'; vcpu: number; alt: boolean }
  | { op: 'smm'; vcpu: number; on: boolean };

const kindArb = fc.constantFrom<AccessKind>('read', 'write', 'write', 'exec');
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      op: fc.constant('access' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      gva: fc.constantFrom(...GVAS),
      kind: kindArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('run' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      gva: fc.constantFrom(DATA, DATA + 8 * PAGE, DATA + 2 * MiB, 0, MiB),
      count: fc.integer({ min: 1, max: 24 }),
      kind: kindArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('poke' as const),
      t: fc.nat({ max: TABLES.length - 1 }),
      flags: fc.subarray([P, P, W, U, AC, D, PS]).map((bits) => bits.reduce((a, b) => a | b, 0)),
      // 0: the entry's own target; 1..: another table page, a data page, SMRAM, the hole
      target: fc.constantFrom(0, 0, A + 2 * PAGE, B + 2 * PAGE, DATA + 3 * PAGE, SMRAM, HOLE),
      tracked: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('slotB' as const),
      how: fc.constantFrom(
        'readonly' as const,
        'dirty' as const,
        'plain' as const,
        'delete' as const,
        'getlog' as const,
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('data' as const),
      how: fc.constantFrom('delete' as const, 'restore' as const),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('cr3' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      alt: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('smm' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      on: fc.boolean(),
    }),
  },
);

function setSlot(m: Model, slot: number, gpa: number, size: number, hva: number, flags: number): unknown {
  return attempt(() => {
    m.vm.setUserMemoryRegion({ slot, guestPhysAddr: gpa, memorySize: 0, userspaceAddr: hva });
    if (flags >= 0)
      m.vm.setUserMemoryRegion({ slot, flags, guestPhysAddr: gpa, memorySize: size, userspaceAddr: hva });
  });
}

function step(m: Model, o: Op): unknown {
  switch (o.op) {
    case 'access':
      return attempt(() => m.vcpus[o.vcpu]!.access(o.gva, o.kind));
    case 'run':
      return Array.from({ length: o.count }, (_, i) =>
        attempt(() => m.vcpus[o.vcpu]!.access(o.gva + i * PAGE, o.kind)),
      );
    case 'poke': {
      const [t, i, g] = TABLES[o.t]!;
      const addr = o.target === 0 ? g - (g % PAGE) : o.target;
      const gpte = o.flags === 0 ? 0 : addr + o.flags;
      return attempt(() =>
        o.tracked ? guestWritePte(shadowMmuOf(m.vm)!, t, i, gpte) : m.vm.writeGuestPte(t, i, gpte),
      );
    }
    case 'slotB':
      if (o.how === 'getlog') return attempt(() => Array.from(m.vm.getDirtyLog(2)));
      return setSlot(
        m,
        2,
        B,
        MiB,
        m.hvaB,
        {
          readonly: KVM_MEM_READONLY,
          dirty: KVM_MEM_LOG_DIRTY_PAGES,
          plain: 0,
          delete: -1,
        }[o.how],
      );
    case 'data':
      return setSlot(m, 1, DATA, 4 * MiB, m.hvaData, o.how === 'delete' ? -1 : 0);
    case 'cr3':
      return attempt(() => m.vcpus[o.vcpu]!.setCr3(o.alt ? CR3_ALT : CR3));
    case 'smm':
      m.vcpus[o.vcpu]!.smm = o.on;
      return o.on;
  }
}

/** Turn every specialised step of the fault path on or off. */
function setPaths(on: boolean): void {
  shadowFaultPaths.walk = on;
  shadowFaultPaths.rootCache = on;
}

/** Each vCPU's root: [id, role, gfn] of its page, 'dummy', or null (none loaded). */
function loadedRoots(m: Model): unknown {
  const mmu = shadowMmuOf(m.vm)!;
  return m.vcpus.map((v) => {
    const r = mmu.roots.get(v);
    return r !== undefined ? [r.id, r.role, r.gfn] : mmu.dummyRoots.has(v) ? 'dummy' : null;
  });
}

/** The root cache (shadow_roots.ts#rootOf) holds a vCPU only with the root `roots` has for it. */
function rootCacheAgrees(m: Model): boolean {
  const mmu = shadowMmuOf(m.vm)!;
  const v = mmu[ROOT_CACHE_VCPU];
  return v === null ? mmu[ROOT_CACHE_ROOT] === null : mmu.roots.get(v) === mmu[ROOT_CACHE_ROOT];
}

/** Each vCPU's last-used memslot (its id, or null) and the generation it was cached under. */
function lastUsed(m: Model): unknown {
  return m.vcpus.map((v) => [v[LAST_USED_SLOT]?.id ?? null, v[LAST_USED_SLOT_GEN]]);
}

describe('shadow fault path: specialised steps = general steps', () => {
  it('same results, model state and vCPU memslot caches on random workloads (fast-check)', () => {
    let faults = 0;
    try {
      fc.assert(
        fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => {
          const fast = build();
          const full = build();
          for (const o of ops) {
            setPaths(false);
            const want = step(full, o);
            setPaths(true);
            const got = step(fast, o);
            expect(got).toEqual(want);
            expect(stateHash([fast.vm, fast.vcpus])).toBe(stateHash([full.vm, full.vcpus]));
            expect(lastUsed(fast)).toEqual(lastUsed(full));
            expect(loadedRoots(fast)).toEqual(loadedRoots(full));
            expect(rootCacheAgrees(fast)).toBe(true);
            expect(shadowMmuOf(full.vm)![ROOT_CACHE_VCPU]).toBe(null);
          }
          for (let i = 0; i < 2; i++) expect(fast.vcpus[i]!.getStats()).toEqual(full.vcpus[i]!.getStats());
          expect(fast.vm.getStats()).toEqual(full.vm.getStats());
          faults += fast.vcpus[0]!.getStats().pf_taken! + fast.vcpus[1]!.getStats().pf_taken!;
        }),
        { numRuns: Number(process.env.FC_RUNS ?? 150) },
      );
    } finally {
      setPaths(true);
    }
    expect(faults).toBeGreaterThan(1000);
  });
});

/** walkAddrGeneric with the fault path's env (paging_tmpl.ts's ShadowWalkEnv, spelled out). */
function genericEnv(m: Model, v: Vcpu): WalkEnv {
  const slots = m.vm.activeMemslots(v.asId());
  return {
    walkVisible: (gfn) => {
      const s = slots.vcpuGfnToMemslot(v, gfn);
      return s !== null && (s.flags & KVM_MEMSLOT_INVALID) === 0 && s.id < KVM_USER_MEM_SLOTS;
    },
    walkAdWrite: (gfn) => {
      const s = slots.vcpuGfnToMemslot(v, gfn);
      return s !== null && !(s.flags & KVM_MEM_READONLY);
    },
  };
}

describe('walkAddrFault = walkAddrGeneric where the API cannot go', () => {
  // A table in an INVALID slot (a DELETE or MOVE between its two memslot commits) or in a KVM-internal
  // slot (id >= KVM_USER_MEM_SLOTS): not visible, the walk fails with the same message.
  for (const how of ['invalid', 'internal'] as const) {
    it(`a table in an ${how} slot fails both walks alike`, () => {
      const walk = (fast: boolean) => {
        const m = build();
        const v = m.vcpus[0]!;
        const slots = m.vm.activeMemslots(0);
        if (how === 'invalid') slots.idToMemslot(2)!.flags |= KVM_MEMSLOT_INVALID;
        else {
          const b = slots.idToMemslot(2)!;
          slots.replace(b, null);
          slots.replace(null, newMemslot(0, KVM_USER_MEM_SLOTS + 1, asGfn(B / PAGE), 256, asHva(m.hvaB), 0));
        }
        const w = newGuestWalker();
        const gpt = shadowMmuOf(m.vm)!.gpt;
        const ok = fast
          ? walkAddrFault(gpt, w, CR3, DATA, true, slots, v)
          : walkAddrGeneric(gpt, w, CR3, DATA, true, true, true, genericEnv(m, v));
        return { ok, w, last: lastUsed(m), hash: stateHash([m.vm, m.vcpus]) };
      };
      const got = walk(true);
      expect(got).toEqual(walk(false));
      expect(got.ok).toBe(false);
      expect(got.w.fault).toBe(`level-2 table gfn 0x${(B / PAGE + 1).toString(16)} is in no visible memslot`);
    });
  }
});
