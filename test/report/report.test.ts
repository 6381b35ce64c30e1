/**
 * The report: documents recognised by shape with errors naming the file, the charts each document gets
 * (log axes over decades, identical designs merged into one series, "modelled" on every chart), SVG from
 * Node with one marker per point, and a sweep's JSON round-tripping through `zaplab report` (CLI e2e).
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDoc, ReportInputError } from '../../src/report/report_data.ts';
import { chartsFor, scaleFor, seriesLabels, timelineChart, MODELLED_NOTE } from '../../src/report/charts.ts';
import { chartToSvg } from '../../src/report/svg.ts';
import type { SweepResult } from '../../src/sweep/schema.ts';
import { compareScenario } from '../../src/scenario/runner.ts';
import { loadScenario } from '../../src/scenario/library.ts';
import { TraceRecorder } from '../../src/report/chrome_trace.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    encoding: 'utf8',
    cwd: ROOT,
  });
const symbols = (svg: string): number =>
  (svg.match(/<g class="mark-symbol role-mark[^>]*>(.*?)<\/g>/g) ?? []).reduce(
    (n, g) => n + (g.match(/<path /g) ?? []).length,
    0,
  );

function inputError(json: unknown): string {
  try {
    readDoc(json, 'r.json');
  } catch (e) {
    if (e instanceof ReportInputError) return e.message;
    throw e;
  }
  return 'no error';
}

describe('report inputs', () => {
  it('names the file and what was expected', () => {
    expect(inputError([1])).toBe(
      'r.json: expected a JSON object (sweep --json, compare --json, replay --json or a --trace file)',
    );
    expect(inputError({ a: 1 })).toBe(
      'r.json: not a zaplab result (expected "schema": "zaplab-sweep/1", a "runs" array or "traceEvents")',
    );
    expect(inputError({ schema: 'zaplab-sweep/9', points: [] })).toBe(
      'r.json: sweep schema zaplab-sweep/9 is not supported (this zaplab reads zaplab-sweep/1)',
    );
    expect(inputError({ runs: [{ design: 'quirk' }] })).toBe(
      'r.json: runs[0]: expected a run with design, totals and modelled (compare --json)',
    );
  });

  it('scales: log over two decades, symlog when zeros occur, linear otherwise', () => {
    expect(scaleFor([1, 2, 4, 256])).toBe('log');
    expect(scaleFor([0, 1, 300])).toBe('symlog');
    expect(scaleFor([3, 50, 200])).toBe('linear');
    expect(scaleFor([0, 0])).toBe('linear');
  });
});

describe('compare and trace charts', () => {
  it('a compare document gets per-design bars; a trace gets the per-vCPU timeline', async () => {
    const r = loadScenario('memory-hotplug', { dimms: '4', unplug: '2', ramSet: '8' });
    if (!r.ok) throw new Error(r.error);
    const trace = new TraceRecorder();
    const { runs, skipped } = await compareScenario(r.scenario, { trace });
    const doc = readDoc(JSON.parse(JSON.stringify({ scenario: 'memory-hotplug', runs, skipped })), 'c.json');
    if (doc.kind === 'trace') throw new Error('compare read as a trace');
    const charts = chartsFor(doc);
    expect(charts.map((c) => c.id)).toEqual([
      'modelled-by-design',
      'zapped-by-design',
      'refaults-by-design',
      'ipis-by-design',
    ]);
    expect(charts[1]!.expectedMarks).toBe(5);
    expect(charts[0]!.expectedMarks).toBe(runs.reduce((n, x) => n + x.modelled.rows.length, 0));
    const t = readDoc(JSON.parse(JSON.stringify(trace.toJSON())), 't.json');
    if (t.kind !== 'trace') throw new Error('trace not recognised');
    const tl = timelineChart(t);
    const lanes = new Set(
      (tl.spec['data'] as { values: { lane: string; kind: string; n: number }[] }).values.map((v) => v.lane),
    );
    expect([...lanes].sort()).toEqual([
      'quirk / guest',
      'quirk-off / guest',
      'slot-flag / guest',
      'slot-flag+leafs / guest',
      'vm-type / guest',
    ]);
    const faults = (tl.spec['data'] as { values: { lane: string; kind: string; n: number }[] }).values
      .filter((v) => v.lane === 'quirk / guest' && v.kind === 'fault')
      .reduce((n, v) => n + v.n, 0);
    expect(faults).toBe(runs[0]!.totals['vcpu.pf_fixed']);
    const svg = await chartToSvg(tl);
    expect(svg).toContain('modelled clock');
  });
});

describe('sweep JSON → zaplab report (CLI)', () => {
  it('round-trips: the report charts exactly the sweep points, as HTML and as SVG', () => {
    const dir = mkdtempSync(join(tmpdir(), 'zaplab-report-'));
    const s = cli(
      'sweep',
      'memory-hotplug',
      '-p',
      'ramSet=1..256*4',
      '-p',
      'dimms=4',
      '-p',
      'unplug=2',
      '--design',
      'quirk,quirk-off',
      '--workers',
      '2',
      '--json',
    );
    expect(s.stderr).toContain('sweep: 10 runs on 2 workers');
    // no TTY: one plain line per finished run, in completion order
    expect(
      s.stderr
        .split('\n')
        .filter((l) =>
          /^\[\d+\/10\] ramSet=\d+ dimms=4 unplug=2 quirk(-off)?: ok, [\d,]+ zapped, [\d,]+ refaults, .* modelled$/.test(
            l,
          ),
        ).length,
    ).toBe(10);
    expect(s.status).toBe(0);
    const json = join(dir, 'sweep.json');
    writeFileSync(json, s.stdout);
    const res = JSON.parse(s.stdout) as SweepResult;
    expect(res.points.length).toBe(10);
    const r = cli('report', json, '--html', join(dir, 'r.html'), '--svg', join(dir, 'svg'));
    expect(r.stderr).toBe(
      `report: ${join(dir, 'r.html')} (4 charts, self-contained)\n` +
        ['modelled', 'zapped', 'refaults', 'ipis']
          .map((m) => `svg: ${join(dir, 'svg', m + '-vs-ramSet.svg')}\n`)
          .join(''),
    );
    expect(r.status).toBe(0);
    const html = readFileSync(join(dir, 'r.html'), 'utf8');
    const specs = JSON.parse(
      /<script type="application\/json" id="zaplab-specs">(.*?)<\/script>/s.exec(html)![1]!,
    ) as {
      id: string;
      spec: {
        data: { values: Record<string, number | string>[] };
        encoding: { x: { scale: { type: string } } };
      };
    }[];
    const modelled = specs.find((c) => c.id === 'modelled-vs-ramSet')!;
    expect(modelled.spec.encoding.x.scale.type).toBe('log'); // 1..256 spans two decades
    const fromHtml = modelled.spec.data.values.map((v) => [
      v['ramSet'],
      v['design'],
      Math.round(Number(v['modelledMs']) * 1e6),
    ]);
    expect(fromHtml).toEqual(res.points.map((p) => [p.params['ramSet'], p.design, p.modelledNs]));
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=|https?:\/\/[^"']*\.(js|css)\b/); // nothing fetched
    expect(readdirSync(join(dir, 'svg')).sort()).toEqual([
      'ipis-vs-ramSet.svg',
      'modelled-vs-ramSet.svg',
      'refaults-vs-ramSet.svg',
      'zapped-vs-ramSet.svg',
    ]);
    const svg = readFileSync(join(dir, 'svg', 'refaults-vs-ramSet.svg'), 'utf8');
    expect(symbols(svg)).toBe(10);
    expect(svg).toContain('costs are modelled');
  });

  it('bad input exits 2 with one line naming the flag or the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'zaplab-report-'));
    writeFileSync(join(dir, 'x.json'), '{"hello": 1}');
    expect(cli('report', join(dir, 'x.json'))).toMatchObject({
      status: 2,
      stderr: 'report: nothing to write: give --html <file> and/or --svg <dir>\n',
    });
    expect(cli('report', join(dir, 'x.json'), '--html', join(dir, 'o.html'))).toMatchObject({
      status: 2,
      stderr: `${join(dir, 'x.json')}: not a zaplab result (expected "schema": "zaplab-sweep/1", a "runs" array or "traceEvents")\n`,
    });
    expect(cli('report', join(dir, 'none.json'), '--html', join(dir, 'o.html'))).toMatchObject({
      status: 2,
      stderr: `${join(dir, 'none.json')}: cannot read (ENOENT)\n`,
    });
    expect(cli('sweep', 'memory-hotplug', '-p', 'unplug=1..8*1')).toMatchObject({
      status: 2,
      stdout: '',
      stderr: '-p unplug=1..8*1: "1..8*1": factor must be an integer ≥ 2\n',
    });
    expect(cli('sweep', 'memory-hotplug', '-p', 'unplug=2', '--workers', 'many')).toMatchObject({
      status: 2,
      stderr: '--workers many: expected a non-negative integer\n',
    });
  });
});

describe('replay --json → report', () => {
  it('a replay document gets the per-design charts and observed vs modelled, one bar per side and count', () => {
    const r = cli('replay', 'test/recorded/replay/handmade-tdp', '--json');
    expect(r.status).toBe(0);
    const json = JSON.parse(r.stdout) as {
      runs: unknown[];
      replay: { observed: { rows: { what: string; observed: number; modelled: number }[] } };
    };
    const doc = readDoc(json, 'replay.json');
    if (doc.kind !== 'replay') throw new Error(`read as ${doc.kind}`);
    const charts = chartsFor(doc);
    expect(charts.map((c) => c.id)).toEqual([
      'modelled-by-design',
      'zapped-by-design',
      'refaults-by-design',
      'ipis-by-design',
      'observed-vs-modelled',
    ]);
    const obs = charts[4]!;
    const rows = json.replay.observed.rows;
    expect(obs.expectedMarks).toBe(2 * rows.length);
    const values = (obs.spec['data'] as { values: { what: string; source: string; count: number }[] }).values;
    expect(values.filter((v) => v.source.startsWith('observed')).map((v) => [v.what, v.count])).toEqual(
      rows.map((x) => [x.what, x.observed]),
    );
    expect(values.filter((v) => v.source.startsWith('modelled')).map((v) => [v.what, v.count])).toEqual(
      rows.map((x) => [x.what, x.modelled]),
    );
    expect(charts[1]!.expectedMarks).toBe(json.runs.length);
  });
});

describe('size axes', () => {
  it('ticks sit at the swept values and sizes read as 1G … 1T in the rendered SVG', async () => {
    const G = 2 ** 30;
    const values = [G, 4 * G, 16 * G, 64 * G, 256 * G, 1024 * G];
    const points = values.map((v, i) => ({
      point: i,
      params: { touched: v },
      design: 'quirk',
      verdict: 'ok',
      violations: 0,
      modelledNs: 1e6 * (i + 1),
      sptesZapped: i,
      refaults: i,
      tlbFlushIpis: 0,
    }));
    const doc = {
      kind: 'sweep',
      scenario: 'x',
      axes: [{ name: 'touched', spec: '1G..1T*4', values, texts: [], numeric: true }],
      points,
      costRows: [],
      costs: {},
      meta: [],
    };
    const chart = chartsFor(doc as unknown as Parameters<typeof chartsFor>[0])[0]!;
    const svg = await chartToSvg(chart);
    const labels = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
    for (const l of ['1G', '4G', '16G', '64G', '256G', '1T']) expect(labels).toContain(l);
    expect(labels.filter((l) => /\d,\d{3},\d{3}/.test(l!))).toEqual([]); // no byte counts as tick labels
  });
});

describe('series', () => {
  it('designs with identical results share one series', () => {
    const p = (point: number, design: string, modelledNs: number) =>
      ({
        point,
        design,
        modelledNs,
        sptesZapped: 1,
        refaults: 0,
        tlbFlushIpis: 0,
        verdict: 'ok',
        violations: 0,
      }) as SweepResult['points'][number];
    const m = seriesLabels([
      p(0, 'quirk', 5),
      p(0, 'vm-type', 5),
      p(0, 'quirk-off', 3),
      p(1, 'quirk', 9),
      p(1, 'vm-type', 9),
      p(1, 'quirk-off', 4),
    ]);
    expect([...m.entries()]).toEqual([
      ['quirk', 'quirk = vm-type'],
      ['vm-type', 'quirk = vm-type'],
      ['quirk-off', 'quirk-off'],
    ]);
    expect(MODELLED_NOTE).toBe(
      'costs are modelled (counts × per-event costs, sources in docs/cost-model.md), not measured',
    );
  });
});
