/**
 * Charts as standalone SVG files from Node: Vega-Lite compiles each spec to Vega, and a headless Vega
 * View (renderer 'none') serialises it with toSVG. Text widths are estimated (no canvas package), so
 * labels may sit a little differently from the browser's. Reads chart specs only.
 */
import { join } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { Chart } from './charts.ts';
import { makeOutputDir, writeOutputFile } from './output_files.ts';

/** One chart → SVG text. */
export async function chartToSvg(chart: Chart): Promise<string> {
  const view = new vega.View(vega.parse(compile(chart.spec as unknown as TopLevelSpec).spec), {
    renderer: 'none',
  });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes `<dir>/<chart id>.svg` for each chart; returns the paths written. */
export async function writeSvgs(charts: readonly Chart[], dir: string): Promise<string[]> {
  makeOutputDir('--svg', dir);
  const out: string[] = [];
  for (const c of charts) {
    const file = join(dir, `${c.id}.svg`);
    writeOutputFile('--svg', file, await chartToSvg(c));
    out.push(file);
  }
  return out;
}
