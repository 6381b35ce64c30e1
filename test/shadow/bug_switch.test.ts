import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import type { ShadowMmu } from '../../src/x86/mmu/shadow_mmu.ts';

describe("bug switch 'shadow-2019-precise-zap'", () => {
  it('is a known bug name and turns on the 2019 zap in the shadow MMU', () => {
    const on = new Kvm({ profile: 'pvm-6.18', bugs: ['shadow-2019-precise-zap'] }).createVm(0);
    const off = new Kvm({ profile: 'pvm-6.18' }).createVm(0);
    expect((on.mmu as unknown as ShadowMmu).bug2019PreciseZap).toBe(true);
    expect((off.mmu as unknown as ShadowMmu).bug2019PreciseZap).toBe(false);
    expect(() => new Kvm({ bugs: ['no-such-bug' as never] })).toThrow(TypeError);
  });
});
