/**
 * The CLI bundle's code cache loader (src/cli/code_cache.ts) on a small bundle of its own: a cache made for
 * the source is used and gives the source's results; one made for another source of the same length (which
 * V8 alone accepts, running the other source's bytecode), a damaged one, one from another Node, or none,
 * is left unused and the source compiles as without a cache, with the same results. Each load runs in a
 * fresh process (V8 keeps the scripts a process compiled and would answer from those, cache or not).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDigest, defaultCacheFile } from '../../src/cli/code_cache.ts';

const loader = fileURLToPath(new URL('../../src/cli/code_cache.ts', import.meta.url));

// Bundles of the same length whose functions answer differently: work(10) is 24 + answer.
// cli() also imports a module outside the bundle as the CLI bundle does (scripts/bundle_cli.mjs's banner):
// through the loader's import function (V8 drops a cached script's own import() options), or its own.
const bundle = (answer: number): string => `"use strict";
const __zaplabImportFn = typeof __zaplabImport === 'function' ? __zaplabImport : (s) => import(s);
function work(n) { let s = 0; for (let i = 0; i < n; i++) s += i % 7; return s + ${answer}; }
exports.cli = async () => work(10) + (await __zaplabImportFn('node:path')).sep.length - 1;
exports.worker = async () => work(20);
exports.train = async () => { work(100); };
`;

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'zaplab-code-cache-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, text: string): string => {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
};

/** In a new process: load `bundle` (with `cacheFile`, or none), print how and what cli() answers. */
function load(bundleFile: string, cacheFile: string | null, via: 'vm' | 'require' = 'vm'): string {
  const code = `import(${JSON.stringify(loader)}).then(async (m) => {
  const l = m.loadBundle(${JSON.stringify(bundleFile)}, { cacheFile: ${JSON.stringify(cacheFile)}, via: '${via}' });
  console.log(l.cache, await l.exports.cli(), await l.exports.worker());
});`;
  return execFileSync(process.execPath, ['--import', 'tsx', '-e', code], { encoding: 'utf8' }).trim();
}

/** In a new process: the cache for `bundleFile` as the build makes it (loaded without one, trained, saved). */
function makeCache(bundleFile: string, cacheFile: string): Buffer {
  const code = `import(${JSON.stringify(loader)}).then(async (m) => {
  const l = m.loadBundle(${JSON.stringify(bundleFile)}, { cacheFile: null, via: 'vm' });
  await l.exports.train([]);
  m.writeCodeCache(l, ${JSON.stringify(cacheFile)});
});`;
  execFileSync(process.execPath, ['--import', 'tsx', '-e', code]);
  return readFileSync(cacheFile);
}

const splitCache = (b: Buffer): [string, Buffer] => {
  const nl = b.indexOf(10);
  return [b.subarray(0, nl).toString('latin1'), b.subarray(nl + 1)];
};

