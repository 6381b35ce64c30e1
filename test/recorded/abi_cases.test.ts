/**
 * The shared ABI cases (src/conformance/cases.ts) as vitest tables on the model, and the model against
 * the real kernel's recorded answers (abi-pvm-6.18.json, recorded on the kvm_pvm development host), so a
 * machine without /dev/kvm still tests the model against recorded reality. Re-record with
 * `zaplab conformance --record test/recorded/abi-pvm-6.18.json` on that host.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compareRuns } from '../../src/conformance/abi_runner.ts';
import { ABI_CASES } from '../../src/conformance/cases.ts';
import { runModel } from '../../src/conformance/live.ts';
import { loadAbiRecording, recordingRuns } from '../../src/conformance/recording.ts';
import type { KvmOptions } from '../../src/index.ts';

const REC = fileURLToPath(new URL('./abi-pvm-6.18.json', import.meta.url));
const rec = loadAbiRecording(REC);
const hostOpts = rec.host.modelOptions as KvmOptions;

describe('shared ABI cases on the model configured as the recorded host', () => {
  it('case ids are unique and every case has steps', () => {
    expect(new Set(ABI_CASES.map((c) => c.id)).size).toBe(ABI_CASES.length);
    for (const c of ABI_CASES) expect(c.steps.length, c.id).toBeGreaterThan(0);
  });

  it.each(ABI_CASES.map((c) => [c.id, c] as const))('%s', (_id, c) => {
    const [run] = runModel(hostOpts, [c]);
    const got = run!.results.map((r, i) => ({ call: r.call, result: r.result, gen: 'gen' in c.steps[i]!.call ? r.gen : undefined }));
    const want = run!.results.map((r, i) => {
      const call = c.steps[i]!.call;
      return { call: r.call, result: c.steps[i]!.expect, gen: 'gen' in call ? call.gen : undefined };
    });
    expect(got).toEqual(want);
  });
});

describe('the model against the recorded kernel answers (offline)', () => {
  it('the recording covers exactly the current case list (else re-record)', () => {
    expect(rec.cases.map((c) => c.id)).toEqual(ABI_CASES.map((c) => c.id));
  });

  it('every recorded call agrees with the model', () => {
    const { compared, diffs } = compareRuns(runModel(hostOpts, ABI_CASES), recordingRuns(rec));
    console.info(`[recorded abi] compared ${compared} calls with ${rec.host.kernel}`);
    expect(diffs).toEqual([]);
    expect(compared).toBeGreaterThan(250);
  });

  it("the recorded expectations in cases.ts are the kernel's answers", () => {
    const byId = new Map(rec.cases.map((c) => [c.id, c]));
    const diff = ABI_CASES.flatMap((c) =>
      c.steps.flatMap((s, i) => (byId.get(c.id)?.calls[i]?.result === s.expect ? [] : [`${c.id} #${i}`])),
    );
    expect(diff).toEqual([]);
  });
});
