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
import { HOST, PVM_HOST, REAL_KVM, announceSkip, errnoOf } from './env.ts';
import { Kvm } from '../../src/index.ts';
import { formatProbe } from '../../src/backends/kvm/host_probe.ts';

announceSkip('caps_stats');
if (REAL_KVM.ok && !PVM_HOST)
  console.warn("[caps_stats] binary stats names: skipped, they are the kvm_pvm vendor module's");

describe.skipIf(!REAL_KVM.ok)(
  'real /dev/kvm: capabilities, VM types and the host probe (real-kvm-host.md §1–2)',
  () => {
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
    // Facts of the x86 uAPI since 6.8 (USER_MEMORY2) whatever the build: one value for every kernel the
    // model covers. Build-dependent caps (guest_memfd, VM types, SMM, quirks, attributes, PRE_FAULT) are
    // not pinned here: the next test holds them to the model configured from the probe.
    const facts: [keyof typeof KVM_CAP, number][] = [
      ['KVM_CAP_NR_MEMSLOTS', 32764],
      ['KVM_CAP_DISABLE_QUIRKS', 1],
      ['KVM_CAP_USER_MEMORY2', 1],
      ['KVM_CAP_MEMORY_FAULT_INFO', 1],
      ['KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2', 3],
      ['KVM_CAP_READONLY_MEM', 1],
      ['KVM_CAP_BINARY_STATS_FD', 1],
      ['KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP', 0],
      ['KVM_CAP_SYNC_MMU', 1],
    ];
    it.each(facts)('%s = %d on /dev/kvm and on a DEFAULT VM fd', (name, want) => {
      expect(kvm.checkExtension(C[name])).toBe(want);
      using vm = kvm.createVm(0);
      expect(vm.checkExtension(C[name])).toBe(want);
    });

    it('the build-dependent caps equal what the model configured from the probe answers', () => {
      const model = new Kvm(HOST!.modelOptions);
      const mvm = model.createVm(0);
      using vm = kvm.createVm(0);
      const names = [
        'KVM_CAP_GUEST_MEMFD',
        'KVM_CAP_GUEST_MEMFD_FLAGS',
        'KVM_CAP_VM_TYPES',
        'KVM_CAP_X86_SMM',
        'KVM_CAP_MULTI_ADDRESS_SPACE',
        'KVM_CAP_DISABLE_QUIRKS2',
        'KVM_CAP_MEMORY_ATTRIBUTES',
        'KVM_CAP_PRE_FAULT_MEMORY',
        'KVM_CAP_MAX_VCPUS',
        'KVM_CAP_MAX_VCPU_ID',
        'KVM_CAP_NR_VCPUS',
        'KVM_CAP_DIRTY_LOG_RING',
      ] as const;
      const got = names.map((n) => [n, kvm.checkExtension(C[n]), vm.checkExtension(C[n])]);
      const want = names.map((n) => [n, model.checkExtension(C[n]), mvm.checkExtension(C[n])]);
      expect(got).toEqual(want);
    });

    it('KVM_CAP_NR_VCPUS is the host CPU count', async () => {
      const { availableParallelism } = await import('node:os');
      expect(kvm.checkExtension(C.KVM_CAP_NR_VCPUS)).toBe(availableParallelism());
    });

    it('KVM_CREATE_VM of every type gives the same answer as the model configured from the probe', () => {
      using vm = kvm.createVm(0);
      expect(vm.type).toBe(0);
      const model = new Kvm(HOST!.modelOptions);
      const real = (t: number) =>
        errnoOf(() => {
          kvm.createVm(t).close();
        });
      const types = [0, 1, 2, 3, 4, 5, 6, 7, 8, 31, 0x100, 0x80000000, 0xffffffff];
      expect(types.map((t) => [t, real(t)])).toEqual(types.map((t) => [t, errnoOf(() => model.createVm(t))]));
    });

    it('KVM_ENABLE_CAP(DIRTY_LOG_RING): the size is the u32 kvm_vm_ioctl_enable_dirty_log_ring takes, as in the model', () => {
      const model = new Kvm(HOST!.modelOptions);
      // Sizes ≥ 64 KiB stay clear of the PML-dependent reserve; 2^33 is 0 once cut to 32 bits.
      const sizes: (number | bigint)[] = [0x10000, 2 ** 32 + 0x10000, 2n ** 33n, 2 ** 32 + 3, 0x200000];
      const enable = (
        vm: { enableCap(c: { cap: number; args: (number | bigint)[] }): void },
        size: number | bigint,
      ) => errnoOf(() => vm.enableCap({ cap: C.KVM_CAP_DIRTY_LOG_RING, args: [size] }));
      const real = sizes.map((s) => {
        using vm = kvm.createVm(0);
        return enable(vm, s);
      });
      // The model's own answers are pinned in test/fidelity/dirty_ring_u32.test.ts; here the host decides.
      expect(real).toEqual(sizes.map((s) => enable(model.createVm(0), s)));
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

    it('hostProfile() is probed: every model option names the host fact it came from', () => {
      const p = kvm.hostProfile();
      expect(p.apiVersion).toBe(12);
      expect(p.derivation.map((d) => d.option)).toEqual(Object.keys(p.modelOptions));
      for (const d of p.derivation) expect(d.from.length, String(d.option)).toBeGreaterThan(5);
      // the probe reads the kernel, not a table of known builds
      expect(p.modelOptions.guestMemfd).toBe(kvm.checkExtension(C.KVM_CAP_GUEST_MEMFD) !== 0);
      expect(p.modelOptions.vmTypes).toBe(kvm.checkExtension(C.KVM_CAP_VM_TYPES));
      expect(p.modelOptions.supportedQuirks).toBe(kvm.checkExtension(C.KVM_CAP_DISABLE_QUIRKS2));
      expect(p.modelOptions.tdp).toBe(kvm.checkExtension(C.KVM_CAP_PRE_FAULT_MEMORY) !== 0);
      expect(p.gmemFlagsFix === null).toBe(!p.guestMemfd);
      // the model accepts the options as they are (no contradiction between probed facts)
      expect(() => new Kvm(p.modelOptions)).not.toThrow();
      console.info(`[caps_stats] probe of ${p.kernel}:\n${formatProbe(p)}`);
    });
  },
);

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
