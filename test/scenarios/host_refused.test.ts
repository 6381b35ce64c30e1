/**
 * A host step the run's own state makes impossible (ksmMerge of a page munmap'd by an earlier step) is a
 * failed step: the run's verdict is 'error' with the step and the host's reason listed, and the steps
 * after it still run, as for a failed ioctl. Before, the host's RangeError ended the whole compare as
 * "internal error" (exit 70). The parser rules out what it can see (test/scenario/host_ranges.test.ts);
 * this is what only the run can know.
 */
import { describe, expect, it } from 'vitest';
import { parseScenario } from '../../src/scenario/parse.ts';
import { runScenario } from '../../src/scenario/runner.ts';
import { designById } from '../../src/scenario/designs.ts';

const text = `name: t
vms:
  - regions:
      - { name: ram, gpa: 0, size: 2M }
timeline:
  - access: { region: ram }
  - host: { event: munmap, region: ram, offset: 0x1000, length: 0x1000 }
  - host: { event: ksmMerge, region: ram, offset: 0x1000, with: 0x2000 }
  - host: { event: ksmMerge, region: ram, offset: 0x3000, with: 0x4000 }
`;

describe('a host event the run state refuses', () => {
  it('fails its step with the reason (verdict error); the steps after it run', async () => {
    const p = parseScenario(text, 't.yaml', {});
    if (!p.ok) throw new Error(p.error);
    const r = await runScenario(p.scenario, designById('quirk')!);
    expect(r.verdict).toBe('error');
    expect(r.errors).toEqual(['#3 host: ksmMerge: a and b must both be mapped']);
    // the refused merge counts no event; the one after it ran (its two invalidations of b's page)
    expect([r.totals['host_munmap'], r.totals['host_ksmMerge']]).toEqual([1, 1]);
  });
});
