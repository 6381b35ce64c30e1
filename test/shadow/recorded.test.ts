/**
 * The model's shadow MMU held to every step of the real kernel's recording (test/recorded/mmu-pvm-6.18.json,
 * kvm_pvm 6.18, shadow MMU): the five deterministic stats and the guest's exits, quirk on and off.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MMU_CASES } from '../../src/conformance/mmu_cases.ts';
import type { MmuRecording } from '../../src/conformance/mmu_runner.ts';
import { runModelMmuCase } from './model_runner.ts';

const rec = JSON.parse(
  readFileSync(fileURLToPath(new URL('../recorded/mmu-pvm-6.18.json', import.meta.url)), 'utf8'),
) as MmuRecording;

describe('shadow MMU vs the recorded real kernel (pvm-6.18)', () => {
  for (const c of MMU_CASES) {
    it(c.id, () => {
      const real = rec.scenarios.find((s) => s.id === c.id)!;
      const model = runModelMmuCase(c);
      expect(model.map((s) => ({ step: s.step, stats: s.stats, exits: s.exits }))).toEqual(
        real.steps.map((s) => ({ step: s.step, stats: s.stats, exits: s.exits })),
      );
    });
  }
});
