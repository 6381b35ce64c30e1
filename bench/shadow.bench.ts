/**
 * Shadow-MMU faults/s on the pvm-6.18 profile: first-touch 4K faults through vcpu.access (guest walk,
 * shadow pages, leaf SPTE, rmap) on an identity-mapped 4-level guest, and refaults after zap-all with
 * guest A bits set (each fault then maps a prefetch group of 8); and EPT built by the shadow MMU
 * (tdpMmu: false on the upstream EPT profile), first touch of 512 MiB at 4K.
 *
 * First touch is measured on a 4 GiB guest by bench/shadow_user.mjs (the guest's tables written through
 * the public vm.writeGuestPte), twice: from the TypeScript sources under tsx, first thing in this process,
 * and as a user's plain Node ESM script runs the compiled package (dist/, brought up to date first by
 * tsc's incremental build), in a child process with no loader. Each is reported over the first 512 MiB
 * (what this line measured alone until #15's sweep: in 131,072 faults the one-off JIT warm-up — the fault
 * path runs unoptimized, ~10-50 µs a fault, for its first few thousand faults — is about half the time)
 * and over all 4 GiB (the same warm-up, paid once per process, over 1 M faults).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Kvm } from '../src/index.ts';
import { IdentityMapBuilder } from '../src/x86/mmu/guest_paging.ts';
import { shadowMmuOf } from '../src/x86/mmu/shadow_mmu.ts';
import { firstTouch, type TouchFigures } from './shadow_user.mjs';
import { report, type BenchLine } from './report.ts';
import { buildDist, root } from './dist.ts';

export async function run(): Promise<BenchLine[]> {
  const n = 1 << 17; // 512 MiB of guest
  const src = firstTouch(Kvm); // first, while the fault path is cold
  const why = buildDist();
  const dist = why === null ? touchInChild() : null;
  if (why !== null) console.log(`shadow: dist/ first-touch lines skipped (${why})`);
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

/** The first-touch lines of one build (none when not measured), the kernel pairing on `paired`. */
function touchLines(t: TouchFigures | null, from: string, paired: boolean): BenchLine[] {
  if (t === null) return [];
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

/** bench/shadow_user.mjs as a user runs it: plain node, no loader, on the compiled package. */
function touchInChild(): TouchFigures {
  const script = fileURLToPath(new URL('./shadow_user.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`bench/shadow_user.mjs exited with ${r.status}`);
  return JSON.parse(r.stdout) as TouchFigures;
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

if (import.meta.url === `file://${process.argv[1]}`) report('shadow MMU', await run());
