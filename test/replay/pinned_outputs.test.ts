/**
 * The trace readers' complete outputs pinned: events (keys in order, values, plain objects), the whole
 * report (malformed messages, unknown and missing-field counts, notes) and the strict-mode error of every
 * reader on every recorded fixture, and on a seeded corpus of mutated fixture lines (inserted, deleted and
 * replaced characters, long hex runs past 2^53). The digests were computed with the readers of commit
 * cd0eb90 (before the #14 fast paths: name dispatch by length, keys by length, the QEMU present-slot map
 * holding the event itself), so any change of output or error text fails here.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { readFtrace } from '../../src/replay/ftrace.ts';
import { readStrace } from '../../src/replay/strace.ts';
import { readQemuTrace } from '../../src/replay/qemu_trace.ts';
import type { Parsed, ReadOptions } from '../../src/replay/events.ts';

type Reader = (text: string, file: string, opts?: ReadOptions) => Parsed;
const READERS: [string, Reader][] = [
  ['ftrace', readFtrace as Reader],
  ['strace', readStrace],
  ['qemu', readQemuTrace],
];
const DIR = join(import.meta.dirname, '../recorded/replay');

function fixtures(): { name: string; text: string }[] {
  const out: { name: string; text: string }[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (!p.endsWith('.json') && !p.endsWith('.md'))
        out.push({
          name: p.slice(DIR.length + 1),
          text: p.endsWith('.gz') ? gunzipSync(readFileSync(p)).toString('utf8') : readFileSync(p, 'utf8'),
        });
    }
  };
  walk(DIR);
  return out;
}

/** One reader's whole answer as text (NaN/undefined spelled out, prototypes checked). */
function answer(read: Reader, text: string, opts: ReadOptions): string {
  try {
    const r = read(text, 'x', opts);
    const ev = r.events.map((e) => [Object.keys(e), e, Object.getPrototypeOf(e) === Object.prototype]);
    return JSON.stringify({ ev, rep: r.report, keys: Object.keys(r.report.unknown) }, (_, v: unknown) =>
      typeof v === 'number' && !Number.isFinite(v) ? `#${v}` : v === undefined ? '#undef' : v,
    );
  } catch (e) {
    return `THROW ${(e as Error).constructor.name} ${(e as Error).message}`;
  }
}

/** Seeded mutations of fixture lines (an LCG: the same corpus on every run). */
function mutated(lines: string[], count: number): string[] {
  let x = 987654321;
  const rnd = (n: number): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0), x % n);
  const alphabet = ' 0123456789abcdefxX-_:.()[]=,{}\n\t#lgqnewspfrF\u00a0';
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let l = lines[rnd(lines.length)]!;
    for (let j = 0, k = 1 + rnd(4); j < k; j++) {
      const p = rnd(l.length + 1);
      const op = rnd(3);
      const c = alphabet[rnd(alphabet.length)]!;
      l =
        op === 0
          ? l.slice(0, p) + c + l.slice(p)
          : op === 1
            ? l.slice(0, p) + l.slice(p + 1)
            : l.slice(0, p) + c + l.slice(p + 1);
    }
    if (rnd(5) === 0) {
      const p = rnd(l.length + 1);
      l = l.slice(0, p) + 'ffffffffffffffffff'.slice(rnd(18)) + l.slice(p);
    }
    out.push(l);
  }
  return out;
}

function digests(): Record<string, string> {
  const fx = fixtures();
  const out: Record<string, string> = {};
  const PIDS = new Set([1000, 1001, 4242]);
  for (const [name, read] of READERS) {
    const h = createHash('sha256');
    for (const f of fx)
      for (const o of [{}, { strict: true }, { pids: PIDS }])
        h.update(`${f.name}\n${answer(read, f.text, o)}\n`);
    out[`${name} fixtures`] = h.digest('hex');
    const lines = fx.flatMap((f) => f.text.split('\n')).filter((l) => l.length > 0);
    const mut = mutated(lines, 6000);
    const m = createHash('sha256');
    m.update(answer(read, mut.join('\n'), {}));
    for (let i = 0; i < mut.length; i += 3) m.update(`${answer(read, mut[i]!, { strict: true })}\n`);
    out[`${name} mutated`] = m.digest('hex');
  }
  return out;
}

const PINNED: Record<string, string> = {
  'ftrace fixtures': '6194f53407acd0010424e8f95fdf8dfd6984edbd11aa89421a6d1247d2da4ac1',
  'ftrace mutated': 'd71578d226eb3dc263f42c097fb9898121eb3bd40fa25ac1a702fd286792fe15',
  'strace fixtures': '634d6fb0ad2291449d3163fdddc1cd22b1a1cff456d5d7df9dc74b1f9ea54756',
  'strace mutated': 'e336113736328f1e1b7681c2b5f048d2532505e1dc1d467bf3e62bab561a9e60',
  'qemu fixtures': '6be8435cf9a8815891d8367c3dacb71e6abc18c111a1cd87b773458b31d702fa',
  'qemu mutated': '1c84fb2813322b3c88b07190449ab0d94e78b4a4537af274111624cb2876e325',
};

describe('trace readers: outputs pinned', () => {
  it('every reader gives the same events, reports and errors as before the #14 fast paths', () => {
    expect(digests()).toEqual(PINNED);
  }, 60_000);
});
