/**
 * The guest-access figures as a user's script gets them: a plain Node ESM script (no TypeScript loader)
 * that imports the compiled package. `node bench/access_user.mjs` imports ../dist/index.js and prints
 * one JSON object of pages/s (`node bench/access_user.mjs cjs`: the same through dist/zaplab.cjs, what
 * `require('zaplab')` loads); bench/access.bench.ts runs it in a child process for its "dist" lines and
 * imports measure() to time the TypeScript sources under tsx with the same code.
 *
 * Each figure is the best of `reps` fresh runs over a 4 GiB guest (1,048,576 4K pages): vcpu.access one
 * call per page and vcpu.accessRange in one call, for first touch (every access faults a 4K page in) and
 * for hits (every page already mapped; the TLB holds 2048 4K entries, so most hits walk the EPT), and
 * accessRange over 1024 pages the TLB still holds.
 */

const GiB = 2 ** 30;

/** Pages per second of each case for the Kvm class given. */
export function measure(Kvm, reps = 3) {
  const fresh = (gib) => {
    const kvm = new Kvm({ maxPhyAddr: 46 });
    const vm = kvm.createVm(0);
    vm.enableCap({ cap: 213 /* KVM_CAP_DISABLE_QUIRKS2 */, args: [0x80] });
    const hva = kvm.host.mmap(gib * GiB, { backing: '4k' });
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 4 * GiB, memorySize: gib * GiB, userspaceAddr: hva });
    return vm.createVcpu(0);
  };
  const best = (n, f, setup) => {
    let ms = Infinity;
    for (let r = 0; r < reps; r++) {
      setup();
      const t0 = performance.now();
      f();
      ms = Math.min(ms, performance.now() - t0);
    }
    return (n / ms) * 1000;
  };
  const n = (4 * GiB) / 4096;
  let v = fresh(4);
  const loop = () => {
    for (let i = 0; i < n; i++) v.access(4 * GiB + i * 4096, 'write');
  };
  const batch = () => void v.accessRange(4 * GiB, n, 'write');
  const renew = () => void (v = fresh(4));
  const out = {
    accessFirstTouch: best(n, loop, renew),
    accessHits: best(n, loop, () => {}),
    rangeFirstTouch: best(n, batch, renew),
    rangeHits: best(n, batch, () => {}),
  };
  const small = fresh(1);
  small.accessRange(4 * GiB, 1024, 'write');
  const tlbHits = () => {
    for (let k = 0; k < 1000; k++) small.accessRange(4 * GiB, 1024, 'write');
  };
  out.rangeTlbHits = best(1024e3, tlbHits, () => {});
  return out;
}

/**
 * A 1 TiB guest mapped at 4K through accessRange (268 M leaf SPTEs), alone in its process so that its
 * peak RSS is its own: seconds and peak RSS in MiB.
 */
export function map1TiB(Kvm) {
  const t0 = performance.now();
  const kvm = new Kvm({ maxPhyAddr: 46 });
  const vm = kvm.createVm(0);
  vm.enableCap({ cap: 213 /* KVM_CAP_DISABLE_QUIRKS2 */, args: [0x80] });
  const hva = kvm.host.mmap(1024 * GiB, { backing: '4k' });
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 4 * GiB, memorySize: 1024 * GiB, userspaceAddr: hva });
  const big = vm.createVcpu(0);
  // 1 GiB per call keeps the per-access outputs out of it; the batch itself holds nothing per page.
  for (let g = 0; g < 1024; g++) big.accessRange(4 * GiB + g * GiB, GiB / 4096, 'write');
  const fixed = big.getStats().pf_fixed;
  if (fixed !== 1024 * (GiB / 4096))
    throw new Error(`1 TiB: ${fixed} faults fixed, not ${1024 * (GiB / 4096)}`);
  return { seconds: (performance.now() - t0) / 1000, peakRssMiB: process.resourceUsage().maxRSS / 1024 };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  // `cjs`: the package as a CommonJS caller gets it (`require('zaplab')` resolves to dist/zaplab.cjs, the
  // bundle a script in a project without "type": "module" loads, also under tsx); else the ESM entry.
  // (`esm 1t` / `cjs 1t`: the 1 TiB mapping alone, see map1TiB)
  const { Kvm } =
    process.argv[2] === 'cjs'
      ? (await import('node:module')).createRequire(import.meta.url)('../dist/zaplab.cjs')
      : await import(new URL('../dist/index.js', import.meta.url).href);
  console.log(JSON.stringify(process.argv[3] === '1t' ? map1TiB(Kvm) : measure(Kvm)));
}
