// Build step after tsc: dist/zaplab.cjs, the package's CommonJS entry (`require('zaplab')`), bundled
// from dist/index.js with its dependencies left external. One file, so cross-module calls stay direct
// functions: a loader that turns required ES modules into CommonJS one file at a time (tsx in a project
// without "type": "module") would otherwise route every call between the model's modules through an
// export getter, several times slower. Works on every supported Node, with or without require(esm).
import { buildSync } from 'esbuild';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
buildSync({
  entryPoints: [`${root}dist/index.js`],
  outfile: `${root}dist/zaplab.cjs`,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  sourcemap: true,
  logLevel: 'warning',
});
