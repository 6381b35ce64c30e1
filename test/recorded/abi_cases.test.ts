/**
 * The shared ABI cases (src/conformance/cases.ts) as vitest tables on the model, and the model against
 * every recorded kernel in this directory (abi-*.json: abi-pvm-6.18.json from build v595, with guest_memfd;
 * abi-pvm-6.18-v1272.json from build v1272, without it), each replayed offline against the model
 * configured from that recording's own probe. Re-record with `zaplab conformance --record <file>`.
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compareRuns } from '../../src/conformance/abi_runner.ts';
import { ABI_CASES, notApplicable } from '../../src/conformance/cases.ts';
import { runModel } from '../../src/conformance/live.ts';
import { loadAbiRecording, recordingRuns } from '../../src/conformance/recording.ts';
import { resolveHostConfig, type KvmOptions } from '../../src/kvm/host_profile.ts';

const DIR = fileURLToPath(new URL('./', import.meta.url));
const recordings = readdirSync(DIR)
  .filter((f) => /^abi-.*\.json$/.test(f))
  .sort()
  .map((file) => ({ file, rec: loadAbiRecording(DIR + file) }));

describe('the recorded kernels', () => {
  it('are the two 6.18.44 builds, one with guest_memfd and one without', () => {
    expect(recordings.map(({ file, rec }) => [file, rec.host.kernel, rec.host.modelOptions['guestMemfd'] ?? true])).toEqual([
      ['abi-pvm-6.18-v1272.json', '6.18.44-fc-v1272', false],
      ['abi-pvm-6.18.json', '6.18.44-fc-v595', true],
    ]);
  });

  it('between them, every case ran on at least one real kernel', () => {
    const ran = new Set(recordings.flatMap(({ rec }) => rec.cases.filter((c) => c.na === undefined).map((c) => c.id)));
    expect(ABI_CASES.map((c) => c.id).filter((id) => !ran.has(id))).toEqual([]);
  });
});

describe.each(recordings)('$file: the model configured from its recorded probe', ({ rec }) => {
  const hostOpts = rec.host.modelOptions as KvmOptions;
  const facts = resolveHostConfig(hostOpts);
  const applicable = ABI_CASES.filter((c) => notApplicable(c, facts) === null);
  // One model run per recording serves every test below (SMR-4 alone creates 2 × 32,764 slots).
  let runs: ReturnType<typeof runModel> | undefined;
  const modelRuns = () => (runs ??= runModel(hostOpts, ABI_CASES));

  it('the recording covers exactly the current case list, n/a exactly where the probe says (else re-record)', () => {
    expect(rec.cases.map((c) => c.id)).toEqual(ABI_CASES.map((c) => c.id));
    expect(rec.cases.filter((c) => c.na === undefined).map((c) => c.id)).toEqual(applicable.map((c) => c.id));
  });

  it('every recorded call agrees with the model', () => {
    const { compared, diffs, cases } = compareRuns(modelRuns(), recordingRuns(rec));
    console.info(`[recorded abi] compared ${compared} calls with ${rec.host.kernel}`);
    expect(diffs).toEqual([]);
    expect(compared).toBe(applicable.reduce((n, c) => n + c.steps.length, 0));
    expect(cases.filter((c) => c.status === 'n/a').length).toBe(ABI_CASES.length - applicable.length);
  });

  it("the expectations in cases.ts are this kernel's answers", () => {
    const byId = new Map(rec.cases.map((c) => [c.id, c]));
    const diff = applicable.flatMap((c) =>
      c.steps.flatMap((s, i) => (byId.get(c.id)?.calls[i]?.result === s.expect ? [] : [`${c.id} #${i}`])),
    );
    expect(diff).toEqual([]);
  });

  it.each(applicable.map((c) => [c.id, c] as const))('%s: the model gives the expected outcomes and generations', (_id, c) => {
    const run = modelRuns().find((r) => r.id === c.id);
    const got = run!.results.map((r, i) => ({ call: r.call, result: r.result, gen: 'gen' in c.steps[i]!.call ? r.gen : undefined }));
    const want = run!.results.map((r, i) => {
      const call = c.steps[i]!.call;
      return { call: r.call, result: c.steps[i]!.expect, gen: 'gen' in call ? call.gen : undefined };
    });
    expect(got).toEqual(want);
  });
});
