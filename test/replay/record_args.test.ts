/**
 * `zaplab record` arguments: a --seconds past what a Node timer holds and an --out that is not a
 * directory are refused before anything is traced; a command that cannot start is an error, not an
 * empty bundle. Before: `-t 99999999999999999999` let Node clamp the stop timer to 1 ms (the VMM was
 * stopped as it started), `-o <file>` printed mkdir's raw EEXIST, and `record -- /nonexistent` wrote a
 * bundle of nothing and exited 0 (strace creates its output file before it fails to exec).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recordAvailability } from '../../src/replay/record.ts';
import { runCli as cli } from '../cli/run_cli.ts';

const avail = recordAvailability();

describe('zaplab record arguments', () => {
  const dir = mkdtempSync(join(tmpdir(), 'zaplab-record-'));
  afterAll(() => rmSync(dir, { recursive: true }));

  it('refuses a --seconds a timer cannot hold and an --out that is a file', () => {
    let r = cli('record', '-o', join(dir, 'big'), '-t', '99999999999999999999', '--', 'true');
    expect([r.status, r.stderr]).toEqual([2, '--seconds 99999999999999999999: at most 2147483 (24 days)\n']);
    const file = join(dir, 'f');
    writeFileSync(file, '');
    r = cli('record', '-o', file, '--', 'true');
    expect([r.status, r.stderr]).toEqual([2, `--out ${file}: is not a directory\n`]);
  }, 60000);

  it.skipIf(!avail.ok)(
    `a command that does not exist is an error and leaves no bundle.json${avail.ok ? '' : ` (skipped: ${avail.reason})`}`,
    () => {
      const out = join(dir, 'b');
      const r = cli('record', '-o', out, '-t', '5', '--', '/nonexistent/vmm');
      expect(r.status).toBe(2);
      expect(r.stderr).toBe(
        "record: the VMM did not start or exited before any ioctl (exit 1): strace: Can't stat '/nonexistent/vmm': No such file or directory\n",
      );
      expect(existsSync(join(out, 'bundle.json'))).toBe(false);
    },
    60000,
  );
});
