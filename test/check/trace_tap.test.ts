/**
 * The checker taps each watched MMU's trace sink without sending the MMU object into V8's dictionary
 * mode (check/checker.ts#tapTrace): the guest-access fast path loads the MMU's fields on every access,
 * and in dictionary mode each load is a hash lookup. A tap made of per-object closures, or one that
 * turns an own data property into an accessor, fails this. The tap's behaviour: ours first, then a sink
 * set later; a sink set before the watch is kept.
 */
import { describe, expect, it } from 'vitest';
import { setFlagsFromString } from 'node:v8';
import { Kvm } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';

setFlagsFromString('--allow-natives-syntax');
const hasFastProperties = new Function('o', 'return %HasFastProperties(o)') as (o: object) => boolean;

describe('the checker trace tap', () => {
  it('leaves every watched MMU (TDP and shadow, several VMs) with fast properties', () => {
    for (const profile of [undefined, 'pvm-6.18'] as const) {
      const kvm = new Kvm(profile === undefined ? {} : { profile });
      const checker = new Checker(kvm, { audit: 'points', incremental: true });
      for (let i = 0; i < 3; i++) {
        const vm = kvm.createVm(0);
        checker.watch(vm);
        expect([profile, i, typeof (vm.mmu as { trace?: unknown }).trace]).toEqual([profile, i, 'function']);
        expect([profile, i, hasFastProperties(vm.mmu)]).toEqual([profile, i, true]);
      }
    }
  });

  it("runs the checker's sink first, then one set after the watch or before it", () => {
    const kvm = new Kvm();
    const checker = new Checker(kvm, { audit: 'points', incremental: true });
    const seen: string[] = [];
    const early = kvm.createVm(0);
    const m0 = early.mmu as unknown as { trace?: (ev: { name: string }) => void };
    m0.trace = (ev) => seen.push(`early ${ev.name}`);
    checker.watch(early);
    m0.trace!({ name: 'a' });
    const vm = kvm.createVm(0);
    checker.watch(vm);
    const m = vm.mmu as unknown as { trace: ((ev: { name: string }) => void) | undefined };
    const mine = m.trace;
    m.trace = (ev) => seen.push(`late ${ev.name}`);
    m.trace!({ name: 'b' });
    m.trace = undefined;
    expect(m.trace).toBe(mine);
    m.trace!({ name: 'c' });
    expect(seen).toEqual(['early a', 'late b']);
  });
});
