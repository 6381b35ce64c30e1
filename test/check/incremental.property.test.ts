/**
 * Property: on random histories, an incremental checker (audit_delta.ts) and a whole one (every audit
 * walks everything) watching the same VM report the same violations — ID, step, message and trace — with
 * historical bugs switched on, TLB entries and reported SPTEs written behind the MMU's back, so that there
 * are violations to find. The histories mix small slots (4 MiB, THP-backed: 2M leafs), a 128 MiB slot
 * (a change notes its 64 regions one by one; a move, 128: the level-2 walk looks each region up), a
 * 512 MiB slot (a change is noted as a gfn interval, Dirty.addRange), zap-all and precise-zap memslot
 * updates (the quirk on and off: a zap-all's SPTE changes are noted by region only, Dirty.zapAll), guest
 * accesses and host mm events. The runs also check that they took each shortcut.
 */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Kvm, KvmError, type BugName, type Vm, type Vcpu } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import { AuditDelta } from '../../src/check/audit_delta.ts';
import type { Dirty } from '../../src/check/audit_dirty.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import type { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { spteIndex } from '../../src/x86/mmu/tdp_iter.ts';
import { childTableOf, type SpPool } from '../../src/x86/mmu/sp_pool.ts';
import { isLastSpte, isShadowPresentPte } from '../../src/x86/mmu/spte.ts';
import { ROLE_INVALID } from '../../src/x86/mmu/mmu_internal.ts';

const MiB = 1 << 20;
const SMALL = 4 * MiB;
/** the two small slots' places */
const BASES = [0, 4 * MiB, 8 * MiB, 6 * MiB];
/** slot i's size, and where a large slot sits (at its home, or one size above it) */
const SIZES = [SMALL, SMALL, 128 * MiB, 512 * MiB];
const HOMES = [0, 4 * MiB, 1024 * MiB, 2048 * MiB];

type Cmd =
  | { op: 'create'; slot: number; base: number }
  | { op: 'delete'; slot: number }
  | { op: 'move'; slot: number; base: number }
  | { op: 'large'; slot: number; on: boolean; at: number }
  | { op: 'access'; vcpu: number; slot: number; page: number; write: boolean }
  | { op: 'munmap'; slot: number; page: number }
  | { op: 'migrate'; slot: number; page: number }
  | { op: 'tlbPoke'; vcpu: number; slot: number; page: number; pfn: number; ahead: number }
  | { op: 'sptePoke'; slot: number; page: number; away: boolean };

const small = fc.integer({ min: 0, max: 1 });
const anySlot = fc.integer({ min: 0, max: 3 });
const base = fc.integer({ min: 0, max: BASES.length - 1 });
/** few pages: accesses come back to what earlier ones mapped */
const page = fc.integer({ min: 0, max: 7 }).map((p) => p * 1031);
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ op: fc.constant('create' as const), slot: small, base }),
  fc.record({ op: fc.constant('delete' as const), slot: small }),
  fc.record({ op: fc.constant('move' as const), slot: small, base }),
  fc.record({
    op: fc.constant('large' as const),
    slot: fc.integer({ min: 2, max: 3 }),
    on: fc.boolean(),
    at: fc.integer({ min: 0, max: 1 }),
  }),
  {
    arbitrary: fc.record({
      op: fc.constant('access' as const),
      vcpu: fc.integer({ min: 0, max: 1 }),
      slot: anySlot,
      page,
      write: fc.boolean(),
    }),
    weight: 6,
  },
  fc.record({ op: fc.constant('munmap' as const), slot: anySlot, page: fc.nat() }),
  fc.record({ op: fc.constant('migrate' as const), slot: anySlot, page: fc.nat() }),
  // a TLB entry written behind the MMU's back, to the host page of another guest page (a pfn the host
  // did hand out), or (`ahead`) to a pfn past the pool's end: it counts as freed once the pool grows
  // past it with an alignment gap (a THP fault-in after 4K ones), a change no SPTE, slot or fault-in notes
  fc.record({
    op: fc.constant('tlbPoke' as const),
    vcpu: fc.integer({ min: 0, max: 1 }),
    slot: anySlot,
    page,
    pfn: page,
    ahead: fc.oneof({ arbitrary: fc.constant(-1), weight: 3 }, fc.integer({ min: 0, max: 511 })),
  }),
  // an access, then the 4K leaf next to it written and reported as the engine would (a copy of another
  // leaf of its table: a wrong pfn); a later slot change over it changes its findings
  // (`away`: the leaf goes where a large slot is not now, at its other place, where a table it left
  // behind may be: a leaf no slot holds, until the slot comes back over it)
  fc.record({
    op: fc.constant('sptePoke' as const),
    slot: anySlot,
    page: page.map((p) => p + 1),
    away: fc.boolean(),
  }),
);

const BUGS: BugName[] = ['precise-zap-no-flush', 'fault-no-seq-recheck', 'fault-ignores-invalid-slot'];

