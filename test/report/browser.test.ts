/**
 * The HTML report in a real browser: Debian's chromium driven by playwright-core (no browser download).
 * The page must load with no console error and no network request, every chart must draw exactly the
 * marks its data calls for (counted in the Vega scenegraph and in the SVG DOM), and a screenshot is
 * written to test-artifacts/ (gitignored). Without /usr/bin/chromium the suite says so and skips.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { planSweep, runSweep } from '../../src/sweep/sweep.ts';
import { readDoc } from '../../src/report/report_data.ts';
import { buildReport } from '../../src/report/build.ts';
import { renderHtml } from '../../src/report/html.ts';
import { compareScenario } from '../../src/scenario/runner.ts';
import { loadScenario } from '../../src/scenario/library.ts';
import { TraceRecorder } from '../../src/report/chrome_trace.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url).pathname;
const have = existsSync(CHROMIUM);
if (!have) console.warn(`report browser test skipped: ${CHROMIUM} not found (apt-get install -y chromium)`);

interface Loaded {
  charts: { id: string; marks: number; expected: number }[];
  domMarks: Record<string, number>;
  errors: string[];
  requests: string[];
}

let browser: Browser;

async function load(html: string, shot: string): Promise<Loaded> {
  const dir = mkdtempSync(join(tmpdir(), 'zaplab-html-'));
  const file = join(dir, 'report.html');
  writeFileSync(file, html);
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors: string[] = [];
  const requests: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') errors.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(pathToFileURL(file).href);
  // page-side code as strings: this project's tsconfig has no DOM types
  const charts = (await page.evaluate('window.zaplabReport.ready')) as Loaded['charts'];
  const domMarks = (await page.evaluate(
    `Object.fromEntries([...document.querySelectorAll('figure')].map((f) => [f.id.slice(4), f.querySelectorAll('g.mark-symbol.role-mark > path, g.mark-rect.role-mark > path').length]))`,
  )) as Record<string, number>;
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, shot), fullPage: true });
  await page.close();
  return { charts, domMarks, errors, requests: requests.filter((u) => u !== pathToFileURL(file).href) };
}

describe.skipIf(!have)('HTML report in headless Chromium', () => {
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  });
  afterAll(async () => {
    await browser?.close();
  });

  it(
    'a sweep report loads offline, with every chart drawing one marker per point',
    { timeout: 240_000 },
    async () => {
      const res = await runSweep(
        planSweep({ scenario: 'memory-hotplug', params: ['unplug=1..64*4', 'dimms=64', 'ramSet=4'] }),
        { workers: 2 },
      );
      const built = buildReport([readDoc(JSON.parse(JSON.stringify(res)), 'sweep.json')]);
      const got = await load(renderHtml(built), 'sweep-report.png');
      expect(got.errors).toEqual([]);
      expect(got.requests).toEqual([]);
      // 4 points; quirk = vm-type = slot-flag and quirk-off = slot-flag+leafs agree everywhere: 2 series
      expect(got.charts).toEqual(
        ['modelled', 'zapped', 'refaults', 'ipis'].map((m) => ({
          id: `${m}-vs-unplug`,
          marks: 8,
          expected: 8,
        })),
      );
      expect(got.domMarks).toEqual(Object.fromEntries(got.charts.map((c) => [c.id, 8])));
      expect(statSync(join(ARTIFACTS, 'sweep-report.png')).size).toBeGreaterThan(20_000);
    },
  );

  it('a compare report with a trace draws the per-design bars and the per-vCPU timeline', async () => {
    const r = loadScenario('memory-hotplug', { dimms: '4', unplug: '2', ramSet: '8' });
    if (!r.ok) throw new Error(r.error);
    const trace = new TraceRecorder();
    const { runs, skipped } = await compareScenario(r.scenario, { trace });
    const built = buildReport([
      readDoc(JSON.parse(JSON.stringify({ scenario: 'memory-hotplug', runs, skipped })), 'c.json'),
      readDoc(JSON.parse(JSON.stringify(trace.toJSON())), 't.json'),
    ]);
    const got = await load(renderHtml(built), 'compare-report.png');
    expect(got.errors).toEqual([]);
    expect(got.requests).toEqual([]);
    expect(got.charts.map((c) => c.id)).toEqual([
      'modelled-by-design',
      'zapped-by-design',
      'refaults-by-design',
      'ipis-by-design',
      'timeline-0',
    ]);
    for (const c of got.charts) {
      expect(c.marks, c.id).toBe(c.expected);
      expect(c.marks, c.id).toBeGreaterThan(0);
      expect(got.domMarks[c.id], c.id).toBe(c.expected);
    }
    expect(got.charts[1]!.marks).toBe(5); // one bar per design
  });
});
