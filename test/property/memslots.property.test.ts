/**
 * Property: random sequences of KVM_SET_USER_MEMORY_REGION(2) calls on a DEFAULT VM (two address spaces)
 * agree, call by call, with a small independent reference model written here from
 * shared/reference/memslot-abi.md §2.1–2.6 (validation order, change types, overlap rule), §2.4 (PREPARE
 * failure semantics) and §3.3 (generations: CREATE/FLAGS_ONLY +N, DELETE/MOVE +2N, N = 2; no-op and
 * errors before kvm_set_memslot +0).
 *
 * After every call the test compares the outcome ('OK' or the errno name), the full active layout of both
 * address spaces and both generations, and checks that generations never decrease and move only on
 * success (or on the one documented failure that swaps: a DELETE/MOVE whose PREPARE fails, §2.4).
 *
 * Ids, gfns and hvas come from small ranges so that collisions (EEXIST, MOVE onto a neighbour, re-issue,
 * id reuse across address spaces) are frequent. The calls go through all four entry points: the throwing
 * V1/V2 methods and the raw -errno ioctl in both widths.
 *
 * Replay a failure: fast-check prints `seed` and `path`; run
 *   ZAPLAB_FC_SEED=<seed> ZAPLAB_FC_PATH=<path> npx vitest run test/property
 * The failure message also lists the state-changing calls before the failing one in the R1/R2 notation of
 * test/conformance/harness.ts, ready to paste into a conformance test.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Kvm, KvmError, type Vm } from '../../src/index.ts';

// ---- constants, typed in from the reference ----------------------------------------------------

const P = 4096;
const PB = 4096n;
const LOG = 1 << 0; // KVM_MEM_LOG_DIRTY_PAGES (§1.3)
const RO = 1 << 1; // KVM_MEM_READONLY
const GMEM = 1 << 2; // KVM_MEM_GUEST_MEMFD
const KVM_USER_MEM_SLOTS = 32764; // §1.7
const KVM_MEM_MAX_NR_PAGES = 2n ** 31n - 1n;
const U64_MAX = 2n ** 64n - 1n;
const NR_AS = 2; // DEFAULT VM with SMM: kvm_arch_nr_memslot_as_ids = 2 (§1.7, §5.1)
/** The modelled host: TDP with MAXPHYADDR 46, so kvm_mmu_max_gfn() = 2^(46-12) - 1 (§2.4). */
const MAX_PHY_ADDR = 46;
const MAX_GFN = 2n ** BigInt(MAX_PHY_ADDR - 12) - 1n;
/** access_ok() ceiling, 4-level paging TASK_SIZE_MAX (§2.2); passed to the model as a parameter. */
const USER_PTR_MAX = 0x7ffffffff000;

const ERRNO_NAME: Record<number, string> = {
  5: 'EIO',
  12: 'ENOMEM',
  14: 'EFAULT',
  16: 'EBUSY',
  17: 'EEXIST',
  22: 'EINVAL',
};

// ---- the request -------------------------------------------------------------------------------

interface Req {
  slot: number; // u32: as_id << 16 | id
  flags: number;
  gpa: number | bigint;
  size: number | bigint;
  hva: number | bigint;
}

/** bit 0: V2 (KVM_SET_USER_MEMORY_REGION2); bit 1: the raw -errno ioctl instead of the throwing method. */
type Api = 0 | 1 | 2 | 3;

// ---- the reference model -----------------------------------------------------------------------

interface RSlot {
  baseGfn: bigint;
  npages: bigint;
  hva: bigint;
  flags: number;
}

interface RResult {
  outcome: string;
  /** the generation of the target address space moved although the call failed (§2.4 PREPARE failure) */
  swappedOnFailure: boolean;
}

class RefVm {
  readonly slots: Map<number, RSlot>[] = [new Map(), new Map()];
  /** §3.2: each address space starts at generation as_id. */
  readonly gen: number[] = [0, 1];

  private swap(as: number, times: number): void {
    this.gen[as]! += times * NR_AS;
  }

