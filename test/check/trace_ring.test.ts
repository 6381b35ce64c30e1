/**
 * The checker's trace ring keeps the fault path's two tracepoints (kvm_page_fault,
 * kvm_mmu_spte_requested) as numbers: the lines it prints for them are the lines the copied event objects
 * printed, field for field, for every emitter of those events (the full access path, a fault that exits
 * to MMIO, the explorer's split access); and they interleave with the other entries in order.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Kvm } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import { formatEvent, TraceRing } from '../../src/check/trace_ring.ts';
import type { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import type { TdpTraceRecorder } from '../../src/x86/mmu/mmu_trace.ts';

const MiB = 1 << 20;

describe('trace ring: the fault tracepoints as numbers', () => {
  it('prints each as the copied event object would, in order with the other entries', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    const hva = kvm.host.mmap(2 * MiB);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva });
    const v = vm.createVcpu(0);
    const ch = new Checker(kvm, { traceDepth: 4096 });
    ch.watch(vm);
    // every event the MMU's sink sees, formatted from a copy as the ring used to keep them
    const seen: string[] = [];
    (vm.mmu as X86Mmu).trace = (ev) => seen.push(formatEvent({ ...ev }));
    ch.setStep('touch');
    for (const [gpa, kind] of [
      [0x5000, 'read'],
      [0x6000, 'write'],
      [0x7123, 'exec'],
      [0x5000, 'write'],
      [0x300000, 'read'], // no slot: an MMIO SPTE
      [0x300000, 'write'],
    ] as const)
      ch.onAccess(v, gpa, kind, v.access(gpa, kind));
    const ring = ch.recentTrace();
    const hot = ring.filter((l) => /^(kvm_page_fault|kvm_mmu_spte_requested) /.test(l));
    expect(hot).toEqual(seen.filter((l) => /^(kvm_page_fault|kvm_mmu_spte_requested) /.test(l)));
    expect(hot.slice(0, 2)).toEqual([
      'kvm_page_fault vcpuId=0 gpa=0x5000 errorCode=1',
      expect.stringMatching(/^kvm_mmu_spte_requested gfn=0x5 pfn=0x[0-9a-f]+ level=1$/),
    ]);
    expect(hot).toContain('kvm_page_fault vcpuId=0 gpa=0x7123 errorCode=4');
    expect(hot).toEqual([
      'kvm_page_fault vcpuId=0 gpa=0x5000 errorCode=1',
      'kvm_mmu_spte_requested gfn=0x5 pfn=0x1 level=1',
      'kvm_page_fault vcpuId=0 gpa=0x6000 errorCode=2',
      'kvm_mmu_spte_requested gfn=0x6 pfn=0x2 level=1',
      'kvm_page_fault vcpuId=0 gpa=0x7123 errorCode=4',
      'kvm_mmu_spte_requested gfn=0x7 pfn=0x3 level=1',
      'kvm_page_fault vcpuId=0 gpa=0x300000 errorCode=1',
    ]);
    // the MMU sink's other lines are where they were, in the sink's order (the TDP engine's own events
    // reach the ring through its recorder, and accesses and steps from the checker)
    const tdp = /^(kvm_tdp_mmu_spte_changed|kvm_mmu_get_page|kvm_mmu_prepare_zap_page) /;
    const events = ring.filter((l) => !l.startsWith('access ') && !l.startsWith('--- step') && !tdp.test(l));
    expect(events).toEqual(seen);
    expect(events.at(-1)).toBe('mark_mmio_spte gfn=0x300 gen=2');
    expect(ring[0]).toBe('--- step touch');
  });

  it('wraps like any other entry', () => {
    const r = new TraceRing(3);
    r.line('a');
    r.line({ name: 'kvm_page_fault', vcpuId: 1, gpa: 0x2000, errorCode: 2 });
    r.line({ name: 'kvm_mmu_spte_requested', gfn: 0x2, pfn: 0x1234, level: 1 });
    r.line({ name: 'kvm_tlb_flush', vcpuId: 1, reason: 'remote' });
    expect(r.recent()).toEqual([
      'kvm_page_fault vcpuId=1 gpa=0x2000 errorCode=2',
      'kvm_mmu_spte_requested gfn=0x2 pfn=0x1234 level=1',
      'kvm_tlb_flush vcpuId=1 reason=remote',
    ]);
  });
});

describe('trace ring: TDP table events as numbers', () => {
  /** A VM's checker ring over table creation, zap-all teardown and refaults; `objects`: force event objects. */
  function ring(objects: boolean): string[] {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    const hva = kvm.host.mmap(64 * MiB, { backing: '4k' });
    const v = vm.createVcpu(0);
    const ch = new Checker(kvm, { traceDepth: 100_000 });
    ch.watch(vm);
    const tdp = (vm.mmu as X86Mmu).tdp;
    if (objects) {
      // a recorder without spPage composed after the checker's: the engine builds the objects for both
      const theirs = tdp.recorder!;
      const mine: TdpTraceRecorder = {
        spteChanged: (...a) => theirs.spteChanged(...a),
        sptesFrozen: (...a) => theirs.sptesFrozen(...a),
        event: (ev) => theirs.event(ev),
      };
      tdp.recorder = mine;
    }
    const slot = (size: number) =>
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: size, userspaceAddr: size ? hva : 0 });
    slot(64 * MiB);
    for (let round = 0; round < 2; round++) {
      ch.setStep(`touch ${round}`);
      for (let p = 0; p < 40; p++) ch.onAccess(v, p * 517 * 4096, 'write', v.access(p * 517 * 4096, 'write'));
      ch.setStep(`delete ${round}`);
      slot(0); // zap-all: every table of the root torn down
      slot(64 * MiB);
    }
    return ch.recentTrace();
  }

  it('prints kvm_mmu_get_page and kvm_mmu_prepare_zap_page as the event objects printed, in order', () => {
    const numeric = ring(false);
    const objects = ring(true);
    expect(numeric).toEqual(objects);
    const tables = numeric.filter((l) => /^kvm_mmu_(get_page|prepare_zap_page) /.test(l));
    // 40 touches over 64 MiB: 4K tables in 32 regions, a 2M and a 1G table, the root; twice, torn down
    expect(tables.length).toBeGreaterThan(100);
    expect(tables).toContain(
      'kvm_mmu_get_page created=true mmuValidGen=0 gfn=0x0 role=14209 rootCount=0 unsync=false',
    );
    expect(tables).toContain(
      'kvm_mmu_prepare_zap_page mmuValidGen=0 gfn=0x200 role=14209 rootCount=0 unsync=false',
    );
  });
});

