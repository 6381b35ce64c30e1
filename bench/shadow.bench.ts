/**
 * Shadow-MMU faults/s on the pvm-6.18 profile: first-touch 4K faults through vcpu.access (guest walk,
 * shadow pages, leaf SPTE, rmap) on an identity-mapped 4-level guest, and refaults after zap-all with
 * guest A bits set (each fault then maps a prefetch group of 8); and EPT built by the shadow MMU
 * (tdpMmu: false on the upstream EPT profile), first touch of 512 MiB at 4K.
 *
 * First touch is measured on a 4 GiB guest as the first thing a fresh process does, twice: with the
 * model compiled (dist/, what the package and the CLI run) and from sources through tsx (what this bench
 * and the dev loop run); each is reported over the first 512 MiB (what this line measured alone until
 * #15's sweep: in 131,072 faults the one-off JIT warm-up — the fault path runs unoptimized, ~10-50 µs a
 * fault, for its first few thousand faults — is about half the time) and over all 4 GiB (the same
 * warm-up, paid once per process, over 1 M faults).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Kvm } from '../src/index.ts';
import { IdentityMapBuilder } from '../src/x86/mmu/guest_paging.ts';
import { shadowMmuOf } from '../src/x86/mmu/shadow_mmu.ts';
import { report, type BenchLine } from './report.ts';

/** What firstTouch drives: the model's public entry and the two helpers, from sources or from dist/. */
interface Model {
  Kvm: typeof Kvm;
  IdentityMapBuilder: typeof IdentityMapBuilder;
  shadowMmuOf: typeof shadowMmuOf;
}
interface Touch {
  first: number;
  all: number;
}
const PAGES = 1 << 20; // 4 GiB of guest
const HEAD = 1 << 17; // 512 MiB

export async function run(): Promise<BenchLine[]> {
  const n = 1 << 17; // 512 MiB of guest
  // first, each in a fresh process, while the fault path is cold
  const built = distState();
  const dist = built === 'fresh' ? touchInChild('dist') : null;
  const src = touchInChild('src');
  const kvm = new Kvm({ profile: 'pvm-6.18' });
  const vm = kvm.createVm(0);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 2 ** 32,
    memorySize: n * 4096,
    userspaceAddr: kvm.host.mmap(n * 4096),
  });
  vm.setUserMemoryRegion({
    slot: 1,
    flags: 0,
    guestPhysAddr: 0,
    memorySize: 8 << 20,
    userspaceAddr: kvm.host.mmap(8 << 20),
  });
  const mmu = shadowMmuOf(vm)!;
  const map = new IdentityMapBuilder(mmu.gpt, 0, 8 << 20);
  for (let i = 0; i < n; i++) map.mapPage(2 ** 32 + i * 4096);
  const v = vm.createVcpu(0);
  v.setCr3(map.cr3);
  for (let i = 0; i < n; i++) v.access(2 ** 32 + i * 4096, 'write');
  mmu.kvmMmuZapAllFast();
  const f0 = v.getStats().pf_fixed!;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) v.access(2 ** 32 + i * 4096, 'write');
  const ms = performance.now() - t0;
  const faults = v.getStats().pf_fixed! - f0;
  // EPT on the shadow MMU (tdpMmu: false on an EPT host): direct pages, 4K host pages, 8-page prefetch.
  const kl = new Kvm({ tdpMmu: false });
  const vl = kl.createVm(0);
  vl.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 0,
    memorySize: n * 4096,
    userspaceAddr: kl.host.mmap(n * 4096),
  });
  const cl = vl.createVcpu(0);
  t0 = performance.now();
  for (let i = 0; i < n; i++) cl.access(i * 4096, 'write');
  const msL = performance.now() - t0;
  const directFaults = cl.getStats().pf_fixed!;
  return [
    {
      name: 'shadow: DELETE of a slot with 1024 guest-touched pages, per page',
      value: zapPerPage(),
      unit: 'µs',
      // the real host does the same: its CPL3 guest's 1024 first-touched pages, then the slot's DELETE
      kernel: 'delete of a slot with 1024 pages mapped (zap), per page',
    },
    {
      name: 'EPT on the shadow MMU: 4K faults (direct pages, prefetch 8)',
      value: (directFaults / msL) * 1000,
      unit: 'ops/s',
    },
    { name: 'EPT on the shadow MMU: guest pages mapped', value: (n / msL) * 1000, unit: 'ops/s' },
    ...touchLines(dist, 'dist/', true),
    ...touchLines(src, 'src via tsx', dist === null),
    {
      name: 'shadow refault after zap-all (8-page prefetch groups)',
      value: (faults / ms) * 1000,
      unit: 'ops/s',
    },
    { name: 'shadow refault: guest pages remapped', value: (n / ms) * 1000, unit: 'ops/s' },
  ];
}

/** The first-touch lines of one build (null: not measured, said on stdout), the kernel pairing on `paired`. */
function touchLines(t: Touch | null, from: string, paired: boolean): BenchLine[] {
  if (t === null) {
    console.log(`shadow: no first-touch figure from ${from} (${distState()}: npm run build)`);
    return [];
  }
  return [
    {
      name: `shadow first-touch 4K faults (vcpu.access), ${from}`,
      value: t.all,
      unit: 'ops/s',
      target: { atLeast: 1e6 },
      // the real host runs the shadow MMU too: its CPL3 guest's first touch is the same work
      ...(paired ? { kernel: 'first-touch fault, CPL3 guest (1024 pages, per fault)' } : {}),
    },
    {
      name: `shadow first-touch, first 512 MiB (cold JIT), ${from}`,
      value: t.first,
      unit: 'ops/s',
      target: { atLeast: 1e6 },
    },
  ];
}

