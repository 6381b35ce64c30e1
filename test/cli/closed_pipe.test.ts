/**
 * stdout closed before the output ends (`zaplab check x | head -1`): exit 141 (128 + SIGPIPE, what a
 * shell reports for a process SIGPIPE killed), no stack trace. Before, the EPIPE handler exited 0, so
 * `zaplab check vfio-2019 | head -1` under `set -o pipefail` reported success for a run whose verdict
 * (1: violations) was never known.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';

const root = new URL('../..', import.meta.url).pathname;

describe('closed stdout', () => {
  it('exits 141 when the reader goes away after the first line', async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'check', 'vfio-2019', '-w', '0'],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
    // like `head -1`: read the first chunk, then close the pipe
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
    expect(code).toBe(141);
    expect(stderr).not.toMatch(/internal error|Error:|at /);
  }, 60000);
});
