// Build step after tsc: dist/bin/, the CLI as a few ES modules (`zaplab`'s bin is dist/bin/zaplab.js),
// bundled from dist/cli/main.js with esbuild, the parser's packages (zod, yaml) and the CLI's own
// (commander, cli-table3, cli-progress) inside. Node's loader then reads ~20 files for a compare instead
// of ~300 (dist/'s modules, zod's and yaml's): zod and yaml alone took 180 ms to load, the model's 110
// modules ~100 ms, of a compare that runs ~1 s. Each command's code stays a lazily loaded chunk
// (splitting), so `list` and `show` still load no model code.
//
// The compiled modules find files next to themselves through import.meta.url (the scenario library, the
// explorer's library, their worker task files, package.json, vega, koffi): in the bundle each module's
// import.meta.url is its own dist/ file's URL again, so they resolve as before. One exception: the compare
// worker threads (scenario/compare_workers.js) start the bundled worker, dist/bin/compare_worker.js, which
// is its chunk's sibling. Packages the CLI loads only for some commands, or that carry native code or
// their own files, stay external (piscina, vega*, koffi, playwright-core, tsx).
import { build } from 'esbuild';
import { readFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = `${root}dist/`;
const outdir = `${dist}bin`;
/** compiled modules whose import.meta.url stays the chunk's own: they name a file of the bundle */
const BUNDLE_RELATIVE = new Set([`${dist}scenario/compare_workers.js`]);

/** import.meta.url → the URL of the dist/ module it was written in (relative to the chunk: no absolute path). */
const ownUrl = {
  name: 'zaplab-own-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      if (!args.path.startsWith(dist) || BUNDLE_RELATIVE.has(args.path)) return undefined;
      const src = await readFile(args.path, 'utf8');
      if (!src.includes('import.meta.url')) return undefined;
      const rel = JSON.stringify(relative(outdir, args.path));
      return {
        contents: src.replaceAll('import.meta.url', `new URL(${rel}, import.meta.url).href`),
        loader: 'js',
      };
    });
  },
};

// (chunk names carry a content hash: the last build's chunks would otherwise stay, and ship)
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { zaplab: `${dist}cli/main.js`, compare_worker: `${dist}scenario/compare_worker.js` },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['piscina', 'vega', 'vega-lite', 'vega-embed', 'koffi', 'playwright-core', 'tsx', 'tsx/*'],
  // yaml is CommonJS: its require() calls of Node's modules need a require in an ES module
  banner: {
    js: "import { createRequire as __zaplabRequire } from 'node:module'; const require = __zaplabRequire(import.meta.url);",
  },
  chunkNames: 'chunk-[hash]',
  plugins: [ownUrl],
  sourcemap: true,
  logLevel: 'warning',
});
