/**
 * The CLI as a user feels it: wall time of the compiled CLI (the package's bin, dist/bin/zaplab.js: what
 * `npx zaplab` runs; built first, tsc then the bundle step, scripts/bundle_cli.mjs) for `list`,
 * `show`, and every library scenario's `compare` (default audits) and `check`. Targets (issue 15): list and
 * show ≤ 0.3 s, compare ≤ 2 s, check ≤ 5 s. Best of 3 for startup, one run per scenario command. compare
 * and check use their default threads (designs on CPUs − 1 workers beside the main thread); compare is
 * also timed in one thread (`-w 0`). Each line names the 1-minute load average before it (the machine
 * may be shared: a figure taken at load 3 on 2 cores is not one taken on an idle machine).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { libraryNames } from '../src/scenario/library_files.ts';
import type { BenchLine } from './report.ts';
import { report } from './report.ts';
import { buildDist, root } from './dist.ts';

const main = fileURLToPath(new URL('../dist/bin/zaplab.js', import.meta.url));

/** dist/ brought up to date (tsc), then the CLI bundle made from it; null, or why not. */
function buildCli(): string | null {
  const why = buildDist();
  if (why !== null) return why;
  const r = spawnSync(process.execPath, [`${root}scripts/bundle_cli.mjs`], { encoding: 'utf8' });
  return r.status === 0 ? null : `scripts/bundle_cli.mjs failed: ${r.stdout}${r.stderr}`;
}

function wall(args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [main, ...args], { stdio: 'ignore' });
  const s = (performance.now() - t0) / 1000;
  // check exits 1 when a scenario (a bug reproducer) finds violations; anything else is a broken run
  if (r.status !== 0 && !(args[0] === 'check' && r.status === 1))
    throw new Error(`zaplab ${args.join(' ')}: exit ${r.status}`);
  return s;
}

export async function run(): Promise<BenchLine[]> {
  const why = buildCli();
  if (why !== null || !existsSync(main)) {
    console.log(`cli: skipped (${why ?? 'no dist/bin/zaplab.js'}: run \`npm run build\`)`);
    return [];
  }
  const bestOf = (args: string[]): number => Math.min(wall(args), wall(args), wall(args));
  const lines: BenchLine[] = [
    { name: 'zaplab list', value: bestOf(['list']), unit: 's', target: { atMost: 0.3 } },
    {
      name: 'zaplab show firmware-boot',
      value: bestOf(['show', 'firmware-boot']),
      unit: 's',
      target: { atMost: 0.3 },
    },
  ];
  const timed = (label: string, args: string[], atMost: number): BenchLine => {
    const load = loadavg()[0]!.toFixed(1);
    return { name: `${label} (load ${load})`, value: wall(args), unit: 's', target: { atMost } };
  };
  for (const n of libraryNames()) {
    lines.push(timed(`zaplab compare ${n}`, ['compare', n], 2));
    lines.push(timed(`zaplab compare ${n} -w 0`, ['compare', n, '-w', '0'], 2));
  }
  for (const n of libraryNames()) lines.push(timed(`zaplab check ${n}`, ['check', n], 5));
  return lines;
}

if (import.meta.url === `file://${process.argv[1]}`) report('cli', await run());
