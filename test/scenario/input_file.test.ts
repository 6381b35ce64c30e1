/**
 * Input files read with a bound (src/scenario/input_file.ts): a directory, a file that never ends
 * (/dev/zero, /dev/urandom) or one past the limit is one line naming the file, exit 2. Before, `show`
 * of a directory was an internal error (exit 70), `run /dev/zero` aborted in std::bad_alloc (exit 134),
 * and `run /dev/urandom`, `show /dev/zero`, `replay /dev/zero`, `report /dev/zero` never ended.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readInputFile, readInputText } from '../../src/scenario/input_file.ts';
import { runCli as cli } from '../cli/run_cli.ts';

describe('bounded input files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'zaplab-in-'));

  it('reads a file, a device up to the limit, and refuses a directory or a larger file', () => {
    const f = join(dir, 'a.txt');
    writeFileSync(f, '\uFEFFname: x\n');
    expect(readInputText(f, 100)).toBe('name: x\n');
    expect(() => readInputFile(f, 4)).toThrow('is 11 bytes, more than the limit of 4 bytes');
    expect(() => readInputFile(dir, 100)).toThrow('is a directory');
    expect(() => readInputFile(join(dir, 'none'), 100)).toThrow('cannot read (ENOENT)');
    expect(() => readInputFile('/dev/zero', 3 << 20)).toThrow(
      'does not end within 3 MiB (the limit for this input)',
    );
    expect(readInputFile('/dev/null', 10).length).toBe(0);
  });

  it('the CLI names the file and exits 2 for directories and endless files', () => {
    const cases: [string[], string][] = [
      [['show', dir], `${dir}: is a directory\n`],
      [['memslots', dir], `${dir}: is a directory\n`],
      [['run', '/dev/zero'], '/dev/zero:1:1: does not end within 16 MiB (the limit for this input)\n'],
      [['show', '/dev/urandom'], '/dev/urandom: does not end within 16 MiB (the limit for this input)\n'],
    ];
    for (const [args, stderr] of cases) {
      const r = cli(...args);
      expect([args, r.status, r.stderr]).toEqual([args, 2, stderr]);
    }
    rmSync(dir, { recursive: true });
  }, 60000);
});
