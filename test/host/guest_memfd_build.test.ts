/**
 * A kernel built without CONFIG_KVM_GUEST_MEMFD (the development machines' 6.18.44 build v1272) as the
 * model answers it: `new Kvm({ guestMemfd: false })`. Kernel source compared: linux 6.18
 * virt/kvm/kvm_main.c#check_memory_region_flags (`if (IS_ENABLED(CONFIG_KVM_GUEST_MEMFD)) valid_flags |=
 * KVM_MEM_GUEST_MEMFD`), #kvm_vm_ioctl_check_extension_generic (KVM_CAP_GUEST_MEMFD and _FLAGS under
 * #ifdef CONFIG_KVM_GUEST_MEMFD), and kvm_vm_ioctl (KVM_CREATE_GUEST_MEMFD under the same #ifdef, so
 * the arch handler's -ENOTTY). The live host's answers are in test/recorded/abi-pvm-6.18-v1272.json.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, KvmError } from '../../src/index.ts';
import { resolveHostConfig } from '../../src/kvm/host_profile.ts';
import { parseScenario } from '../../src/scenario/parse.ts';
import { runScenario } from '../../src/scenario/runner.ts';
import { DESIGNS } from '../../src/scenario/designs.ts';
import { KVM_CAP, KVM_MEM_GUEST_MEMFD } from '../../src/uapi/kvm.ts';

const C = KVM_CAP;
const S = 0x200000;
const code = (f: () => unknown): string => {
  try {
    f();
    return 'ok';
  } catch (e) {
    if (e instanceof KvmError) return `${e.code}/${e.errno}`;
    throw e;
  }
};

describe.each([
  ['pvm-6.18', { profile: 'pvm-6.18' as const }],
  ['upstream-6.18', {}],
])('guestMemfd flipped on the %s profile', (_name, base) => {
  const caps = (kvm: Kvm) => {
    const vm = kvm.createVm(0);
    return [
      kvm.checkExtension(C.KVM_CAP_GUEST_MEMFD),
      kvm.checkExtension(C.KVM_CAP_GUEST_MEMFD_FLAGS),
      vm.checkExtension(C.KVM_CAP_GUEST_MEMFD),
      vm.checkExtension(C.KVM_CAP_GUEST_MEMFD_FLAGS),
    ];
  };

  it('caps: 1 and MMAP|INIT_SHARED with guest_memfd, 0 and 0 without', () => {
    expect(caps(new Kvm({ ...base }))).toEqual([1, 3, 1, 3]);
    expect(caps(new Kvm({ ...base, guestMemfd: false }))).toEqual([0, 0, 0, 0]);
  });

  it('KVM_CREATE_GUEST_MEMFD is ENOTTY whatever its arguments; with guest_memfd the same calls are checked', () => {
    const without = new Kvm({ ...base, guestMemfd: false }).createVm(0);
    const withG = new Kvm({ ...base }).createVm(0);
    const args = [
      { size: S, flags: 0 },
      { size: S, flags: 3 },
      { size: 0, flags: 0 },
      { size: S, flags: 4 },
    ];
    expect(args.map((a) => code(() => without.createGuestMemfd(a)))).toEqual([
      'ENOTTY/25',
      'ENOTTY/25',
      'ENOTTY/25',
      'ENOTTY/25',
    ]);
    expect(args.map((a) => code(() => withG.createGuestMemfd(a)))).toEqual([
      'ok',
      'ok',
      'EINVAL/22',
      'EINVAL/22',
    ]);
  });

  it('KVM_MEM_GUEST_MEMFD fails the flags check (EINVAL) before the fd is read, even on a delete; plain slots are untouched', () => {
    const kvm = new Kvm({ ...base, guestMemfd: false });
    const vm = kvm.createVm(0);
    const hva = kvm.host.mmap(S);
    const r2 = (flags: number, size: number, fd: number) =>
      vm.ioctlSetUserMemoryRegion(
        { slot: 10, flags, guestPhysAddr: 0xc0000000, memorySize: size, userspaceAddr: hva, guestMemfd: fd },
        true,
      );
    expect([
      r2(KVM_MEM_GUEST_MEMFD, S, -1),
      r2(KVM_MEM_GUEST_MEMFD, S, 0x7fff),
      r2(KVM_MEM_GUEST_MEMFD, 0, -1),
    ]).toEqual([-22, -22, -22]);
    expect(
      code(() =>
        vm.setUserMemoryRegion({
          slot: 10,
          flags: KVM_MEM_GUEST_MEMFD,
          guestPhysAddr: 0,
          memorySize: S,
          userspaceAddr: hva,
        }),
      ),
    ).toBe('EINVAL/22');
    expect(vm.activeMemslots(0).size).toBe(0);
    expect(r2(0, S, -1)).toBe(0);
    expect(r2(0, 0, -1)).toBe(0);
    // with guest_memfd the bogus fd is what fails
    const vm2 = new Kvm({ ...base }).createVm(0);
    expect(
      vm2.ioctlSetUserMemoryRegion(
        { slot: 10, flags: KVM_MEM_GUEST_MEMFD, guestPhysAddr: 0, memorySize: S, guestMemfd: 0x7fff },
        true,
      ),
    ).toBe(-9);
  });
});

describe('host options for guest_memfd', () => {
  it('without guest_memfd the private-memory VM types (SW_PROTECTED, SNP, TDX) are not offered', () => {
    const kvm = new Kvm({ guestMemfd: false });
    expect(kvm.checkExtension(C.KVM_CAP_VM_TYPES)).toBe(0b001101);
    expect([0, 1, 2, 3, 4, 5].map((t) => code(() => kvm.createVm(t)))).toEqual([
      'ok',
      'EINVAL/22',
      'ok',
      'ok',
      'EINVAL/22',
      'EINVAL/22',
    ]);
  });

  it('contradictions are TypeErrors naming the option', () => {
    expect(() => new Kvm({ guestMemfd: false, vmTypes: 0b11 })).toThrow(/vmTypes .*need guestMemfd/);
    expect(() => new Kvm({ guestMemfd: false, guestMemfdFlags: 1 })).toThrow(
      /guestMemfdFlags needs guestMemfd/,
    );
    expect(() => new Kvm({ guestMemfdFlags: 4 })).toThrow(/subset of 0x3/);
    expect(() => new Kvm({ guestMemfd: 'no' as never })).toThrow(/guestMemfd must be a boolean/);
  });

  it('guestMemfdFlags: the /dev/kvm mask; a private-memory VM never offers INIT_SHARED; pre-6.18 kernels none', () => {
    const kvm = new Kvm({ guestMemfdFlags: 1 });
    expect(kvm.checkExtension(C.KVM_CAP_GUEST_MEMFD_FLAGS)).toBe(1);
    expect(code(() => kvm.createVm(0).createGuestMemfd({ size: S, flags: 2 }))).toBe('EINVAL/22');
    expect(new Kvm().createVm(1).checkExtension(C.KVM_CAP_GUEST_MEMFD_FLAGS)).toBe(1);
    expect(resolveHostConfig({ kernel: '6.17' }).guestMemfdFlags).toBe(0);
    expect(resolveHostConfig({ profile: 'pvm-6.18', guestMemfd: false }).guestMemfdFlags).toBe(0);
  });

  it('a scenario with private memory on a host without guest_memfd reports the missing feature, and runs nothing', async () => {
    const text = [
      'name: gmem-less',
      'host: { profile: pvm-6.18, overrides: { guestMemfd: false } }',
      'vms:',
      '  - type: DEFAULT',
      '    regions:',
      '      - { name: ram, gpa: 0, size: 0x200000, private: true }',
      'timeline:',
      '  - access: { region: ram }',
    ].join('\n');
    const p = parseScenario(text, 'gmem-less.yaml');
    if (!p.ok) throw new Error(p.error);
    const r = await runScenario(p.scenario, DESIGNS[0]!);
    expect(r.verdict).toBe('missing-features');
    expect(r.missing).toEqual(['guest-memfd']);
    expect(r.steps).toEqual([]);
  });
});
