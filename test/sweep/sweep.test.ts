/**
 * The sweep engine (src/sweep/sweep.ts): a grid over memory-hotplug (scaled down) × every design, on
 * worker threads and in-thread, gives the same document (but for `run`), with exact counts per point.
 */
import { describe, expect, it } from 'vitest';
import { planSweep, runSweep, zaplabVersion } from '../../src/sweep/sweep.ts';
import { SWEEP_SCHEMA } from '../../src/sweep/schema.ts';
import { formatSweepCsv, formatSweep } from '../../src/report/sweep_text.ts';

const opts = { scenario: 'memory-hotplug', params: ['unplug=1..4*2', 'dimms=8', 'ramSet=16'] };

describe('sweep', () => {
  it('plans the product × designs and rejects bad points before running anything', () => {
    const plan = planSweep(opts);
    expect(plan.axes.map((a) => [a.name, a.values])).toEqual([
      ['unplug', [1, 2, 4]],
      ['dimms', [8]],
      ['ramSet', [16]],
    ]);
    expect(plan.tasks.length).toBe(3 * 5);
    expect(plan.tasks.slice(0, 5).map((t) => t.design)).toEqual([
      'quirk',
      'quirk-off',
      'vm-type',
      'slot-flag',
      'slot-flag+leafs',
    ]);
    expect(
      planSweep({ ...opts, designs: ['quirk', 'quirk-off'] }).tasks.map((t) => `${t.point}:${t.design}`),
    ).toEqual(['0:quirk', '0:quirk-off', '1:quirk', '1:quirk-off', '2:quirk', '2:quirk-off']);
    expect(() => planSweep({ ...opts, params: ['nosuch=1,2'] })).toThrow(
      /^-p nosuch=1: .*memory-hotplug\.yaml:\d+:\d+: params: unknown parameter 'nosuch' \(has: dimmSize, dimms, unplug, ramSet\)$/,
    );
    expect(() => planSweep({ ...opts, designs: ['nuke'] })).toThrow(
      '--design nuke: unknown design (quirk, quirk-off, vm-type, slot-flag, slot-flag+leafs)',
    );
    expect(() => planSweep({ ...opts, scenario: 'no-such' })).toThrow(
      /^no-such: no such scenario file or library name/,
    );
  });

  it('gives exact counts per point, identical on 2 worker threads and in-thread', async () => {
    const plan = planSweep(opts);
    const seen: number[] = [];
    const threaded = await runSweep(plan, { workers: 2, onResult: (done) => seen.push(done) });
    const inline = await runSweep(plan, { workers: 0 });
    expect(seen).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
    expect({ ...threaded, run: null }).toEqual({ ...inline, run: null });
    expect(threaded.run.workers).toBe(2);
    expect(threaded.schema).toBe(SWEEP_SCHEMA);
    expect(threaded.zaplab).toBe(zaplabVersion());
    expect(threaded.scenario.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(threaded.scenario.seed).toBe(7);
    expect(threaded.host.resolved['tdpMmu']).toBe(true);
    expect(threaded.failures).toEqual([]);
    const row = (u: number, d: string) =>
      threaded.points.find((p) => p.params['unplug'] === u && p.design === d)!;
    // zap-all: every unplug refaults the 16-page boot-RAM set; precise: one SPTE and one flush per unplug
    for (const u of [1, 2, 4]) {
      expect([row(u, 'quirk').refaults, row(u, 'quirk').remoteTlbFlushes]).toEqual([16 * u, 0]);
      expect([
        row(u, 'quirk-off').refaults,
        row(u, 'quirk-off').sptesZapped,
        row(u, 'quirk-off').remoteTlbFlushes,
        row(u, 'quirk-off').tlbFlushIpis,
      ]).toEqual([0, u, u, 4 * u]);
      expect(row(u, 'slot-flag+leafs').modelledNs).toBe(row(u, 'quirk-off').modelledNs);
    }
    expect(threaded.points.every((p) => p.verdict === 'ok')).toBe(true);
    expect(threaded.points.map((p) => p.point)).toEqual([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    const csv = formatSweepCsv(threaded).split('\n');
    expect(csv[0]).toBe(
      'unplug,dimms,ramSet,design,verdict,violations,sptes_zapped,refaults,remote_tlb_flush,tlb_flush_ipis,modelled_ns,error',
    );
    expect(csv[2]).toBe(`1,8,16,quirk-off,ok,0,1,0,1,4,${row(1, 'quirk-off').modelledNs},`);
    expect(formatSweep(threaded, { color: false })).toContain('memory-hotplug: 15 runs (dimms=8 ramSet=16)');
  });
});
