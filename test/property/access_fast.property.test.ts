/**
 * Property: vcpu.access's fast path (x86/mmu/guest_access_fast.ts) is the full path. Two identical
 * models run the same random workload; one makes each access through vcpu.access (the fast path where
 * it applies), the other through the full path vcpu.access took before it had one (the MMU's
 * vcpuAccess, then vcpu.accessEnded). The workload mixes reads, writes and execs (single accesses and
 * runs of consecutive pages, first touches and hits) on two vCPUs with: memslot deletes, re-creates and
 * moves (zap-all and precise), dirty logging on and off with GET/CLEAR_DIRTY_LOG, a read-only slot, MMIO
 * holes, 4K, THP and hugetlb backings, notifier invalidations (migration, mprotect, KSM merges, THP split
 * and collapse, swap-out, and a migration left in progress across accesses), SMM entry and exit, the
 * vCPU staying in guest mode, and memory types (guest CR0.CD and MTRRs with honorGuestMtrrs, non-coherent
 * DMA, the IGNORE_GUEST_PAT quirk, a pre-6.15 kernel), on a 4-level and a 5-level EPT. Every access's
 * result and every call's error must be equal, and at the end every stat and counter, the dirty logs and
 * the hash of the whole model state
 * (kvm/state_hash.ts: page tables, host pages and the host mm's lookup scratch, TLBs, the memslot
 * caches and their lookup counts, the engine iterator) must be equal too. The fast path must actually
 * have been taken, hits and first-touch faults alike.
 *
 * Replay a failure: fast-check prints `seed` and `path`; pass them to fc.assert's options.
 */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  Kvm,
  KvmError,
  uapiVfio,
  type AccessKind,
  type AccessResult,
  type Vcpu,
  type Vm,
} from '../../src/index.ts';
import { stateHash } from '../../src/kvm/state_hash.ts';
import { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { KVM_X86_QUIRK_IGNORE_GUEST_PAT, KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';

const MiB = 1 << 20;
const RAM0 = 0x0; // 16 MiB, 4K-backed
const RAM1 = 0x40000000; // 8 MiB, THP-backed
const HUGE = 0x60000000; // 4 MiB, hugetlb 2M-backed (moves to HUGE_ALT and back)
const HUGE_ALT = 0x70000000;
const ROM = 0xfff00000; // 1 MiB, read-only
const HOLE = 0x80000000; // no slot: MMIO

interface Host {
  kernel: '6.12' | '6.18';
  pml: boolean;
  honorGuestMtrrs: boolean;
  /** 52: a 5-level EPT root (the fast path's walk indexes level 5 apart) */
  maxPhyAddr: 46 | 52;
}

interface Model {
  kvm: Kvm;
  vm: Vm;
  vcpus: Vcpu[];
  hva: number[];
  slot1: boolean;
  hugeAt: number;
  /** the second half of a migration left in progress (stepwise) */
  pending: (() => void) | null;
  gpu: boolean;
}

function build(h: Host): Model {
  const kvm = new Kvm({
    kernel: h.kernel,
    pml: h.pml,
    honorGuestMtrrs: h.honorGuestMtrrs,
    maxPhyAddr: h.maxPhyAddr,
  });
  const vm = kvm.createVm(0);
  const hva = [
    kvm.host.mmap(16 * MiB, { backing: '4k' }),
    kvm.host.mmap(8 * MiB, { backing: 'thp' }),
    kvm.host.mmap(MiB),
    kvm.host.mmap(4 * MiB, { backing: '2m' }),
  ];
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: RAM0, memorySize: 16 * MiB, userspaceAddr: hva[0]! });
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: RAM1, memorySize: 8 * MiB, userspaceAddr: hva[1]! });
  vm.setUserMemoryRegion({ slot: 2, flags: 2, guestPhysAddr: ROM, memorySize: MiB, userspaceAddr: hva[2]! });
  vm.setUserMemoryRegion({ slot: 3, guestPhysAddr: HUGE, memorySize: 4 * MiB, userspaceAddr: hva[3]! });
  return {
    kvm,
    vm,
    vcpus: [vm.createVcpu(0), vm.createVcpu(1)],
    hva,
    slot1: true,
    hugeAt: HUGE,
    pending: null,
    gpu: false,
  };
}

