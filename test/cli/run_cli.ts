/**
 * The CLI as the tests run it: `node --import tsx src/cli/main.ts <args>` from the repository root, output
 * as text, killed after 60 s (a hang is then a failed test with status null, not a stuck suite).
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';

export const ROOT = new URL('../..', import.meta.url).pathname;

export function runCli(...args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    encoding: 'utf8',
    cwd: ROOT,
    timeout: 60000,
  });
}
