/**
 * `zaplab schema`: the scenario format's JSON Schema (for editors: write it to a file and reference it
 * with `# yaml-language-server: $schema=<file>`), or with --markdown the reference docs/scenario-format.md.
 */
import type { Command } from 'commander';

export function registerSchema(program: Command): void {
  program
    .command('schema')
    .description('print the scenario format as a JSON Schema (--markdown: the reference document)')
    .option('--markdown', 'the Markdown reference (docs/scenario-format.md) instead')
    .action(async (opts: { markdown?: boolean }) => {
      // loaded when the command runs, so other commands start without zod
      const { scenarioJsonSchema, scenarioReferenceMarkdown } = await import('../scenario/json_schema.ts');
      process.stdout.write(
        opts.markdown ? scenarioReferenceMarkdown() : JSON.stringify(scenarioJsonSchema(), null, 2) + '\n',
      );
    });
}
