/**
 * The compiled build the bench times: what a user runs (`zaplab` and `import 'zaplab'` load dist/). Every
 * bench file that times dist/ brings it up to date the same way, with tsc's incremental build (a few
 * seconds when nothing changed). Comparing file times does not work: tsc leaves an output whose content
 * did not change untouched, so after a checkout or rebase dist/ would look older than its sources.
 */
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('..', import.meta.url));

/** Builds dist/'s JavaScript from src/; null, or why it could not (the caller falls back to sources). */
export function buildDist(): string | null {
  const tsc = `${root}node_modules/typescript/bin/tsc`;
  if (!existsSync(tsc)) return 'no typescript in node_modules';
  const r = spawnSync(process.execPath, [tsc, '-p', `${root}tsconfig.build.json`], { encoding: 'utf8' });
  return r.status === 0 ? null : `tsc -p tsconfig.build.json failed: ${r.stdout}${r.stderr}`;
}
