/**
 * Copy-in and encoding of the VM-fd ioctl arguments the real backend passes to the kernel: the same
 * struct specs as the model (kvm/args.ts copyIn: unknown fields and out-of-range values are EINVAL, a
 * non-object is EFAULT), written into the C layouts of memslot-abi.md §1.
 *
 * Kernel counterpart: the copy_from_user() of each argument in virt/kvm/kvm_main.c#kvm_vm_ioctl, and
 * the uAPI structs kvm_create_guest_memfd, kvm_memory_attributes, kvm_enable_cap, kvm_dirty_log and
 * kvm_clear_dirty_log.
 */
import { copyIn, readU64, type U64 } from '../../kvm/args.ts';
import type {
  KvmClearDirtyLog,
  KvmCreateGuestMemfd,
  KvmEnableCap,
  KvmMemoryAttributes,
} from '../../kvm/api_types.ts';
import { KvmError, hex } from '../../kvm/kvm_error.ts';
import { STRUCT_SIZE } from '../../uapi/kvm.ts';
import { cstruct, setU64 } from './kvm_structs.ts';

export const REGION = {
  slot: 'u32',
  flags: 'u32',
  guestPhysAddr: 'u64',
  memorySize: 'u64',
  userspaceAddr: 'u64',
} as const;
export const REGION2 = {
  ...REGION,
  guestMemfdOffset: 'u64',
  guestMemfd: 'fd',
  pad1: 'u32',
  pad2: 'u64',
} as const;
const GMEM = { size: 'u64', flags: 'u64' } as const;
const ATTRS = { address: 'u64', size: 'u64', attributes: 'u64', flags: 'u64' } as const;
const CLEAR = { slot: 'u32', numPages: 'u32', firstPage: 'u64', bitmap: 'bytes' } as const;

/** A copied-in region: the V1 fields, plus the V2 ones when the V2 ioctl is used. */
export type Region = {
  slot: number;
  flags: number;
  guestPhysAddr: U64;
  memorySize: U64;
  userspaceAddr: U64;
  guestMemfdOffset?: U64;
  guestMemfd?: number;
  pad1?: number;
  pad2?: U64;
};

/** The region's fields as the kernel names them, in hex (for KvmError messages). */
export function describeRegion(r: Region, v2: boolean): string {
  const f = `slot ${hex(r.slot)} flags ${hex(r.flags)} guest_phys_addr ${hex(r.guestPhysAddr)} memory_size ${hex(r.memorySize)} userspace_addr ${hex(r.userspaceAddr)}`;
  return v2
    ? `${f} guest_memfd_offset ${hex(r.guestMemfdOffset ?? 0)} guest_memfd ${hex(r.guestMemfd ?? 0)}`
    : f;
}

type Encoded = { bytes: Uint8Array; detail: () => string };

/** struct kvm_create_guest_memfd */
export function encodeCreateGuestMemfd(arg: KvmCreateGuestMemfd): Encoded {
  const a = copyIn('KVM_CREATE_GUEST_MEMFD', arg, GMEM);
  const { bytes, dv } = cstruct(STRUCT_SIZE.kvm_create_guest_memfd);
  setU64(dv, 0, a.size);
  setU64(dv, 8, a.flags);
  return { bytes, detail: () => `size ${hex(a.size)} flags ${hex(a.flags)}` };
}

/** struct kvm_memory_attributes */
export function encodeMemoryAttributes(arg: KvmMemoryAttributes): Encoded {
  const a = copyIn('KVM_SET_MEMORY_ATTRIBUTES', arg, ATTRS);
  const { bytes, dv } = cstruct(STRUCT_SIZE.kvm_memory_attributes);
  [a.address, a.size, a.attributes, a.flags].forEach((v, i) => setU64(dv, 8 * i, v));
  return {
    bytes,
    detail: () =>
      `address ${hex(a.address)} size ${hex(a.size)} attributes ${hex(a.attributes)} flags ${hex(a.flags)}`,
  };
}

/** struct kvm_enable_cap: cap, flags and up to 4 u64 args (missing ones are 0). */
export function encodeEnableCap(arg: KvmEnableCap): Encoded {
  const name = 'KVM_ENABLE_CAP';
  if (typeof arg !== 'object' || arg === null)
    throw new KvmError('EFAULT', name, 'argument must be a struct object');
  for (const k of Object.keys(arg)) {
    if (k !== 'cap' && k !== 'flags' && k !== 'args') {
      throw new KvmError(
        'EINVAL',
        name,
        `field '${k}' is not a field of this struct (fields: cap, flags, args)`,
      );
    }
  }
  const a = copyIn(name, { cap: arg.cap, flags: arg.flags }, { cap: 'u32', flags: 'u32' });
  const args: unknown = arg.args ?? [];
  if (!Array.isArray(args) || args.length > 4) {
    throw new KvmError('EINVAL', name, `field 'args' must be an array of at most 4 u64`);
  }
  const vals = args.map((v, i) => readU64(name, `args[${i}]`, v));
  const { bytes, dv } = cstruct(STRUCT_SIZE.kvm_enable_cap);
  dv.setUint32(0, a.cap, true);
  dv.setUint32(4, a.flags, true);
  vals.forEach((v, i) => setU64(dv, 8 + 8 * i, v));
  return {
    bytes,
    detail: () => `cap ${a.cap} flags ${hex(a.flags)} args [${vals.map((v) => hex(v)).join(', ')}]`,
  };
}

/** struct kvm_dirty_log with a user pointer to the bitmap buffer. */
export function encodeDirtyLog(slot: number, bitmapAddr: number): Uint8Array {
  const { bytes, dv } = cstruct(STRUCT_SIZE.kvm_dirty_log);
  dv.setUint32(0, slot, true);
  setU64(dv, 8, bitmapAddr);
  return bytes;
}

/** Copy in a KVM_CLEAR_DIRTY_LOG argument; the bitmap is placed in user memory by the caller. */
export function copyInClearDirtyLog(arg: KvmClearDirtyLog) {
  return copyIn('KVM_CLEAR_DIRTY_LOG', arg, CLEAR);
}

/** struct kvm_clear_dirty_log with a user pointer to the bitmap buffer. */
export function encodeClearDirtyLog(
  a: { slot: number; numPages: number; firstPage: U64 },
  bitmapAddr: number,
): Encoded {
  const { bytes, dv } = cstruct(STRUCT_SIZE.kvm_clear_dirty_log);
  dv.setUint32(0, a.slot, true);
  dv.setUint32(4, a.numPages, true);
  setU64(dv, 8, a.firstPage);
  setU64(dv, 16, bitmapAddr);
  return {
    bytes,
    detail: () => `slot ${hex(a.slot)} first_page ${hex(a.firstPage)} num_pages ${hex(a.numPages)}`,
  };
}
