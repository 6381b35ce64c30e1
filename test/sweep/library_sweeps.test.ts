/**
 * The library sweeps the README documents: every `npx zaplab sweep` line there plans (its grid parses and
 * the scenario loads at every point), and scaled-down points of ram-scaling and memory-hotplug give
 * exact counts: zap-all refaults what was touched, the precise zap only the slot; IPIs follow vCPUs;
 * SW_PROTECTED rules out quirk-off; Firecracker-sized (128 MiB) DIMM slots.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { planSweep, runSweep } from '../../src/sweep/sweep.ts';
import type { SweepResult } from '../../src/sweep/schema.ts';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

/** `npx zaplab sweep <scenario> -p a -p b --design x,y …` → planSweep options. */
function parseLine(line: string): { scenario: string; params: string[]; designs?: string[] } {
  const words = line.replace(/#.*$/, '').split('&&')[0]!.trim().split(/\s+/).slice(3);
  const out: { scenario: string; params: string[]; designs?: string[] } = { scenario: words[0]!, params: [] };
  for (let i = 1; i < words.length; i++) {
    if (words[i] === '-p') out.params.push(words[++i]!);
    else if (words[i] === '--design') out.designs = words[++i]!.split(',');
  }
  return out;
}

const get = (r: SweepResult, params: Record<string, number | string>, design: string) =>
  r.points.find((p) => p.design === design && Object.entries(params).every(([k, v]) => p.params[k] === v))!;

describe('library sweeps', () => {
  it('every sweep command in the README plans', () => {
    const lines = README.split('\n').filter((l) => l.startsWith('npx zaplab sweep '));
    expect(lines.length).toBe(8);
    const sizes = lines.map((l) => planSweep(parseLine(l)).tasks.length);
    // memory-hotplug unplug 1..256 × 5 designs; ram-scaling 1 GiB .. 1 TiB; SW_PROTECTED drops quirk-off
    expect(sizes).toEqual([4 * 2, 9 * 5, 7 * 5, 6 * 5, 5 * 5, 5 * 5, 3 * 5 + 3 * 4, 7 * 5]);
  });

  it('ram-scaling: zap-all refaults every touched leaf, the precise zap none; IPIs = vCPUs', async () => {
    const r = await runSweep(
      planSweep({
        scenario: 'ram-scaling',
        params: ['ram=8G', 'touched=2G..8G*2', 'backing=1g', 'stride=1G', 'vcpus=1,8'],
        designs: ['quirk', 'quirk-off'],
      }),
      { workers: 0 },
    );
    for (const t of [2, 4, 8]) {
      for (const v of [1, 8]) {
        const at = { touched: t * 2 ** 30, vcpus: v };
        // the BAR's 512 4K SPTEs go either way; zap-all also throws away the t 1G leaves and refaults them
        expect([
          get(r, at, 'quirk').sptesZapped,
          get(r, at, 'quirk').refaults,
          get(r, at, 'quirk').tlbFlushIpis,
        ]).toEqual([512 + t, t, 0]);
        expect([
          get(r, at, 'quirk-off').sptesZapped,
          get(r, at, 'quirk-off').refaults,
          get(r, at, 'quirk-off').tlbFlushIpis,
        ]).toEqual([512, 0, v]);
      }
    }
    expect(r.points.every((p) => p.verdict === 'ok')).toBe(true);
  });

  it('ram-scaling on SW_PROTECTED: quirk-off is skipped; deletes zap precisely except under the RFC without its flag', async () => {
    const r = await runSweep(
      planSweep({
        scenario: 'ram-scaling',
        params: ['type=DEFAULT,SW_PROTECTED', 'ram=2G', 'touched=2G', 'backing=1g', 'stride=1G'],
      }),
      { workers: 0 },
    );
    expect(
      r.points.filter((p) => p.params['type'] === 'SW_PROTECTED').map((p) => [p.design, p.refaults]),
    ).toEqual([
      ['quirk', 0],
      ['vm-type', 0],
      ['slot-flag', 2],
      ['slot-flag+leafs', 0],
    ]);
    expect(r.skipped).toEqual([
      { point: 1, design: 'quirk-off', why: 'the quirk only applies to DEFAULT VMs (same as quirk)' },
    ]);
    expect(get(r, { type: 'DEFAULT' }, 'quirk').refaults).toBe(2);
  });

  it('memory-hotplug with 128 MiB (Firecracker) slots: each unplug refaults the boot-RAM set under zap-all', async () => {
    const r = await runSweep(
      planSweep({
        scenario: 'memory-hotplug',
        params: ['dimmSize=128M', 'dimms=8', 'unplug=1..8*2', 'ramSet=16'],
        designs: ['quirk', 'quirk-off'],
      }),
      { workers: 0 },
    );
    for (const u of [1, 2, 4, 8]) {
      expect(get(r, { unplug: u }, 'quirk').refaults).toBe(16 * u);
      expect([
        get(r, { unplug: u }, 'quirk-off').sptesZapped,
        get(r, { unplug: u }, 'quirk-off').refaults,
      ]).toEqual([u, 0]);
    }
    expect(r.points.flatMap((p) => p.errors)).toEqual([]);
  });
});
