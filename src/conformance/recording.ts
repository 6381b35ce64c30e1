/**
 * Recorded real-kernel answers: the ABI recording (per case, per call: the call's one-line form and its
 * outcome) and the host it came from, so the model can be held to recorded reality on machines without
 * /dev/kvm. Generations and layouts are not observable on the real kernel, so only outcomes are kept.
 */
import { writeFileSync } from 'node:fs';
import { InputFileError, MAX_TEXT_BYTES, readInputText } from '../scenario/input_file.ts';
import type { CaseRun } from './abi_runner.ts';

export const ABI_RECORDING_FORMAT = 'zaplab-abi-recording/1';

/** The host a recording came from: enough to rebuild the model configuration it is compared with. */
export interface RecordedHost {
  kernel: string;
  pvm: boolean;
  tdpMmu: boolean;
  /** the options for `new Kvm(...)` that describe the host (RealKvm.hostProfile().modelOptions) */
  modelOptions: Record<string, unknown>;
  /** the full hostProfile() minus modelOptions, for the reader */
  profile: Record<string, unknown>;
}

export interface AbiRecording {
  format: typeof ABI_RECORDING_FORMAT;
  recordedAt: string;
  host: RecordedHost;
  /** per case: its calls, or `na` (why it did not apply to this host) and no calls */
  cases: { id: string; na?: string; calls: { call: string; result: string }[] }[];
}

export function makeAbiRecording(host: RecordedHost, runs: readonly CaseRun[]): AbiRecording {
  return {
    format: ABI_RECORDING_FORMAT,
    recordedAt: new Date().toISOString(),
    host,
    cases: runs.map((r) => ({
      id: r.id,
      ...(r.na !== undefined ? { na: r.na } : {}),
      calls: r.results.map(({ call, result }) => ({ call, result })),
    })),
  };
}

/** The kernel side of a comparison, rebuilt from a recording. */
export function recordingRuns(rec: AbiRecording): CaseRun[] {
  return rec.cases.map((c) => ({
    id: c.id,
    ...(c.na !== undefined ? { na: c.na } : {}),
    results: c.calls,
    ns: 0,
    ioctls: 0,
  }));
}

/** Read and shape-check an ABI recording (a malformed file is an Error naming what is wrong). */
export function loadAbiRecording(path: string): AbiRecording {
  // read with a bound: a directory or a file that never ends (/dev/zero) is named, not read until the
  // process runs out of memory
  let text: string;
  try {
    text = readInputText(path, MAX_TEXT_BYTES);
  } catch (e) {
    throw e instanceof InputFileError ? new Error(`${path}: ${e.message}`) : e;
  }
  const j = JSON.parse(text) as AbiRecording;
  if (j.format !== ABI_RECORDING_FORMAT) throw new Error(`${path}: format is not ${ABI_RECORDING_FORMAT}`);
  if (!j.host || typeof j.host.modelOptions !== 'object') throw new Error(`${path}: no host.modelOptions`);
  if (!Array.isArray(j.cases)) throw new Error(`${path}: no cases`);
  for (const c of j.cases) {
    if (typeof c.id !== 'string' || !Array.isArray(c.calls)) throw new Error(`${path}: malformed case`);
    if (c.na !== undefined && typeof c.na !== 'string')
      throw new Error(`${path}: ${c.id}: na must be a string`);
    for (const k of c.calls) {
      if (typeof k.call !== 'string' || typeof k.result !== 'string')
        throw new Error(`${path}: ${c.id}: malformed call`);
    }
  }
  return j;
}

export function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 1) + '\n');
}
