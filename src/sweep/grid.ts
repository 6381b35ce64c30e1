/**
 * Sweep grids: `-p name=values` specs parsed into value lists, and the grid as their product.
 * Model-only file (no kernel counterpart).
 *
 * A spec is a comma-separated list of items; an item is a value or a range:
 *   1G,4G,16G        values: integers, hex ("0x…"), sizes with a binary suffix (K M G T, optional "i"/"B"),
 *                    or, in lists only, words (`attached,none`) for string parameters
 *   1G..256G*2       a range with a factor: 1G, 2G, 4G, … up to 256G (inclusive when reached)
 *   8..256+8         a range with a step: 8, 16, 24, … 256
 *   1..4             a range with step 1
 * Items may be mixed (`1..4,16,64`); duplicates are dropped, first occurrence kept. Every error names
 * the flag and the spec, and says what was expected.
 */

export type ParamValue = number | string;

export interface ParamAxis {
  name: string;
  /** the spec as typed, for reports */
  spec: string;
  values: ParamValue[];
  /** each value as the scenario loader gets it: the typed text for list items ("1g" stays a word for a
   * string parameter, "1G" a size for a number), the decimal number for values a range generated */
  texts: string[];
  /** every value is a number (so the axis can be drawn on a numeric scale) */
  numeric: boolean;
}

export type GridPoint = Record<string, ParamValue>;

/** One axis may not have more values than this, nor the grid more points (a typo like 1..1T guards). */
export const MAX_AXIS_VALUES = 4096;
export const MAX_GRID_POINTS = 65536;

const SUFFIX: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

export class GridError extends Error {
  override name = 'GridError';
}

/** "64K" → 65536, "0x10" → 16, "12" → 12; null when the text is not a number of those forms. */
export function parseSize(text: string): number | null {
  let n: number;
  if (/^0x[0-9a-f_]+$/i.test(text)) n = parseInt(text.slice(2).replace(/_/g, ''), 16);
  else {
    const m = /^(\d+)(?:([KMGT])i?B?)?$/i.exec(text);
    if (!m) return null;
    n = Number(m[1]) * (m[2] ? SUFFIX[m[2].toUpperCase()]! : 1);
  }
  return Number.isSafeInteger(n) ? n : null;
}

const NAME = /^[A-Za-z_][\w-]*$/;
const WORD = /^[A-Za-z_][\w.-]*$/;

/** Parses one `-p name=values` argument. */
export function parseParamSpec(arg: string, flag = '-p'): ParamAxis {
  const eq = arg.indexOf('=');
  const name = eq < 0 ? '' : arg.slice(0, eq);
  const spec = eq < 0 ? '' : arg.slice(eq + 1);
  const fail = (what: string): never => {
    throw new GridError(`${flag} ${arg}: ${what}`);
  };
  if (eq < 0 || !NAME.test(name)) fail('expected name=values (e.g. unplug=1..256*2, ram=1G,4G,16G)');
  if (spec === '') fail('no values after "="');
  const values: ParamValue[] = [];
  const texts: string[] = [];
  const seen = new Set<ParamValue>();
  const add = (v: ParamValue, text = String(v)): void => {
    if (seen.has(v)) return;
    seen.add(v);
    values.push(v);
    texts.push(text);
    if (values.length > MAX_AXIS_VALUES) fail(`more than ${MAX_AXIS_VALUES} values`);
  };
  for (const item of spec.split(',')) {
    if (item.includes('..')) for (const v of expandRange(item, fail)) add(v);
    else {
      const n = parseSize(item);
      if (n !== null) add(n, item);
      else if (WORD.test(item)) add(item);
      else
        fail(
          `"${item}" is not a number, a size (64K, 2M, 1G), a range (1..8, 1G..64G*2, 8..256+8) or a word`,
        );
    }
  }
  return { name, spec, values, texts, numeric: values.every((v) => typeof v === 'number') };
}

/** `lo..hi`, `lo..hi+step`, `lo..hi*factor` → the values, lo first, none past hi. */
function expandRange(item: string, fail: (what: string) => never): number[] {
  const m = /^([^.]+)\.\.([^*+]+)(?:([*+])(.+))?$/.exec(item);
  if (!m) fail(`"${item}": expected a range lo..hi, lo..hi+step or lo..hi*factor`);
  const [, a, b, op, c] = m!;
  const num = (t: string, what: string): number => {
    const n = parseSize(t);
    if (n === null) fail(`"${item}": ${what} "${t}" is not a number or a size (64K, 2M, 1G)`);
    return n!;
  };
  const lo = num(a!, 'start');
  const hi = num(b!, 'end');
  if (lo > hi) fail(`"${item}": start ${lo} is past end ${hi}`);
  const out: number[] = [];
  if (op === '*') {
    const f = num(c!, 'factor');
    if (f < 2) fail(`"${item}": factor must be an integer ≥ 2`);
    if (lo === 0) fail(`"${item}": a factor range cannot start at 0`);
    for (let v = lo; v <= hi; v *= f) {
      out.push(v);
      if (out.length > MAX_AXIS_VALUES) fail(`more than ${MAX_AXIS_VALUES} values`);
    }
  } else {
    const s = op === '+' ? num(c!, 'step') : 1;
    if (s < 1) fail(`"${item}": step must be an integer ≥ 1`);
    if ((hi - lo) / s >= MAX_AXIS_VALUES) fail(`"${item}": more than ${MAX_AXIS_VALUES} values`);
    for (let v = lo; v <= hi; v += s) out.push(v);
  }
  return out;
}

/** The grid: the product of the axes, the first axis varying slowest (so tables read naturally). */
export function gridPoints(axes: readonly ParamAxis[]): GridPoint[] {
  const dup = axes.find((a, i) => axes.findIndex((b) => b.name === a.name) !== i);
  if (dup)
    throw new GridError(`-p ${dup.name}: given twice; put every value in one spec (${dup.name}=v1,v2,…)`);
  const size = axes.reduce((n, a) => n * a.values.length, 1);
  if (size > MAX_GRID_POINTS)
    throw new GridError(
      `-p: the grid has ${size} points (${axes.map((a) => a.values.length).join(' × ')}); at most ${MAX_GRID_POINTS}`,
    );
  let points: GridPoint[] = [{}];
  for (const a of axes) points = points.flatMap((p) => a.values.map((v) => ({ ...p, [a.name]: v })));
  return points;
}

/** A point's parameters as the scenario loader takes them: each value's text (see ParamAxis.texts). */
export function pointParams(axes: readonly ParamAxis[], p: GridPoint): Record<string, string> {
  return Object.fromEntries(
    axes
      .filter((a) => a.name in p)
      .map((a) => [a.name, a.texts[a.values.indexOf(p[a.name]!)] ?? String(p[a.name])]),
  );
}

/** Does the axis span at least two decades (so a chart should use a log scale)? */
export function spansDecades(values: readonly ParamValue[]): boolean {
  const ns = values.filter((v): v is number => typeof v === 'number' && v > 0);
  return ns.length >= 2 && Math.max(...ns) / Math.min(...ns) >= 100;
}