describe('loadBundle with a code cache', () => {
  it('uses a cache made for the source; the results are the source’s', () => {
    const a = file('a.cjs', bundle(41));
    makeCache(a, join(dir, 'a.cache'));
    expect(load(a, join(dir, 'a.cache'))).toBe('used 65 98');
    expect(load(a, null)).toBe('off 65 98');
    expect(load(a, join(dir, 'none.cache'))).toBe('missing 65 98');
  });

  it('leaves unused a cache made for another source of the same length (V8 alone would run it)', () => {
    const a = file('a2.cjs', bundle(41));
    const b = file('b2.cjs', bundle(42));
    expect(readFileSync(a).length).toBe(readFileSync(b).length);
    const cache = makeCache(a, join(dir, 'a2.cache'));
    // What the check guards against: A's bytecode under B's header-less check. V8 takes it and answers A's.
    const [, data] = splitCache(cache);
    const v8Only = `const vm = require('node:vm'), fs = require('node:fs');
const src = fs.readFileSync(${JSON.stringify(b)}, 'utf8');
const s = new vm.Script('(function (exports, require, module, __filename, __dirname, __zaplabImport) { ' + src + '\\n});', { cachedData: fs.readFileSync(${JSON.stringify(join(dir, 'a2.data'))}) });
const m = { exports: {} }; s.runInThisContext()(m.exports, require, m, '', '');
m.exports.worker().then((v) => console.log(s.cachedDataRejected, v));`;
    writeFileSync(join(dir, 'a2.data'), data);
    expect(execFileSync(process.execPath, ['-e', v8Only], { encoding: 'utf8' }).trim()).toBe('false 98'); // A's answer (worker(): 57 + 41)
    // The loader: the cache is not B's, so B compiles from its own source.
    expect(load(b, join(dir, 'a2.cache'))).toBe('stale 66 99');
  });

  it('leaves unused a damaged cache or one from another Node', () => {
    const a = file('a3.cjs', bundle(41));
    const good = makeCache(a, join(dir, 'a3.cache'));
    const [header, data] = splitCache(good);
    const flipped = Buffer.from(data);
    flipped[data.length >> 1]! ^= 0x40;
    const line = (h: string, d: Buffer): Buffer => Buffer.concat([Buffer.from(h + '\n', 'latin1'), d]);
    const cases: [string, Buffer][] = [
      ['a flipped bit in the bytecode', line(header, flipped)],
      ['truncated bytecode', good.subarray(0, good.length - 16)],
      ['only the header', line(header, Buffer.alloc(0))],
      ['no header line', data],
      ['a header that is not JSON', line('{"zaplab', data)],
      ['another Node', line(header.replace(process.version, 'v0.0.1'), data)],
      ['another format', line(header.replace('"zaplabCodeCache":1', '"zaplabCodeCache":2'), data)],
      ['empty', Buffer.alloc(0)],
    ];
    for (const [why, bytes] of cases) {
      writeFileSync(join(dir, 'damaged.cache'), bytes);
      expect(load(a, join(dir, 'damaged.cache')), why).toBe('stale 65 98');
    }
  });

  it('reports a cache V8 itself rejects (the file checks pass, the bytecode is for a longer source)', () => {
    const c = file('c.cjs', bundle(43));
    const longer = file('longer.cjs', bundle(41) + '// longer\n');
    const [lHeader, lData] = splitCache(makeCache(longer, join(dir, 'longer.cache')));
    const source = cacheDigest(readFileSync(c));
    const forged = lHeader.replace(/"source":"[^"]*"/, `"source":"${source}"`);
    expect(forged).not.toBe(lHeader);
    writeFileSync(join(dir, 'forged.cache'), Buffer.concat([Buffer.from(forged + '\n'), lData]));
    expect(load(c, join(dir, 'forged.cache'))).toBe('rejected 67 100');
  });

  it('loads through require() (the path on Node ≥ 22.1, and where vm cannot import())', () => {
    const b = file('b5.cjs', bundle(42));
    expect(load(b, null, 'require')).toBe('require 66 99');
  });

  it('ZAPLAB_CODE_CACHE picks the cache file: off, a path, or the bundle’s own', () => {
    const saved = process.env['ZAPLAB_CODE_CACHE'];
    try {
      process.env['ZAPLAB_CODE_CACHE'] = 'off';
      expect(defaultCacheFile('/x/zaplab.cjs')).toBe(null);
      process.env['ZAPLAB_CODE_CACHE'] = '/tmp/other.cache';
      expect(defaultCacheFile('/x/zaplab.cjs')).toBe('/tmp/other.cache');
      delete process.env['ZAPLAB_CODE_CACHE'];
      expect(defaultCacheFile('/x/zaplab.cjs')).toBe('/x/zaplab.cjs.cache');
    } finally {
      if (saved === undefined) delete process.env['ZAPLAB_CODE_CACHE'];
      else process.env['ZAPLAB_CODE_CACHE'] = saved;
    }
  });
});
