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
import { stateHash } from '../../src/kvm/state_hash.ts';
import {
  attempt,
  build,
  dirtyLogs,
  fullAccess,
  hostArb,
  opArb,
  spyFastPath,
  step,
  type Op,
} from './access_workload.ts';

/** The fast path's answers over the whole run: hits and first-touch faults it made, and refusals. */
const seen = { hits: 0, faults: 0, linkFaults: 0, smmFaults: 0, refused: 0 };
afterAll(spyFastPath(seen));

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
    expect(seen.linkFaults).toBeGreaterThan(10);
    expect(seen.refused).toBeGreaterThan(100);
  });
});
