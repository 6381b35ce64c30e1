/**
 * Loads the CLI bundle (dist/bin/zaplab.cjs: the CLI and the model in one CommonJS file, made by
 * scripts/bundle_cli.mjs) with a V8 code cache, so a process does not parse and compile the code again that
 * every compare runs. Node 20 has no compile cache for modules (module.enableCompileCache is Node ≥ 22.1);
 * a script compiled through vm.Script takes `cachedData`, the bytecode V8 made for the same source before:
 * the build runs a few compares with the bundle and saves the bytecode of every function they compiled
 * (scripts/code_cache.mjs → dist/bin/zaplab.cjs.cache). The main thread and the compare worker threads
 * load the same bundle with the same cache.
 *
 * V8 checks a cache against its own version and flags and the source's length only: a cache made for
 * another bundle of the same length would be accepted and run that bundle's bytecode, and V8 verifies no
 * checksum of the data (only under --verify-snapshot-checksum, which also makes Node's own builtins
 * compile from source: measured twice as slow to load). So the cache file carries the CRC-32 of the source
 * it was made for and of its own data (zlib.crc32: ~1 ms for both; node:crypto alone takes ~7 ms to load),
 * and is used only when both match; anything else (made for another build, truncated, corrupt,
 * unreadable, another Node) is left unused, silently, and the bundle compiles as it would without a
 * cache. V8 may still reject a cache whose checks pass (other V8 flags): it then compiles from source.
 *
 * One trace of the build stays: V8 names a script compiled from a cache by the file name it was made under
 * (stack traces and coverage show the build's dist/bin/zaplab.cjs path, not the installed one).
 *
 * Where Node has module.enableCompileCache (≥ 22.1) the bundle is required with Node's own compile
 * cache instead (kept under the OS temp dir, refreshed by Node itself). ZAPLAB_CODE_CACHE=off loads it
 * without a cache; ZAPLAB_CODE_CACHE=<file> reads the cache from that file (tests, timing). Model-only file
 * (no model code: Node's modules only).
 */
import * as zlib from 'node:zlib';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as nodeModule from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

/** What the bundle's entry module exports (scripts/cli_bundle_entry.mjs). */
export interface CliBundle {
  /** run the CLI on process.argv */
  cli(): Promise<unknown>;
  /** be a compare worker thread (scenario/compare_worker.ts) */
  worker(): Promise<unknown>;
  /** compile the code a compare runs: each [library scenario, params] compared in this thread */
  train(runs: [string, Record<string, string>][]): Promise<void>;
}

/**
 * How the bundle was compiled: with the cache ('used'), with the cache rejected by V8 ('rejected'), the
 * cache file not for this source or damaged ('stale'), no cache file ('missing'), the cache switched
 * off ('off'), or loaded by require() ('node-cache': Node's compile cache; 'require': none).
 */
export type CacheUse = 'used' | 'rejected' | 'stale' | 'missing' | 'off' | 'node-cache' | 'require';

export interface LoadedBundle {
  exports: CliBundle;
  cache: CacheUse;
  /** the compiled script (vm path only): its createCachedData() is what writeCodeCache saves */
  script?: vm.Script;
  /** the source's digest (vm path only) */
  sourceHash?: string;
}

export interface LoadOptions {
  /** the cache file; default: ZAPLAB_CODE_CACHE, else the bundle's path + '.cache'; null: no cache */
  cacheFile?: string | null;
  /** 'require': load through Node's module loader (as on Node ≥ 22.1), for tests on any Node */
  via?: 'vm' | 'require';
}

/** First line of a cache file: a JSON header naming the hashes; the rest is V8's cached data. */
interface CacheHeader {
  zaplabCodeCache: 1;
  source: string;
  data: string;
  node: string;
}

/**
 * The digest a cache file records: CRC-32 (zlib.crc32, Node ≥ 20.15), else SHA-256. Not a defence
 * against someone forging a cache, which needs write access to dist/ anyway: a check that the file was
 * made for this source and arrived whole.
 */
export const cacheDigest = (b: Buffer): string =>
  typeof zlib.crc32 === 'function'
    ? `crc32:${zlib.crc32(b).toString(16)}`
    : `sha256:${(nodeModule.createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto')).createHash('sha256').update(b).digest('hex')}`;

/** The default cache file of `bundle` (ZAPLAB_CODE_CACHE: 'off' = none, another value = that file). */
export function defaultCacheFile(bundle: string): string | null {
  const env = process.env['ZAPLAB_CODE_CACHE'];
  if (env === 'off') return null;
  return env !== undefined && env !== '' ? env : `${bundle}.cache`;
}