  /** §2.1–§2.6 for a DEFAULT VM on 6.18 (no guest_memfd requests are generated). */
  set(r: Req, v2: boolean): RResult {
    const fail = (outcome: string): RResult => ({ outcome, swappedOnFailure: false });
    // §2.1 step 3: V1 takes only LOG_DIRTY_PAGES | READONLY.
    if (!v2 && r.flags & ~(LOG | RO)) return fail('EINVAL');
    // §2.1 step 4: only the low 16 bits are tested, whatever the as_id.
    if ((r.slot & 0xffff) >= KVM_USER_MEM_SLOTS) return fail('EINVAL');
    // B1 (§2.3): DEFAULT VM, 6.18, no GUEST_MEMFD in the request → valid = LOG_DIRTY | READONLY.
    if (r.flags & GMEM) throw new Error('reference: guest_memfd requests are not generated');
    if (r.flags & ~(LOG | RO)) return fail('EINVAL');
    const as = Math.floor(r.slot / 0x10000); // B2
    const id = r.slot & 0xffff;
    const size = BigInt(r.size);
    const gpa = BigInt(r.gpa);
    const hva = BigInt(r.hva);
    if (size % PB !== 0n) return fail('EINVAL'); // B3
    if (gpa % PB !== 0n) return fail('EINVAL'); // B4
    if (hva % PB !== 0n || hva + size > BigInt(USER_PTR_MAX)) return fail('EINVAL'); // B5 access_ok
    if (as >= NR_AS) return fail('EINVAL'); // B7
    if (gpa + size > U64_MAX) return fail('EINVAL'); // B8
    if (size / PB > KVM_MEM_MAX_NR_PAGES) return fail('EINVAL'); // B9
    const space = this.slots[as]!;
    const old = space.get(id); // B10
    if (size === 0n) {
      // B11: DELETE, two swaps (§3.3).
      if (old === undefined) return fail('EINVAL');
      space.delete(id);
      this.swap(as, 2);
      return { outcome: 'OK', swappedOnFailure: false };
    }
    const baseGfn = gpa / PB; // B12
    const npages = size / PB;
    let change: 'CREATE' | 'MOVE' | 'FLAGS_ONLY';
    if (old === undefined) change = 'CREATE';
    else {
      // B14 (b): hva, npages and READONLY are fixed for the slot's life.
      if (hva !== old.hva || npages !== old.npages || (r.flags ^ old.flags) & RO) return fail('EINVAL');
      if (baseGfn !== old.baseGfn) change = 'MOVE';
      else if (r.flags !== old.flags) change = 'FLAGS_ONLY';
      else return { outcome: 'OK', swappedOnFailure: false }; // identical: no-op, no generation change
    }
    if (change !== 'FLAGS_ONLY') {
      // B15: half-open gfn intervals of other ids in the same address space.
      for (const [oid, s] of space) {
        if (oid !== id && baseGfn < s.baseGfn + s.npages && s.baseGfn < baseGfn + npages)
          return fail('EEXIST');
      }
      // §2.4 x86 PREPARE: last gfn beyond kvm_mmu_max_gfn() → EINVAL. A MOVE has already swapped in the
      // INVALID copy and swaps the old slot back: +2N with the layout unchanged. A CREATE swapped nothing.
      if (baseGfn + npages - 1n > MAX_GFN) {
        if (change === 'MOVE') {
          this.swap(as, 2);
          return { outcome: 'EINVAL', swappedOnFailure: true };
        }
        return fail('EINVAL');
      }
    }
    space.set(id, { baseGfn, npages, hva, flags: r.flags });
    this.swap(as, change === 'MOVE' ? 2 : 1);
    return { outcome: 'OK', swappedOnFailure: false };
  }

  layout(as: number): string {
    return [...this.slots[as]!]
      .sort(([, a], [, b]) => (a.baseGfn < b.baseGfn ? -1 : 1))
      .map(([id, s]) => `${id}:${s.baseGfn}+${s.npages}@${s.hva.toString(16)}/${s.flags}`)
      .join(' ');
  }
}

function modelLayout(vm: Vm, as: number): string {
  return vm
    .memslots(as)
    .map((s) => `${s.id}:${s.baseGfn}+${s.npages}@${s.userspaceAddr.toString(16)}/${s.flags}`)
    .join(' ');
}

function callModel(vm: Vm, r: Req, api: Api): string {
  const arg = {
    slot: r.slot,
    flags: r.flags,
    guestPhysAddr: r.gpa,
    memorySize: r.size,
    userspaceAddr: r.hva,
  };
  const v2 = (api & 1) !== 0;
  if (api & 2) {
    const rc = vm.ioctlSetUserMemoryRegion(arg, v2);
    return rc === 0 ? 'OK' : (ERRNO_NAME[-rc] ?? `E${-rc}`);
  }
  try {
    if (v2) vm.setUserMemoryRegion2(arg);
    else vm.setUserMemoryRegion(arg);
    return 'OK';
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    throw e;
  }
}

