/**
 * fid-c's re-reading of the memslot uAPI rows (issue #12): KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING) hands
 * cap->args[0] (a u64) to virt/kvm/kvm_main.c#kvm_vm_ioctl_enable_dirty_log_ring(struct kvm *kvm, u32 size)
 * from kvm_vm_ioctl_enable_cap_generic (linux-next 03b9d314; the same signature in v6.18). C cuts the
 * value to its low 32 bits before any check, so the errno follows the truncated size. The old model
 * checked the whole u64: 2^33 gave E2BIG (the kernel sees size 0: EINVAL), and 2^32 + 64 KiB gave EINVAL
 * (the kernel sees 64 KiB and enables a ring of that size).
 */
import { describe, expect, it } from 'vitest';
import { Kvm, KvmError } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';

const errno = (f: () => void): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    throw e;
  }
  return 'ok';
};

describe('kvm_vm_ioctl_enable_dirty_log_ring takes a u32 size', () => {
  for (const cap of [KVM_CAP.KVM_CAP_DIRTY_LOG_RING, KVM_CAP.KVM_CAP_DIRTY_LOG_RING_ACQ_REL]) {
    it(`cap ${cap}: args[0] = 2^32 + 0x10000 enables a 0x10000-byte ring`, () => {
      const vm = new Kvm({ pml: true }).createVm(0);
      expect(errno(() => vm.enableCap({ cap, args: [2 ** 32 + 0x10000] }))).toBe('ok');
      expect(vm.dirtyRingSize).toBe(0x10000);
      // Set once: a second enable fails whatever its size.
      expect(errno(() => vm.enableCap({ cap, args: [0x10000] }))).toBe('EINVAL');
    });

    it(`cap ${cap}: args[0] = 2^33 is size 0 (EINVAL, not E2BIG) and leaves the ring off`, () => {
      const vm = new Kvm({ pml: true }).createVm(0);
      let msg = '';
      try {
        vm.enableCap({ cap, args: [2n ** 33n] });
      } catch (e) {
        if (!(e instanceof KvmError)) throw e;
        expect(e.code).toBe('EINVAL');
        msg = e.message;
      }
      expect(msg).toContain('dirty ring size 0x0 (args[0] 0x200000000 cut to u32) is not a power of two');
      expect(vm.dirtyRingSize).toBe(0);
      // Values that fit in 32 bits keep their errno: too big is still E2BIG.
      expect(errno(() => vm.enableCap({ cap, args: [0x200000] }))).toBe('E2BIG');
    });
  }
});
