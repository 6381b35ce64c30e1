/**
 * `zaplab explore <dir>` and `explore --merge <dir>`: one line naming the path, exit 2. Before, both were
 * "internal error" (exit 70, EISDIR from readFileSync), and `explore /dev/zero` aborted out of memory.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli as cli } from './run_cli.ts';

describe('explore input files', () => {
  it('a directory or an endless file is named, exit 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'zaplab-explore-'));
    for (const [args, err] of [
      [['explore', dir], `zaplab explore: ${dir}: is a directory\n`],
      [['explore', '--merge', dir], `zaplab explore: ${dir}: is a directory\n`],
      [
        ['explore', '/dev/zero'],
        'zaplab explore: /dev/zero: does not end within 16 MiB (the limit for this input)\n',
      ],
    ] as const) {
      const r = cli(...args);
      expect([args, r.status, r.stderr]).toEqual([args, 2, err]);
    }
    rmSync(dir, { recursive: true });
  }, 60000);

  it('a configuration given by path still runs', () => {
    const r = cli('explore', 'src/explore/library/delete-vs-fault.yaml', '--pct', '1', '--design', 'quirk');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('no violation in 1 random schedule');
  }, 60000);
});
