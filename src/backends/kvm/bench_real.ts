/**
 * Timing of the real /dev/kvm through the backend: one rejected memslot call, one successful
 * create+delete pair, and the first-touch fault cost of the CPL3 harness. Medians, like
 * shared/reference/real-kvm-host.md §7 (nested-virt outliers of 1–12 ms make means useless).
 *
 * Run: npx tsx src/backends/kvm/bench_real.ts   (also part of `npm run bench` via bench/real_kvm.bench.ts)
 */
import { fileURLToPath } from 'node:url';
import { KvmError } from '../../kvm/kvm_error.ts';
import { KVM_IOCTL } from '../../uapi/kvm.ts';
import { getLibc, realKvmAvailability } from './libc.ts';
import { RealKvm } from './real_kvm.ts';

export interface RealBenchLine {
  name: string;
  value: number;
  unit: string;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Median µs of f over n runs, after a warm-up of n/10. */
function timeUs(n: number, f: () => void): number {
  for (let i = 0; i < Math.ceil(n / 10); i++) f();
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    f();
    xs.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return median(xs);
}

export async function run(): Promise<RealBenchLine[]> {
  const avail = realKvmAvailability();
  if (!avail.ok) {
    console.log(`real_kvm: skipped (${avail.reason})`);
    return [];
  }
  using kvm = new RealKvm();
  using vm = kvm.createVm(0);
  const hva = kvm.host.mmap(2 << 20);
  const lines: RealBenchLine[] = [];
  const rejected = { slot: 3, guestPhysAddr: 2 ** 32, memorySize: 0x1001, userspaceAddr: hva };
  lines.push({
    name: 'rejected KVM_SET_USER_MEMORY_REGION (EINVAL), via the API',
    unit: 'µs',
    value: timeUs(20000, () => {
      try {
        vm.setUserMemoryRegion(rejected);
      } catch (e) {
        if (!(e instanceof KvmError)) throw e;
      }
    }),
  });
  lines.push({
    name: 'rejected call, raw convention (vm.ioctlSetUserMemoryRegion → -22)',
    unit: 'µs',
    value: timeUs(20000, () => {
      if (vm.ioctlSetUserMemoryRegion(rejected) !== -22) throw new Error('expected -EINVAL');
    }),
  });
  // The same rejection as a bare ioctl through koffi: what the syscall itself costs from JS.
  const c = getLibc();
  const raw = new Uint8Array(32);
  new DataView(raw.buffer).setBigUint64(16, 0x1001n, true);
  lines.push({
    name: 'rejected call, bare koffi ioctl (no copy-in, no throw)',
    unit: 'µs',
    value: timeUs(20000, () => void c.ioctlBuf(vm.fd, KVM_IOCTL.KVM_SET_USER_MEMORY_REGION, raw)),
  });
  lines.push({
    name: 'KVM_CHECK_EXTENSION (baseline syscall)',
    unit: 'µs',
    value: timeUs(20000, () => void vm.checkExtension(10)),
  });
  for (const [label, size] of [
    ['4 KiB', 4096],
    ['2 MiB', 2 << 20],
  ] as const) {
    const create = { slot: 3, guestPhysAddr: 2 ** 32, memorySize: size, userspaceAddr: hva };
    const del = { ...create, memorySize: 0 };
    const halves: [number[], number[]] = [[], []];
    const pair = timeUs(300, () => {
      const t0 = process.hrtime.bigint();
      vm.setUserMemoryRegion(create);
      const t1 = process.hrtime.bigint();
      vm.setUserMemoryRegion(del);
      halves[0].push(Number(t1 - t0) / 1000);
      halves[1].push(Number(process.hrtime.bigint() - t1) / 1000);
    });
    lines.push({ name: `create + delete ${label} slot (one pair)`, unit: 'µs', value: pair });
    lines.push({ name: `  of which create`, unit: 'µs', value: median(halves[0]) });
    lines.push({ name: `  of which delete (zap-all + 2 SRCU syncs)`, unit: 'µs', value: median(halves[1]) });
  }
  lines.push(...faultCost(kvm));
  return lines;
}

/**
 * First-touch cost per page: 1024 fresh pages read by the CPL3 harness, median of 5 fresh VMs; then the
 * DELETE of that slot (the zap of its 1024 mapped pages, with the memslot update around it), per page.
 */
function faultCost(kvm: RealKvm): RealBenchLine[] {
  const n = 1024;
  const per: number[] = [];
  const zap: number[] = [];
  for (let rep = 0; rep < 5; rep++) {
    using vm = kvm.createVm(0);
    const hva = kvm.host.mmap(n * 4096);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x8000_0000, memorySize: n * 4096, userspaceAddr: hva });
    const vcpu = vm.createVcpu(0);
    vcpu.runAccesses([]);
    const r = vcpu.runAccesses(
      Array.from({ length: n }, (_, i) => ({ gpa: 0x8000_0000 + i * 4096, kind: 'read' as const })),
    );
    per.push(r.ns / 1000 / r.vcpuStats.pf_fixed!);
    const t0 = process.hrtime.bigint();
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x8000_0000, memorySize: 0, userspaceAddr: hva });
    zap.push(Number(process.hrtime.bigint() - t0) / 1000 / n);
    kvm.host.munmap(hva);
  }
  return [
    { name: `first-touch fault, CPL3 guest (${n} pages, per fault)`, unit: 'µs', value: median(per) },
    { name: `delete of a slot with ${n} pages mapped (zap), per page`, unit: 'µs', value: median(zap) },
  ];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const l of await run()) console.log(`  ${l.name.padEnd(58)} ${l.value.toFixed(2)} ${l.unit}`);
}
