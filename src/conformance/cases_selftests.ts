/**
 * memslot-abi.md §7: the kernel selftests' memslot cases, reduced to their ioctl sequences and adapted to
 * a DEFAULT VM (6.18 binds guest_memfd on DEFAULT VMs, so SMR-5/6 run there instead of SW_PROTECTED).
 * The guest-side parts of SMR-7/8 (what a running vCPU observes) are in mmu_cases.ts and the real-KVM
 * guest-access tests; here only the calls and their results.
 */
import {
  KVM_CAP,
  KVM_MEM_GUEST_MEMFD as GMEM,
  KVM_MEM_LOG_DIRTY_PAGES as LOG,
  KVM_MEM_READONLY as RO,
} from '../uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL as ZAP_ALL } from '../uapi/kvm_x86.ts';
import { type AbiCase, buf, type Call, type CallStep, R1, R2, step } from './case_types.ts';

const P = 4096;
const S = 0x200000;
const G = 0xc0000000;
const NR_MEMSLOTS = 32764;
const disableZapAll: Call = { op: 'cap', cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [ZAP_ALL] };

const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

/**
 * SMR-7's MOVE loop (the host side): away by one page and back, `n` times. Each MOVE is two memslot
 * swaps; with one address space (no CONFIG_KVM_SMM here) each swap adds 1, so +2 per MOVE.
 */
function moveLoop(n: number, gen0: number): CallStep[] {
  return range(0, n).flatMap((i) => [
    step(R1(10, 0, G - P, S, buf(), gen0 + 4 * i + 2), 'OK'),
    step(R1(10, 0, G, S, buf(), gen0 + 4 * i + 4), 'OK'),
  ]);
}

/** §7.2's loop: add a one-page slot 7 right below the test region, then delete it. */
function adjacentLoop(n: number): CallStep[] {
  return range(0, n).flatMap(() => [
    step(R1(7, 0, 0x4000_0000 - P, P), 'OK'),
    step(R1(7, 0, 0x4000_0000 - P, 0), 'OK'),
  ]);
}