type Op =
  | { op: 'access'; vcpu: number; gpa: number; kind: AccessKind }
  | { op: 'run'; vcpu: number; gpa: number; count: number; kind: AccessKind }
  /** the last access or run again (hits, or faults again after what ran since) */
  | { op: 'again'; vcpu: number; kind: AccessKind }
  | { op: 'slot1'; present: boolean; logDirty: boolean }
  | { op: 'log0'; on: boolean }
  | { op: 'log1'; on: boolean }
  | { op: 'clearLog0' }
  | { op: 'moveHuge' }
  | { op: 'quirk'; which: 'zapAll' | 'ignorePat' }
  | { op: 'migrate'; region: number; page: number; pages: number; stepwise: boolean }
  | { op: 'finish' }
  | { op: 'mprotect'; page: number; writable: boolean }
  | { op: 'ksm'; a: number; b: number }
  | { op: 'thp'; page: number; collapse: boolean }
  | { op: 'swap'; page: number; pages: number }
  | { op: 'smm'; vcpu: number; on: boolean }
  | { op: 'running'; vcpu: number; on: boolean }
  | { op: 'cr0'; vcpu: number; cd: boolean }
  | { op: 'mtrr'; vcpu: number; page: number; type: number }
  | { op: 'gpu' };

const kindArb = fc.constantFrom<AccessKind>('read', 'write', 'write', 'exec');
const gpaArb = fc.oneof(
  // RAM0's first 4 MiB most often: the pages the host events below hit
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 1023 }).map((p) => RAM0 + p * 4096) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 16 * 256 - 1 }).map((p) => RAM0 + p * 4096) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 8 * 256 - 1 }).map((p) => RAM1 + p * 4096) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 4 * 256 - 1 }).map((p) => HUGE + p * 4096) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 4 * 256 - 1 }).map((p) => HUGE_ALT + p * 4096) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }).map((p) => ROM + p * 4096 + (p % 5)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }).map((p) => HOLE + p * 4096 + (p % 7)) },
);
const vcpuArb = fc.integer({ min: 0, max: 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({ op: fc.constant('access' as const), vcpu: vcpuArb, gpa: gpaArb, kind: kindArb }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('run' as const),
      vcpu: vcpuArb,
      gpa: gpaArb,
      count: fc.integer({ min: 1, max: 700 }),
      kind: kindArb,
    }),
  },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('again' as const), vcpu: vcpuArb, kind: kindArb }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('slot1' as const),
      present: fc.boolean(),
      logDirty: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('log0' as const), on: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('log1' as const), on: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ op: 'clearLog0' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'moveHuge' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('quirk' as const),
      which: fc.constantFrom<'zapAll' | 'ignorePat'>('zapAll', 'ignorePat'),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('migrate' as const),
      region: fc.integer({ min: 0, max: 1 }),
      page: fc.integer({ min: 0, max: 1023 }),
      pages: fc.integer({ min: 1, max: 256 }),
      stepwise: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'finish' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('mprotect' as const),
      page: fc.integer({ min: 0, max: 1023 }),
      writable: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('ksm' as const),
      a: fc.integer({ min: 0, max: 1023 }),
      b: fc.integer({ min: 0, max: 1023 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('thp' as const),
      page: fc.integer({ min: 0, max: 2047 }),
      collapse: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('swap' as const),
      page: fc.integer({ min: 0, max: 1023 }),
      pages: fc.integer({ min: 1, max: 32 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('smm' as const), vcpu: vcpuArb, on: fc.boolean() }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('running' as const), vcpu: vcpuArb, on: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('cr0' as const), vcpu: vcpuArb, cd: fc.boolean() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('mtrr' as const),
      vcpu: vcpuArb,
      page: fc.integer({ min: 0, max: 15 }),
      type: fc.constantFrom(0, 1, 6),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'gpu' as const }) },
);
const hostArb: fc.Arbitrary<Host> = fc.record({
  kernel: fc.constantFrom<'6.12' | '6.18'>('6.18', '6.12'),
  pml: fc.boolean(),
  honorGuestMtrrs: fc.boolean(),
  maxPhyAddr: fc.constantFrom<46 | 52>(46, 52),
});

