/**
 * `zaplab conformance` as a test: the shared ABI cases on the model configured from the probe
 * (hostProfile()) and on the real /dev/kvm must agree call for call, whatever kernel build this is; a case
 * whose feature the host lacks is not applicable (with its reason) on both sides. Where a recording in
 * test/recorded was made on a host whose probe equals this one, the live answers must also equal it
 * (so a stale recording is noticed where it can be redone).
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import { compareRuns } from '../../src/conformance/abi_runner.ts';
import { ABI_CASES, notApplicable } from '../../src/conformance/cases.ts';
import { compareLive, formatDisagreements, type AbiComparison } from '../../src/conformance/live.ts';
import { loadAbiRecording, recordingRuns } from '../../src/conformance/recording.ts';
import { HOST, REAL_KVM, announceSkip } from './env.ts';

announceSkip('conformance_live');

const DIR = fileURLToPath(new URL('../recorded/', import.meta.url));
const recordings = readdirSync(DIR)
  .filter((f) => /^abi-.*\.json$/.test(f))
  .map((f) => ({ file: f, rec: loadAbiRecording(DIR + f) }));

describe.skipIf(!REAL_KVM.ok)('ABI conformance: model vs live kernel', () => {
  let real: RealKvm;
  let r: AbiComparison;
  beforeAll(() => {
    real = new RealKvm();
    r = compareLive(real, ABI_CASES);
  });
  afterAll(() => real.close());

  it('every call of every applicable case agrees; the others are n/a on both sides, with the reason', () => {
    const applicable = ABI_CASES.filter((c) => notApplicable(c, HOST!) === null);
    const na = r.cases.filter((c) => c.status === 'n/a');
    console.info(
      `[conformance live] ${HOST!.kernel}: compared ${r.compared} calls in ${applicable.length} of ${ABI_CASES.length} cases; ` +
        `median call: kernel ${(r.nsMedianCall.kernel / 1000).toFixed(1)} µs, model ${(r.nsMedianCall.model / 1000).toFixed(1)} µs` +
        na.map((c) => `\n  n/a ${c.case}: ${c.reason}`).join(''),
    );
    expect(formatDisagreements(r.diffs)).toBe('');
    expect(r.compared).toBe(applicable.reduce((n, c) => n + c.steps.length, 0));
    expect(na.map((c) => c.case)).toEqual(
      ABI_CASES.filter((c) => notApplicable(c, HOST!) !== null).map((c) => c.id),
    );
    for (const c of na) expect(c.reason).toMatch(/guest_memfd/);
  });

  it('a recording made on a host with this probe is reproduced exactly', () => {
    const same = recordings.filter(({ rec }) => isDeepStrictEqual(rec.host.modelOptions, HOST!.modelOptions));
    if (same.length === 0) {
      console.warn(
        `[conformance live] no recording has this host's probe (${HOST!.kernel}); nothing to re-check`,
      );
      return;
    }
    for (const { file, rec } of same) {
      const strip = r.kernel.map((k) => ({
        ...k,
        results: k.results.map(({ call, result }) => ({ call, result })),
      }));
      expect(compareRuns(strip, recordingRuns(rec)).diffs, file).toEqual([]);
      console.info(`[conformance live] ${file} reproduced`);
    }
  });
});