export const SELFTEST_CASES: AbiCase[] = [
  {
    id: '§7.1 SMR-3 invalid flags',
    title: 'V1 rejects GUEST_MEMFD and every unknown bit, V2 every unknown bit; LOG|GMEM, RO|GMEM → EINVAL',
    steps: [
      ...range(2, 32).map((b) => step(R1(0, 2 ** b, 0, S), 'EINVAL')),
      ...range(3, 32).map((b) => step(R2(0, 2 ** b, 0, S, buf(), 0, 0), 'EINVAL')),
      step({ op: 'gmem', size: S, flags: 0, as: 'g' }, 'OK'),
      step(R2(0, LOG | GMEM, 0, S, 0, 'g', 0), 'EINVAL'),
      step(R2(0, RO | GMEM, 0, S, 0, 'g', 0), 'EINVAL'),
      // 6.18 DEFAULT VM: bit 2 through V2 with a valid guest_memfd is a working bind
      step(R2(0, GMEM, 0, S, 0, 'g', 0), 'OK'),
      step(R1(1, LOG | RO, S, S), 'OK'),
    ],
  },
  {
    id: '§7.1 SMR-4 max regions',
    title: 'all 32764 slot ids can be created (2 MiB each, one shared hva); id 32764 → EINVAL',
    steps: [
      step({ op: 'check', cap: KVM_CAP.KVM_CAP_NR_MEMSLOTS }, String(NR_MEMSLOTS)),
      step({ op: 'R1many', first: 0, count: NR_MEMSLOTS, size: S, gpaStep: S, hva: buf() }, 'OK'),
      step(R1(NR_MEMSLOTS, 0, NR_MEMSLOTS * S, S), 'EINVAL'),
      step({ op: 'R1many', first: 0, count: NR_MEMSLOTS, size: 0, gpaStep: S, hva: buf() }, 'OK'),
    ],
  },
  {
    id: '§7.1 SMR-5 private region',
    title:
      "binding /dev/kvm, the VM fd, a memfd or another VM's guest_memfd → EINVAL; unaligned offset → EINVAL",
    steps: [
      step({ op: 'gmem', size: S, flags: 0, as: 'g' }, 'OK'),
      step({ op: 'memfd', size: S, as: 'm' }, 'OK'),
      step({ op: 'gmemOther', size: S, as: 'o' }, 'OK'),
      step(R2(10, GMEM, G, S, 0, 'kvm', 0), 'EINVAL'),
      step(R2(10, GMEM, G, S, 0, 'vm', 0), 'EINVAL'),
      step(R2(10, GMEM, G, S, 0, 'm', 0), 'EINVAL'),
      step(R2(10, GMEM, G, S, 0, 'o', 0), 'EINVAL'),
      step({ op: 'R2other', slot: 10, flags: GMEM, gpa: G, size: S, fd: 'o', off: 0 }, 'OK'),
      ...[1, 2048, 4095].map((off) => step(R2(10, GMEM, G, S, 0, 'g', off), 'EINVAL')),
      step(R2(10, GMEM, G, S, 0, 'g', 0), 'OK'),
    ],
  },
  {
    id: '§7.1 SMR-6 overlapping private',
    title: 'EEXIST from the gpa overlap with slot 11 (checked before the bind)',
    steps: [
      step({ op: 'gmem', size: 4 * S, flags: 0, as: 'g' }, 'OK'),
      step(R2(10, GMEM, G, 2 * S, 0, 'g', 0), 'OK'),
      step(R2(11, GMEM, 2 * G, 2 * S, 0, 'g', 2 * S), 'OK'),
      step(R2(10, GMEM, G, 0, 0, -1, 0), 'OK'),
      step(R2(10, GMEM, 2 * G - S, 2 * S, 0, 'g', 0), 'EEXIST'),
      step(R2(10, GMEM, 2 * G + S, 2 * S, 0, 'g', 0), 'EEXIST'),
    ],
  },
  {
    id: '§7.1 SMR-7 move',
    title: 'MOVE slot 10 one page down and back, quirk on then SLOT_ZAP_ALL disabled; each MOVE +2',
    steps: [
      step(R1(10, 0, G, S, buf(), 1), 'OK'),
      ...moveLoop(3, 1),
      step(disableZapAll, 'OK'),
      ...moveLoop(3, 13),
    ],
  },
  {
    id: '§7.1 SMR-8 delete',
    title: 'delete slot 10, re-create it, delete again, then delete slot 0 (code and page tables) → all OK',
    steps: [
      step(R1(0, 0, 0, S), 'OK'),
      step(R1(10, 0, G, S, buf(S)), 'OK'),
      step(R1(10, 0, G, 0), 'OK'),
      step(R1(10, 0, G, S, buf(2 * S)), 'OK'),
      step(R1(10, 0, G, 0), 'OK'),
      step(R1(0, 0, 0, 0), 'OK'),
    ],
  },
  {
    id: '§7.2 adjacent add/delete',
    title: 'slot 7 added and deleted right below the test region, 10 times, quirk on and off',
    steps: [
      step(R1(1, 0, 0x4000_0000, 4 * S), 'OK'),
      ...adjacentLoop(10),
      step(disableZapAll, 'OK'),
      ...adjacentLoop(10),
    ],
  },
  {
    id: '§7.3 perf layout',
    title:
      '512 contiguous slots after slot 0; the last MOVEs past the end and back; onto its neighbour → EEXIST',
    steps: [
      step(R1(0, 0, 0, 0x1000_0000), 'OK'),
      step(
        {
          op: 'R1many',
          first: 1,
          count: 512,
          size: 0x10000,
          gpaBase: 0x1000_0000,
          gpaStep: 0x10000,
          hva: buf(),
        },
        'OK',
      ),
      step(R1(512, 0, 0x1000_0000 + 512 * 0x10000, 0x10000), 'OK'),
      step(R1(512, 0, 0x1000_0000 + 511 * 0x10000, 0x10000), 'OK'),
      step(R1(512, 0, 0x1000_0000 + 510 * 0x10000, 0x10000), 'EEXIST'),
    ],
  },
  {
    id: '§7.5 gmem mmap bind',
    title: 'a 6.18 DEFAULT VM binds an MMAP|INIT_SHARED guest_memfd at hva 0',
    steps: [
      step({ op: 'gmem', size: P, flags: 3, as: 'g' }, 'OK'),
      step(R2(1, GMEM, 0x1_0000_0000, P, 0, 'g', 0), 'OK'),
    ],
  },
];
