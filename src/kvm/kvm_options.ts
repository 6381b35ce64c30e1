/**
 * Validation of `new Kvm(options)`: each option's type and range, checked before the profile is
 * resolved, so a bad value is a TypeError/RangeError naming the option ("Kvm: maxVcpus must be …")
 * rather than a host that misbehaves later (a NaN vCPU limit, a userAddrLimit printed as 0x-1).
 * Combinations (tdpMmu without tdp, bugs that need other switches, guest_memfd flags without
 * guest_memfd) are checked by host_profile.ts#resolveHostConfig. Model-only file.
 */
import { argBool, argInt, argOneOf, formatValue } from './args.ts';

type Check = (name: string, v: unknown) => void;

const bool: Check = (n, v) => void argBool('Kvm', n, v, false);
const int =
  (min: number, max: number): Check =>
  (n, v) =>
    void argInt('Kvm', n, v, min, max);
const oneOf =
  (allowed: readonly string[]): Check =>
  (n, v) =>
    void argOneOf('Kvm', n, v, allowed);

/** Every option of KvmOptions with its check; an option missing here is refused as unknown. */
export function kvmOptionChecks(
  profiles: readonly string[],
  kernels: readonly string[],
): Record<string, Check> {
  return {
    profile: oneOf(profiles),
    kernel: oneOf(kernels),
    gmemFlagsFix: bool,
    tdp: bool,
    tdpMmu: bool,
    // KVM_CAP_VM_TYPES: a bitmask of the six x86 VM types (DEFAULT must be in it: resolveHostConfig)
    vmTypes: int(0, 0b111111),
    smm: bool,
    // kvm_caps.supported_quirks: a u32 mask (hosts report bits beyond the ones the model names)
    supportedQuirks: int(0, 0xffffffff),
    maxPhyAddr: int(36, 52),
    // USER_PTR_MAX: a page-aligned ceiling no higher than the 4-level TASK_SIZE_MAX the host model has
    userAddrLimit: (n, v) => {
      const x = argInt('Kvm', n, v, 0x1000, 2 ** 47);
      if (x % 0x1000 !== 0) throw new RangeError(`Kvm: ${n} must be page aligned (got ${formatValue(v)})`);
    },
    memoryAttributes: bool,
    guestMemfd: bool,
    guestMemfdFlags: int(0, 0xffffffff),
    pml: bool,
    eagerPageSplit: bool,
    onlineCpus: int(1, 1 << 16),
    maxVcpus: int(1, 1 << 16),
    maxVcpuId: int(1, 1 << 20),
    honorGuestMtrrs: bool,
    cdToggleZap: bool,
    // checked name by name in resolveHostConfig
    bugs: () => {},
  };
}

/** Check each given option (undefined = not given) against its check. */
export function validateKvmOptions(opts: Record<string, unknown>, checks: Record<string, Check>): void {
  for (const k of Object.keys(opts)) {
    const check = Object.hasOwn(checks, k) ? checks[k] : undefined;
    if (check === undefined)
      throw new TypeError(`Kvm: unknown option '${k}' (known: ${Object.keys(checks).join(', ')})`);
    if (opts[k] !== undefined) check(k, opts[k]);
  }
}
