/**
 * A pool task for pool.test.ts: builds its own model instance from plain input and returns plain counts,
 * as sweep points and explorer schedules do. `fail` makes it throw, to test error propagation.
 */
import { threadId } from 'node:worker_threads';
import { Kvm } from '../../src/index.ts';

export interface FixtureInput {
  pages: number;
  fail?: boolean;
}

export interface FixtureOutput {
  pages: number;
  pfFixed: number;
  zapped: number;
  threadId: number;
}

export default function task(input: FixtureInput): FixtureOutput {
  if (input.fail) throw new Error(`fixture refused ${input.pages} pages`);
  const kvm = new Kvm();
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(input.pages * 4096, { backing: '4k' });
  vm.setUserMemoryRegion({
    slot: 0,
    guestPhysAddr: 0x100000,
    memorySize: input.pages * 4096,
    userspaceAddr: hva,
  });
  const vcpu = vm.createVcpu(0);
  for (let i = 0; i < input.pages; i++) vcpu.access(0x100000 + i * 4096, 'write');
  const pfFixed = vcpu.getStats()['pf_fixed'] ?? -1;
  vm.setUserMemoryRegion({ slot: 0, memorySize: 0 });
  const m = vm.getModelStats();
  return { pages: input.pages, pfFixed, zapped: m['sptes_zapped_4k'] ?? -1, threadId };
}
