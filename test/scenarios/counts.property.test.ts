/**
 * The runner's counts (src/scenario/counts.ts) are what the plain reading gives: `{...derived}` plus each
 * stat added under its name (a vCPU's as `vcpu.<name>`, a TD's as `tdx.<name>`), and the change from one
 * reading to the next as the nonzero differences in the later reading's order. Generated runs change
 * values, add derived counters along the way, change the stats' names and order between readings, and
 * give a derived counter the name of a stat.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CountsReader, diffCounts, type Counts } from '../../src/scenario/counts.ts';
import type { Vm } from '../../src/kvm/kvm_main.ts';
import type { Vcpu } from '../../src/kvm/vcpu.ts';

interface FakeVm {
  model: Counts;
  stats: Counts;
  tdx: Counts | null;
  vcpus: Counts[];
}

function plain(vms: FakeVm[], derived: Counts): Counts {
  const out: Counts = { ...derived };
  const add = (k: string, v: number): void => {
    out[k] = (out[k] ?? 0) + v;
  };
  for (const c of vms) {
    for (const [k, v] of Object.entries(c.model)) add(k, v);
    for (const [k, v] of Object.entries(c.stats)) add(k, v);
    if (c.tdx) for (const [k, v] of Object.entries(c.tdx)) add(`tdx.${k}`, v);
    for (const vc of c.vcpus) for (const [k, v] of Object.entries(vc)) add(`vcpu.${k}`, v);
  }
  return out;
}

/** The shape the reader reads, through the same public calls the runner makes. */
const asCtx = (vms: FakeVm[]): { vm: Vm; vcpus: Vcpu[] }[] =>
  vms.map((c) => ({
    vm: {
      getModelStats: () => ({ ...c.model }),
      getStats: () => ({ ...c.stats }),
      arch: c.tdx ? { tdx: { stats: () => ({ ...c.tdx }) } } : {},
    } as unknown as Vm,
    vcpus: c.vcpus.map((s) => ({ getStats: () => ({ ...s }) }) as unknown as Vcpu),
  }));

const NAMES = ['pf_fixed', 'exits', 'zaps', 'accesses', 'seamcall', 'pages', 'flush'];
const counts = fc.dictionary(fc.constantFrom(...NAMES), fc.integer({ min: 0, max: 5 }), { maxKeys: 5 });
const vmArb = fc.record({
  model: counts,
  stats: counts,
  tdx: fc.option(counts, { nil: null }),
  vcpus: fc.array(counts, { minLength: 1, maxLength: 3 }),
});

describe('CountsReader', () => {
  it('reads and diffs as the plain reading does', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.array(vmArb, { minLength: 1, maxLength: 2 }), counts), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.boolean(),
        (readings, repeat) => {
          const r = new CountsReader();
          let prevSample = null;
          let prevPlain: Counts = {};
          // a run mostly repeats the same names in the same order: read each state twice when asked
          for (const [vms, derived] of readings)
            for (let k = 0; k < (repeat ? 2 : 1); k++) {
              const s = r.read(asCtx(vms), derived);
              const p = plain(vms, derived);
              expect(JSON.stringify(r.counts(s))).toBe(JSON.stringify(p));
              expect(JSON.stringify(r.diff(prevSample, s))).toBe(JSON.stringify(diffCounts(prevPlain, p)));
              prevSample = s;
              prevPlain = p;
            }
        },
      ),
      { numRuns: 400 },
    );
  });
});