/** What the runs exercised (AuditDelta.begin wrapped; the pokes made). */
const used = { incremental: 0, withIntervals: 0, zapAll: 0, tlbPokes: 0, sptePokes: 0 };
const begin = AuditDelta.prototype.begin;
AuditDelta.prototype.begin = function (this: AuditDelta, ...a: Parameters<typeof begin>) {
  if ((this as unknown as { pending: Dirty }).pending.zapAll) used.zapAll++;
  const f = begin.apply(this, a);
  if (f !== null) {
    used.incremental++;
    if ((f as Dirty).intervals.length > 0) used.withIntervals++;
  }
  return f;
};
afterAll(() => {
  AuditDelta.prototype.begin = begin;
});

/**
 * Write the 4K leaf of gfn in the first valid root as the TDP engine would, reporting it to the engine's
 * recorder: a copy of the first other present leaf of its table, else of the first 4K leaf of the first
 * root. Nothing without a 4K table there or a leaf to copy.
 */
function sptePoke(vm: Vm, gfn: number): void {
  const tdp = (vm.mmu as X86Mmu).tdp;
  const pool = tdp.pool;
  let table = tdp.roots.find((r) => (pool.role[r]! & ROLE_INVALID) === 0) ?? -1;
  if (table < 0) return;
  for (let l = pool.role[table]! & 0xf; l > 1; l--) {
    const lo = pool.readLo(table, spteIndex(gfn, l));
    if (!isShadowPresentPte(lo) || isLastSpte(lo, l)) return;
    table = childTableOf(lo, pool.readHi(table, spteIndex(gfn, l)));
  }
  const i = spteIndex(gfn, 1);
  const leaf =
    firstLeaf(pool, table, 1, i) ?? firstLeaf(pool, tdp.roots[0]!, pool.role[tdp.roots[0]!]! & 0xf, -1);
  if (leaf === null) return;
  const oldLo = pool.readLo(table, i);
  const oldHi = pool.readHi(table, i);
  pool.write(table, i, leaf[0], leaf[1]);
  tdp.recorder!.spteChanged(0, gfn, 1, oldLo, oldHi, leaf[0], leaf[1]);
  used.sptePokes++;
}

/** The first present 4K leaf at or below `table` (of `level`), but for entry `skip` of it. */
function firstLeaf(pool: SpPool, table: number, level: number, skip: number): [number, number] | null {
  for (let k = 0; k < 512; k++) {
    const lo = pool.readLo(table, k);
    if (k === skip || !isShadowPresentPte(lo)) continue;
    const hi = pool.readHi(table, k);
    if (level === 1) return [lo, hi];
    if (isLastSpte(lo, level)) continue;
    const r = firstLeaf(pool, childTableOf(lo, hi), level - 1, -1);
    if (r !== null) return r;
  }
  return null;
}

