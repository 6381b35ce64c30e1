/**
 * The ABI conformance cases of memslot-abi.md §7 (selftests) and §8 (derived cases) that a DEFAULT-VM,
 * address-space-0, no-memory-attributes host can run, as data (case_types.ts). The expected outcomes are
 * those of the development machines' kernel (kvm_pvm 6.18, real-kvm-host.md), which match upstream 6.18
 * on a DEFAULT VM except where a line says otherwise. Cases needing SW_PROTECTED/SEV/TDX or SMM stay in
 * test/conformance/*.test.ts (model only).
 *
 * Generations (`gen`, checked on the model only: the kernel does not expose them) are those of one
 * address space: without CONFIG_KVM_SMM each memslot swap adds 1, not 2 (memslot-abi.md §3.3).
 *
 * Every case starts on a fresh DEFAULT VM with an 8 MiB backing buffer (`buf`, MAP_NORESERVE on the real
 * host) and no other state.
 */
import {
  KVM_CAP,
  KVM_MEM_GUEST_MEMFD as GMEM,
  KVM_MEM_LOG_DIRTY_PAGES as LOG,
  KVM_MEM_READONLY as RO,
} from '../uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL as ZAP_ALL } from '../uapi/kvm_x86.ts';
import { SELFTEST_CASES } from './cases_selftests.ts';
import { type AbiCase, buf, type Call, R1, R2, step } from './case_types.ts';

export * from './case_types.ts';

const P = 4096;
const S = 0x200000;
const G = 0xc0000000;
const C = KVM_CAP;
const cap = (c: number, args: (number | bigint)[], flags = 0): Call => ({ op: 'cap', cap: c, flags, args });
const dirty = (slot: number): Call => ({ op: 'dirty', slot });
const clear = (
  slot: number,
  first: number,
  num: number,
  bytes: number | null,
  fill: number | number[] = 0,
): Call => ({
  op: 'clear',
  slot,
  first,
  num,
  bytes,
  fill,
});

