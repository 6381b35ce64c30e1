/**
 * A battery of memslot, guest_memfd, dirty-log and enable-cap calls on the real /dev/kvm, each with the
 * exact errno this kernel returns. Cases are shared/reference/memslot-abi.md §7–8 (numbers in the test
 * names), adapted to this host: DEFAULT VM only, one address space, the 6.19 guest_memfd fix present.
 */
import { afterAll, beforeAll, beforeEach, afterEach, describe, expect, it } from 'vitest';
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import type { RealVm } from '../../src/backends/kvm/real_vm.ts';
import {
  KVM_CAP,
  KVM_MEM_GUEST_MEMFD,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
} from '../../src/uapi/kvm.ts';
import { HOST, NO_GMEM_WHY, REAL_KVM, announceSkip, errnoOf, skipUnless } from './env.ts';
import { Kvm } from '../../src/index.ts';

announceSkip('memslot_battery');

/**
 * The exact errnos below assume these probed facts (each named where a case depends on it): shadow
 * paging (the 52-bit gfn limit), one address space (as_id 1 invalid), quirks 0x5ff, DEFAULT VMs only.
 * They are facts of the host's configuration, read from the probe, not of one kernel build; the
 * guest_memfd cases also need HOST.guestMemfd. Elsewhere the conformance cases compare model and kernel.
 */
const BATTERY_HOST =
  HOST !== null &&
  !HOST.tdpEnabled &&
  HOST.addressSpaces === 1 &&
  HOST.supportedQuirks === 0x5ff &&
  HOST.vmTypes === 1;
if (REAL_KVM.ok && !BATTERY_HOST)
  console.warn(
    '[memslot_battery] not applicable: needs shadow paging, one address space, quirks 0x5ff, DEFAULT VMs only',
  );
const LACKS_GMEM = skipUnless(HOST?.guestMemfd === true, 'memslot_battery', NO_GMEM_WHY);

const P = 4096;
const S = 0x200000; // 2 MiB
const G = 0xc0000000;
const LOG = KVM_MEM_LOG_DIRTY_PAGES;
const RO = KVM_MEM_READONLY;
const GMEM = KVM_MEM_GUEST_MEMFD;

