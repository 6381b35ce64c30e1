/**
 * The real /dev/kvm's capabilities, VM types, host profile and binary stats, against
 * shared/reference/real-kvm-host.md §1, §2 and §5 (the development machines' kvm_pvm host).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import {
  VM_STAT_NAMES,
  VM_STAT_NAMES_PVM,
  VCPU_STAT_NAMES,
  VCPU_STAT_NAMES_PVM,
} from '../../src/kvm/kvm_stats.ts';
import { PVM_HOST, announceSkip, errnoOf } from './env.ts';

announceSkip('caps_stats', true);

describe.skipIf(!PVM_HOST)('real /dev/kvm: capabilities and VM types (real-kvm-host.md §1–2)', () => {
  let kvm: RealKvm;
  beforeAll(() => {
    kvm = new RealKvm();
  });
  afterAll(() => kvm.close());

  it('API version 12 and a 12 KiB kvm_run mapping', () => {
    expect(kvm.apiVersion()).toBe(12);
    expect(kvm.vcpuMmapSize()).toBe(12288);
  });

  const C = KVM_CAP;
  const table: [keyof typeof KVM_CAP, number][] = [
    ['KVM_CAP_NR_MEMSLOTS', 32764],
    ['KVM_CAP_MULTI_ADDRESS_SPACE', 0],
    ['KVM_CAP_X86_SMM', 0],
    ['KVM_CAP_DISABLE_QUIRKS', 1],
    ['KVM_CAP_DISABLE_QUIRKS2', 0x5ff],
    ['KVM_CAP_VM_TYPES', 0x1],
    ['KVM_CAP_USER_MEMORY2', 1],
    ['KVM_CAP_GUEST_MEMFD', 1],
    ['KVM_CAP_GUEST_MEMFD_FLAGS', 3],
    ['KVM_CAP_MEMORY_ATTRIBUTES', 0],
    ['KVM_CAP_MEMORY_FAULT_INFO', 1],
    ['KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2', 3],
    ['KVM_CAP_READONLY_MEM', 1],
    ['KVM_CAP_BINARY_STATS_FD', 1],
    ['KVM_CAP_DIRTY_LOG_RING', 1048576],
    ['KVM_CAP_DIRTY_LOG_RING_ACQ_REL', 1048576],
    ['KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP', 0],
    ['KVM_CAP_PRE_FAULT_MEMORY', 0],
    ['KVM_CAP_SYNC_MMU', 1],
    ['KVM_CAP_MAX_VCPUS', 1024],
    ['KVM_CAP_MAX_VCPU_ID', 4096],
    ['KVM_CAP_X86_DISABLE_EXITS', 14],
    ['KVM_CAP_HYPERV', 0],
  ];
  it.each(table)('%s = %d on /dev/kvm and on a DEFAULT VM fd', (name, want) => {
    expect(kvm.checkExtension(C[name])).toBe(want);
    using vm = kvm.createVm(0);
    expect(vm.checkExtension(C[name])).toBe(want);
  });

  it('KVM_CAP_NR_VCPUS is the host CPU count', async () => {
    const { availableParallelism } = await import('node:os');
    expect(kvm.checkExtension(C.KVM_CAP_NR_VCPUS)).toBe(availableParallelism());
  });

  it('only KVM_X86_DEFAULT_VM can be created; every other type is EINVAL', () => {
    using vm = kvm.createVm(0);
    expect(vm.type).toBe(0);
    for (const t of [1, 2, 3, 4, 5, 6, 7, 8, 31, 0x100, 0x80000000, 0xffffffff]) {
      expect(
        errnoOf(() => kvm.createVm(t)),
        `type ${t}`,
      ).toBe('EINVAL');
    }
  });

  it('malformed arguments fail like the model (copy-in), never reach the kernel', () => {
    expect(errnoOf(() => kvm.createVm(-1))).toBe('EINVAL');
    expect(errnoOf(() => kvm.createVm(1.5))).toBe('EINVAL');
    expect(errnoOf(() => kvm.checkExtension(-3))).toBe('EINVAL');
    using vm = kvm.createVm(0);
    expect(errnoOf(() => vm.setUserMemoryRegion(null as never))).toBe('EFAULT');
    expect(errnoOf(() => vm.setUserMemoryRegion({ slot: 0, memSize: 4096 } as never))).toBe('EINVAL');
    expect(errnoOf(() => vm.setUserMemoryRegion({ slot: 0, memorySize: 2 ** 60 }))).toBe('EINVAL');
  });

  it('hostProfile() describes this host as the pvm-6.18 model profile', () => {
    const p = kvm.hostProfile();
    expect(p).toMatchObject({
      apiVersion: 12,
      pvm: true,
      tdpMmu: false,
      tdpEnabled: false,
      vmTypes: 1,
      vmTypeList: [0],
      supportedQuirks: 0x5ff,
      addressSpaces: 1,
      smm: false,
      memoryAttributes: 0,
      guestMemfd: true,
      guestMemfdFlags: 3,
      nrMemslots: 32764,
      readonlyMem: true,
      manualDirtyLogProtect: 3,
    });
    expect(p.modelOptions).toEqual({
      profile: 'pvm-6.18',
      tdpMmu: false,
      vmTypes: 1,
      smm: false,
      supportedQuirks: 0x5ff,
      memoryAttributes: false,
      maxVcpus: 1024,
      maxVcpuId: 4096,
    });
  });
});

describe.skipIf(!PVM_HOST)('real /dev/kvm: binary stats (real-kvm-host.md §5)', () => {
  let kvm: RealKvm;
  beforeAll(() => {
    kvm = new RealKvm();
  });
  afterAll(() => kvm.close());

  /** The upstream names in the kernel's order; a PVM build may append its own extras. */
  function expectNames(got: string[], upstream: readonly string[], extras: readonly string[]): void {
    expect(got.slice(0, upstream.length)).toEqual([...upstream]);
    for (const n of got.slice(upstream.length)) expect(extras).toContain(n);
  }

  it('VM stats: header, upstream names in order, all zero at creation', () => {
    using vm = kvm.createVm(0);
    const fd = vm.getStatsFd();
    expect(fd.header).toMatchObject({ flags: 0, nameSize: 48, idOffset: 24, descOffset: 72 });
    expect(fd.header.id).toBe(`kvm-${process.pid}`);
    expect(fd.header.dataOffset).toBe(72 + 64 * fd.header.numDesc);
    expectNames(
      fd.descs.map((d) => d.name),
      VM_STAT_NAMES,
      VM_STAT_NAMES_PVM,
    );
    const s = vm.getStats();
    expect(Object.values(s).every((v) => v === 0)).toBe(true);
    const types = Object.fromEntries(fd.descs.map((d) => [d.name, d.type]));
    expect(types).toMatchObject({
      mmu_shadow_zapped: 'cumulative',
      pages_4k: 'instant',
      max_mmu_rmap_size: 'peak',
    });
  });

  it('vCPU stats: upstream names in order (histograms skipped by getStats, arrays in readAll)', () => {
    using vm = kvm.createVm(0);
    using vcpu = vm.createVcpu(0);
    const fd = vcpu.getStatsFd();
    expect(fd.header.id).toBe(`kvm-${process.pid}/vcpu-0`);
    const scalar = fd.descs.filter((d) => d.size === 1).map((d) => d.name);
    expectNames(scalar, VCPU_STAT_NAMES, VCPU_STAT_NAMES_PVM);
    const hist = fd.descs.filter((d) => d.size !== 1);
    expect(hist.map((d) => [d.name, d.type, d.size])).toEqual([
      ['halt_poll_success_hist', 'log_hist', 32],
      ['halt_poll_fail_hist', 'log_hist', 32],
      ['halt_wait_hist', 'log_hist', 32],
    ]);
    expect(Object.keys(vcpu.getStats())).toEqual(scalar);
    expect(Object.values(vcpu.getStats()).every((v) => v === 0)).toBe(true);
    expect(fd.readAll()['halt_wait_hist']).toEqual(new Array(32).fill(0));
  });

  it('the stats fd is read with pread, so repeated reads see the same layout', () => {
    using vm = kvm.createVm(0);
    expect(vm.getStats()).toEqual(vm.getStats());
  });
});
