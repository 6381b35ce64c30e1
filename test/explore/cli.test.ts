/**
 * `zaplab explore` end to end: configuration errors as file:line:col, exit statuses, the race diagram
 * and replay command of a violation, --json, --shard and --merge into one verdict, --workers, --replay.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseExploreConfig } from '../../src/explore/config.ts';

const root = new URL('../..', import.meta.url).pathname;
function zaplab(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'explore', ...args], {
    encoding: 'utf8',
    cwd: root,
  });
}

const GOOD = `name: t
vms:
  - vcpus: 1
    regions:
      - { name: bar, gpa: 0xc0000000, size: 16K }
actors:
  - name: vcpu0
    steps:
      - access: { region: bar }
  - name: qemu
    steps:
      - delete: bar
`;

describe('explore configurations: errors name file:line:col', () => {
  it('a good one parses', () => {
    const r = parseExploreConfig(GOOD, 'c.yaml');
    expect(r.ok && r.config.actors.map((a) => [a.name, a.vcpu, a.steps.length])).toEqual([
      ['vcpu0', 0, 1],
      ['qemu', 0, 1],
    ]);
  });
  it('an unknown region in an actor step', () => {
    const r = parseExploreConfig(GOOD.replace('delete: bar', 'delete: rom'), 'c.yaml');
    expect(r).toEqual({
      ok: false,
      error: "c.yaml:12:17: actors.1.steps.0.delete: unknown region 'rom' (has: bar)",
    });
  });
  it('a vCPU the VM does not have', () => {
    const r = parseExploreConfig(GOOD.replace('  - name: qemu\n', '  - name: qemu\n    vcpu: 3\n'), 'c.yaml');
    expect(r).toEqual({
      ok: false,
      error: 'c.yaml:11:11: actors.1.vcpu: vCPU 3 does not exist (the VM has 1)',
    });
  });
  it('a step kind actors cannot run', () => {
    const r = parseExploreConfig(GOOD.replace('delete: bar', 'audit: x'), 'c.yaml');
    expect(r.ok ? '' : r.error).toMatch(
      /^c\.yaml:12:9: actors\.1\.steps\.0: expected one of the step kinds access, delete/,
    );
  });
  it('a bad bound', () => {
    const r = parseExploreConfig(GOOD + 'bounds: { steps: -1 }\n', 'c.yaml');
    expect(r.ok ? '' : r.error).toMatch(/^c\.yaml:13:18: bounds\.steps: /);
  });
  it('the scenario part is checked by the scenario parser, at its own position', () => {
    const r = parseExploreConfig(GOOD.replace('size: 16K', 'size: lots'), 'c.yaml');
    expect(r.ok ? '' : r.error).toMatch(/^c\.yaml:5:45: vms\.0\.regions\.0\.size: /);
  });
  it('no actors', () => {
    const r = parseExploreConfig(GOOD.slice(0, GOOD.indexOf('actors:')), 'c.yaml');
    expect(r).toEqual({
      ok: false,
      error: 'c.yaml:1:1: (top level): expected actors: a list of at least one actor',
    });
  });
});

describe('zaplab explore', () => {
  it('a clean run: exit 0 and the per-design counts', () => {
    const r = zaplab('notifier-vs-fault', '--design', 'quirk,quirk-off');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/quirk\s+10\s+10\s+0\s+0\s+\d+\s+✓ exhausted/);
    expect(r.stdout).toMatch(/quirk-off\s+10\s+10/);
  }, 60_000);

  it('a violation: exit 1, the race diagram, the invariant and a replay command that reproduces it', () => {
    const r = zaplab('notifier-vs-fault', '--design', 'quirk', '--bug', 'fault-no-seq-recheck');
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('✗ INV-PFN-001 [quirk] (gfn 0x5, pfn 0x2), after step 4:');
    expect(r.stdout).toMatch(/# vcpu0\s+host/);
    expect(r.stdout).toMatch(/ 1 kvm_mmu_faultin_pfn\n/);
    expect(r.stdout).toMatch(/ 2 {4}\s+mmu_notifier_invalidate_range_start\n/);
    const cmd = /replay: zaplab explore (.*)/.exec(r.stdout)![1]!;
    expect(cmd).toBe('notifier-vs-fault --design quirk --bug fault-no-seq-recheck --replay 0,1,0,1 --trace');
    const again = zaplab(...cmd.split(' '));
    expect(again.status).toBe(1);
    expect(again.stdout).toContain(
      '✗ INV-PFN-001: VM 1 at step 4: root 0 leaf (level 1) maps gfn 0x5 to pfn 0x2, which the host freed',
    );
    expect(again.stdout).toMatch(
      /step 3 vcpu0: kvm_tdp_mmu_map\n {4}kvm_mmu_spte_requested gfn=0x5 pfn=0x2 level=1/,
    );
  }, 60_000);

  it('--shard i/N as JSON, then --merge gives the unsharded counts', () => {
    const dir = mkdtempSync(join(tmpdir(), 'explore-'));
    const files = [0, 1].map((i) => {
      const r = zaplab('delete-vs-fault', '--design', 'quirk', '--shard', `${i}/2`, '--json');
      expect(r.status).toBe(0);
      const f = join(dir, `s${i}.json`);
      writeFileSync(f, r.stdout);
      return f;
    });
    const m = zaplab('--merge', ...files, '--json');
    expect(m.status).toBe(0);
    const d = JSON.parse(m.stdout).designs[0];
    expect([d.design, d.stats.complete, d.stats.exhausted, d.violation]).toEqual(['quirk', 64, true, null]);
    // one shard alone does not cover the space
    const one = JSON.parse(zaplab('--merge', files[0]!, '--json').stdout).designs[0];
    expect([one.stats.complete, one.stats.exhausted]).toEqual([24, false]);
  }, 90_000);

  it('--workers 2: the one-thread counts as JSON, and a violation with its shortest schedule', () => {
    const r = zaplab('delete-vs-fault', '--design', 'quirk,quirk-off', '--workers', '2', '--json');
    expect([r.status, r.stderr]).toEqual([0, '']);
    const ds = JSON.parse(r.stdout).designs as {
      design: string;
      stats: { complete: number; exhausted: boolean };
      workers: number;
    }[];
    expect(ds.map((d) => [d.design, d.stats.complete, d.stats.exhausted, d.workers])).toEqual([
      ['quirk', 64, true, 2],
      ['quirk-off', 88, true, 2],
    ]);
    const v = zaplab(
      'notifier-vs-fault',
      '--design',
      'quirk',
      '--bug',
      'fault-no-seq-recheck',
      '--workers',
      '2',
      '--json',
    );
    expect(v.status).toBe(1);
    const d = JSON.parse(v.stdout).designs[0];
    expect([d.violation.invariant, d.violation.schedule.length]).toEqual(['INV-PFN-001', 4]);
  }, 90_000);

  it('bad input: exit 2 and one line', () => {
    for (const [args, msg] of [
      [['no-such-config'], /^zaplab explore: no-such-config: no such file or library configuration/],
      [
        ['delete-vs-fault', '--design', 'nope'],
        /^zaplab explore: design 'nope' cannot run delete-vs-fault: no such design/,
      ],
      [
        ['delete-vs-fault', '--bug', 'nope'],
        /^zaplab explore: --bug nope: unknown \(known: vfio-2019-memtype/,
      ],
      [['delete-vs-fault', '--shard', '2/2'], /^zaplab explore: --shard 2\/2: expected i\/N with 0 ≤ i < N/],
      [
        ['delete-vs-fault', '--workers', 'two'],
        /^zaplab explore: --workers: expected an integer ≥ 0 \(got 'two'\)/,
      ],
      [
        ['delete-vs-fault', '--workers', '300'],
        /^zaplab explore: --workers 300: expected an integer from 0 to 256/,
      ],
      [
        ['delete-vs-fault', '--workers', '2', '--pct', '5'],
        /^zaplab explore: --workers splits the exhaustive search; --pct runs in one thread/,
      ],
      [
        ['delete-vs-fault', '--design', 'quirk', '--replay', '5,5'],
        /^zaplab explore: schedule step 1: actor 5 cannot run there/,
      ],
    ] as const) {
      const r = zaplab(...args);
      expect([r.status, r.stderr.split('\n').length]).toEqual([2, 2]);
      expect(r.stderr).toMatch(msg);
    }
  }, 60_000);
});

describe('explore: the designs side by side, and why the clean ones are clean', () => {
  it('vfio-memtype --bug vfio-2019-memtype: zap-all exhausted clean, precise fails; the failing schedule under zap-all, step by step', () => {
    const r = zaplab('vfio-memtype', '--bug', 'vfio-2019-memtype');
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/\n  quirk +75 +75 +0 +0 +\d+ +✓ exhausted\n/);
    expect(r.stdout).toMatch(/\n  quirk-off +0 +12 +0 +11 +\d+ +✗ INV-ACCESS-005 in 5 steps\n/);
    const why = r.stdout.slice(r.stdout.indexOf('\nwhy '));
    expect(why.split('\n').slice(1, 15)).toEqual([
      'why quirk, vm-type, slot-flag are clean: the schedule of [quirk-off] under quirk',
      '    1 vcpu0: kvm_set_cr0: cr0 cd=false',
      '    2 vcpu0: kvm_set_memory_region: DELETE rom ⟶ synchronize_srcu_expedited',
      '    3 vcpu0: synchronize_srcu_expedited: INVALID slot published; waits for kvm->srcu readers',
      '    4 vcpu0: cond_resched_rwlock_write: kvm_mmu_zap_all_fast: not contended, keeps mmu_lock ⟶ synchronize_srcu_expedited',
      '    5 vcpu0: synchronize_srcu_expedited: new memslots published; waits for kvm->srcu readers',
      '    6 vcpu0: kvm_mmu_faultin_pfn: read 0xc0001000: EPT violation; seq snapshot, memslot, pfn',
      '    7 vcpu0: kvm_tdp_mmu_map: gfn 0xc0001: SPTE installed; the guest re-executes',
      '    8 vcpu0: guest access (TLB / EPT hit): read 0xc0001000 → pfn 0x4002 (level 1, memtype 1)',
      '    9 gpu: device DMA (IOMMU): dma device="gpu" region="ram" offset=0 length=0x1000 kind="write"',
      '   10 gpu: device DMA (IOMMU): dma device="gpu" region="ram" offset=0x1000 length=0x1000 kind="write"',
      '  complete: no violation',
      '  [quirk-off] at step 5: guest access (TLB / EPT hit): read 0xc0001000 → pfn 0x4002 (level 1, memtype 6) (INV-ACCESS-005)',
      '',
    ]);
  }, 120_000);
});
