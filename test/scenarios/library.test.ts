/**
 * Library scenarios under `check` (audit 'steps': access checks plus structural audits after every step): exact counts where they are explained, verdicts, and
 * what is missing from the model. firmware-boot: 9 deletions (6 PAM toggles + 2 ROM BARs + final PAM
 * lock) — zap-all on DEFAULT under quirk/vm-type/slot-flag; precise when the quirk is off or every slot
 * carries KVM_MEM_ZAP_LEAFS_ONLY. The 2048-page working set is touched 3× by 2 vCPUs plus the 256-page
 * PAM-phase set, so zap-all refaults 5376 pages; precise zaps only the 80 slot pages ever mapped.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { loadScenario } from '../../src/scenario/library.ts';
import { compareScenario, missingFeatures } from '../../src/scenario/runner.ts';
import type { Scenario } from '../../src/scenario/schema.ts';

const sc = (name: string, params: Record<string, string> = {}): Scenario => {
  const r = loadScenario(name, params);
  if (!r.ok) throw new Error(r.error);
  return r.scenario;
};
const by = async (name: string, params: Record<string, string> = {}) => {
  const { runs, skipped } = await compareScenario(sc(name, params), { audit: 'steps' });
  return { get: (id: string) => runs.find((r) => r.design === id)!, runs, skipped };
};

describe('library scenarios', () => {
  it('firmware-boot: zap-all refaults the working set, precise does not', async () => {
    const r = await by('firmware-boot');
    for (const id of ['quirk', 'vm-type', 'slot-flag']) {
      const t = r.get(id).totals;
      expect([
        t['memslot_zap_all_fast'],
        t['memslot_zap_precise'],
        t['refaults'],
        t['sptes_zapped_4k'],
      ]).toEqual([9, 0, 5376, 5767]);
    }
    for (const id of ['quirk-off', 'slot-flag+leafs']) {
      const t = r.get(id).totals;
      expect([
        t['memslot_zap_all_fast'],
        t['memslot_zap_precise'],
        t['refaults'],
        t['sptes_zapped_4k'],
      ]).toEqual([0, 9, 0, 80]);
    }
    for (const run of r.runs) {
      expect(run.errors).toEqual([]);
      expect(run.violations).toEqual([]);
      expect(run.verdict).toBe('ok');
    }
  });
  it('smram-toggle: a DELETE in the SMM address space nukes address space 0 too under zap-all', async () => {
    // 8 close/open pairs + the TSEG lock = 9 deletions in as 1; each zap-all costs the 1024-page
    // working set (4K leafs: the region's gpa and hva are not 2M-congruent); the precise zap finds
    // nothing mapped in the SMRAM slots (no vCPU entered SMM), so it zaps and flushes nothing.
    const r = await by('smram-toggle');
    for (const id of ['quirk', 'vm-type', 'slot-flag']) {
      const t = r.get(id).totals;
      expect([
        t['memslot_zap_all_fast'],
        t['refaults'],
        t['sptes_zapped_4k'],
        t['remote_tlb_flush'] ?? 0,
      ]).toEqual([9, 9216, 9216, 0]);
    }
    for (const id of ['quirk-off', 'slot-flag+leafs']) {
      const t = r.get(id).totals;
      expect([
        t['memslot_zap_precise'],
        t['refaults'] ?? 0,
        t['sptes_zapped_4k'] ?? 0,
        t['remote_tlb_flush'] ?? 0,
      ]).toEqual([9, 0, 0, 0]);
    }
    for (const run of r.runs) expect([run.verdict, run.errors]).toEqual(['ok', []]);
  });
  it('live-migration: FLAGS_ONLY never zaps, every design agrees', async () => {
    const r = await by('live-migration');
    const t = r.runs.map((x) => [
      x.totals['memslot_zap_all_fast'] ?? 0,
      x.totals['refaults'] ?? 0,
      x.totals['remote_tlb_flush'],
    ]);
    expect(new Set(t.map((x) => JSON.stringify(x))).size).toBe(1);
    expect(t[0]).toEqual([0, 0, 5]);
  });
  it('memory-hotplug (scaled): each unplug refaults the boot-RAM set under zap-all', async () => {
    const r = await by('memory-hotplug', { dimms: '16', unplug: '4', ramSet: '64' });
    expect(r.get('quirk').totals['refaults']).toBe(4 * 64);
    expect(r.get('quirk-off').totals['refaults']).toBe(0);
    for (const run of r.runs) expect(run.verdict).toBe('ok');
  });
  it('vsm-permission-split: the split slot holds the working set, so precise zaps as much', async () => {
    const r = await by('vsm-permission-split', { splits: '4', workingSet: '64' });
    expect(r.get('quirk').totals['refaults']).toBe(4 * 64);
    expect(r.get('quirk-off').totals['refaults']).toBe(4 * 64);
  });
  it('every model feature the library requires is in this build (probed on the public API)', () => {
    for (const n of ['tdx-boot', 'snp-boot', 'vfio-2019']) expect(missingFeatures(sc(n)), n).toEqual([]);
    expect(missingFeatures({ ...sc('tdx-boot'), requires: ['warp-drive'] })).toEqual(['warp-drive']);
  });
  it('refault-storm (scaled) runs with 64 vCPUs', async () => {
    const r = await by('refault-storm', { workingSet: '16', romToggles: '1' });
    expect(r.get('quirk').totals['memslot_zap_all_fast']).toBe(1);
    expect(r.get('quirk-off').totals['memslot_zap_all_fast'] ?? 0).toBe(0);
    for (const run of r.runs) expect(run.verdict).toBe('ok');
  });
  it('tdx-boot: exact SEAMCALLs — 4 per removed private page (BLOCK, TRACK, REMOVE, WBINVD), never zap-all', async () => {
    const r = await by('tdx-boot');
    expect(r.skipped.map((s) => s.id)).toEqual(['quirk-off', 'slot-flag']);
    for (const run of r.runs) {
      const t = run.totals;
      // 512 boot pages + 4 rounds × 1024 re-accepted bounce-buffer pages are AUGed and accepted; the 4
      // shared conversions remove 1024 each and the private-slot DELETE removes the 512 boot pages
      const calls = [
        'SEPT.ADD',
        'PAGE.AUG',
        'PAGE.ADD',
        'MR.FINALIZE',
        'RANGE.BLOCK',
        'TRACK',
        'PAGE.REMOVE',
      ].map((k) => t[`tdx.TDH.MEM.${k}`] ?? t[`tdx.TDH.${k}`]);
      expect(calls, run.design).toEqual([130, 4608, 0, 1, 4608, 4608, 4608]);
      expect([
        t['tdx.TDH.PHYMEM.PAGE.WBINVD'],
        t['seamcalls'],
        t['tdx_accept_success'],
        t['tdx_unaccepted_accesses'],
      ]).toEqual([4608, 23171, 4608, 0]);
      expect([
        t['memslot_zap_all_fast'] ?? 0,
        t['memslot_zap_precise'],
        t['tdx_private_pages_removed'],
      ]).toEqual([0, 2, 4608]);
      expect([run.verdict, run.errors]).toEqual(['ok', []]);
    }
  });
  it('snp-boot: precise zaps on every design but the RFC without the flag; checker clean', async () => {
    const r = await by('snp-boot');
    expect(r.skipped.map((s) => s.id)).toEqual(['quirk-off']);
    const k = (id: string) => {
      const t = r.get(id).totals;
      return [
        t['memslot_zap_all_fast'] ?? 0,
        t['memslot_zap_precise'] ?? 0,
        t['refaults'],
        t['sptes_zapped_4k'],
      ];
    };
    for (const id of ['quirk', 'vm-type', 'slot-flag+leafs']) expect(k(id)).toEqual([0, 2, 7168, 8960]);
    expect(k('slot-flag')).toEqual([2, 0, 7680, 9472]);
    for (const run of r.runs) expect([run.verdict, run.errors]).toEqual(['ok', []]);
  });
});

describe('CLI e2e', () => {
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      encoding: 'utf8',
      cwd: new URL('../..', import.meta.url).pathname,
    });
  it('compare firmware-boot finishes in seconds and labels modelled time', () => {
    const t0 = Date.now();
    const r = cli('compare', 'firmware-boot');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/slot-flag\+leafs/);
    expect(r.stdout).toMatch(/modelled/);
    expect(Date.now() - t0).toBeLessThan(15000);
    for (const line of r.stdout.split('\n')) expect(line.length).toBeLessThanOrEqual(100);
  }, 20000);
  it('a malformed scenario: file:line:col on stderr, exit 2, no stack', () => {
    const r = cli('run', 'test/scenarios/fixtures/bad.yaml');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^test\/scenarios\/fixtures\/bad\.yaml:\d+:\d+: /);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }, 20000);
  it('list shows the library', () => {
    expect(
      execFileSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'list'], { encoding: 'utf8' }),
    ).toMatch(/firmware-boot/);
  }, 20000);
});
