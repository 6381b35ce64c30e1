/**
 * The guest-access path: vcpu.access one call per page and the batched vcpu.accessRange, for first touch
 * (every access faults a 4K page in) and for hits (every access is already mapped), on a fresh 4 GiB VM.
 * Targets (issue 15): access ≥ 3 M first-touch faults/s; batched ≥ 10 M pages/s first touch and ≥ 30 M/s
 * hits. Two sets of lines, the same measuring code (bench/access_user.mjs):
 *   - "dist": what a user runs, a plain Node ESM script importing the compiled package (dist/), in a
 *     child process with no loader; dist/ is brought up to date first (tsc's incremental build);
 *   - "CommonJS require": the same script taking the package through dist/zaplab.cjs, as `require('zaplab')`
 *     does in a project without "type": "module" (#15 was filed with 0.15-0.21 M/s for such a caller);
 *   - "tsx": the TypeScript sources as `npm run bench` loads them (tsx), in this process.
 * The 1 TiB guest at 4K (target: < 60 s, peak RSS < 6 GiB; dist, a child process of its own) runs only
 * with ZAPLAB_BENCH_1T=1: it maps
 * 268 M pages.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Kvm } from '../src/index.ts';
import { measure, type AccessFigures } from './access_user.mjs';
import { report, type BenchLine } from './report.ts';
import { buildDist, root } from './dist.ts';

const GiB = 2 ** 30;

function lines(tag: string, f: AccessFigures): BenchLine[] {
  return [
    {
      name: `vcpu.access: 4K first-touch faults/s (${tag})`,
      value: f.accessFirstTouch,
      unit: 'ops/s',
      target: { atLeast: 3e6 },
    },
    { name: `vcpu.access: hits/s (${tag})`, value: f.accessHits, unit: 'ops/s' },
    {
      name: `vcpu.accessRange: 4K first-touch pages/s (${tag})`,
      value: f.rangeFirstTouch,
      unit: 'ops/s',
      target: { atLeast: 10e6 },
    },
    {
      name: `vcpu.accessRange: hits/s (${tag})`,
      value: f.rangeHits,
      unit: 'ops/s',
      target: { atLeast: 30e6 },
    },
    {
      name: `vcpu.accessRange: TLB-resident hits/s, 1024 pages (${tag})`,
      value: f.rangeTlbHits,
      unit: 'ops/s',
      target: { atLeast: 30e6 },
    },
  ];
}

export async function run(): Promise<BenchLine[]> {
  const out: BenchLine[] = [];
  const stale = buildDist();
  if (stale !== null) console.log(`access: dist lines skipped (${stale})`);
  else {
    const script = fileURLToPath(new URL('./access_user.mjs', import.meta.url));
    for (const [arg, tag] of [
      ['esm', 'dist, plain node ESM'],
      ['cjs', 'dist, CommonJS require'],
    ] as const) {
      const r = spawnSync(process.execPath, [script, arg], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`node bench/access_user.mjs ${arg}: exit ${r.status}\n${r.stderr}`);
      out.push(...lines(tag, JSON.parse(r.stdout) as AccessFigures));
    }
  }
  out.push(...lines('tsx sources', measure(Kvm)));
  if (process.env['ZAPLAB_BENCH_1T'] === '1' && stale === null) {
    // in a child process of its own (dist, plain Node ESM): its peak RSS is then its own, and the 4 GiB it
    // leaves do not slow the suites after this one (a child spawned from a 4 GiB process pays for it)
    const script = fileURLToPath(new URL('./access_user.mjs', import.meta.url));
    const r = spawnSync(process.execPath, [script, 'esm', '1t'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`node bench/access_user.mjs esm 1t: exit ${r.status}\n${r.stderr}`);
    const t = JSON.parse(r.stdout) as { seconds: number; peakRssMiB: number };
    out.push({
      name: '1 TiB guest mapped at 4K through accessRange (dist)',
      value: t.seconds,
      unit: 's',
      target: { atMost: 60 },
    });
    out.push({
      name: '  peak RSS of that process',
      value: t.peakRssMiB,
      unit: 'MiB',
      target: { atMost: 6144 },
    });
  } else {
    console.log(`access: 1 TiB at 4K skipped (${stale ?? 'set ZAPLAB_BENCH_1T=1; it maps 268 M pages'})`);
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) report('access', await run());