const root = fileURLToPath(new URL('..', import.meta.url));

/** Is dist/ built from today's sources? 'fresh', or why not. */
function distState(): string {
  const info = `${root}dist/.tsbuildinfo`;
  if (!existsSync(info) || !existsSync(`${root}dist/index.js`)) return 'no dist/';
  const built = statSync(info).mtimeMs;
  const newer = readdirSync(`${root}src/`, { recursive: true })
    .map(String)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
    .find((f) => statSync(`${root}src/${f}`).mtimeMs > built);
  return newer === undefined ? 'fresh' : `dist/ is older than src/${newer}`;
}

/** firstTouch in a new process (this file, run with this process's loader flags) on the model from `from`. */
function touchInChild(from: 'dist' | 'src'): Touch {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [...process.execArgv, self, '--first-touch', from], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`shadow first touch (${from}) exited with ${r.status}`);
  return JSON.parse(r.stdout) as Touch;
}

/** The model from sources (as imported above) or from dist/. */
async function modelFrom(from: string): Promise<Model> {
  if (from === 'src') return { Kvm, IdentityMapBuilder, shadowMmuOf };
  const js = (p: string): Promise<unknown> => import(pathToFileURL(`${root}dist/${p}`).href);
  const [index, paging, shadow] = (await Promise.all([
    js('index.js'),
    js('x86/mmu/guest_paging.js'),
    js('x86/mmu/shadow_mmu.js'),
  ])) as [Pick<Model, 'Kvm'>, Pick<Model, 'IdentityMapBuilder'>, Pick<Model, 'shadowMmuOf'>];
  return { Kvm: index.Kvm, IdentityMapBuilder: paging.IdentityMapBuilder, shadowMmuOf: shadow.shadowMmuOf };
}

/**
 * First touch of `pages` 4K pages, each a write through vcpu.access, on a fresh identity-mapped guest
 * (tables in a 16 MiB slot at 0, data at 4 GiB): faults/s over the first `head` pages and over all.
 */
function firstTouch(m: Model, pages: number, head: number): Touch {
  const kvm = new m.Kvm({ profile: 'pvm-6.18' });
  const vm = kvm.createVm(0);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 2 ** 32,
    memorySize: pages * 4096,
    userspaceAddr: kvm.host.mmap(pages * 4096),
  });
  vm.setUserMemoryRegion({
    slot: 1,
    flags: 0,
    guestPhysAddr: 0,
    memorySize: 16 << 20,
    userspaceAddr: kvm.host.mmap(16 << 20),
  });
  const map = new m.IdentityMapBuilder(m.shadowMmuOf(vm)!.gpt, 0, 16 << 20);
  for (let i = 0; i < pages; i++) map.mapPage(2 ** 32 + i * 4096);
  const v = vm.createVcpu(0);
  v.setCr3(map.cr3);
  const t0 = performance.now();
  for (let i = 0; i < head; i++) v.access(2 ** 32 + i * 4096, 'write');
  const t1 = performance.now();
  for (let i = head; i < pages; i++) v.access(2 ** 32 + i * 4096, 'write');
  const t2 = performance.now();
  if (v.getStats().pf_fixed !== pages)
    throw new Error(`first touch fixed ${v.getStats().pf_fixed} faults, not ${pages}`);
  return { first: (head / (t1 - t0)) * 1000, all: (pages / (t2 - t0)) * 1000 };
}

/**
 * The model doing what bench_real's fault-cost VM does: 1024 pages of a slot first-touched by the guest
 * (pvm-6.18: shadow MMU, 4-level guest tables in another slot), then the slot's DELETE; µs per page,
 * median of 5 fresh VMs.
 */
function zapPerPage(): number {
  const n = 1024;
  const per: number[] = [];
  for (let rep = 0; rep < 5; rep++) {
    const kvm = new Kvm({ profile: 'pvm-6.18' });
    const vm = kvm.createVm(0);
    const data = {
      slot: 1,
      flags: 0,
      guestPhysAddr: 0x8000_0000,
      memorySize: n * 4096,
      userspaceAddr: kvm.host.mmap(n * 4096),
    };
    vm.setUserMemoryRegion(data);
    vm.setUserMemoryRegion({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0,
      memorySize: 8 << 20,
      userspaceAddr: kvm.host.mmap(8 << 20),
    });
    const map = new IdentityMapBuilder(shadowMmuOf(vm)!.gpt, 0, 8 << 20);
    for (let i = 0; i < n; i++) map.mapPage(0x8000_0000 + i * 4096);
    const v = vm.createVcpu(0);
    v.setCr3(map.cr3);
    for (let i = 0; i < n; i++) v.access(0x8000_0000 + i * 4096, 'read');
    const t0 = performance.now();
    vm.setUserMemoryRegion({ ...data, memorySize: 0 });
    per.push(((performance.now() - t0) * 1000) / n);
  }
  return per.sort((a, b) => a - b)[2]!;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv[2] === '--first-touch')
    console.log(JSON.stringify(firstTouch(await modelFrom(process.argv[3]!), PAGES, HEAD)));
  else report('shadow MMU', await run());
}