describe('trace ring: formatted lines kept until the next entry', () => {
  type Op =
    | { k: 'line'; s: string }
    | { k: 'fault'; vcpu: number; gpa: number }
    | { k: 'spte'; gfn: number; lo: number }
    | { k: 'frozen'; gfn: number; count: number }
    | { k: 'access'; gpa: number }
    | { k: 'recent' };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ k: fc.constant('line' as const), s: fc.string({ maxLength: 6 }) }),
    fc.record({ k: fc.constant('fault' as const), vcpu: fc.nat(3), gpa: fc.nat(1 << 30) }),
    fc.record({ k: fc.constant('spte' as const), gfn: fc.nat(1 << 20), lo: fc.nat(0x7fffffff) }),
    fc.record({
      k: fc.constant('frozen' as const),
      gfn: fc.nat(1 << 20),
      count: fc.integer({ min: 1, max: 5 }),
    }),
    fc.record({ k: fc.constant('access' as const), gpa: fc.nat(1 << 30) }),
    fc.constant({ k: 'recent' as const }),
  );
  const apply = (r: TraceRing, o: Op): void => {
    if (o.k === 'line') r.line(o.s);
    else if (o.k === 'fault') r.pageFault(o.vcpu, o.gpa, 2);
    else if (o.k === 'spte') r.spteChanged(0, o.gfn, 1, o.lo, 0, 0, 0);
    else if (o.k === 'frozen') r.sptesFrozen(0, o.gfn, 1, o.count, 1, 0);
    else if (o.k === 'access') r.access(0, o.gpa, 'read', { exit: 'mmio', gpa: o.gpa, write: false });
  };

  it('recent() equals the lines of a ring that formats them for the first time (fast-check)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 8 }), fc.array(op, { maxLength: 40 }), (depth, ops) => {
        const warm = new TraceRing(depth);
        const done: Op[] = [];
        let last: string[] | null = null;
        for (const o of [...ops, { k: 'recent' } as Op]) {
          if (o.k !== 'recent') {
            apply(warm, o);
            done.push(o);
            continue;
          }
          const cold = new TraceRing(depth);
          for (const d of done) apply(cold, d);
          const got = warm.recent();
          expect(got).toEqual(cold.recent());
          // each caller gets its own array: changing one changes neither the ring nor the next answer
          expect(got).not.toBe(last);
          got.push('changed by the caller');
          expect(warm.recent()).toEqual(cold.recent());
          last = got;
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a violation found after a new entry carries it (the kept lines are not reused)', () => {
    const r = new TraceRing(4);
    r.line('a');
    expect(r.recent()).toEqual(['a']);
    expect(r.recent()).toEqual(['a']);
    r.pageFault(0, 0x3000, 2);
    expect(r.recent()).toEqual(['a', 'kvm_page_fault vcpuId=0 gpa=0x3000 errorCode=2']);
    for (const s of ['b', 'c', 'd']) r.line(s);
    expect(r.recent()).toEqual(['kvm_page_fault vcpuId=0 gpa=0x3000 errorCode=2', 'b', 'c', 'd']);
  });
});
