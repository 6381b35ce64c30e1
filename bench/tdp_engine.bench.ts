/**
 * TDP MMU engine hot paths: 4K and 2M maps into a fresh root, leaf zap scan rate over a populated range,
 * page-table bytes per mapped 4K page for a 64 GiB guest, and whole-guest populate times.
 * Targets: ≥ 5M 4K maps/s, ≥ 200M SPTEs/s scanned by zap_leafs, ≤ 8.5 B/page, 64 GiB @4K and 1 TiB @2M
 * each populated in < 10 s.
 *
 * Run alone: npx tsx bench/tdp_engine.bench.ts
 */
import { pathToFileURL } from 'node:url';
import { Bench } from 'tinybench';
import { asPfn } from '../src/types/addr.ts';
import { tdpRootRole } from '../src/x86/mmu/mmu_internal.ts';
import {
  ACC_ALL,
  MT_MASK_WB_IPAT,
  makeSpte,
  newSptePair,
  pfnHi,
  pfnLo,
  tdpLeafParams,
} from '../src/x86/mmu/spte.ts';
import { kvmTdpMmuMap, tdpMmuZapLeafs } from '../src/x86/mmu/tdp_mmu.ts';
import { kvmTdpMmuAllocRoot } from '../src/x86/mmu/tdp_mmu_root.ts';
import { TdpMmu } from '../src/x86/mmu/tdp_mmu_state.ts';
import { report, type BenchLine } from './report.ts';

const GIB_PAGES = 262144;

/** A leaf SPTE template for `level` without its pfn bits (the pfn is OR-ed in per page). */
function template(level: number): { lo: number; hi: number } {
  const s = newSptePair();
  makeSpte(s, tdpLeafParams(level, asPfn(0), MT_MASK_WB_IPAT, true));
  return s;
}
const T4K = template(1);
const T2M = template(2);

function fresh(): { mmu: TdpMmu; root: number } {
  const mmu = new TdpMmu();
  return { mmu, root: kvmTdpMmuAllocRoot(mmu, tdpRootRole({ asId: 0 })) };
}

/** Map `n` leafs of `level` at consecutive gfns from `gfn0`, pfn = gfn + 0x100000. */
function populate(mmu: TdpMmu, root: number, gfn0: number, n: number, level: 1 | 2): void {
  const t = level === 1 ? T4K : T2M;
  const step = level === 1 ? 1 : 512;
  for (let i = 0, g = gfn0; i < n; i++, g += step) {
    const pfn = g + 0x100000;
    if (kvmTdpMmuMap(mmu, root, g, level, t.lo | pfnLo(pfn), t.hi | pfnHi(pfn)) !== 0)
      throw new Error('map failed');
  }
}

async function mapRates(lines: BenchLine[]): Promise<void> {
  const BATCH = 65536;
  const bench = new Bench({ time: 600 });
  bench
    .add('4K map, sequential gfns, fresh root', () => {
      const { mmu, root } = fresh();
      populate(mmu, root, 0, BATCH, 1);
    })
    .add('2M map, sequential gfns, fresh root', () => {
      const { mmu, root } = fresh();
      populate(mmu, root, 0, BATCH, 2);
    });
  await bench.run();
  for (const t of bench.tasks) {
    const hz = t.result && 'throughput' in t.result ? t.result.throughput.mean : 0;
    lines.push({ name: t.name, value: hz * BATCH, unit: 'ops/s' });
  }
  // Random 4K gfns over 4 GiB: every map walks from the root through cold tables.
  const { mmu, root } = fresh();
  const N = 1 << 20;
  const gfns = new Float64Array(N);
  let x = 1;
  for (let i = 0; i < N; i++) gfns[i] = (x = (x * 1103515245 + 12345) >>> 0) % (4 * GIB_PAGES);
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const g = gfns[i]!;
    kvmTdpMmuMap(mmu, root, g, 1, T4K.lo | pfnLo(g), T4K.hi | pfnHi(g));
  }
  lines.push({
    name: '4K map, random gfns in 4 GiB',
    value: N / ((performance.now() - t0) / 1000),
    unit: 'ops/s',
  });
}

function zapRate(lines: BenchLine[]): void {
  // 4 GiB at 4K (1 Mi leafs, 2051 tables); best of 5 zaps, each over a freshly populated root.
  let best = 0;
  let walked = 0;
  for (let rep = 0; rep < 5; rep++) {
    const { mmu, root } = fresh();
    populate(mmu, root, 0, 4 * GIB_PAGES, 1);
    const w0 = mmu.sptesWalked;
    const t0 = performance.now();
    if (!tdpMmuZapLeafs(mmu, root, 0, 4 * GIB_PAGES)) throw new Error('zap found nothing');
    const dt = (performance.now() - t0) / 1000;
    walked = mmu.sptesWalked - w0;
    best = Math.max(best, walked / dt);
  }
  lines.push({
    name: `zap_leafs, 4 GiB @4K (${walked} SPTEs scanned)`,
    value: best / 1e6,
    unit: 'M SPTEs/s',
  });
  // The same range again: tables are left in place, every entry is now non-present.
  const { mmu, root } = fresh();
  populate(mmu, root, 0, 4 * GIB_PAGES, 1);
  tdpMmuZapLeafs(mmu, root, 0, 4 * GIB_PAGES);
  const t0 = performance.now();
  const w0 = mmu.sptesWalked;
  tdpMmuZapLeafs(mmu, root, 0, 4 * GIB_PAGES);
  const rate = (mmu.sptesWalked - w0) / ((performance.now() - t0) / 1000);
  lines.push({ name: 'zap_leafs rescan of an already-zapped 4 GiB', value: rate / 1e6, unit: 'M SPTEs/s' });
}

function bigGuests(lines: BenchLine[]): void {
  const pages64g = 64 * GIB_PAGES;
  let { mmu, root } = fresh();
  let t0 = performance.now();
  populate(mmu, root, 0, pages64g, 1);
  lines.push({
    name: 'populate 64 GiB guest @4K (16 Mi leafs)',
    value: (performance.now() - t0) / 1000,
    unit: 's',
  });
  lines.push({
    name: 'page-table bytes per mapped 4K page (64 GiB @4K)',
    value: mmu.pool.bytes() / pages64g,
    unit: 'B',
  });
  lines.push({ name: 'page tables for 64 GiB @4K', value: mmu.pool.live, unit: 'tables' });
  ({ mmu, root } = fresh());
  const n2m = 1024 * 512;
  t0 = performance.now();
  populate(mmu, root, 0, n2m, 2);
  lines.push({
    name: 'populate 1 TiB guest @2M (512 Ki leafs)',
    value: (performance.now() - t0) / 1000,
    unit: 's',
  });
  lines.push({
    name: 'page-table bytes per mapped 2M page (1 TiB @2M)',
    value: mmu.pool.bytes() / n2m,
    unit: 'B',
  });
}

export async function run(): Promise<void> {
  const lines: BenchLine[] = [];
  await mapRates(lines);
  zapRate(lines);
  bigGuests(lines);
  report('tdp_engine', lines);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await run();