/** The cached data in `file` if it was made for `sourceHash` and is whole; 'missing' or 'stale' if not. */
function readCache(file: string, sourceHash: string): Buffer | 'missing' | 'stale' {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch {
    return 'missing';
  }
  const nl = buf.indexOf(10);
  if (nl < 0 || nl > 1024) return 'stale';
  let h: Partial<CacheHeader>;
  try {
    h = JSON.parse(buf.subarray(0, nl).toString('latin1')) as Partial<CacheHeader>;
  } catch {
    return 'stale';
  }
  if (h.zaplabCodeCache !== 1 || h.node !== process.version || h.source !== sourceHash) return 'stale';
  const data = buf.subarray(nl + 1);
  return data.length > 0 && cacheDigest(data) === h.data ? data : 'stale';
}

/**
 * Node's CommonJS wrapper around the bundle, run in this context (the cached data is for this text), and
 * one more parameter: the bundle's import() of files outside it (scripts/bundle_cli.mjs). V8 drops a
 * script's dynamic-import options when its functions come from a code cache, so the bundle's own import()
 * would fail there (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING); this module's import() is Node's.
 */
const wrap = (src: string): string =>
  `(function (exports, require, module, __filename, __dirname, __zaplabImport) { ${src.replace(/^#!.*/, '')}\n});`;
const importHere = (specifier: string): Promise<unknown> => import(specifier);

function requireBundle(file: string, withNodeCache: boolean): LoadedBundle {
  const enable = (nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache;
  if (withNodeCache && enable !== undefined) enable();
  const exports = nodeModule.createRequire(import.meta.url)(file) as CliBundle;
  return { exports, cache: withNodeCache && enable !== undefined ? 'node-cache' : 'require' };
}

/** Compile and run the bundle (a file path or file: URL) and return its exports, using the code cache. */
export function loadBundle(bundle: string | URL, opts: LoadOptions = {}): LoadedBundle {
  const file = typeof bundle === 'string' ? bundle : fileURLToPath(bundle);
  if (opts.via === 'require' || (opts.via === undefined && 'enableCompileCache' in nodeModule))
    return requireBundle(file, opts.via === undefined);
  // (decoded as UTF-8: a Latin-1 string of the same ASCII bytes made V8's compile with the cache ~15%
  // dearer in instructions, and it is what Node's CommonJS loader does)
  const bytes = readFileSync(file);
  const sourceHash = cacheDigest(bytes);
  const cacheFile = opts.cacheFile === undefined ? defaultCacheFile(file) : opts.cacheFile;
  const cached = cacheFile === null ? 'off' : readCache(cacheFile, sourceHash);
  const script = new vm.Script(wrap(bytes.toString('utf8')), {
    filename: file,
    ...(typeof cached === 'string' ? {} : { cachedData: cached }),
  });
  const cache: CacheUse =
    typeof cached === 'string' ? cached : script.cachedDataRejected === true ? 'rejected' : 'used';
  const fn = script.runInThisContext() as (...a: unknown[]) => void;
  const module = { exports: {} as CliBundle };
  fn.call(
    module.exports,
    module.exports,
    nodeModule.createRequire(file),
    module,
    file,
    dirname(file),
    importHere,
  );
  return { exports: module.exports, cache, script, sourceHash };
}

/**
 * Save the bytecode V8 holds now for the loaded bundle (every function compiled so far) as its cache file:
 * written beside it and renamed over it, so a process reading it meanwhile sees the old file or the new.
 */
export function writeCodeCache(loaded: LoadedBundle, cacheFile: string): number {
  if (loaded.script === undefined || loaded.sourceHash === undefined)
    throw new Error('writeCodeCache: the bundle was not loaded through vm.Script');
  const data = loaded.script.createCachedData();
  const header: CacheHeader = {
    zaplabCodeCache: 1,
    source: loaded.sourceHash,
    data: cacheDigest(data),
    node: process.version,
  };
  const tmp = `${cacheFile}.${process.pid}.tmp`;
  writeFileSync(tmp, Buffer.concat([Buffer.from(JSON.stringify(header) + '\n', 'latin1'), data]));
  renameSync(tmp, cacheFile);
  return data.length;
}

/** The bin and the worker threads: load the bundle with its cache and run `what` (cli or worker). */
export function runBundle(bundle: string | URL, what: 'cli' | 'worker'): Promise<unknown> {
  return loadBundle(bundle).exports[what]();
}
