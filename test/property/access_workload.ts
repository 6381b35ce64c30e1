/**
 * The random guest workload of the fast-path property tests (access_fast.property.test.ts, the fast
 * path against the full path; access_fast_traced.property.test.ts, the same with the invariant checker
 * and trace sinks watching): the host and its memslots, the operations and their arbitraries, and the
 * full path as vcpu.access made every access before it had a fast path. See access_fast's header for
 * what the workload mixes.
 */
import fc from 'fast-check';
import { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import {
  Kvm,
  KvmError,
  uapiVfio,
  type AccessKind,
  type AccessResult,
  type BugName,
  type Vcpu,
  type Vm,
} from '../../src/index.ts';
import { KVM_X86_QUIRK_IGNORE_GUEST_PAT, KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';

export const MiB = 1 << 20;
export const RAM0 = 0x0; // 16 MiB, 4K-backed
export const RAM1 = 0x40000000; // 8 MiB, THP-backed
export const HUGE = 0x60000000; // 4 MiB, hugetlb 2M-backed (moves to HUGE_ALT and back)
export const HUGE_ALT = 0x70000000;
export const ROM = 0xfff00000; // 1 MiB, read-only
export const HOLE = 0x80000000; // no slot: MMIO

export interface Host {
  kernel: '6.12' | '6.18';
  pml: boolean;
  honorGuestMtrrs: boolean;
  /** 52: a 5-level EPT root (the fast path's walk indexes level 5 apart) */
  maxPhyAddr: 46 | 52;
  /** historical KVM bugs switched back on (the checked workload: violations to compare) */
  bugs?: BugName[];
}

export interface Model {
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

export function build(h: Host): Model {
  const kvm = new Kvm({
    kernel: h.kernel,
    pml: h.pml,
    honorGuestMtrrs: h.honorGuestMtrrs,
    maxPhyAddr: h.maxPhyAddr,
    ...(h.bugs === undefined ? {} : { bugs: h.bugs }),
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
  // SMM's address space (as_id 1) sees RAM0's first 4 MiB too, as QEMU's SMRAM address space does: faults
  // and hits with the SMM root (its own as_id in the tracepoints)
  vm.setUserMemoryRegion({
    slot: (1 << 16) | 0,
    guestPhysAddr: RAM0,
    memorySize: 4 * MiB,
    userspaceAddr: hva[0]!,
  });
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

export type Op =
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

export const kindArb = fc.constantFrom<AccessKind>('read', 'write', 'write', 'exec');
export const gpaArb = fc.oneof(
  // RAM0's first 4 MiB most often: the pages the host events below hit
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 1023 }).map((p) => RAM0 + p * 4096) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 16 * 256 - 1 }).map((p) => RAM0 + p * 4096) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 8 * 256 - 1 }).map((p) => RAM1 + p * 4096) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 4 * 256 - 1 }).map((p) => HUGE + p * 4096) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 4 * 256 - 1 }).map((p) => HUGE_ALT + p * 4096) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }).map((p) => ROM + p * 4096 + (p % 5)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }).map((p) => HOLE + p * 4096 + (p % 7)) },
);
export const vcpuArb = fc.integer({ min: 0, max: 1 });
export const opArb: fc.Arbitrary<Op> = fc.oneof(
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
export const hostArb: fc.Arbitrary<Host> = fc.record({
  kernel: fc.constantFrom<'6.12' | '6.18'>('6.18', '6.12'),
  pml: fc.boolean(),
  honorGuestMtrrs: fc.boolean(),
  maxPhyAddr: fc.constantFrom<46 | 52>(46, 52),
});

/** A device behind an IOMMU without snoop control: KVM sees non-coherent DMA (memtype inputs change). */
export function assignGpu(m: Model): void {
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
export function step(m: Model, o: Op): unknown {
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

export function attempt(f: () => unknown): unknown {
  try {
    return f();
  } catch (e) {
    if (e instanceof KvmError) return { errno: e.code };
    if (e instanceof TypeError || e instanceof RangeError) return { error: e.message };
    throw e;
  }
}

/** The full path, as vcpu.access made every access before it had a fast path. */
export function fullAccess(v: Vcpu, gpa: number, kind: AccessKind): AccessResult {
  const r = v.vm.mmu.vcpuAccess(v, gpa, kind, undefined);
  v.accessEnded(r.exit === 'none');
  return r;
}

export function dirtyLogs(m: Model): unknown {
  return [0, 1].map((s) => attempt(() => Array.from(m.vm.getDirtyLog(s))));
}

/** What X86Mmu.vcpuAccessFast made over a test file: hits, first-touch faults (those that linked page
 * tables on the way, those in SMM), and refusals (the caller then took the full path). */
export interface FastPathSeen {
  hits: number;
  faults: number;
  linkFaults: number;
  smmFaults: number;
  refused: number;
}

/**
 * Count the fast path's answers into `seen` for the rest of the test file (a property test must show the
 * fast path was actually taken); the returned function puts the real method back (pass it to afterAll).
 */
export function spyFastPath(seen: FastPathSeen): () => void {
  const realFast = X86Mmu.prototype.vcpuAccessFast;
  X86Mmu.prototype.vcpuAccessFast = function (this: X86Mmu, vcpu, gpa, write, hit) {
    const before = vcpu.stats.pf_fixed;
    const tables = this.tdp.pool.live;
    const made = realFast.call(this, vcpu, gpa, write, hit);
    if (!made) seen.refused++;
    else if (vcpu.stats.pf_fixed !== before) {
      seen.faults++;
      // a first touch that linked page tables on its way to the leaf
      if (this.tdp.pool.live !== tables) seen.linkFaults++;
      if (vcpu.smm) seen.smmFaults++;
    } else seen.hits++;
    return made;
  };
  return () => {
    X86Mmu.prototype.vcpuAccessFast = realFast;
  };
}
