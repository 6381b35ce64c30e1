/**
 * Checker verdicts through a sweep into the table and the charts: a historical bug switched back on
 * (precise-zap-no-flush) gives violations under the precise designs only, and the report marks exactly
 * those points (marker shape 'cross'), the table prints ✗ N with the invariant IDs.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planSweep, runSweep } from '../../src/sweep/sweep.ts';
import { readDoc } from '../../src/report/report_data.ts';
import { chartsFor } from '../../src/report/charts.ts';
import { formatSweep } from '../../src/report/sweep_text.ts';

const FIXTURE = new URL('../scenarios/fixtures/bugs/precise-zap-no-flush.yaml', import.meta.url).pathname;

describe('verdicts in sweeps', () => {
  it('violations are carried per point and marked on the charts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'zaplab-verdicts-'));
    const file = join(dir, 'bug.yaml');
    // the fixture with its BAR working set as a parameter, so there is something to sweep
    const text = readFileSync(FIXTURE, 'utf8')
      .replace('host: {', 'params: { touched: 64K }\nhost: {')
      .replace('length: 64K', 'length: $touched');
    writeFileSync(file, text);
    const r = await runSweep(
      planSweep({ scenario: file, params: ['touched=16K,64K'], designs: ['quirk', 'quirk-off'] }),
      { workers: 0 },
    );
    expect(r.points.map((p) => [p.params['touched'], p.design, p.verdict])).toEqual([
      [16384, 'quirk', 'ok'],
      [16384, 'quirk-off', 'violations'],
      [65536, 'quirk', 'ok'],
      [65536, 'quirk-off', 'violations'],
    ]);
    const bad = r.points.filter((p) => p.verdict === 'violations');
    for (const p of bad) expect(p.violations).toBeGreaterThan(0);
    const ids = [...new Set(bad.flatMap((p) => p.invariants))];
    expect(ids.length).toBeGreaterThan(0);
    const doc = readDoc(JSON.parse(JSON.stringify(r)), 'r.json');
    if (doc.kind === 'trace') throw new Error('read as trace');
    const chart = chartsFor(doc)[0]!;
    const values = (chart.spec['data'] as { values: { design: string; verdict: string }[] }).values;
    expect(values.map((v) => [v.design, v.verdict])).toEqual([
      ['quirk', 'ok'],
      ['quirk-off', 'violations'],
      ['quirk', 'ok'],
      ['quirk-off', 'violations'],
    ]);
    const pointsLayer = (
      chart.spec['layer'] as { encoding: { shape?: { scale: { domain: string[]; range: string[] } } } }[]
    )[1]!;
    const scale = pointsLayer.encoding.shape!.scale;
    expect(scale.range[scale.domain.indexOf('violations')]).toBe('cross');
    const table = formatSweep(r, { color: false });
    expect(table).toContain(`✗ ${bad[0]!.violations} ${bad[0]!.invariants.join(',')}`);
  });
});
