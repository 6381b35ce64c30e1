/**
 * The zaplab command line. `zaplab memslots [script]` replays a memslot script (YAML or JSON list of
 * calls) on a model VM and prints each call's result, the final slot table and the generations; with no
 * script it replays a built-in firmware-boot-like sequence.
 */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { replayMemslotScript, DEMO_SCRIPT, formatReplay } from './memslot_script.ts';

const program = new Command();
program.name('zaplab').description('An executable model of the KVM x86 MMU memslot machinery');

program
  .command('memslots')
  .description('replay a memslot script (YAML/JSON) and print the slot table and generations')
  .argument('[script]', 'path to the script; the built-in demo if omitted')
  .option('--json', 'machine-readable output')
  .action((file: string | undefined, opts: { json?: boolean }) => {
    const text = file === undefined ? DEMO_SCRIPT : readFileSync(file, 'utf8');
    const result = replayMemslotScript(text, file ?? '<demo>');
    if (!result.ok) {
      process.stderr.write(result.error + '\n');
      process.exitCode = 2;
      return;
    }
    process.stdout.write(opts.json ? JSON.stringify(result.replay, null, 2) + '\n' : formatReplay(result.replay));
  });

program
  .command('demo')
  .description('the main job (for now): replay the built-in memslot demo')
  .action(() => {
    const result = replayMemslotScript(DEMO_SCRIPT, '<demo>');
    if (result.ok) process.stdout.write(formatReplay(result.replay));
  });

program.parse();