/** A device behind an IOMMU without snoop control: KVM sees non-coherent DMA (memtype inputs change). */
function assignGpu(m: Model): void {
  const vfio = m.kvm.vfio;
  vfio.snoopScope = 'attached';
  const unit = vfio.addIommu({ snoopControl: false });
  const gpu = vfio.addDevice({ name: 'gpu', iommu: unit });
  const c = vfio.openContainer();
  gpu.group.setContainer(c.fd);
  c.setIommu(uapiVfio.VFIO_TYPE1v2_IOMMU);
  m.vm.createDevice({ type: uapiVfio.KVM_DEV_TYPE_VFIO }).fileAdd(gpu.group.fd);
}

/** Everything but an access; the same on both models. Returns what it returned, or its error code. */
function step(m: Model, o: Op): unknown {
  const { vm, kvm } = m;
  switch (o.op) {
    case 'slot1':
      if (m.slot1) vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: RAM1, memorySize: 0 });
      m.slot1 = o.present;
      if (o.present)
        vm.setUserMemoryRegion({
          slot: 1,
          flags: o.logDirty ? 1 : 0,
          guestPhysAddr: RAM1,
          memorySize: 8 * MiB,
          userspaceAddr: m.hva[1]!,
        });
      return null;
    case 'log0':
      return vm.setUserMemoryRegion({
        slot: 0,
        flags: o.on ? 1 : 0,
        guestPhysAddr: RAM0,
        memorySize: 16 * MiB,
        userspaceAddr: m.hva[0]!,
      });
    case 'log1':
      // FLAGS_ONLY on the THP slot: logging splits huge leafs on write; stopping it rebuilds them,
      // replacing page tables (freed through RCU, reclaimed by the next map)
      if (!m.slot1) return 'absent';
      return vm.setUserMemoryRegion({
        slot: 1,
        flags: o.on ? 1 : 0,
        guestPhysAddr: RAM1,
        memorySize: 8 * MiB,
        userspaceAddr: m.hva[1]!,
      });
    case 'clearLog0': {
      const bitmap = vm.getDirtyLog(0);
      return Array.from(bitmap.slice(0, 64));
    }
    case 'moveHuge':
      m.hugeAt = m.hugeAt === HUGE ? HUGE_ALT : HUGE;
      return vm.setUserMemoryRegion({
        slot: 3,
        guestPhysAddr: m.hugeAt,
        memorySize: 4 * MiB,
        userspaceAddr: m.hva[3]!,
      });
    case 'quirk':
      return vm.enableCap({
        cap: 213,
        args: [o.which === 'zapAll' ? KVM_X86_QUIRK_SLOT_ZAP_ALL : KVM_X86_QUIRK_IGNORE_GUEST_PAT],
      });
    case 'migrate': {
      const size = o.region === 0 ? 16 * MiB : 8 * MiB;
      const start = (o.page * 4096) % size;
      const len = Math.min(o.pages * 4096, size - start);
      if (o.stepwise && m.pending === null) {
        m.pending = kvm.host.migrate(m.hva[o.region]! + start, len, { stepwise: true });
        return 'started';
      }
      kvm.host.migrate(m.hva[o.region]! + start, len);
      return null;
    }
    case 'finish':
      m.pending?.();
      m.pending = null;
      return null;
    case 'mprotect':
      return kvm.host.mprotect(m.hva[0]! + o.page * 4096, 4096, o.writable);
    case 'ksm':
      return kvm.host.ksmMerge(m.hva[0]! + o.a * 4096, m.hva[0]! + o.b * 4096);
    case 'thp':
      return o.collapse
        ? kvm.host.thpCollapse(m.hva[1]! + o.page * 4096)
        : kvm.host.thpSplit(m.hva[1]! + o.page * 4096);
    case 'swap':
      return kvm.host.swapOut(m.hva[0]! + o.page * 4096, o.pages * 4096);
    case 'smm':
      m.vcpus[o.vcpu]!.smm = o.on;
      return null;
    case 'running':
      m.vcpus[o.vcpu]!.running = o.on;
      return null;
    case 'cr0':
      return m.vcpus[o.vcpu]!.setCr0({ cd: o.cd });
    case 'mtrr':
      return m.vcpus[o.vcpu]!.setMtrrVar(o.page % 8, { base: o.page * MiB, size: MiB, type: o.type });
    case 'gpu':
      if (m.gpu) return 'already';
      m.gpu = true;
      assignGpu(m);
      return null;
  }
  throw new Error(`not a host step: ${o.op}`);
}

