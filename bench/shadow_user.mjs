/**
 * Shadow-MMU first touch as a user's script gets it: a plain Node ESM script (no TypeScript loader) that
 * imports the compiled package. `node bench/shadow_user.mjs` imports ../dist/index.js and prints one
 * JSON object of faults/s; bench/shadow.bench.ts runs it in a child process for its "dist/" lines and
 * imports firstTouch() to time the TypeScript sources under tsx with the same code.
 *
 * The guest (pvm-6.18: shadow paging) gets identity-mapped 4-level page tables written through the public
 * vm.writeGuestPte (tables from gpa 0 in a 16 MiB slot, data in a slot at 4 GiB); then each page is
 * written once through vcpu.access, the first thing the process times: every access is a #PF that KVM
 * fixes (guest walk, shadow pages, leaf SPTE, rmap).
 */

const PAGE = 4096;
const RWU = 1 | 2 | 4; // present, writable, user; A and D clear

/** Identity-map the 4K page at gva in the tables rooted at cr3, taking table pages from pool. */
function mapPage(vm, pool, cr3, gva) {
  let table = cr3;
  for (let level = 4; level > 1; level--) {
    const idx = Math.floor(gva / 2 ** (12 + 9 * (level - 1))) % 512;
    let e = vm.readGuestPte(table, idx);
    if (!(e & 1)) {
      e = pool.next + RWU;
      pool.next += PAGE;
      vm.writeGuestPte(table, idx, e);
    }
    table = e - (e % PAGE);
  }
  vm.writeGuestPte(table, Math.floor(gva / PAGE) % 512, gva + RWU);
}

/** Faults/s over the first `head` pages and over all `pages` of a first touch (4 GiB by default). */
export function firstTouch(Kvm, pages = 1 << 20, head = 1 << 17) {
  const kvm = new Kvm({ profile: 'pvm-6.18' });
  const vm = kvm.createVm(0);
  const data = 2 ** 32;
  vm.setUserMemoryRegion({
    slot: 0,
    guestPhysAddr: data,
    memorySize: pages * PAGE,
    userspaceAddr: kvm.host.mmap(pages * PAGE),
  });
  vm.setUserMemoryRegion({
    slot: 1,
    guestPhysAddr: 0,
    memorySize: 16 << 20,
    userspaceAddr: kvm.host.mmap(16 << 20),
  });
  const pool = { next: PAGE };
  const cr3 = 0;
  for (let i = 0; i < pages; i++) mapPage(vm, pool, cr3, data + i * PAGE);
  const v = vm.createVcpu(0);
  v.setCr3(cr3);
  const t0 = performance.now();
  for (let i = 0; i < head; i++) v.access(data + i * PAGE, 'write');
  const t1 = performance.now();
  for (let i = head; i < pages; i++) v.access(data + i * PAGE, 'write');
  const t2 = performance.now();
  const fixed = v.getStats().pf_fixed;
  if (fixed !== pages) throw new Error(`first touch fixed ${fixed} faults, not ${pages}`);
  return { first: (head / (t1 - t0)) * 1000, all: (pages / (t2 - t0)) * 1000 };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { Kvm } = await import(new URL('../dist/index.js', import.meta.url).href);
  console.log(JSON.stringify(firstTouch(Kvm)));
}