// ---- operations: intents resolved against the reference state at run time -----------------------

const KINDS = [
  ['set', 6], // any create-shaped request: CREATE, MOVE, FLAGS_ONLY, no-op, EEXIST or EINVAL by chance
  ['move', 4],
  ['toggleLog', 3],
  ['delete', 3],
  ['reissue', 2],
  ['overlap', 3],
  ['deleteMissing', 1],
  ['misaligned', 2],
  ['badId', 1],
  ['badAs', 1],
  ['toggleRo', 1],
  ['resize', 1],
  ['rehva', 1],
  ['badFlags', 1],
  ['wrap', 1],
  ['tooBig', 1],
  ['beyondMaxGfn', 1],
  ['hvaLimit', 1],
] as const;
type Kind = (typeof KINDS)[number][0];

interface Op {
  k: Kind;
  as: number;
  id: number;
  gfn: number;
  npages: number;
  hvaPage: number;
  flags: number;
  x: number;
  api: Api;
}

const opArb: fc.Arbitrary<Op> = fc.record({
  k: fc.oneof(...KINDS.map(([k, weight]) => ({ arbitrary: fc.constant(k as Kind), weight }))),
  as: fc.integer({ min: 0, max: 1 }),
  id: fc.integer({ min: 0, max: 3 }),
  gfn: fc.integer({ min: 0, max: 15 }),
  npages: fc.integer({ min: 1, max: 4 }),
  hvaPage: fc.integer({ min: 0, max: 7 }),
  flags: fc.constantFrom(0, LOG, RO, LOG | RO),
  x: fc.nat({ max: 0xffff }),
  api: fc.constantFrom<Api>(0, 1, 2, 3),
});

const slotNo = (as: number, id: number) => as * 0x10000 + id;

/** The slot an op aims at: its own id if that exists in its AS, else the first existing one there. */
function target(ref: RefVm, op: Op): [number, RSlot | undefined] {
  const space = ref.slots[op.as]!;
  const own = space.get(op.id);
  if (own !== undefined) return [op.id, own];
  const first = [...space.keys()].sort((a, b) => a - b)[0];
  return first === undefined ? [op.id, undefined] : [first, space.get(first)];
}

function freeId(ref: RefVm, as: number, prefer: number): number {
  const space = ref.slots[as]!;
  if (!space.has(prefer)) return prefer;
  for (let id = 0; ; id++) if (!space.has(id)) return id;
}

