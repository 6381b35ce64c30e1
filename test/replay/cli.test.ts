/**
 * `zaplab replay` end to end: the text report, `--json` (compare --json's shape plus `replay`), exit 1 on
 * a memslot answer the model does not give, exit 2 with `file:line` under --strict, and inputs never
 * written over.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('../..', import.meta.url).pathname;
const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    encoding: 'utf8',
    cwd: root,
  });

describe('zaplab replay (CLI)', () => {
  it('prints the compare table, the answers and observed vs modelled for a recorded boot', () => {
    const r = cli('replay', 'test/recorded/replay/pc-boot');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(
      'memslot calls: 20 replayed, 0 answered differently by the model (design quirk)',
    );
    expect(r.stdout).toMatch(/│ zap-all-fast \(kvm_mmu_zap_all_fast\)\s+│ 9\s+│ 9\s+│/);
    expect(r.stdout).toMatch(/│ quirk-off\s*│ 0\s+│ 9\s+│/);
    expect(r.stdout).toContain('modelled = counts × per-event costs');
  }, 30000);

  it("--json has compare --json's keys plus a replay section", () => {
    const r = cli('replay', 'test/recorded/replay/handmade-tdp', '--json');
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout) as Record<string, unknown> & {
      runs: { design: string; modelled: { label: string } }[];
      replay: Record<string, unknown>;
    };
    expect(Object.keys(j)).toEqual(['scenario', 'runs', 'skipped', 'replay']);
    expect(j.runs.map((x) => x.design)).toEqual([
      'quirk',
      'quirk-off',
      'vm-type',
      'slot-flag',
      'slot-flag+leafs',
    ]);
    expect(j.runs[0]!.modelled.label).toBe('modelled, not measured');
    expect(j.replay['faultSource']).toBe('kvm_tdp_mmu_spte_changed');
    expect(j.replay['answers']).toEqual({ compared: 4, disagreements: [] });
  }, 30000);

  it('exit 1 on a disagreement; --strict makes a malformed line fatal (exit 2, file:line); inputs unchanged', () => {
    const dir = mkdtempSync(join(tmpdir(), 'zaplab-replay-cli-'));
    try {
      const f = join(dir, 'q.trace');
      const text =
        [
          '1@5.000000:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x1000 ua=0x7f0000000000 ret=0',
          '1@5.000010:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x1000 ua=0x7f0000000000 ret=-17',
          '1@5.000020:kvm_set_user_memory Slot#0 flags=0x0',
        ].join('\n') + '\n';
      writeFileSync(f, text);
      const r = cli('replay', f);
      expect(r.status).toBe(1);
      expect(r.stdout).toContain('qemu:2 t+0.000010s SET slot 0 gpa 0x0 size 0x1000: kernel EEXIST, model 0');
      expect(r.stdout).toContain(
        'q.trace:3: kvm_set_user_memory: expected fields Slot, flags, gpa, size, ua, ret; missing gpa, size, ua, ret',
      );
      const s = cli('replay', f, '--strict');
      expect(s.status).toBe(2);
      expect(s.stderr.trim()).toBe(
        'q.trace:3: kvm_set_user_memory: expected fields Slot, flags, gpa, size, ua, ret; missing gpa, size, ua, ret',
      );
      const n = cli('replay', join(dir, 'missing.trace'));
      expect(n.status).toBe(2);
      expect(n.stderr).toMatch(/missing\.trace: cannot read/);
      expect(readFileSync(f, 'utf8')).toBe(text);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60000);
});
