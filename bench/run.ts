/**
 * `npm run bench`: every suite, one after another, then the model-vs-kernel table. A suite is a module
 * exporting `run()` that returns its measurements. Benchmarks report; they never fail on speed.
 * `npm run bench -- access cli` runs the suites whose file names contain those words.
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { report, reportVersusKernel, type BenchLine } from './report.ts';

const dir = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();
const all: BenchLine[] = [];
for (const f of files) {
  const mod = (await import(join(dir, f))) as { run: () => Promise<BenchLine[] | void> };
  const lines = await mod.run();
  if (lines) {
    report(f.replace('.bench.ts', ''), lines);
    all.push(...lines);
  }
}
reportVersusKernel(
  all,
  files.some((f) => f.startsWith('real_kvm')),
);
