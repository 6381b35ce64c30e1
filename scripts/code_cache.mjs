// Build step after the CLI bundle (run by scripts/bundle_cli.mjs): dist/bin/zaplab.cjs.cache, the bundle's
// V8 code cache (src/cli/code_cache.ts). Loads the bundle without a cache, compares every library
// scenario at small parameters in this thread (both audit levels the CLI defaults to) and runs one
// compare through the CLI as a user types it (output dropped), then saves the bytecode of every function
// V8 compiled meanwhile. What no training run reached still compiles when first called, as without a
// cache. Writes one line to stderr (the cache's size); exits non-zero if a run fails.
import { fileURLToPath } from 'node:url';
import { rmSync } from 'node:fs';
import v8 from 'node:v8';
import { loadBundle, writeCodeCache } from '../dist/cli/code_cache.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bundle = `${root}dist/bin/zaplab.cjs`;
const cacheFile = `${bundle}.cache`;

/** every library scenario, scaled down: the same code paths (VM types, MMUs, VFIO, audits) in ~2 s */
const TRAINING = [
  ['vfio-2019-shadow', {}],
  ['vfio-2019', { reboots: '1' }],
  ['tdx-boot', { conversions: '1', workingSet: '64' }],
  ['snp-boot', { conversions: '1', workingSet: '64' }],
  ['refault-storm', { workingSet: '16', romToggles: '1' }],
  ['ram-scaling', { ram: '256M', touched: '256M' }],
  ['live-migration', { rounds: '1', dirtySet: '64' }],
  ['firmware-boot', { pamToggles: '1', workingSet: '64' }],
  ['smram-toggle', { toggles: '1', workingSet: '64' }],
  ['vsm-permission-split', { splits: '2', workingSet: '64' }],
  ['memory-hotplug', { dimms: '8', unplug: '2', ramSet: '64' }],
];

rmSync(cacheFile, { force: true });
// V8 drops the bytecode of functions not run for a while (bytecode flushing, at major GCs): after a few
// seconds of training the bundle's run-once code (its wrapper, each module's initialisation) would be
// gone from the cache, and every process would compile the whole wrapper again (measured: the cache then
// cost more than none). So no flushing while training; the flag is set back before the cache is made,
// since V8 accepts a cache only under the flags it was made with.
v8.setFlagsFromString('--no-flush-bytecode');
const loaded = loadBundle(bundle, { cacheFile: null, via: 'vm' });
const t0 = performance.now();
await loaded.exports.train(TRAINING);
process.argv = [process.execPath, `${root}dist/bin/zaplab.js`, 'compare', 'memory-hotplug'];
process.argv.push('-p', 'dimms=8', '-p', 'unplug=2', '-p', 'ramSet=64', '-w', '0');
await loaded.exports.cli();
// (the CLI's command ends when nothing is left to run)
process.once('beforeExit', () => {
  if (process.exitCode !== undefined && process.exitCode !== 0) return;
  v8.setFlagsFromString('--flush-bytecode');
  const bytes = writeCodeCache(loaded, cacheFile);
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  process.stderr.write(
    `code cache: ${(bytes / 1024).toFixed(0)} KiB of bytecode for dist/bin/zaplab.cjs (${s} s)\n`,
  );
});