/** Run the history with two checkers on one VM; their violations as [id, step, message, trace]. */
function run(quirk: boolean, bugs: BugName[], cmds: Cmd[]): { inc: unknown[]; whole: unknown[] } {
  const kvm = new Kvm({ bugs });
  const vm: Vm = kvm.createVm(0);
  if (!quirk) vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  // small slots THP-backed (2M leafs), large ones 4K-backed
  const regions = SIZES.map((n, i) => kvm.host.mmap(n, { backing: i < 2 ? 'thp' : '4k' }));
  const vcpus: Vcpu[] = [vm.createVcpu(0), vm.createVcpu(1)];
  const inc = new Checker(kvm, { audit: 'points' });
  const whole = new Checker(kvm, { audit: 'points', incremental: false });
  inc.watch(vm);
  whole.watch(vm);
  const set = (s: number, gpa: number, size: number) =>
    vm.setUserMemoryRegion({ slot: s, guestPhysAddr: gpa, memorySize: size, userspaceAddr: regions[s]! });
  /** slot s's gpa now, else its home */
  const gpaOf = (s: number): number => {
    const m = vm.memslots().find((x) => x.id === s);
    return m === undefined ? HOMES[s]! : m.baseGfn * 4096;
  };
  const pages = (s: number): number => SIZES[s]! / 4096;
  // every slot present at the start (the history deletes, moves and re-creates them)
  for (let s = 0; s < 4; s++) set(s, HOMES[s]!, SIZES[s]!);
  cmds.forEach((c, i) => {
    const label = `${i}:${c.op}`;
    inc.setStep(label);
    whole.setStep(label);
    try {
      switch (c.op) {
        case 'create':
          set(c.slot, BASES[c.base]!, SMALL);
          break;
        case 'delete':
          set(c.slot, 0, 0);
          break;
        case 'move':
          if (vm.memslots().some((x) => x.id === c.slot)) set(c.slot, BASES[c.base]!, SMALL);
          break;
        case 'large': {
          const size = SIZES[c.slot]!;
          set(c.slot, c.on ? HOMES[c.slot]! + c.at * size : 0, c.on ? size : 0);
          break;
        }
        case 'access': {
          const gpa = gpaOf(c.slot) + (c.page % pages(c.slot)) * 4096;
          const kind = c.write ? 'write' : 'read';
          const r = vcpus[c.vcpu]!.access(gpa, kind);
          inc.onAccess(vcpus[c.vcpu]!, gpa, kind, r);
          whole.onAccess(vcpus[c.vcpu]!, gpa, kind, r);
          break;
        }
        case 'munmap':
          kvm.host.munmap(regions[c.slot]! + (c.page % pages(c.slot)) * 4096, 4096);
          break;
        case 'migrate':
          kvm.host.migrate(regions[c.slot]! + (c.page % (pages(c.slot) - 16)) * 4096, 16 * 4096);
          break;
        case 'tlbPoke': {
          const gfn = gpaOf(c.slot) / 4096 + (c.page % pages(c.slot));
          const pfn =
            c.ahead >= 0
              ? kvm.host.pfns.end + c.ahead
              : kvm.host.pfnAt(regions[c.slot]! + (c.pfn % pages(c.slot)) * 4096);
          if (pfn !== 0) {
            vcpus[c.vcpu]!.tlb.fill4k(gfn, pfn, true, 6);
            used.tlbPokes++;
          }
          break;
        }
        case 'sptePoke': {
          // the access next to it first (its table, and a leaf to copy)
          const gpa = gpaOf(c.slot) + ((c.page - 1) % pages(c.slot)) * 4096;
          const r = vcpus[0]!.access(gpa, 'read');
          inc.onAccess(vcpus[0]!, gpa, 'read', r);
          whole.onAccess(vcpus[0]!, gpa, 'read', r);
          const away = c.away && c.slot >= 2;
          const at = away
            ? HOMES[c.slot]! + (gpaOf(c.slot) === HOMES[c.slot]! ? SIZES[c.slot]! : 0)
            : gpaOf(c.slot);
          sptePoke(vm, at / 4096 + (c.page % pages(c.slot)));
          break;
        }
      }
    } catch (e) {
      if (!(e instanceof KvmError)) throw e; // EEXIST, EINVAL, EFAULT: the call failed as the kernel's would
    }
    const point = ['munmap', 'migrate'].includes(c.op) ? 'postNotifier' : 'postStep';
    inc.auditPoint(point);
    whole.auditPoint(point);
  });
  const found = (ch: Checker) => ch.violations.map((v) => [v.id, v.step, v.message, v.trace]);
  return { inc: found(inc), whole: found(whole) };
}

/**
 * Histories the random ones reach only rarely, run first: a leaf left where no slot is (precise zap: the
 * table stays), then a large slot moved back over it (interval: the table is walked whole and the leaf's
 * new finding made); and the same where the slot's move notes its regions one by one (region lookups),
 * with the leaf in the last region the move noted.
 */
const EXAMPLES: [boolean, BugName[], Cmd[]][] = [
  [3, 1031],
  [2, 32766],
].map(([slot, p]) => [
  false,
  [],
  [
    { op: 'large', slot: slot!, on: true, at: 1 },
    { op: 'access', vcpu: 0, slot: slot!, page: p!, write: false },
    { op: 'large', slot: slot!, on: true, at: 0 },
    { op: 'sptePoke', slot: slot!, page: p! + 1, away: true },
    { op: 'large', slot: slot!, on: true, at: 1 },
  ],
]);

// A TLB entry to a pfn past the pool's end (3 past it after slot 2's first 4K page), then slot 0's first
// THP fault-in: its 2M block is aligned past an alignment gap that holds the pfn, a free page from then on.
EXAMPLES.push([
  true,
  [],
  [
    { op: 'access', vcpu: 0, slot: 2, page: 0, write: false },
    { op: 'tlbPoke', vcpu: 0, slot: 2, page: 5, pfn: 0, ahead: 3 },
    { op: 'access', vcpu: 0, slot: 0, page: 0, write: true },
  ],
]);

describe('incremental audits find what whole audits find on random histories', () => {
  it('with bugs on and pokes, zap-all and precise zap, small and large slots (400 runs)', () => {
    let violations = 0;
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.subarray(BUGS),
        fc.array(cmd, { minLength: 1, maxLength: 40 }),
        (quirk, bugs, cmds) => {
          const r = run(quirk, bugs, cmds);
          violations += r.whole.length;
          expect(r.inc).toEqual(r.whole);
        },
      ),
      { numRuns: 400, seed: 15, examples: EXAMPLES },
    );
    console.log({ violations, ...used });
    // the runs found something, and took each shortcut
    expect(violations).toBeGreaterThan(80);
    expect(used.incremental).toBeGreaterThan(1000);
    expect(used.withIntervals).toBeGreaterThan(30);
    expect(used.zapAll).toBeGreaterThan(50);
    expect(used.sptePokes).toBeGreaterThan(50);
  });
});
