/**
 * The three layers of "something is wrong", as the kernel has them:
 *  - warnOnce (WARN_ON_ONCE): record and continue;
 *  - kvmBugOn (KVM_BUG_ON): the VM is marked bugged and dead, later ioctls fail with EIO;
 *  - ModelCorruption (BUG()): the model's own data structures are inconsistent; a bug in zaplab.
 * This file holds the last; the first two live on the Vm (kvm/kvm_main.ts) because they record there.
 */
export class ModelCorruption extends Error {
  override readonly name = 'ModelCorruption';
}
