// Build step after tsc: copy the non-TypeScript files that compiled code reads next to itself
// (the scenario and explorer libraries), so dist/ is self-contained and the package ships no src/.
import { cpSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const ASSETS = ['scenario/library', 'explore/library'];
for (const a of ASSETS) {
  rmSync(`${root}dist/${a}`, { recursive: true, force: true });
  cpSync(`${root}src/${a}`, `${root}dist/${a}`, { recursive: true, filter: (f) => !f.endsWith('.ts') });
}
