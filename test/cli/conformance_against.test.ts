/**
 * `zaplab conformance --against <file>` with a file that is not an ABI recording: one line naming the
 * file and what is wrong, exit 2. Before, every such file (missing, a directory, not JSON, JSON null, a
 * recording whose host the model refuses) was "internal error" (exit 70) with a stack trace, and
 * /dev/zero was read until the process aborted out of memory.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, runCli as cli } from './run_cli.ts';

const root = ROOT;

describe('conformance --against a file that is not a recording', () => {
  const dir = mkdtempSync(join(tmpdir(), 'zaplab-against-'));
  const put = (name: string, text: string): string => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };

  it('names the file and the problem, exit 2', () => {
    const cases: [string, string][] = [
      [join(dir, 'missing.json'), 'cannot read (ENOENT)'],
      [dir, 'is a directory'],
      // read with a bound, not until the process runs out of memory
      ['/dev/zero', 'does not end within 512 MiB (the limit for this input)'],
      [put('empty.json', ''), 'not a zaplab ABI recording (Unexpected end of JSON input)'],
      [
        put('null.json', 'null'),
        'not a zaplab ABI recording (expected a JSON object with "format": "zaplab-abi-recording/1", host and cases)',
      ],
      [put('other.json', '{"runs": []}'), 'format is not zaplab-abi-recording/1'],
    ];
    for (const [file, why] of cases) {
      const r = cli('conformance', '--against', file);
      expect([r.status, r.stderr, r.stdout]).toEqual([2, `${file}: ${why}\n`, '']);
    }
  }, 60000);

  it('a recording whose host options the model refuses names the option', () => {
    const rec = JSON.parse(readFileSync(join(root, 'test/recorded/abi-pvm-6.18.json'), 'utf8'));
    rec.host.modelOptions.kernel = '9.9';
    const file = put('bad-host.json', JSON.stringify(rec));
    const r = cli('conformance', '--against', file);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      `${file}: host.modelOptions: Kvm: kernel must be one of '6.12', '6.15', '6.17', '6.18', '6.19' (got "9.9")\n`,
    );
    rmSync(dir, { recursive: true });
  }, 60000);
});
