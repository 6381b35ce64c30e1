// Build step after tsc: dist/bin/, the CLI (`zaplab`'s bin is dist/bin/zaplab.js) as one CommonJS file,
// dist/bin/zaplab.cjs, bundled with esbuild from the dist/ modules the CLI runs (scripts/cli_bundle_entry.mjs:
// the CLI, the compare worker thread, the code cache's training) with the parser's packages (zod, yaml)
// and the CLI's own (commander, cli-table3, cli-progress) inside, and its V8 code cache,
// dist/bin/zaplab.cjs.cache (scripts/code_cache.mjs). The bin loads the bundle with the cache
// (src/cli/code_cache.ts): a process then neither parses nor compiles again the code each compare runs
// (measured: a third of a small compare's CPU time), and the compare worker threads load the same bundle
// with the same cache. One script, because vm.Script (Node 20's only way to a code cache) runs scripts,
// not ES modules. Each command's modules stay uninitialised until it imports them (esbuild's lazy
// wrappers for import() targets), so `list` and `show` run no model code.
//
// The compiled modules find files next to themselves through import.meta.url (the scenario library, the
// explorer's library, their worker task files, package.json, koffi): in the bundle each module's
// import.meta.url is its own dist/ file's URL again, so they resolve as before. One exception: the compare
// worker threads (scenario/compare_workers.js) load the bundle itself, its own URL. Packages the CLI loads
// only for some commands, or that carry native code or their own files, stay external (piscina, vega*,
// koffi, playwright-core, tsx); so does dist/report/svg.js, which imports vega (an ES module with top-level
// await, which require() cannot load): the bundle import()s the compiled module (externalImports below).
import { build } from 'esbuild';
import { readFile } from 'node:fs/promises';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = `${root}dist/`;
const outdir = `${dist}bin`;
/** compiled modules whose import.meta.url stays the bundle's own: they name the bundle */
const BUNDLE_RELATIVE = new Set([`${dist}scenario/compare_workers.js`]);
/** compiled modules the bundle import()s as they are (they import an ES-module-only package) */
const KEEP_ESM = new Set([`${dist}report/svg.js`]);

/**
 * The bundle's import() of a file outside it (a KEEP_ESM module, a worker task file by its URL) calls
 * __zaplabImportFn instead: V8 drops a script's dynamic-import host options when its functions come from a
 * code cache (Node 20: ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING), so the loader (src/cli/code_cache.ts)
 * passes the bundle an import function of its own (`__zaplabImport`, a parameter of the bundle's wrapper);
 * loaded by require() instead, the bundle imports as usual. An import() of a module inside the bundle is
 * left to esbuild, which makes it a call of the module's lazy initialiser.
 */
function externalImports(src, file) {
  return src.replace(/\bimport\((?!["'])|\bimport\((["'])([^"']*)\1\)/g, (call, quote, spec) => {
    if (quote === undefined) return '__zaplabImportFn('; // a computed specifier: a file by its URL
    const target = resolve(file, '..', spec);
    const url = `new URL(${JSON.stringify(spec)}, import.meta.url).href`;
    return KEEP_ESM.has(target) ? `__zaplabImportFn(${url})` : call;
  });
}

/**
 * zod's `z` as a namespace import. `import { z } from 'zod'` binds the namespace object zod exports, which
 * esbuild builds whole: every schema kind, JSON-schema import, and all ~50 locales (zod's `z.locales`), a
 * 755 kB chunk. `import * as z from 'zod'` has the same members (zod's index re-exports them all), and
 * esbuild keeps only those named as `z.<member>`: 200 kB, English messages included (zod registers `en`
 * when its first schema is built). Same schemas, same error texts; a third less to compile per process.
 */
const zodNamespace = (src) => src.replace(/^import \{ z \} from 'zod';$/gm, "import * as z from 'zod';");

/** import.meta.url → the URL of the dist/ module it was written in (relative to the bundle: no absolute path). */
const ownUrl = {
  name: 'zaplab-own-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      if (!args.path.startsWith(dist)) return undefined;
      let src = zodNamespace(await readFile(args.path, 'utf8'));
      // (compare_workers.js writes import() calls into its worker's entry code: text, not calls)
      if (!BUNDLE_RELATIVE.has(args.path)) src = externalImports(src, args.path);
      if (BUNDLE_RELATIVE.has(args.path) || !src.includes('import.meta.url'))
        return { contents: src, loader: 'js' };
      const rel = JSON.stringify(relative(outdir, args.path));
      return {
        contents: src.replaceAll('import.meta.url', `new URL(${rel}, import.meta.url).href`),
        loader: 'js',
      };
    });
  },
};

rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { zaplab: `${root}scripts/cli_bundle_entry.mjs` },
  outdir,
  outExtension: { '.js': '.cjs' },
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  external: ['piscina', 'vega', 'vega-lite', 'vega-embed', 'koffi', 'playwright-core', 'tsx', 'tsx/*'],
  // (a CommonJS file has no import.meta: the bundle's own URL stands in, from the wrapper's __filename)
  define: { 'import.meta.url': '__zaplabUrl' },
  banner: {
    js: [
      "const __zaplabUrl = require('node:url').pathToFileURL(__filename).href;",
      "const __zaplabImportFn = typeof __zaplabImport === 'function' ? __zaplabImport : (s) => import(s);",
    ].join('\n'),
  },
  plugins: [ownUrl],
  // (no comments or indentation: a third less text to read, decode and keep; names stay, so do stacks'
  // function names and every `.name`)
  minifyWhitespace: true,
  sourcemap: true,
  logLevel: 'warning',
});
// ASCII only, so V8 holds the source as one-byte text: a single non-ASCII character (a '—' in a regular
// expression, which esbuild leaves as it is) made it a two-byte string of twice the size, slower to decode
// and to compile. Outside comments (gone above) every such character is in a literal, where \uXXXX is the
// same character.
const out = `${outdir}/zaplab.cjs`;
const text = readFileSync(out, 'utf8');
const ascii = text.replace(/[^\0-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
if (ascii !== text) writeFileSync(out, ascii);
// The loader (src/cli/code_cache.ts) as CommonJS too, dist/bin/load.cjs: the bin and the compare worker
// threads require it, so a worker thread starts without Node's ES module loader.
await build({
  entryPoints: [`${dist}cli/code_cache.js`],
  outfile: `${outdir}/load.cjs`,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  define: { 'import.meta.url': '__zaplabUrl' },
  banner: { js: "const __zaplabUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
});
// The bin: the bundle's CLI, loaded with its code cache.
writeFileSync(
  `${outdir}/zaplab.js`,
  `#!/usr/bin/env node
// zaplab's bin: the CLI bundle (zaplab.cjs) loaded with its V8 code cache (load.cjs: src/cli/code_cache.ts).
import { runBundle } from './load.cjs';
await runBundle(new URL('./zaplab.cjs', import.meta.url), 'cli');
`,
);
chmodSync(`${outdir}/zaplab.js`, 0o755);
const trained = spawnSync(process.execPath, [`${root}scripts/code_cache.mjs`], {
  stdio: ['ignore', 'ignore', 'inherit'],
});
// (a training run that fails leaves no cache: the CLI then compiles from source, as it did without one;
// the build goes on, so a broken scenario shows in the tests rather than as a failed `npm ci`)
if (trained.status !== 0)
  process.stderr.write(
    `code cache: not made (scripts/code_cache.mjs exit ${trained.status}); the CLI compiles from source\n`,
  );