function resolve(ref: RefVm, op: Op): Req {
  const fresh: Req = {
    slot: slotNo(op.as, op.id),
    flags: op.flags,
    gpa: op.gfn * P,
    size: op.npages * P,
    hva: op.hvaPage * P,
  };
  const [tid, s] = target(ref, op);
  const same = (): Req =>
    s === undefined
      ? fresh
      : {
          slot: slotNo(op.as, tid),
          flags: s.flags,
          gpa: Number(s.baseGfn) * P,
          size: Number(s.npages) * P,
          hva: Number(s.hva),
        };
  switch (op.k) {
    case 'set':
      return fresh;
    case 'move':
      return { ...same(), gpa: op.gfn * P };
    case 'toggleLog':
      return { ...same(), flags: same().flags ^ LOG };
    case 'toggleRo':
      return { ...same(), flags: same().flags ^ RO };
    case 'reissue':
      return same();
    case 'resize': {
      const n = Number(same().size) / P;
      return { ...same(), size: (op.npages === n ? n + 1 : op.npages) * P };
    }
    case 'rehva': {
      const h = Number(same().hva) / P;
      return { ...same(), hva: (op.hvaPage === h ? h + 1 : op.hvaPage) * P };
    }
    case 'delete':
      // The gpa and hva of a delete only have to pass the sanity checks (§2.2).
      return {
        slot: slotNo(op.as, tid),
        flags: op.flags & (LOG | RO),
        gpa: op.gfn * P,
        size: 0,
        hva: op.hvaPage * P,
      };
    case 'deleteMissing':
      return { ...fresh, slot: slotNo(op.as, freeId(ref, op.as, op.id)), size: 0 };
    case 'overlap': {
      if (s === undefined) return fresh;
      const n = op.npages;
      const lo = Number(s.baseGfn) - (n - 1);
      const gfn = Math.max(0, lo + (op.x % (Number(s.npages) + n - 1)));
      return { ...fresh, slot: slotNo(op.as, freeId(ref, op.as, op.id)), gpa: gfn * P, size: n * P };
    }
    case 'misaligned': {
      const d = 1 + (op.x % (P - 1));
      const base = op.x & 1 ? same() : fresh;
      const which = op.x % 3;
      // A delete must pass the alignment checks too (§8 case 4): half of the gpa/hva cases are deletes.
      const del = which !== 0 && (op.x & 2) !== 0;
      const r = { ...base, size: del ? 0 : base.size };
      if (which === 0) return { ...r, size: Number(r.size) + d };
      if (which === 1) return { ...r, gpa: Number(r.gpa) + d };
      return { ...r, hva: Number(r.hva) + d };
    }
    case 'badId': {
      const id = [32764, 32765, 32766, 32767, 40000, 0xffff][op.x % 6]!;
      return { ...fresh, slot: slotNo(op.as, id), size: op.x & 8 ? 0 : fresh.size };
    }
    case 'badAs': {
      const as = [2, 3, 0x7fff, 0xffff][op.x % 4]!;
      const base = op.x & 4 ? same() : fresh;
      return { ...base, slot: slotNo(as, op.id), size: op.x & 8 ? 0 : base.size };
    }
    case 'badFlags': {
      const v2 = (op.api & 1) !== 0;
      const bits = v2
        ? [1 << 3, 1 << 5, 1 << 15, 1 << 16, 1 << 17, 2 ** 31]
        : [GMEM, 1 << 3, 1 << 16, 2 ** 31];
      const base = op.x & 16 ? same() : fresh;
      return {
        ...base,
        flags: (base.flags | bits[op.x % bits.length]!) >>> 0,
        size: op.x & 32 ? 0 : base.size,
      };
    }
    case 'wrap':
      // gpa + size wraps u64 (§8 case 7); as a delete (size 0) nothing wraps and the gpa is ignored.
      return { ...same(), gpa: 0xfffffffffffff000n, size: op.x & 1 ? 0 : fresh.size };
    case 'tooBig':
      // 2^31 pages: one past KVM_MEM_MAX_NR_PAGES (§8 case 12).
      return { ...fresh, size: 2 ** 31 * P };
    case 'beyondMaxGfn': {
      // Around kvm_mmu_max_gfn(): some fit, some end past it; as a CREATE or as a MOVE of a live slot.
      const gfn = Number(MAX_GFN) - 2 + (op.x % 4);
      return { ...(op.x & 4 ? same() : fresh), gpa: gfn * P };
    }
    case 'hvaLimit':
      if (op.x & 1) return { ...fresh, hva: USER_PTR_MAX - P, size: 3 * P };
      // Far past any user address; for a delete, access_ok(hva, 0) still wants a user address.
      return { ...same(), hva: 1n << 57n, size: op.x & 2 ? 0 : fresh.size };
  }
}

// ---- one sequence --------------------------------------------------------------------------------

const SEQ_LEN = 200;
const NUM_RUNS = 1000;

function show(v: number | bigint): string {
  return typeof v === 'bigint' ? `0x${v.toString(16)}n` : `0x${v.toString(16)}`;
}

function notation(r: Req, api: Api): string {
  const args = `vm, ${show(r.slot)}, ${show(r.flags)}, ${show(r.gpa)}, ${show(r.size)}, ${show(r.hva)}`;
  return api & 1 ? `R2(${args}, 0, 0)` : `R1(${args})`;
}

