/**
 * One pass over every kind of resource the real backend opens (for the leak tests): /dev/kvm, host
 * mappings, a memfd, VMs with slots, guest_memfds, VM and vCPU stats fds, kvm_run mappings, the access
 * harness, the dirty-bitmap scratch, and a set of calls that fail part-way. Returns the hvas it mapped.
 */
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import { KvmError } from '../../src/kvm/kvm_error.ts';
import { KVM_CAP, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES } from '../../src/uapi/kvm.ts';

const P = 4096;

function fails(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (e instanceof KvmError) return;
    throw e;
  }
}

/**
 * guest_memfd resources are part of the pass only where the kernel has guest_memfd (probed here, so the
 * child process of the exit test decides the same way); without it, the failing create stays in.
 */
export function workload(opts: { close: boolean }): { hvas: number[] } {
  const kvm = new RealKvm();
  const gmem = kvm.checkExtension(KVM_CAP.KVM_CAP_GUEST_MEMFD) !== 0;
  const hvas: number[] = [];
  const a = kvm.host.mmap(64 * P);
  const t = kvm.host.mmap(4 << 20, { backing: 'thp' });
  hvas.push(a, t);
  fails(() => hvas.push(kvm.host.mmap(1 << 30, { backing: '1g' }))); // ENOMEM unless 1 GiB pages are reserved
  const memfd = kvm.host.memfdCreate('leak-test', 2 * P);
  for (let i = 0; i < 2; i++) {
    const vm = kvm.createVm(0);
    vm.setUserMemoryRegion({
      slot: 1,
      flags: KVM_MEM_LOG_DIRTY_PAGES,
      guestPhysAddr: 0x8000_0000,
      memorySize: 64 * P,
      userspaceAddr: a,
    });
    vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x4000_0000, memorySize: 4 << 20, userspaceAddr: t });
    if (gmem) {
      const g1 = vm.createGuestMemfd({ size: 16 * P, flags: 3 });
      vm.createGuestMemfd({ size: 16 * P, flags: 0 });
      vm.setUserMemoryRegion2({
        slot: 3,
        flags: KVM_MEM_GUEST_MEMFD,
        guestPhysAddr: 0x1_0000_0000,
        memorySize: 16 * P,
        guestMemfd: g1,
      });
      if (i === 0) kvm.host.close(g1);
    } else {
      fails(() => vm.createGuestMemfd({ size: 16 * P, flags: 0 })); // ENOTTY
    }
    const v0 = vm.createVcpu(0);
    vm.createVcpu(1);
    v0.runAccesses([
      { gpa: 0x8000_0000, kind: 'write' },
      { gpa: 0x4000_0000, kind: 'read' },
      { gpa: 0x9000_0000, kind: 'read' },
    ]);
    v0.getStats();
    vm.getStats();
    vm.getDirtyLog(1);
    vm.clearDirtyLog({ slot: 1, firstPage: 0, numPages: 64, bitmap: new Uint8Array(8) });
    // calls that fail part-way must leave nothing behind
    fails(() => vm.createVcpu(0)); // EEXIST: id in use
    fails(() => vm.createVcpu(100000)); // EINVAL
    fails(() => vm.createGuestMemfd({ size: 0 }));
    fails(() =>
      vm.setUserMemoryRegion({ slot: 4, guestPhysAddr: 0x8000_0000, memorySize: P, userspaceAddr: a }),
    );
    fails(() => vm.clearDirtyLog({ slot: 1, firstPage: 0, numPages: 64, bitmap: new Uint8Array(4) }));
    fails(() => vm.getDirtyLog(9));
    if (i === 1 && opts.close) vm.close(); // the other VM is closed by kvm.close()
  }
  fails(() => kvm.createVm(3));
  fails(() => kvm.host.mmap(-1));
  if (opts.close) {
    kvm.host.close(memfd);
    kvm.close();
  }
  return { hvas };
}
