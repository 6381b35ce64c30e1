/**
 * The issue-17 reproducers, one by one, with the exact error each now gives: values that broke the
 * error-message builders, huge host ranges that looped once per page, calls on closed fds, and the
 * stepwise access that accepted what `access` rejects.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, KvmError, uapi } from '../../src/index.ts';
import { resolveHostConfig, KERNEL_VERSIONS } from '../../src/kvm/host_profile.ts';
import { kvmOptionChecks } from '../../src/kvm/kvm_options.ts';

const MiB = 1 << 20;

function setup() {
  const kvm = new Kvm();
  const hva = kvm.host.mmap(2 * MiB, { backing: 'thp' });
  const vm = kvm.createVm(0);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva });
  const vcpu = vm.createVcpu(0);
  return { kvm, hva, vm, vcpu };
}

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('did not throw');
}

function kvmError(f: () => unknown): { code: string; errno: number; syscall: string; message: string } {
  const e = thrown(f);
  expect(e).toBeInstanceOf(KvmError);
  const k = e as KvmError;
  return { code: k.code, errno: k.errno, syscall: k.syscall, message: k.message };
}

describe('a bad value is reported, never converted (issue 17 reproducers)', () => {
  it('struct fields and raw ioctls', () => {
    const { vm } = setup();
    expect(kvmError(() => vm.setUserMemoryRegion({ slot: Object.create(null) }))).toEqual({
      code: 'EINVAL',
      errno: 22,
      syscall: 'KVM_SET_USER_MEMORY_REGION',
      message: "KVM_SET_USER_MEMORY_REGION: EINVAL: field 'slot' must be a u32 (got an object)",
    });
    expect(vm.ioctlSetUserMemoryRegion({ slot: Object.create(null) } as never)).toBe(-22);
    expect(vm.ioctlSetUserMemoryRegion(Symbol() as never)).toBe(-14);
    expect(kvmError(() => vm.setUserMemoryRegion({ memorySize: Object(4096n) })).message).toBe(
      "KVM_SET_USER_MEMORY_REGION: EINVAL: field 'memorySize' must be a number or bigint (got an object)",
    );
  });

  it('fds: close, fallocate', () => {
    const { kvm, vm } = setup();
    expect(kvmError(() => kvm.close(Symbol() as never)).message).toBe(
      'close: EBADF: fd a symbol is not open',
    );
    const fd = vm.createGuestMemfd({ size: 2 * MiB });
    expect(kvmError(() => kvm.fallocate(fd, 3, null as never, 4096)).message).toBe(
      'fallocate: EINVAL: offset null is not an integer (use a bigint past 2^53)',
    );
  });

  it('guest actions: access, beginAccess, CR0, MSRs, MTRRs, PVALIDATE', () => {
    const { kvm, vcpu } = setup();
    const t = (f: () => unknown) => {
      const e = thrown(f) as Error;
      return `${e.constructor.name}: ${e.message}`;
    };
    expect(t(() => vcpu.access(Object.create(null), 'read'))).toBe(
      'TypeError: access: gpa must be a guest physical address (a number below 2^52) (got an object)',
    );
    expect(t(() => vcpu.beginAccess(1n as never, 'write'))).toBe(
      'TypeError: beginAccess: gpa must be a guest physical address (a number below 2^52) (got 1n)',
    );
    expect(t(() => vcpu.beginAccess(-4096, 'write'))).toBe(
      'RangeError: beginAccess: gpa must be a guest physical address (an integer in [0, 2^52)) (got -4096)',
    );
    expect(t(() => vcpu.beginAccess(NaN, 'write'))).toBe(
      'RangeError: beginAccess: gpa must be a guest physical address (an integer in [0, 2^52)) (got NaN)',
    );
    expect(t(() => vcpu.beginAccess(0, 'fetch' as never))).toBe(
      `TypeError: beginAccess: kind must be 'read', 'write' or 'exec' (got "fetch")`,
    );
    expect(t(() => vcpu.access(0, 'read', { private: 'yes' as never }))).toBe(
      'TypeError: access: private must be a boolean (got "yes")',
    );
    expect(t(() => vcpu.access(0, 'read', { privat: true } as never))).toBe(
      "TypeError: access: unknown option 'privat' (options: private)",
    );
    expect(t(() => vcpu.setCr0(null as never))).toBe(
      'TypeError: setCr0: cr0 must be a number or { cd, nw? } (got null)',
    );
    expect(t(() => vcpu.setMsr(0x203, undefined as never))).toBe(
      'TypeError: setMsr: data must be a u64 (a number or a bigint) (got undefined)',
    );
    expect(t(() => vcpu.getMsr(null as never))).toBe(
      'TypeError: getMsr: index must be an integer in [0, 4294967295] (got null)',
    );
    expect(t(() => vcpu.setMtrrVar(0, { base: null as never, size: 0x200000, type: 1 }))).toBe(
      'TypeError: setMtrrVar: base must be an integer in [0, 9007199254740991] (got null)',
    );
    const snp = kvm.createVm(4).createVcpu(0);
    expect(t(() => snp.snpPvalidate(Object(4096n)))).toBe(
      'TypeError: snpPvalidate: gpa must be a guest physical address (a number below 2^52) (got an object)',
    );
  });

  it('host mm events', () => {
    const { kvm } = setup();
    const t = (f: () => unknown) => {
      const e = thrown(f) as Error;
      return `${e.constructor.name}: ${e.message}`;
    };
    expect(t(() => kvm.host.thpSplit(1n as never))).toBe(
      'TypeError: thpSplit: addr must be a number (got 1n)',
    );
    expect(t(() => kvm.host.munmap(null as never, 4096))).toBe(
      'TypeError: munmap: addr must be a number (got null)',
    );
    expect(t(() => kvm.host.mmap(Symbol() as never))).toBe(
      'TypeError: mmap: length must be a number (got a symbol)',
    );
    expect(t(() => kvm.host.ksmMerge(Object.create(null), 0))).toBe(
      'TypeError: ksmMerge: a must be a number (got an object)',
    );
    expect(t(() => kvm.host.mmap(4096, { backing: '3m' as never }))).toBe(
      "TypeError: mmap: backing must be one of '4k', '2m', '1g', 'thp' (got \"3m\")",
    );
    expect(t(() => kvm.host.mmap(2 ** 41))).toBe(
      "RangeError: mmap: length 0x20000000000 at 4k backing is more than 268435456 frames (the model's limit per mapping; use a 2m, 1g or thp backing)",
    );
  });
});

describe('host mm events cost what is mapped in the range, not its length', () => {
  it('munmap, swapOut, migrate and mprotect over the whole 128 TiB address space return in milliseconds', () => {
    const { kvm, hva, vcpu } = setup();
    expect(vcpu.access(0x1000, 'write').exit).toBe('none');
    const pages0 = kvm.host.pfns.allocated;
    expect(pages0).toBe(512); // the THP behind the slot
    const t0 = performance.now();
    kvm.host.mprotect(0, 2 ** 47, false);
    expect(kvm.host.mappings().map((v) => v.writable)).toEqual([false]);
    kvm.host.migrate(0xbef2e000, 2 ** 47 - 0xbef2e000);
    kvm.host.swapOut(0, 2 ** 47);
    expect(kvm.host.pfns.allocated).toBe(0); // every present page went to swap
    kvm.host.munmap(0xbef2e000, 0x800000000000 - 0xbef2e000);
    expect(kvm.host.mappings()).toEqual([]);
    const ms = performance.now() - t0;
    // A per-page loop over 2^35 pages takes minutes; what is mapped here is one 2M frame.
    expect(ms).toBeLessThan(1000);
    expect(hva).toBe(2 ** 40);
    // The notifier zapped the slot's mapping: the guest no longer reaches a page there.
    expect(vcpu.access(0x1000, 'read')).toEqual({
      exit: 'memory_fault',
      gpa: 0x1000,
      size: 4096,
      private: false,
    });
  });

  it('a munmap of a huge range around a sparse mapping frees exactly its present pages', () => {
    const kvm = new Kvm();
    const a = kvm.host.mmap(64 * MiB); // 4K pages, touched sparsely
    for (let i = 0; i < 10; i++) kvm.host.hvaToPfn(a + i * 7 * MiB, true);
    expect(kvm.host.pfns.allocated).toBe(10);
    kvm.host.munmap(0, 2 ** 47);
    expect(kvm.host.pfns.allocated).toBe(0);
    expect(kvm.host.mappings()).toEqual([]);
  });
});

describe('closed fds are EBADF', () => {
  it('after close(vm.fd) the VM ioctls fail with EBADF and change nothing; open vCPU fds keep running', () => {
    const { kvm, hva, vm, vcpu } = setup();
    const gen = vm.memslotsGeneration(0);
    kvm.close(vm.fd);
    expect(
      kvmError(() =>
        vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 4 * MiB, memorySize: 4096, userspaceAddr: hva }),
      ),
    ).toEqual({
      code: 'EBADF',
      errno: 9,
      syscall: 'KVM_SET_USER_MEMORY_REGION',
      message: 'KVM_SET_USER_MEMORY_REGION: EBADF: the VM fd is closed',
    });
    expect(vm.ioctlSetUserMemoryRegion({ slot: 0 })).toBe(-9);
    expect(kvmError(() => vm.createVcpu(1)).message).toBe('KVM_CREATE_VCPU: EBADF: VM fd 4 is closed');
    expect(kvmError(() => vm.createGuestMemfd({ size: 4096 })).code).toBe('EBADF');
    expect(kvmError(() => vm.enableCap({ cap: 213, args: [0x80] })).code).toBe('EBADF');
    expect(kvmError(() => vm.checkExtension(uapi.KVM_CAP.KVM_CAP_USER_MEMORY)).code).toBe('EBADF');
    expect(kvmError(() => vm.getDirtyLog(0)).code).toBe('EBADF');
    expect(vm.memslotsGeneration(0)).toBe(gen);
    expect(vm.memslots(0).length).toBe(1);
    // The vCPU fd holds its own reference to the VM (kvm_get_kvm in kvm_vm_ioctl_create_vcpu).
    expect(vcpu.access(0x1000, 'write').exit).toBe('none');
    kvm.close(vcpu.fd);
    expect(kvmError(() => vcpu.access(0x1000, 'write'))).toEqual({
      code: 'EBADF',
      errno: 9,
      syscall: 'KVM_RUN',
      message: 'KVM_RUN: EBADF: vCPU fd 5 is closed',
    });
    expect(kvmError(() => vcpu.setMsr(0x277, 0)).syscall).toBe('KVM_SET_MSRS');
    expect(kvmError(() => kvm.close(vm.fd)).code).toBe('EBADF');
  });

  it('after close(kvm.fd) /dev/kvm ioctls are EBADF while existing VMs live on', () => {
    const { kvm, vcpu } = setup();
    kvm.close(kvm.fd);
    expect(kvmError(() => kvm.createVm(0)).message).toBe('KVM_CREATE_VM: EBADF: /dev/kvm fd 3 is closed');
    expect(kvmError(() => kvm.checkExtension(1)).code).toBe('EBADF');
    expect(vcpu.access(0x1000, 'read').exit).toBe('none');
  });
});

describe('new Kvm(options) validates every option', () => {
  const msg = (o: unknown) => {
    const e = thrown(() => new Kvm(o as never)) as Error;
    return `${e.constructor.name}: ${e.message}`;
  };
  it('the issue-17 reproducers', () => {
    expect(msg({ kernel: '5.4' })).toBe(
      `TypeError: Kvm: kernel must be one of '6.12', '6.15', '6.17', '6.18', '6.19' (got "5.4")`,
    );
    expect(msg({ maxVcpus: NaN })).toBe(
      'RangeError: Kvm: maxVcpus must be an integer in [1, 65536] (got NaN)',
    );
    expect(msg({ supportedQuirks: 'x' })).toBe(
      'TypeError: Kvm: supportedQuirks must be an integer in [0, 4294967295] (got "x")',
    );
    expect(msg({ tdp: 'no' })).toBe('TypeError: Kvm: tdp must be a boolean (got "no")');
    expect(msg({ userAddrLimit: -1 })).toBe(
      'RangeError: Kvm: userAddrLimit must be an integer in [4096, 140737488355328] (got -1)',
    );
    expect(msg({ userAddrLimit: 0x7ffffffff001 })).toBe(
      'RangeError: Kvm: userAddrLimit must be page aligned (got 140737488351233)',
    );
    expect(msg({ vmTypes: 1n })).toBe('TypeError: Kvm: vmTypes must be an integer in [0, 63] (got 1n)');
    expect(msg({ profile: Object.create(null) })).toBe(
      "TypeError: Kvm: profile must be one of 'upstream-6.18', 'pvm-6.18' (got an object)",
    );
    expect(msg({ speed: 1 })).toMatch(/^TypeError: Kvm: unknown option 'speed' \(known: profile, kernel, /);
    expect(msg(null)).toBe('TypeError: Kvm: options must be an object (got null)');
  });
  it('every option of the resolved configuration has a check (a new option must get one)', () => {
    const keys = Object.keys(resolveHostConfig({})).sort();
    expect(Object.keys(kvmOptionChecks(['upstream-6.18', 'pvm-6.18'], KERNEL_VERSIONS)).sort()).toEqual(keys);
  });
  it('valid options still resolve: the pvm profile and explicit values', () => {
    const k = new Kvm({ profile: 'pvm-6.18', kernel: '6.19', maxVcpus: 8, userAddrLimit: 0x7ffffffff000 });
    expect([k.cfg.tdp, k.cfg.kernel, k.cfg.maxVcpus, k.cfg.gmemFlagsFix]).toEqual([false, '6.19', 8, true]);
  });
});