function runSequence(ops: readonly Op[]): void {
  const vm = new Kvm({ maxPhyAddr: MAX_PHY_ADDR, userAddrLimit: USER_PTR_MAX }).createVm(0);
  const ref = new RefVm();
  const replay: string[] = [];
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    const req = resolve(ref, op);
    const gensBefore = [vm.memslotsGeneration(0), vm.memslotsGeneration(1)];
    const want = ref.set(req, (op.api & 1) !== 0);
    const got = callModel(vm, req, op.api);
    const gens = [vm.memslotsGeneration(0), vm.memslotsGeneration(1)];
    const problems: string[] = [];
    if (got !== want.outcome) problems.push(`outcome ${got}, reference ${want.outcome}`);
    for (let as = 0; as < NR_AS; as++) {
      const m = modelLayout(vm, as);
      const r = ref.layout(as);
      if (m !== r) problems.push(`AS${as} layout\n      model     [${m}]\n      reference [${r}]`);
      if (gens[as] !== ref.gen[as]) problems.push(`AS${as} generation ${gens[as]}, reference ${ref.gen[as]}`);
      if (gens[as]! < gensBefore[as]!)
        problems.push(`AS${as} generation went down ${gensBefore[as]} → ${gens[as]}`);
      if (gens[as] !== gensBefore[as] && got !== 'OK' && !want.swappedOnFailure)
        problems.push(`AS${as} generation moved ${gensBefore[as]} → ${gens[as]} on a failed call (${got})`);
      if ((gens[as]! - as) % NR_AS !== 0)
        problems.push(`AS${as} generation ${gens[as]} is not as_id mod ${NR_AS}`);
    }
    const line = `${notation(req, op.api)} → ${want.outcome}${op.api & 2 ? ' (raw ioctl)' : ''}`;
    if (problems.length) {
      throw new Error(
        `call #${i} (${op.k}): ${line}\n  ${problems.join('\n  ')}\n` +
          `state-changing calls before it (${replay.length}):\n  ${replay.join('\n  ') || '(none)'}`,
      );
    }
    // Rejected calls and no-ops leave no trace, so the replay lists only calls that moved a generation.
    if (gens[0] !== gensBefore[0] || gens[1] !== gensBefore[1]) replay.push(line);
  }
}

function fcParams(): fc.Parameters<[Op[]]> {
  const p: fc.Parameters<[Op[]]> = { numRuns: NUM_RUNS };
  const seed = process.env['ZAPLAB_FC_SEED'];
  const path = process.env['ZAPLAB_FC_PATH'];
  if (seed !== undefined) p.seed = Number(seed);
  if (path !== undefined) p.path = path;
  return p;
}

describe('memslots: random KVM_SET_USER_MEMORY_REGION(2) sequences vs a reference model (DEFAULT VM)', () => {
  it(`${NUM_RUNS} sequences of ${SEQ_LEN} calls: outcome, both layouts and both generations after every call`, () => {
    const details = fc.check(
      fc.property(fc.array(opArb, { minLength: SEQ_LEN, maxLength: SEQ_LEN }), (ops) => runSequence(ops)),
      fcParams(),
    );
    // fc.assert would print the whole 200-op counterexample; the shrunk failure message already holds
    // the failing call and the state-changing calls before it, so report that plus what replays it.
    if (details.failed) {
      const cause =
        details.errorInstance instanceof Error
          ? details.errorInstance.message
          : String(details.errorInstance);
      throw new Error(
        `property failed after ${details.numRuns} run(s), shrunk ${details.numShrinks} time(s)\n` +
          `replay: ZAPLAB_FC_SEED=${details.seed} ZAPLAB_FC_PATH=${details.counterexamplePath ?? ''} npx vitest run test/property\n` +
          cause,
      );
    }
    // A replay (ZAPLAB_FC_PATH) runs only the recorded case.
    if (process.env['ZAPLAB_FC_PATH'] === undefined) expect(details.numRuns).toBe(NUM_RUNS);
  });

  it('the generator reaches every outcome and change type often enough to mean something', () => {
    // Guard against a generator that drifts into only-EINVAL or never hits EEXIST/MOVE: count reference
    // results over a fixed sample.
    const counts: Record<string, number> = {};
    const sample = fc.sample(fc.array(opArb, { minLength: SEQ_LEN, maxLength: SEQ_LEN }), {
      numRuns: 20,
      seed: 42,
    });
    for (const ops of sample) {
      const ref = new RefVm();
      for (const op of ops) {
        const req = resolve(ref, op);
        const g = [...ref.gen];
        const r = ref.set(req, (op.api & 1) !== 0);
        const d = ref.gen.reduce((acc, x, as) => acc + (x - g[as]!), 0);
        const key = r.outcome === 'OK' ? `OK+${d}` : r.swappedOnFailure ? `${r.outcome}+${d}` : r.outcome;
        counts[key] = (counts[key] ?? 0) + 1;
      }
    }
    // OK+0 no-op, OK+2 CREATE/FLAGS_ONLY, OK+4 DELETE/MOVE, EINVAL+4 MOVE whose PREPARE failed.
    for (const key of ['OK+0', 'OK+2', 'OK+4', 'EINVAL', 'EEXIST', 'EINVAL+4']) {
      expect(counts[key] ?? 0, `${key} in ${JSON.stringify(counts)}`).toBeGreaterThanOrEqual(
        key === 'EINVAL+4' ? 3 : 50,
      );
    }
  });
});
