/**
 * Historical KVM bugs as scenarios (test/scenarios/fixtures/bugs/*.yaml, host.bugs): under `check`
 * (audit 'steps') each bug fires a named invariant at a named step under the designs where it can
 * happen, and the same scenario with the switch off is clean under every design. 'fault-no-seq-recheck'
 * races a fault against a page migration with a host step's `racingFault` (vcpu.beginAccess).
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { loadScenario } from '../../src/scenario/library.ts';
import { compareScenario, type RunResult } from '../../src/scenario/runner.ts';

const PRECISE = ['quirk-off', 'slot-flag+leafs'];

async function check(name: string, bugsOn: boolean): Promise<RunResult[]> {
  const r = loadScenario(`test/scenarios/fixtures/bugs/${name}.yaml`);
  if (!r.ok) throw new Error(r.error);
  const sc = bugsOn ? r.scenario : { ...r.scenario, host: { ...r.scenario.host, bugs: [] } };
  return (await compareScenario(sc, { audit: 'steps' })).runs;
}

/** "invariant@step ×count", in order of first appearance. */
const fired = (r: RunResult): string[] => {
  const m = new Map<string, number>();
  for (const v of r.violations) m.set(`${v.id}@${v.step}`, (m.get(`${v.id}@${v.step}`) ?? 0) + 1);
  return [...m].map(([k, n]) => `${k} ×${n}`);
};

const CASES: [string, (design: string) => string[]][] = [
  [
    'precise-zap-no-flush',
    (d) =>
      PRECISE.includes(d)
        ? ['INV-ZAP-002@delete the BAR slot ×16', 'INV-ACCESS-001@vCPU 1 touches the BAR again ×1']
        : [],
  ],
  [
    'fault-ignores-invalid-slot',
    () => [
      'INV-ACCESS-003@delete the BAR while the guest touches it (INVALID window) ×1',
      'INV-ZAP-001@delete the BAR while the guest touches it ×1',
      'INV-ZAP-002@delete the BAR while the guest touches it ×1',
      'INV-ACCESS-001@the guest touches the BAR after the DELETE ×1',
    ],
  ],
  ['gmem-flag-clear-uaf', () => ['INV-GMEM-001@clear the guest_memfd flag ×1']],
  [
    'fault-no-seq-recheck',
    // The SPTE and the TLB entry both reach the page the migration freed; the next read still does.
    () => [
      'INV-ACCESS-001@vCPU 0 faults on page 5 while the host migrates it ×1',
      'INV-PFN-001@vCPU 0 faults on page 5 while the host migrates it ×2',
      'INV-ACCESS-001@vCPU 0 reads page 5 again ×1',
    ],
  ],
  [
    'vfio-2019-memtype',
    (d) => [
      'INV-MEMTYPE-001@CD toggle ×16',
      ...(PRECISE.includes(d) ? ['INV-ACCESS-005@BAR access ×1'] : []),
    ],
  ],
  [
    // v5.1's rmap walk dropped mmu_lock without flushing: both vCPUs' 4 BAR translations are still usable
    // at the drop (the slot is INVALID, its SPTEs gone), and vCPU 1's access goes through one of them.
    // Only the precise path has the bug; zap-all and 6.18 flush before they yield.
    'shadow-2019-precise-zap',
    (d) =>
      d === 'quirk-off'
        ? [
            'INV-ZAP-002@delete the BAR (mmu_lock dropped) ×8',
            'INV-ACCESS-003@delete the BAR (mmu_lock dropped) ×1',
          ]
        : [],
  ],
];

describe('historical bugs as scenarios', () => {
  for (const [name, want] of CASES) {
    it(`${name}: the invariant and step per design`, async () => {
      for (const r of await check(name, true)) {
        expect(fired(r), r.design).toEqual(want(r.design));
        expect(r.verdict).toBe(want(r.design).length ? 'violations' : 'ok');
        expect(r.errors).toEqual([]);
      }
    });
    it(`${name}: switch off, clean under every design`, async () => {
      for (const r of await check(name, false)) {
        // 6.19 rejects the flag change instead of accepting it: a call the scenario does not expect to
        // fail, so the run's verdict is 'error' (no violation either way)
        const rejected = name === 'gmem-flag-clear-uaf';
        expect([r.design, r.verdict, r.violations.length]).toEqual([r.design, rejected ? 'error' : 'ok', 0]);
        expect(r.errors.length).toBe(rejected ? 1 : 0);
        if (rejected) expect(r.errors[0]).toMatch(/: EINVAL KVM_SET_USER_MEMORY_REGION2: EINVAL: /);
      }
    });
  }

  it('zaplab check: exit 1 and a readable report (invariant, design, step, gfn/pfn, trace tail)', () => {
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        'src/cli/main.ts',
        'check',
        'test/scenarios/fixtures/bugs/precise-zap-no-flush.yaml',
      ],
      {
        encoding: 'utf8',
        cwd: new URL('../..', import.meta.url).pathname,
      },
    );
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('✗ INV-ZAP-002 [quirk-off] at step "delete the BAR slot" (16×)');
    expect(r.stdout).toMatch(/gfn 0xc0000, pfn 0x[0-9a-f]+\n/);
    expect(r.stdout).toContain('… 15 more (gfn 0xc0001');
    expect(r.stdout).toContain('✗ INV-ACCESS-001 [slot-flag+leafs] at step "vCPU 1 touches the BAR again"');
    expect(r.stdout).toMatch(/trace \(most recent last\):\n {6}\S/);
    for (const line of r.stdout.split('\n')) expect(line.length).toBeLessThanOrEqual(100);
  }, 30000);
});