export const DERIVED_CASES: AbiCase[] = [
  {
    id: '§8.1-2 create, re-issue',
    title: 'create on an empty VM → OK (generation 0 → 1); the identical request again → OK, no change',
    steps: [step(R1(0, 0, 0x1000, P, buf(), 1), 'OK'), step(R1(0, 0, 0x1000, P, buf(), 1), 'OK')],
  },
  {
    id: '§8.3 delete missing',
    title: 'deleting a slot that does not exist → EINVAL',
    steps: [step(R1(5, 0, 0, 0, 0), 'EINVAL')],
  },
  {
    id: '§8.4 misaligned delete',
    title: 'a delete with a misaligned gpa → EINVAL and the slot survives',
    steps: [
      step(R1(0, 0, 0x1000, P), 'OK'),
      step(R1(0, 0, 0x1001, 0), 'EINVAL'),
      step(R1(1, 0, 0x1000, P), 'EEXIST'),
      step(R1(0, 0, 0x1000, 0), 'OK'),
      step(R1(0, 0, 0x1000, 0), 'EINVAL'),
    ],
  },
  {
    id: '§8.5-7 alignment, wrap',
    title: 'misaligned size / hva / gpa and gpa+size wrapping → EINVAL',
    steps: [
      step(R1(0, 0, 0, 0x1001), 'EINVAL'),
      step(R1(0, 0, 0, P, buf(1)), 'EINVAL'),
      step(R1(0, 0, 0x1001, P), 'EINVAL'),
      step(R1(0, 0, 0xfffffffffffff000n, 0x2000), 'EINVAL'),
    ],
  },
  {
    id: '§8.8 max gfn',
    title: 'shadow paging: a slot at 2^52 → EINVAL, just below → OK',
    steps: [step(R1(0, 0, 2 ** 52, P), 'EINVAL'), step(R1(0, 0, 2 ** 52 - P, P), 'OK')],
  },
  {
    id: '§8.9-10 address spaces',
    title: 'no SMM on this host: as_id 1 and 2 → EINVAL (upstream with SMM: as_id 1 OK)',
    steps: [step(R1(1 << 16, 0, 0, P), 'EINVAL'), step(R1(2 << 16, 0, 0, P), 'EINVAL')],
  },
  {
    id: '§8.11 slot ids',
    title: 'id 32763 is the last user slot; 32764 and 0xffff → EINVAL',
    steps: [
      step(R1(32763, 0, 0, P), 'OK'),
      step(R1(32764, 0, P, P), 'EINVAL'),
      step(R1(0xffff, 0, P, P), 'EINVAL'),
    ],
  },
  { id: '§8.12 max pages', title: '2^31 pages → EINVAL', steps: [step(R1(0, 0, 0, 2 ** 31 * P), 'EINVAL')] },
  {
    id: '§2.2 access_ok',
    title: 'an hva range past the user address space → EINVAL; hva 0 (NULL) is accepted',
    steps: [step(R1(0, 0, 0, 2 * P, 0x7ffffffff000), 'EINVAL'), step(R1(0, 0, 0, S, 0), 'OK')],
  },
  {
    id: '§8.13 adjacent',
    title: 'adjacent slots → OK; a slot straddling both → EEXIST',
    steps: [step(R1(0, 0, 0, S), 'OK'), step(R1(1, 0, S, S), 'OK'), step(R1(2, 0, S - P, 2 * P), 'EEXIST')],
  },
  {
    id: '§8.15 shared hva',
    title: 'two slots with the same hva → OK',
    steps: [step(R1(0, 0, 0, S), 'OK'), step(R1(1, 0, S, S), 'OK')],
  },
  {
    id: '§8.16-17 move',
    title: 'MOVE over its own old range → OK (+2); MOVE onto another slot → EEXIST (unchanged)',
    steps: [
      step(R1(0, 0, 0, S, buf(), 1), 'OK'),
      step(R1(0, 0, S / 2, S, buf(), 3), 'OK'),
      step(R1(1, 0, 4 * S, S, buf(), 4), 'OK'),
      step(R1(0, 0, 4 * S, S, buf(), 4), 'EEXIST'),
    ],
  },
  {
    id: '§8.18 immutable',
    title: 'changing size, hva or READONLY of an existing slot → EINVAL',
    steps: [
      step(R1(0, 0, 0, S), 'OK'),
      step(R1(0, 0, 0, 2 * S), 'EINVAL'),
      step(R1(0, 0, 0, S, buf(P)), 'EINVAL'),
      step(R1(0, RO, 0, S), 'EINVAL'),
    ],
  },
  {
    id: '§8.19-20,25 dirty log',
    title: 'GET_DIRTY_LOG: ENOENT without LOG_DIRTY or slot, EINVAL past the ids; FLAGS_ONLY toggles it',
    steps: [
      step(R1(0, 0, 0, 100 * P, buf(), 1), 'OK'),
      step(dirty(0), 'ENOENT'),
      step(dirty(7), 'ENOENT'),
      step(dirty(40000), 'EINVAL'),
      step(dirty(1 << 16), 'EINVAL'),
      step(R1(0, LOG, 0, 100 * P, buf(), 2), 'OK'),
      step(dirty(0), 'OK 16B []'),
      step(R1(0, 0, 0, 100 * P, buf(), 3), 'OK'),
      step(dirty(0), 'ENOENT'),
    ],
  },
  {
    id: '§8.21 initially set',
    title: 'manual protect + INITIALLY_SET: all bits set, GET does not clear them, CLEAR does',
    steps: [
      step(cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [3]), 'OK'),
      step(R1(0, LOG, 0, 1000 * P), 'OK'),
      step(dirty(0), 'OK 128B [0-999]'),
      step(dirty(0), 'OK 128B [0-999]'),
      step(clear(0, 0, 1000, 128, 0xff), 'OK'),
      step(dirty(0), 'OK 128B []'),
    ],
  },
  {
    id: '§8.22 clear ranges',
    title: 'CLEAR_DIRTY_LOG: 64-aligned first page, num to the slot end, bitmap copied in full',
    steps: [
      step(cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [1]), 'OK'),
      step(R1(0, LOG, 0, 1024 * P), 'OK'),
      step(clear(0, 1, 64, 128), 'EINVAL'),
      step(clear(0, 0, 65, 128), 'EINVAL'),
      step(clear(0, 960, 64, 128), 'OK'),
      step(clear(0, 1024, 0, 128), 'OK'),
      step(clear(0, 1088, 0, 128), 'EINVAL'),
      step(clear(0, 0, 1024, 128), 'OK'),
      step(clear(0, 0, 1024, 64), 'EFAULT'),
      step(clear(0, 0, 64, null), 'EFAULT'),
      step(clear(1, 0, 64, 8), 'ENOENT'),
      step(R1(1, LOG, 0x1000_0000, 1000 * P), 'OK'),
      step(clear(1, 0, 1000, 125), 'EFAULT'),
      step(clear(1, 0, 1000, 128), 'OK'),
    ],
  },
  {
    id: '§8.23 manual protect args',
    title: 'MANUAL_DIRTY_LOG_PROTECT2: args 2 and 4 and flags 1 → EINVAL; 0, 1, 3 → OK',
    steps: [
      step(cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [2]), 'EINVAL'),
      step(cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [4]), 'EINVAL'),
      step(cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [1], 1), 'EINVAL'),
      step(cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [0]), 'OK'),
      step(cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [1]), 'OK'),
      step(cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [3]), 'OK'),
    ],
  },
  {
    id: '§8.24 move keeps bitmap',
    title: 'a MOVE keeps the dirty bitmap (the INITIALLY_SET bits left after a CLEAR survive)',
    steps: [
      step(cap(C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [3]), 'OK'),
      step(R1(0, LOG, 0, 64 * P), 'OK'),
      step(clear(0, 0, 64, 8, [0x0f, 0, 0, 0, 0, 0, 0, 0]), 'OK'),
      step(R1(0, LOG, S, 64 * P), 'OK'),
      step(dirty(0), 'OK 8B [4-63]'),
    ],
  },
  {
    id: '§8.28-29 gmem re-issue',
    title:
      'DEFAULT VM gmem slot: identical re-issue → EINVAL; clearing GUEST_MEMFD → EINVAL (6.19 fix present; plain 6.18: OK)',
    steps: [
      step({ op: 'gmem', size: 2 * S, flags: 0, as: 'g' }, 'OK'),
      step(R2(10, GMEM, G, 2 * S, 0, 'g', 0), 'OK'),
      step(R2(10, GMEM, G, 2 * S, 0, 'g', 0), 'EINVAL'),
      step(R2(10, 0, G, 2 * S, 0, 'g', 0), 'EINVAL'),
    ],
  },
  {
    id: '§8.30 gmem bind',
    title:
      'binding: past the file end / overlapping file range → EINVAL, closed fd → EBADF, overlap before fd',
    steps: [
      step({ op: 'gmem', size: 4 * S, flags: 0, as: 'g' }, 'OK'),
      step(R2(10, GMEM, G, S, 0, 'g', 4 * S - P), 'EINVAL'),
      step(R2(10, GMEM | LOG, G, S, 0, 'g', 0), 'EINVAL'),
      step(R2(10, GMEM | RO, G, S, 0, 'g', 0), 'EINVAL'),
      step(R2(10, GMEM, G, 2 * S, 0, 'g', 0), 'OK'),
      step(R2(11, GMEM, 2 * G, 2 * S, 0, 'g', S), 'EINVAL'),
      step(R2(11, GMEM, 2 * G, 2 * S, 0, 'g', 2 * S), 'OK'),
      step(R2(12, GMEM, 2 * G + S, P, 0, 0xdead, 0), 'EEXIST'),
      step(R2(10, GMEM, G, 0, 0, -1, 0), 'OK'),
      step(R2(10, GMEM, G, 2 * S, 0, 'g', 0), 'OK'),
      step({ op: 'gmem', size: S, flags: 0, as: 'h' }, 'OK'),
      step({ op: 'close', fd: 'h' }, 'OK'),
      step(R2(20, GMEM, 3 * G, S, 0, 'h', 0), 'EBADF'),
    ],
  },
  {
    id: '§8.31-33 gmem create',
    title:
      'KVM_CREATE_GUEST_MEMFD on a 6.18 DEFAULT VM: flags MMAP|INIT_SHARED only, page-aligned nonzero size',
    steps: [
      ...[0, 1, 2, 3].map((f) => step({ op: 'gmem', size: P, flags: f }, 'OK')),
      step({ op: 'gmem', size: P, flags: 4 }, 'EINVAL'),
      step({ op: 'gmem', size: P, flags: 1n << 63n }, 'EINVAL'),
      ...[0, 1, 4095, P + 1].map((sz) => step({ op: 'gmem', size: sz, flags: 0 }, 'EINVAL')),
    ],
  },
  {
    id: '§8.34 attributes',
    title: 'no CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES: SET_MEMORY_ATTRIBUTES → ENOTTY whatever the arguments',
    steps: [
      step({ op: 'attrs', address: 0, size: P, attributes: 0 }, 'ENOTTY'),
      step({ op: 'attrs', address: 0, size: P, attributes: 8, flags: 1 }, 'ENOTTY'),
    ],
  },
  {
    id: '§8.35 quirks',
    title: 'DISABLE_QUIRKS2: bits outside 0x5ff or flags → EINVAL; supported bits, repeats and 0 → OK',
    steps: [
      step(cap(C.KVM_CAP_DISABLE_QUIRKS2, [1 << 9]), 'EINVAL'),
      step(cap(C.KVM_CAP_DISABLE_QUIRKS2, [1 << 11]), 'EINVAL'),
      step(cap(C.KVM_CAP_DISABLE_QUIRKS2, [1 << 12]), 'EINVAL'),
      step(cap(C.KVM_CAP_DISABLE_QUIRKS2, [1n << 63n]), 'EINVAL'),
      step(cap(C.KVM_CAP_DISABLE_QUIRKS2, [ZAP_ALL], 1), 'EINVAL'),
      step(cap(C.KVM_CAP_DISABLE_QUIRKS2, [ZAP_ALL]), 'OK'),
      step(cap(C.KVM_CAP_DISABLE_QUIRKS2, [ZAP_ALL]), 'OK'),
      step(cap(C.KVM_CAP_DISABLE_QUIRKS2, [0]), 'OK'),
      step(cap(C.KVM_CAP_DISABLE_QUIRKS2, [0x5ff]), 'OK'),
      step(cap(C.KVM_CAP_DISABLE_QUIRKS, [0xffffffff]), 'OK'),
    ],
  },
  {
    id: '§8.38 pad ignored',
    title: 'V2 with nonzero pad1/pad2 → accepted',
    steps: [
      step({ op: 'R2', slot: 0, flags: 0, gpa: 0, size: P, hva: buf(), fd: 0, off: 0, pad: [7, 9] }, 'OK'),
    ],
  },
  {
    id: '§8.40 ring with bitmap',
    title: 'DIRTY_LOG_RING_WITH_BITMAP cannot be enabled on x86 → EINVAL',
    steps: [step(cap(C.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP, [1]), 'EINVAL')],
  },
  {
    id: 'caps on the VM fd',
    title: 'the memslot-relevant capabilities a DEFAULT VM reports on this host',
    steps: [
      step({ op: 'check', cap: C.KVM_CAP_NR_MEMSLOTS }, '32764'),
      step({ op: 'check', cap: C.KVM_CAP_MULTI_ADDRESS_SPACE }, '0'),
      step({ op: 'check', cap: C.KVM_CAP_READONLY_MEM }, '1'),
      step({ op: 'check', cap: C.KVM_CAP_USER_MEMORY2 }, '1'),
      step({ op: 'check', cap: C.KVM_CAP_MEMORY_ATTRIBUTES }, '0'),
      step({ op: 'check', cap: C.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 }, '3'),
      step({ op: 'check', cap: C.KVM_CAP_DISABLE_QUIRKS2 }, '1535'),
      step({ op: 'check', cap: C.KVM_CAP_VM_TYPES }, '1'),
    ],
  },
  {
    id: 'caps: guest_memfd',
    title:
      'a 6.18 kernel with CONFIG_KVM_GUEST_MEMFD: the cap and the MMAP|INIT_SHARED flags on a DEFAULT VM',
    needs: ['guestMemfd'],
    steps: [
      step({ op: 'check', cap: C.KVM_CAP_GUEST_MEMFD }, '1'),
      step({ op: 'check', cap: C.KVM_CAP_GUEST_MEMFD_FLAGS }, '3'),
    ],
  },
  {
    id: 'no guest_memfd',
    title:
      'a kernel built without CONFIG_KVM_GUEST_MEMFD: caps 0, CREATE_GUEST_MEMFD → ENOTTY, KVM_MEM_GUEST_MEMFD fails the flags check (EINVAL) before the fd is read, even on a delete',
    needs: ['noGuestMemfd'],
    steps: [
      step({ op: 'check', cap: C.KVM_CAP_GUEST_MEMFD }, '0'),
      step({ op: 'check', cap: C.KVM_CAP_GUEST_MEMFD_FLAGS }, '0'),
      ...[0, 1, 3, 4].map((f) => step({ op: 'gmemNone', size: S, flags: f }, 'ENOTTY')),
      step({ op: 'gmemNone', size: 0, flags: 0 }, 'ENOTTY'),
      step(R2(10, GMEM, G, S, 0, -1, 0), 'EINVAL'),
      step(R2(10, GMEM, G, S, 0, 0x7fff, 0), 'EINVAL'),
      step(R2(10, GMEM, G, S, buf(), -1, 0), 'EINVAL'),
      step(R1(10, GMEM, G, S), 'EINVAL'),
      step(R2(10, 0, G, S, buf(), -1, 0), 'OK'),
      step(R2(10, GMEM, G, 0, 0, -1, 0), 'EINVAL'),
      step(R2(10, 0, G, 0, 0, -1, 0), 'OK'),
    ],
  },
];

/** Every shared case: §7 selftests first, then §8. Ids are unique (checked by the tests). */
export const ABI_CASES: readonly AbiCase[] = [...SELFTEST_CASES, ...DERIVED_CASES];
