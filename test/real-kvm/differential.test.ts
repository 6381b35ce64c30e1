/**
 * The model against the kernel: random sequences of memslot, guest_memfd, dirty-log and enable-cap
 * calls run on a model VM (configured from the real host's hostProfile()) and on a real VM side by side;
 * every call must give the same errno (or both succeed with equal-length bitmaps). Plus every capability
 * both sides answer. Replay a failure with the printed seed.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import type { RealVm } from '../../src/backends/kvm/real_vm.ts';
import { Kvm, type Vm } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { HOST, REAL_KVM, announceSkip, errnoOf } from './env.ts';

announceSkip('differential');

/** Caps the model answers differently on purpose (docs/simplifications.md). */
const DOCUMENTED_CAP_DIFFERENCES = new Set(['KVM_CAP_X86_DISABLE_EXITS']);

const P = 4096;
const op = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constantFrom('set' as const, 'del' as const),
      slot: fc.constantFrom(0, 1, 2, 32763, 32764, 1 << 16),
      flags: fc.constantFrom(0, 1, 2, 3, 4, 8),
      gpa: fc.constantFrom(0, P, 0x200000, 0x1ff000, 0x1001, 2 ** 52, 2 ** 52 - P),
      size: fc.constantFrom(0, P, 0x200000, 0x400000, 0x1001, 2 ** 31 * P),
      hoff: fc.constantFrom(0, P, 1, -1),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('dirty' as const), slot: fc.constantFrom(0, 1, 2, 40000) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('manual' as const), arg: fc.constantFrom(0, 1, 2, 3, 4) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('quirk' as const),
      arg: fc.constantFrom(0, 0x80, 0x200, 0x5ff, 0x800),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('gmem' as const),
      size: fc.constantFrom(0, P, 0x200000, 0x1001),
      flags: fc.constantFrom(0, 1, 2, 3, 4),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('bind' as const),
      slot: fc.constantFrom(0, 1, 3),
      fd: fc.nat(3), // index into the guest_memfds created so far; past the end = a bogus fd
      gpa: fc.constantFrom(0x4000_0000, 0x4020_0000, 0x3fff_f000),
      size: fc.constantFrom(0, P, 0x200000),
      off: fc.constantFrom(0, P, 0x1ff000, 0x1000_0000, 1),
      flags: fc.constantFrom(4, 0, 5),
    }),
  },
);
type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

describe.skipIf(!REAL_KVM.ok)('model vs real /dev/kvm (differential)', () => {
  let real: RealKvm;
  let model: Kvm;
  let rhva: number;
  let mhva: number;
  beforeAll(() => {
    real = new RealKvm();
    model = new Kvm(real.hostProfile().modelOptions);
    rhva = real.host.mmap(8 << 20);
    mhva = model.host.mmap(8 << 20);
  });
  afterAll(() => real.close());

  it('every capability agrees on /dev/kvm and on a VM fd, except the documented simplifications', () => {
    using rv = real.createVm(0);
    const mv = model.createVm(0);
    const diff: string[] = [];
    for (const [name, cap] of Object.entries(KVM_CAP)) {
      if (DOCUMENTED_CAP_DIFFERENCES.has(name)) continue;
      if (real.checkExtension(cap) !== model.checkExtension(cap)) diff.push(`${name} (system)`);
      if (rv.checkExtension(cap) !== mv.checkExtension(cap)) diff.push(`${name} (vm)`);
    }
    expect(diff).toEqual([]);
  });

  /** Run one op on both sides; return [real, model] outcomes. */
  function step(o: Op, rv: RealVm, mv: Vm, fds: [number, number][]): [string, string] {
    switch (o.kind) {
      case 'set':
      case 'del': {
        const mk = (h: number) => ({
          slot: o.slot,
          flags: o.flags,
          guestPhysAddr: o.gpa,
          memorySize: o.kind === 'del' ? 0 : o.size,
          userspaceAddr: o.hoff === -1 ? 0 : h + o.hoff,
        });
        return [
          errnoOf(() => rv.setUserMemoryRegion(mk(rhva))),
          errnoOf(() => mv.setUserMemoryRegion(mk(mhva))),
        ];
      }
      case 'dirty': {
        let a = 0;
        let b = 0;
        const r = [
          errnoOf(() => (a = rv.getDirtyLog(o.slot).length)),
          errnoOf(() => (b = mv.getDirtyLog(o.slot).length)),
        ];
        return [`${r[0]}/${a}`, `${r[1]}/${b}`];
      }
      case 'manual':
      case 'quirk': {
        const cap =
          o.kind === 'manual' ? KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 : KVM_CAP.KVM_CAP_DISABLE_QUIRKS2;
        return [
          errnoOf(() => rv.enableCap({ cap, args: [o.arg] })),
          errnoOf(() => mv.enableCap({ cap, args: [o.arg] })),
        ];
      }
      case 'gmem': {
        let a = -1;
        let b = -1;
        const r: [string, string] = [
          errnoOf(() => (a = rv.createGuestMemfd({ size: o.size, flags: o.flags }))),
          errnoOf(() => (b = mv.createGuestMemfd({ size: o.size, flags: o.flags }))),
        ];
        if (a >= 0 && b >= 0) fds.push([a, b]);
        return r;
      }
      case 'bind': {
        const [a, b] = fds[o.fd] ?? [0x7ff0, 0x7ff0];
        const mk = (fd: number) => ({
          slot: o.slot,
          flags: o.flags,
          guestPhysAddr: o.gpa,
          memorySize: o.size,
          guestMemfd: fd,
          guestMemfdOffset: o.off,
        });
        return [errnoOf(() => rv.setUserMemoryRegion2(mk(a))), errnoOf(() => mv.setUserMemoryRegion2(mk(b)))];
      }
    }
  }

  it('random memslot / guest_memfd / dirty-log / quirk sequences give the same errno on both', () => {
    let calls = 0;
    let okBinds = 0; // the sequences must reach successful guest_memfd binds, not only rejections
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        const rv = real.createVm(0);
        const mv = model.createVm(0);
        const fds: [number, number][] = [];
        try {
          for (const [i, o] of ops.entries()) {
            const [a, b] = step(o, rv, mv, fds);
            calls++;
            if (o.kind === 'bind' && o.flags & 4 && o.size !== 0 && a === 'ok') okBinds++;
            if (a !== b) throw new Error(`op ${i} ${JSON.stringify(o)}: real ${a}, model ${b}`);
          }
        } finally {
          rv.close();
        }
      }),
      { numRuns: 400 },
    );
    expect(calls).toBeGreaterThan(1000);
    // With guest_memfd the sequences must reach successful binds, not only rejections; without it no
    // bind can succeed, on either side.
    if (HOST!.guestMemfd) expect(okBinds).toBeGreaterThan(10);
    else expect(okBinds).toBe(0);
    console.info(
      `[differential] ${calls} calls, ${okBinds} successful guest_memfd binds (guestMemfd ${HOST!.guestMemfd})`,
    );
  });
});