function attempt(f: () => unknown): unknown {
  try {
    return f();
  } catch (e) {
    if (e instanceof KvmError) return { errno: e.code };
    if (e instanceof TypeError || e instanceof RangeError) return { error: e.message };
    throw e;
  }
}

/** The full path, as vcpu.access made every access before it had a fast path. */
function fullAccess(v: Vcpu, gpa: number, kind: AccessKind): AccessResult {
  const r = v.vm.mmu.vcpuAccess(v, gpa, kind, undefined);
  v.accessEnded(r.exit === 'none');
  return r;
}

/** The fast path's answers over the whole run: hits and first-touch faults it made, and refusals. */
const seen = { hits: 0, faults: 0, refused: 0 };
const realFast = X86Mmu.prototype.vcpuAccessFast;
X86Mmu.prototype.vcpuAccessFast = function (this: X86Mmu, vcpu, gpa, write, hit) {
  const before = vcpu.stats.pf_fixed;
  const made = realFast.call(this, vcpu, gpa, write, hit);
  if (!made) seen.refused++;
  else if (vcpu.stats.pf_fixed !== before) seen.faults++;
  else seen.hits++;
  return made;
};
afterAll(() => {
  X86Mmu.prototype.vcpuAccessFast = realFast;
});

function dirtyLogs(m: Model): unknown {
  return [0, 1].map((s) => attempt(() => Array.from(m.vm.getDirtyLog(s))));
}

describe('vcpu.access fast path = the full path', () => {
  it('same results, stats, dirty logs and whole model state on random workloads (fast-check)', () => {
    fc.assert(
      fc.property(hostArb, fc.array(opArb, { minLength: 1, maxLength: 40 }), (h, ops) => {
        const a = build(h);
        const b = build(h);
        const last: Extract<Op, { op: 'access' | 'run' }>[] = [];
        for (const op of ops) {
          const o: Op = op.op === 'again' && last[0] ? { ...last[0], vcpu: op.vcpu, kind: op.kind } : op;
          if (o.op === 'again') continue;
          if (o.op === 'access' || o.op === 'run') {
            last[0] = o;
            const n = o.op === 'run' ? o.count : 1;
            for (let i = 0; i < n; i++) {
              const gpa = o.gpa + i * 4096;
              const want = attempt(() => fullAccess(b.vcpus[o.vcpu]!, gpa, o.kind));
              const got = attempt(() => a.vcpus[o.vcpu]!.access(gpa, o.kind));
              expect(got).toEqual(want);
            }
          } else expect(attempt(() => step(a, o))).toEqual(attempt(() => step(b, o)));
          // after every step, so that a difference the next full-path access would paper over (a
          // cache pointer, a scratch field, a reclaim left for later) is still seen
          expect(stateHash([a.kvm, a.vm, a.vcpus])).toBe(stateHash([b.kvm, b.vm, b.vcpus]));
        }
        expect(a.vm.getStats()).toEqual(b.vm.getStats());
        expect(a.vm.getModelStats()).toEqual(b.vm.getModelStats());
        for (let i = 0; i < 2; i++) expect(a.vcpus[i]!.getStats()).toEqual(b.vcpus[i]!.getStats());
        expect(dirtyLogs(a)).toEqual(dirtyLogs(b));
        expect(stateHash([a.kvm, a.vm, a.vcpus])).toBe(stateHash([b.kvm, b.vm, b.vcpus]));
      }),
      { numRuns: Number(process.env.FC_RUNS ?? 200) },
    );
    console.log('fast path:', seen);
    // The fast path was exercised both ways, and refused what it does not make.
    expect(seen.hits).toBeGreaterThan(1000);
    expect(seen.faults).toBeGreaterThan(1000);
    expect(seen.refused).toBeGreaterThan(100);
  });
});
