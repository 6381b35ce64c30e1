/**
 * The CLI's exit codes, one per kind of outcome, so scripts and CI can tell them apart. Printed by
 * `zaplab --help`.
 */
import { CommanderError } from 'commander';

export const EXIT = {
  /** every run finished; no violation (check) */
  ok: 0,
  /** check found invariant violations */
  violations: 1,
  /** the input is wrong: a scenario that does not parse, a file that cannot be read, an unknown
   *  parameter, a step limit exceeded, an output path that cannot be written, or a run whose verdict is 'error' (a call failed that the step
   *  did not `expect`, a host configuration the model refuses) */
  input: 2,
  /** the command line is wrong: unknown command or option, missing argument (sysexits EX_USAGE) */
  usage: 64,
  /** a bug in zaplab itself: an exception that is not a reported error (sysexits EX_SOFTWARE) */
  internal: 70,
  /** stdout was closed before the output ended (`| head`): 128 + SIGPIPE, as a shell reports it */
  closedPipe: 141,
} as const;

export const EXIT_HELP = `
Exit codes:
  0   ok (every run finished; check: no invariant violation)
  1   check found invariant violations
  2   input error: the scenario does not parse or cannot be read, an unknown -p parameter, the step
      limit (--max-steps) exceeded, an output path (--trace, --html, --svg) that cannot be written,
      or a run ended in verdict 'error' (a call failed that its step did not 'expect', or the model
      refused the host configuration)
  64  usage error: unknown command or option, missing argument
  70  internal error in zaplab (please report it with the command line)
  141 stdout was closed before the output ended (e.g. | head): the result was not all written
`;

/** The exit code for an exception that reached the top of the CLI. */
export function exitCodeFor(e: unknown): number {
  // commander has printed its message (or the help) already
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  return EXIT.internal;
}
