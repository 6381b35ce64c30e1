/**
 * `zaplab conformance` as a test: the shared ABI cases on the model configured by hostProfile() and on
 * the real /dev/kvm must agree call for call; on the kvm_pvm development host the live answers must also
 * equal the recording kept in test/recorded (so a stale recording is noticed where it can be redone).
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import { compareRuns } from '../../src/conformance/abi_runner.ts';
import { ABI_CASES } from '../../src/conformance/cases.ts';
import { compareLive, formatDisagreements, type AbiComparison } from '../../src/conformance/live.ts';
import { loadAbiRecording, recordingRuns } from '../../src/conformance/recording.ts';
import { PVM_HOST, REAL_KVM, announceSkip } from './env.ts';

announceSkip('conformance_live');

describe.skipIf(!REAL_KVM.ok)('ABI conformance: model vs live kernel', () => {
  let real: RealKvm;
  let r: AbiComparison;
  beforeAll(() => {
    real = new RealKvm();
    r = compareLive(real, ABI_CASES);
  });
  afterAll(() => real.close());

  it('every call of every case agrees', () => {
    console.info(
      `[conformance live] compared ${r.compared} calls (${ABI_CASES.length} cases); ` +
        `median call: kernel ${(r.nsMedianCall.kernel / 1000).toFixed(1)} µs, model ${(r.nsMedianCall.model / 1000).toFixed(1)} µs`,
    );
    expect(formatDisagreements(r.diffs)).toBe('');
    expect(r.compared).toBeGreaterThan(250);
  });

  it.skipIf(!PVM_HOST)('the live kernel gives the recorded answers', () => {
    const rec = loadAbiRecording(fileURLToPath(new URL('../recorded/abi-pvm-6.18.json', import.meta.url)));
    const strip = r.kernel.map((k) => ({ ...k, results: k.results.map(({ call, result }) => ({ call, result })) }));
    expect(compareRuns(strip, recordingRuns(rec)).diffs).toEqual([]);
  });
});