describe.skipIf(!BATTERY_HOST)('real /dev/kvm: memslot ABI battery', () => {
  let kvm: RealKvm;
  let vm: RealVm;
  let hva: number; // 8 MiB of MAP_NORESERVE backing, shared by the cases
  const R1 = (slot: number, flags: number, gpa: number | bigint, size: number | bigint, h: number = hva) =>
    errnoOf(() =>
      vm.setUserMemoryRegion({ slot, flags, guestPhysAddr: gpa, memorySize: size, userspaceAddr: h }),
    );
  const R2 = (slot: number, flags: number, gpa: number, size: number, h: number, fd: number, off: number) =>
    errnoOf(() =>
      vm.setUserMemoryRegion2({
        slot,
        flags,
        guestPhysAddr: gpa,
        memorySize: size,
        userspaceAddr: h,
        guestMemfd: fd,
        guestMemfdOffset: off,
      }),
    );

  beforeAll(() => {
    kvm = new RealKvm();
    hva = kvm.host.mmap(8 << 20);
  });
  afterAll(() => kvm.close());
  beforeEach(() => {
    vm = kvm.createVm(0);
  });
  afterEach(() => vm.close());

  it('§8.1–2 create, then an identical re-issue is a no-op (0)', () => {
    expect(R1(0, 0, 0x1000, P)).toBe('ok');
    expect(R1(0, 0, 0x1000, P)).toBe('ok');
  });

  it('§8.3 deleting a slot that does not exist is EINVAL', () => {
    expect(R1(5, 0, 0, 0, 0)).toBe('EINVAL');
  });

  it('§8.4 a delete with a misaligned gpa is EINVAL and the slot survives', () => {
    expect(R1(0, 0, 0x1000, P)).toBe('ok');
    expect(R1(0, 0, 0x1001, 0)).toBe('EINVAL');
    expect(R1(1, 0, 0x1000, P)).toBe('EEXIST'); // still there
    expect(R1(0, 0, 0x1000, 0)).toBe('ok');
    expect(R1(0, 0, 0x1000, 0)).toBe('EINVAL'); // gone now
  });

  it('§8.5–7 misaligned size, hva, gpa, and gpa+size wrapping are EINVAL', () => {
    expect(R1(0, 0, 0, 0x1001)).toBe('EINVAL');
    expect(R1(0, 0, 0, P, hva + 1)).toBe('EINVAL');
    expect(R1(0, 0, 0x1001, P)).toBe('EINVAL');
    expect(R1(0, 0, 0xfffffffffffff000n, 0x2000)).toBe('EINVAL');
  });

  it('§8.8 a slot past the 52-bit shadow-paging gfn limit is EINVAL; just below it is OK', () => {
    expect(R1(0, 0, 2 ** 52, P)).toBe('EINVAL');
    expect(R1(0, 0, 2 ** 52 - P, P)).toBe('ok');
  });

  it('§8.9–10 as_id 1 is EINVAL on this host (no SMM address space), as_id 2 too', () => {
    expect(R1((1 << 16) | 0, 0, 0, P)).toBe('EINVAL');
    expect(R1((2 << 16) | 0, 0, 0, P)).toBe('EINVAL');
  });

  it('§8.11 slot ids: 32763 is the last user id; 32764 and 0xffff are EINVAL', () => {
    expect(R1(32763, 0, 0, P)).toBe('ok');
    expect(R1(32764, 0, P, P)).toBe('EINVAL');
    expect(R1(0xffff, 0, P, P)).toBe('EINVAL');
  });

  it('§8.12 2^31 pages is EINVAL (KVM_MEM_MAX_NR_PAGES)', () => {
    expect(R1(0, 0, 0, 2 ** 31 * P)).toBe('EINVAL');
  });

  it('access_ok: an hva range past the user address space is EINVAL; hva 0 is accepted', () => {
    expect(R1(0, 0, 0, 2 * P, 0x7ffffffff000)).toBe('EINVAL');
    expect(R1(0, 0, 0, S, 0)).toBe('ok');
  });

  it('§8.13 adjacent slots are fine; a straddling one is EEXIST', () => {
    expect(R1(0, 0, 0, S)).toBe('ok');
    expect(R1(1, 0, S, S)).toBe('ok');
    expect(R1(2, 0, S - P, 2 * P)).toBe('EEXIST');
  });

  it('§8.15 two slots may share the same hva', () => {
    expect(R1(0, 0, 0, S)).toBe('ok');
    expect(R1(1, 0, S, S)).toBe('ok');
  });

  it('§8.16–17 MOVE over its own old range is OK; MOVE onto another slot is EEXIST', () => {
    expect(R1(0, 0, 0, S)).toBe('ok');
    expect(R1(0, 0, S / 2, S)).toBe('ok');
    expect(R1(1, 0, 4 * S, S)).toBe('ok');
    expect(R1(0, 0, 4 * S, S)).toBe('EEXIST');
  });

  it('§8.18 changing size, hva or READONLY of an existing slot is EINVAL', () => {
    expect(R1(0, 0, 0, S)).toBe('ok');
    expect(R1(0, 0, 0, 2 * S)).toBe('EINVAL');
    expect(R1(0, 0, 0, S, hva + P)).toBe('EINVAL');
    expect(R1(0, RO, 0, S)).toBe('EINVAL');
  });

  it('§7.1 SMR-3: V1 rejects GUEST_MEMFD and every unknown flag bit; V2 rejects unknown bits', () => {
    for (let bit = 2; bit < 32; bit++) expect(R1(0, 2 ** bit, 0, S), `V1 bit ${bit}`).toBe('EINVAL');
    for (let bit = 3; bit < 32; bit++) expect(R2(0, 2 ** bit, 0, S, 0, 0, 0), `V2 bit ${bit}`).toBe('EINVAL');
    expect(R1(0, LOG | RO, 0, S)).toBe('ok');
  });

  it('§8.19–20, 25 dirty log: ENOENT without LOG_DIRTY, EINVAL for id 40000, FLAGS_ONLY toggles it', () => {
    expect(R1(0, 0, 0, 100 * P)).toBe('ok');
    expect(errnoOf(() => vm.getDirtyLog(0))).toBe('ENOENT');
    expect(errnoOf(() => vm.getDirtyLog(7))).toBe('ENOENT');
    expect(errnoOf(() => vm.getDirtyLog(40000))).toBe('EINVAL');
    expect(errnoOf(() => vm.getDirtyLog(1 << 16))).toBe('EINVAL');
    expect(R1(0, LOG, 0, 100 * P)).toBe('ok'); // FLAGS_ONLY
    const bm = vm.getDirtyLog(0);
    expect(bm.length).toBe(16); // ALIGN(100, 64) / 8
    expect(bm.every((b) => b === 0)).toBe(true);
    expect(R1(0, 0, 0, 100 * P)).toBe('ok');
    expect(errnoOf(() => vm.getDirtyLog(0))).toBe('ENOENT');
  });

  it('§8.21 manual protect + INITIALLY_SET: all bits set, GET does not clear, CLEAR does', () => {
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [3] });
    expect(R1(0, LOG, 0, 1000 * P)).toBe('ok');
    const bm = vm.getDirtyLog(0);
    expect(bm.length).toBe(128);
    expect(bm.subarray(0, 125).every((b) => b === 0xff)).toBe(true); // bits 0..999
    expect([...bm.subarray(125)]).toEqual([0, 0, 0]);
    expect(vm.getDirtyLog(0)).toEqual(bm);
    vm.clearDirtyLog({ slot: 0, firstPage: 0, numPages: 1000, bitmap: new Uint8Array(128).fill(0xff) });
    expect(vm.getDirtyLog(0).every((b) => b === 0)).toBe(true);
  });

  it('§8.22 CLEAR_DIRTY_LOG range rules', () => {
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [1] });
    expect(R1(0, LOG, 0, 1024 * P)).toBe('ok');
    const clear = (firstPage: number, numPages: number, bytes = 128) =>
      errnoOf(() => vm.clearDirtyLog({ slot: 0, firstPage, numPages, bitmap: new Uint8Array(bytes) }));
    expect(clear(1, 64)).toBe('EINVAL');
    expect(clear(0, 65)).toBe('EINVAL');
    expect(clear(960, 64)).toBe('ok');
    expect(clear(1024, 0)).toBe('ok');
    expect(clear(1088, 0)).toBe('EINVAL');
    expect(clear(0, 1024)).toBe('ok');
    expect(clear(0, 1024, 64)).toBe('EFAULT'); // the bitmap is shorter than 1024 bits: copy_from_user faults
    expect(errnoOf(() => vm.clearDirtyLog({ slot: 0, firstPage: 0, numPages: 64 }))).toBe('EFAULT'); // NULL bitmap
    expect(
      errnoOf(() => vm.clearDirtyLog({ slot: 1, firstPage: 0, numPages: 64, bitmap: new Uint8Array(8) })),
    ).toBe('ENOENT');
    expect(R1(1, LOG, 0x1000_0000, 1000 * P)).toBe('ok');
    // The kernel copies ALIGN(num_pages, 64)/8 bytes: 128 for 1000 pages, so a 125-byte bitmap faults.
    const clear1 = (bytes: number) =>
      errnoOf(() =>
        vm.clearDirtyLog({ slot: 1, firstPage: 0, numPages: 1000, bitmap: new Uint8Array(bytes) }),
      );
    expect(clear1(125)).toBe('EFAULT');
    expect(clear1(128)).toBe('ok');
  });

  it('§8.23 MANUAL_DIRTY_LOG_PROTECT2 arguments', () => {
    const en = (args: number[], flags = 0) =>
      errnoOf(() => vm.enableCap({ cap: KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, flags, args }));
    expect(en([2])).toBe('EINVAL');
    expect(en([4])).toBe('EINVAL');
    expect(en([1], 1)).toBe('EINVAL');
    expect(en([0])).toBe('ok');
    expect(en([1])).toBe('ok');
    expect(en([3])).toBe('ok');
  });

  it('§8.24 a MOVE keeps the dirty bitmap (INITIALLY_SET bits survive)', () => {
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [3] });
    expect(R1(0, LOG, 0, 64 * P)).toBe('ok');
    vm.clearDirtyLog({
      slot: 0,
      firstPage: 0,
      numPages: 64,
      bitmap: Uint8Array.of(0x0f, 0, 0, 0, 0, 0, 0, 0),
    });
    expect(R1(0, LOG, S, 64 * P)).toBe('ok');
    expect([...vm.getDirtyLog(0)]).toEqual([0xf0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  });

  it('§8.35 / real-kvm-host.md §4 DISABLE_QUIRKS2 validation', () => {
    const q = (a0: number | bigint, flags = 0, cap: number = KVM_CAP.KVM_CAP_DISABLE_QUIRKS2) =>
      errnoOf(() => vm.enableCap({ cap, flags, args: [a0] }));
    expect(q(1 << 9)).toBe('EINVAL'); // IGNORE_GUEST_PAT is not supported here
    expect(q(1 << 11)).toBe('EINVAL');
    expect(q(1 << 12)).toBe('EINVAL');
    expect(q(1n << 63n)).toBe('EINVAL');
    expect(q(0x80, 1)).toBe('EINVAL');
    expect(q(0x80)).toBe('ok');
    expect(q(0x80)).toBe('ok');
    expect(q(0)).toBe('ok');
    expect(q(0x5ff)).toBe('ok');
    expect(q(0xffffffff, 0, KVM_CAP.KVM_CAP_DISABLE_QUIRKS)).toBe('ok'); // legacy cap masks silently
  });

  it('§8.34 KVM_SET_MEMORY_ATTRIBUTES is ENOTTY (no CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES)', () => {
    expect(errnoOf(() => vm.setMemoryAttributes({ address: 0, size: P, attributes: 0 }))).toBe('ENOTTY');
    expect(errnoOf(() => vm.setMemoryAttributes({ address: 0, size: P, attributes: 8, flags: 1 }))).toBe(
      'ENOTTY',
    );
  });

  it.skipIf(LACKS_GMEM)('§7.5 / §8.32–33 KVM_CREATE_GUEST_MEMFD flags and sizes on a DEFAULT VM', () => {
    const mk = (size: number, flags: number) => errnoOf(() => vm.createGuestMemfd({ size, flags }));
    expect(mk(P, 0)).toBe('ok');
    expect(mk(P, 1)).toBe('ok');
    expect(mk(P, 2)).toBe('ok'); // INIT_SHARED alone is accepted at creation
    expect(mk(P, 3)).toBe('ok');
    expect(mk(P, 4)).toBe('EINVAL');
    expect(mk(0, 0)).toBe('EINVAL');
    for (const sz of [1, 4095, P + 1]) expect(mk(sz, 0), `size ${sz}`).toBe('EINVAL');
  });

  it.skipIf(LACKS_GMEM)(
    '§7.1 SMR-5 / §8.30 guest_memfd binding: wrong files, alignment, bounds, overlap',
    () => {
      const gfd = vm.createGuestMemfd({ size: 4 * S, flags: 0 });
      const memfd = kvm.host.memfdCreate('not-gmem', 4 * S);
      const other = kvm.createVm(0);
      try {
        const ofd = other.createGuestMemfd({ size: S, flags: 0 });
        expect(R2(10, GMEM, G, S, 0, kvm.fd, 0)).toBe('EINVAL');
        expect(R2(10, GMEM, G, S, 0, vm.fd, 0)).toBe('EINVAL');
        expect(R2(10, GMEM, G, S, 0, memfd, 0)).toBe('EINVAL');
        expect(R2(10, GMEM, G, S, 0, ofd, 0)).toBe('EINVAL'); // another VM's guest_memfd
        expect(
          errnoOf(() =>
            other.setUserMemoryRegion2({
              slot: 10,
              flags: GMEM,
              guestPhysAddr: G,
              memorySize: S,
              guestMemfd: ofd,
            }),
          ),
        ).toBe('ok');
        for (const off of [1, 2048, 4095])
          expect(R2(10, GMEM, G, S, 0, gfd, off), `offset ${off}`).toBe('EINVAL');
        expect(R2(10, GMEM, G, S, 0, gfd, 4 * S - P)).toBe('EINVAL'); // past the file's end
        expect(R2(10, GMEM | LOG, G, S, 0, gfd, 0)).toBe('EINVAL');
        expect(R2(10, GMEM | RO, G, S, 0, gfd, 0)).toBe('EINVAL');
        expect(R2(10, GMEM, G, 2 * S, 0, gfd, 0)).toBe('ok');
        expect(R2(11, GMEM, 2 * G, 2 * S, 0, gfd, S)).toBe('EINVAL'); // file range already bound
        expect(R2(11, GMEM, 2 * G, 2 * S, 0, gfd, 2 * S)).toBe('ok');
        expect(R2(10, GMEM, G, 2 * S, 0, gfd, 0)).toBe('EINVAL'); // identical re-issue of a gmem slot
        expect(R2(10, 0, G, 2 * S, 0, gfd, 0)).toBe('EINVAL'); // clearing GUEST_MEMFD: the 6.19 fix is present
        expect(R2(12, GMEM, 2 * G + S, P, 0, 0xdead, 0)).toBe('EEXIST'); // overlap is checked before the fd
        expect(R2(10, GMEM, G, 0, 0, -1, 0)).toBe('ok'); // delete: the fd is never looked at
        // SMR-6: with slot 10 gone, its old file range binds again
        expect(R2(10, GMEM, G, 2 * S, 0, gfd, 0)).toBe('ok');
      } finally {
        other.close();
        kvm.host.close(memfd);
      }
    },
  );

  it.skipIf(LACKS_GMEM)(
    '§8.30 binding a closed fd is EBADF; closing the guest_memfd does not touch the slot layout',
    () => {
      const gfd = vm.createGuestMemfd({ size: S, flags: 0 });
      kvm.host.close(gfd);
      expect(R2(10, GMEM, G, S, 0, gfd, 0)).toBe('EBADF');
      const g2 = vm.createGuestMemfd({ size: S, flags: 3 });
      expect(R2(10, GMEM, G, S, 0, g2, 0)).toBe('ok');
      kvm.host.close(g2);
      expect(R1(11, 0, G, P)).toBe('EEXIST');
      expect(R2(10, GMEM, G, 0, 0, -1, 0)).toBe('ok');
    },
  );

  it('§8.38 V2 pad fields are ignored', () => {
    expect(
      errnoOf(() =>
        vm.setUserMemoryRegion2({
          slot: 0,
          guestPhysAddr: 0,
          memorySize: P,
          userspaceAddr: hva,
          pad1: 7,
          pad2: 9,
        }),
      ),
    ).toBe('ok');
  });

  it('§7.1 SMR-4 (scaled down): 512 slots of 2 MiB each, then the tracked layout matches', () => {
    for (let i = 0; i < 512; i++) expect(R1(i, 0, i * S, S, hva)).toBe('ok');
    expect(vm.slots().size).toBe(512);
    expect(R1(512, 0, 511 * S, S)).toBe('EEXIST');
    for (let i = 0; i < 512; i++) expect(R1(i, 0, i * S, 0)).toBe('ok');
    expect(vm.slots().size).toBe(0);
  });

  it('the raw ioctl convention returns 0 / -errno like the model, with the same copy-in errors', () => {
    const raw = (r: object, v2 = false) => vm.ioctlSetUserMemoryRegion(r, v2);
    expect(raw({ slot: 0, guestPhysAddr: 0, memorySize: P, userspaceAddr: hva })).toBe(0);
    expect(raw({ slot: 1, guestPhysAddr: 0, memorySize: P, userspaceAddr: hva })).toBe(-17);
    expect(raw({ slot: 1, guestPhysAddr: 0, memorySize: 0x1001, userspaceAddr: hva })).toBe(-22);
    // A bogus fd with KVM_MEM_GUEST_MEMFD: EBADF with guest_memfd, EINVAL (the flag itself) without it.
    const bogus = { slot: 1, flags: GMEM, guestPhysAddr: P, memorySize: P, guestMemfd: 0x7fff };
    expect(raw(bogus, true)).toBe(HOST!.guestMemfd ? -9 : -22);
    expect(raw(bogus, true)).toBe(
      new Kvm(HOST!.modelOptions).createVm(0).ioctlSetUserMemoryRegion(bogus, true),
    );
    expect(raw({ slot: -1 })).toBe(-22);
    expect(vm.ioctlSetUserMemoryRegion(null as never)).toBe(-14);
    expect(vm.slots().size).toBe(1);
  });

  it('memfdCreate / close(fd) on the RealKvm object, as on the model Kvm', () => {
    const fd = kvm.memfdCreate(S);
    expect(R2(10, GMEM, G, S, 0, fd, 0)).toBe('EINVAL');
    kvm.close(fd);
    expect(errnoOf(() => kvm.close(fd))).toBe('EBADF');
    // the closed fd is looked at only when the flag is valid at all
    expect(R2(10, GMEM, G, S, 0, fd, 0)).toBe(HOST!.guestMemfd ? 'EBADF' : 'EINVAL');
  });

  it.skipIf(!LACKS_GMEM)(
    'without guest_memfd: CREATE_GUEST_MEMFD is ENOTTY and KVM_MEM_GUEST_MEMFD fails the flags check',
    () => {
      const model = new Kvm(HOST!.modelOptions).createVm(0);
      const both = (f: (v: { createGuestMemfd: RealVm['createGuestMemfd'] }) => unknown) => [
        errnoOf(() => f(vm)),
        errnoOf(() => f(model)),
      ];
      expect(both((v) => v.createGuestMemfd({ size: S, flags: 0 }))).toEqual(['ENOTTY', 'ENOTTY']);
      expect(both((v) => v.createGuestMemfd({ size: 0, flags: 4 }))).toEqual(['ENOTTY', 'ENOTTY']);
      expect(R2(10, GMEM, G, S, 0, -1, 0)).toBe('EINVAL');
      expect(R2(10, GMEM, G, 0, 0, -1, 0)).toBe('EINVAL'); // even a delete: the flags check comes first
      expect(R1(10, GMEM, G, S)).toBe('EINVAL');
      expect(kvm.checkExtension(KVM_CAP.KVM_CAP_GUEST_MEMFD)).toBe(0);
      expect(vm.checkExtension(KVM_CAP.KVM_CAP_GUEST_MEMFD_FLAGS)).toBe(0);
    },
  );

  it("zapDesign: only 'quirk' exists in a real kernel", () => {
    expect(() => kvm.createVm(0, { zapDesign: 'slot-flag' as never })).toThrow(TypeError);
    kvm.createVm(0, { zapDesign: 'quirk' }).close();
  });

  it('a closed VM rejects every call with EBADF instead of touching a reused fd number', () => {
    vm.close();
    expect(R1(0, 0, 0, P)).toBe('EBADF');
    expect(errnoOf(() => vm.getStats())).toBe('EBADF');
    expect(errnoOf(() => vm.createVcpu(0))).toBe('EBADF');
  });
});
