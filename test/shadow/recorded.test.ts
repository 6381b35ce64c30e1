/**
 * The model's shadow MMU held to every step of each real kernel's recording (test/recorded/mmu-*.json,
 * kvm_pvm 6.18 builds v595 and v1272, shadow MMU): the deterministic stats each recording holds (v1272
 * adds remote_tlb_flush and the 'dirty log off' scenarios) and the guest's exits, quirk on and off, with
 * the model configured from the recording's own probe.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MMU_CASES } from '../../src/conformance/mmu_cases.ts';
import type { MmuRecording } from '../../src/conformance/mmu_runner.ts';
import { runModelMmuCase } from './model_runner.ts';
import type { KvmOptions } from '../../src/kvm/host_profile.ts';

const DIR = fileURLToPath(new URL('../recorded/', import.meta.url));
const recordings = readdirSync(DIR)
  .filter((f) => /^mmu-.*\.json$/.test(f))
  .sort()
  .map((file) => ({ file, rec: JSON.parse(readFileSync(DIR + file, 'utf8')) as MmuRecording }));

describe('the recorded MMU runs', () => {
  it('are the two 6.18.44 builds (v595 with guest_memfd, v1272 without), and the shadow MMU counted the same on both', () => {
    expect(recordings.map(({ file, rec }) => [file, rec.host.kernel])).toEqual([
      ['mmu-pvm-6.18-v1272.json', '6.18.44-fc-v1272'],
      ['mmu-pvm-6.18.json', '6.18.44-fc-v595'],
    ]);
    // v1272 also records remote_tlb_flush and the 'dirty log off' scenarios; on what both hold they agree.
    const [v1272, v595] = [recordings[0]!.rec, recordings[1]!.rec];
    expect(v1272.stats).toEqual([...v595.stats, 'remote_tlb_flush']);
    const common = v1272.scenarios
      .filter((s) => v595.scenarios.some((o) => o.id === s.id))
      .map((s) => ({ ...s, steps: s.steps.map((t) => ({ ...t, stats: pick(t.stats, v595.stats) })) }));
    expect(common).toEqual(v595.scenarios);
  });
});

/** The stats a recording holds (older recordings hold fewer than MMU_STATS). */
function pick(stats: Record<string, number>, names: readonly string[]): Record<string, number> {
  return Object.fromEntries(names.map((k) => [k, stats[k]!]));
}

describe.each(recordings)(
  'shadow MMU vs the recorded real kernel ($file), model configured from its probe',
  ({ rec }) => {
    // v595 was recorded before the 'dirty log off' cases existed; each recording is held to what it has.
    it('holds every MMU case, except those added after it was recorded', () => {
      const missing = MMU_CASES.filter((c) => !rec.scenarios.some((s) => s.id === c.id)).map((c) => c.id);
      expect(missing).toEqual(
        rec.host.kernel.endsWith('-v595') ? ['dirty log off / zap-all', 'dirty log off / precise'] : [],
      );
    });
    for (const c of MMU_CASES) {
      const real = rec.scenarios.find((s) => s.id === c.id);
      if (real === undefined) continue;
      it(c.id, () => {
        const model = runModelMmuCase(c, rec.host.modelOptions as KvmOptions);
        expect(model.map((s) => ({ step: s.step, stats: pick(s.stats, rec.stats), exits: s.exits }))).toEqual(
          real.steps.map((s) => ({ step: s.step, stats: s.stats, exits: s.exits })),
        );
      });
    }
  },
);
