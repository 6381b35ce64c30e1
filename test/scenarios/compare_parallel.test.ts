/**
 * compare/check on worker threads (src/scenario/compare_parallel.ts) returns exactly the sequential
 * loop's RunResults, in design order: counts, modelled costs, verdicts, errors, and violations with their
 * trace tails. `runHere: false` puts every design on the workers, so the worker path itself is compared.
 */
import { describe, expect, it } from 'vitest';
import { loadScenario } from '../../src/scenario/library.ts';
import { compareScenario } from '../../src/scenario/runner.ts';
import { compareScenarioParallel, defaultCompareWorkers } from '../../src/scenario/compare_parallel.ts';
import { DesignWorkers, runnableNow } from '../../src/scenario/compare_workers.ts';
import { existsSync } from 'node:fs';
import { STEP_KINDS, type Scenario } from '../../src/scenario/schema.ts';
import { STEP_KIND_NAMES } from '../../src/scenario/step_kinds.ts';

const sc = (name: string, params: Record<string, string> = {}): Scenario => {
  const r = loadScenario(name, params);
  if (!r.ok) throw new Error(r.error);
  return r.scenario;
};

describe('compare on worker threads', () => {
  it('vsm-permission-split (scaled), all five designs on two workers: the sequential results', async () => {
    const s = sc('vsm-permission-split', { splits: '3', workingSet: '48' });
    const seq = await compareScenario(s, { audit: 'points' });
    const seen: string[] = [];
    const par = await compareScenarioParallel(s, {
      audit: 'points',
      workers: 2,
      runHere: false,
      onDesign: (_i, _n, id) => seen.push(id),
    });
    expect(par.runs.map((r) => r.design)).toEqual([
      'quirk',
      'quirk-off',
      'vm-type',
      'slot-flag',
      'slot-flag+leafs',
    ]);
    expect(par).toEqual(seq);
    expect(par.runs[0]!.totals['refaults']).toBe(3 * 48);
    expect(seen).toEqual([]); // no design ran on this thread
  }, 120_000);

  it('a bug reproducer under check: the same violations, messages and trace tails', async () => {
    const s = sc('test/scenarios/fixtures/bugs/precise-zap-no-flush.yaml');
    const seq = await compareScenario(s, { audit: 'steps' });
    const par = await compareScenarioParallel(s, { audit: 'steps', workers: 1 });
    expect(seq.runs.some((r) => r.verdict === 'violations' && r.violations[0]!.trace.length > 0)).toBe(true);
    expect(par).toEqual(seq);
    const all = await compareScenarioParallel(s, { audit: 'steps', workers: 1, runHere: false });
    expect(all).toEqual(seq);
  }, 120_000);

  it('tdx-boot (skipped designs too) and workers 0 run here, in order', async () => {
    const s = sc('tdx-boot');
    const seq = await compareScenario(s, { audit: 'points' });
    expect(seq.skipped.map((k) => k.id)).toEqual(['quirk-off', 'slot-flag']);
    expect(await compareScenarioParallel(s, { audit: 'points', workers: 1, runHere: false })).toEqual(seq);
    const ids: string[] = [];
    const here = await compareScenarioParallel(s, {
      audit: 'points',
      workers: 0,
      onDesign: (_i, _n, id) => ids.push(id),
    });
    expect(here).toEqual(seq);
    expect(ids).toEqual(['quirk', 'vm-type', 'slot-flag+leafs']);
  }, 120_000);

  it('threads started before the scenario is read (the CLI): the sequential results; extra threads ended', async () => {
    const early = new DesignWorkers(3);
    expect(early.size).toBe(3);
    const s = sc('tdx-boot');
    const seq = await compareScenario(s, { audit: 'steps' });
    // three designs, this thread runs too: two of the three threads are used, the third is ended
    const ids: string[] = [];
    const par = await compareScenarioParallel(s, {
      audit: 'steps',
      pool: early,
      onDesign: (_i, _n, id) => ids.push(id),
    });
    expect(early.size).toBe(2);
    expect(par).toEqual(seq);
    expect(ids.length).toBeLessThanOrEqual(3);
    // all on the early threads
    const all = new DesignWorkers(1);
    expect(await compareScenarioParallel(s, { audit: 'steps', pool: all, runHere: false })).toEqual(seq);
    // a trace runs here: the early threads are ended unused
    const unused = new DesignWorkers(1);
    const { TraceRecorder } = await import('../../src/report/chrome_trace.ts');
    const traced = await compareScenarioParallel(s, {
      audit: 'steps',
      pool: unused,
      trace: new TraceRecorder(),
    });
    expect(traced).toEqual(seq);
    expect(unused.size).toBe(0);
  }, 120_000);

  it('the default uses only cores the load average, or what runs now, leaves idle; never more workers than designs left', async () => {
    // (runnable null: /proc/loadavg unreadable, the load average alone decides)
    expect(defaultCompareWorkers(1, 2, 0, null)).toBe(0); // one design: nothing to share
    expect(defaultCompareWorkers(5, 2, 0.1, null)).toBe(1); // an idle 2-core machine: one worker
    expect(defaultCompareWorkers(5, 2, 0.6, null)).toBe(0); // the second core is partly busy
    expect(defaultCompareWorkers(5, 2, 4, null)).toBe(0); // a shared, loaded machine: one thread, as before
    expect(defaultCompareWorkers(5, 8, 1, null)).toBe(4); // at most one fewer than the designs
    expect(defaultCompareWorkers(3, 8, 5.2, null)).toBe(2);
    expect(defaultCompareWorkers(5, 8, 5.2, null)).toBe(2);
    // what runs now, this thread included: the average still shows a run that just ended
    expect(defaultCompareWorkers(5, 2, 1.1, 1)).toBe(1);
    expect(defaultCompareWorkers(5, 2, 1.1, 2)).toBe(0); // another task runs: no idle core
    expect(defaultCompareWorkers(5, 2, 4, 3)).toBe(0);
    expect(defaultCompareWorkers(5, 2, 3.4, 1)).toBe(0); // busy for a minute: a quiet moment says little
    expect(defaultCompareWorkers(5, 2, 1.5, 1)).toBe(0);
    expect(defaultCompareWorkers(5, 8, 6, 2)).toBe(4); // at most one fewer than the designs
    expect(defaultCompareWorkers(1, 2, 0, 1)).toBe(0);
    expect(defaultCompareWorkers(5, 2, 0.1, 5)).toBe(1); // a burst now: the average still counts
    const now = runnableNow();
    if (existsSync('/proc/loadavg'))
      expect(now).toBeGreaterThanOrEqual(1); // this thread runs
    else expect(now).toBeNull();
    await expect(compareScenarioParallel(sc('tdx-boot'), { workers: 0, runHere: false })).rejects.toThrow(
      /at least one worker/,
    );
  });

  it("the runner's step kinds (step_kinds.ts, loaded without zod) are the schema's, in order", () => {
    expect([...STEP_KIND_NAMES]).toEqual(STEP_KINDS);
  });
});
