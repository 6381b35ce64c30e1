/**
 * Output paths the CLI writes (--trace, --html, --svg, conformance --record): a path that cannot be
 * written is one line naming the option and the path, exit 2, before anything runs; a write that fails
 * after a run still prints the run's results. Before, each was "internal error" (exit 70) with a stack
 * trace, after the whole run.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkOutputDir, checkOutputFile, makeOutputDir } from '../../src/report/output_files.ts';
import { runCli as cli } from './run_cli.ts';

describe('CLI output paths', () => {
  const dir = mkdtempSync(join(tmpdir(), 'zaplab-out-'));
  const file = join(dir, 'file.json');
  writeFileSync(file, '{}');

  it('refuses a --trace path that is a directory or in a missing directory, before the run', () => {
    let r = cli('run', 'firmware-boot', '--trace', dir);
    expect([r.status, r.stderr, r.stdout]).toEqual([2, `--trace ${dir}: is a directory\n`, '']);
    r = cli('compare', 'firmware-boot', '-w', '0', '--trace', join(dir, 'no/x.json'));
    expect([r.status, r.stderr, r.stdout]).toEqual([
      2,
      `--trace ${join(dir, 'no/x.json')}: directory ${join(dir, 'no')} does not exist\n`,
      '',
    ]);
  }, 60000);

  it('prints the results when the trace write itself fails, then names the path (exit 2)', () => {
    const r = cli('run', 'firmware-boot', '--trace', '/proc/version');
    expect(r.status).toBe(2);
    expect(r.stdout).toContain("verdict: ok (audit level 'points')");
    expect(r.stderr).toMatch(/^--trace \/proc\/version: cannot write \(E[A-Z]+\)\n$/);
  }, 60000);

  it('report and sweep refuse --html on a directory and --svg under a file (exit 2, no stack)', () => {
    let r = cli('report', file, '--html', dir);
    expect([r.status, r.stderr]).toEqual([2, `--html ${dir}: is a directory\n`]);
    r = cli('sweep', 'firmware-boot', '-p', 'workingSet=1,2', '--svg', join(file, 'svg'));
    expect([r.status, r.stderr]).toEqual([2, `--svg ${join(file, 'svg')}: ${file} is not a directory\n`]);
  }, 60000);

  it('conformance --record on a directory fails before probing /dev/kvm', () => {
    const r = cli('conformance', '--record', dir);
    expect([r.status, r.stderr]).toEqual([2, `--record ${dir}: is a directory\n`]);
  }, 60000);

  it('checks and makes directories level by level', () => {
    expect(() => checkOutputFile('--x', '')).toThrow('--x: expected a file name');
    expect(() => checkOutputDir('--svg', file)).toThrow(`--svg ${file}: is not a directory`);
    expect(() => checkOutputDir('--svg', join(dir, 'a/b'))).not.toThrow();
    makeOutputDir('--svg', join(dir, 'a/b'));
    expect(readdirSync(join(dir, 'a'))).toEqual(['b']);
    expect(() => makeOutputDir('--svg', join(file, 'c'))).toThrow(
      `--svg ${join(file, 'c')}: cannot make the directory (ENOTDIR)`,
    );
    rmSync(dir, { recursive: true });
  });
});
