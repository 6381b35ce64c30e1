/**
 * `zaplab replay <trace files… | bundle dir>`: QEMU trace events, strace of any VMM and the kernel's
 * kvm/kvmmmu tracepoints, merged by time, replayed under every zap design (the compare table) and held
 * to what the kernel did (memslot answers, observed vs modelled). Exit 1 when a memslot call got a
 * different answer from the model; 2 on unreadable input (with --strict, on the first malformed line).
 * A separate module registered from main.ts.
 */
import { Option, type Command } from 'commander';
import { FORMATS, loadInputs, type Format } from '../replay/load.ts';
import { TraceFormatError, type Source } from '../replay/events.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Scenario } from '../scenario/schema.ts';
import { KERNEL_VERSIONS } from '../kvm/host_profile.ts';
import { checkOutputDir } from '../report/output_files.ts';

// The replay engine (the model, the runner, the report) and the recorder load when their command runs,
// not when the CLI starts: `zaplab list` stays quick.
const loadReplay = async () => ({
  ...(await import('../replay/merge.ts')),
  ...(await import('../replay/replay.ts')),
  ...(await import('../replay/format.ts')),
});
const loadRecord = () => import('../replay/record.ts');

interface Opts {
  format?: string;
  profile?: 'upstream-6.18' | 'pvm-6.18';
  kernel?: string;
  tdpMmu?: boolean;
  pid?: string[];
  strict?: boolean;
  touch?: string;
  backing?: '4k' | 'thp';
  offset?: string[];
  audit?: string;
  json?: boolean;
}

function fail(msg: string): never {
  process.stderr.write(msg + '\n');
  process.exit(2);
}

function int(s: string, what: string): number {
  if (!/^\d+$/.test(s)) fail(`${what} ${s}: expected a non-negative integer`);
  return Number(s);
}

function offsets(list: string[] | undefined): Partial<Record<Source, number>> {
  const out: Partial<Record<Source, number>> = {};
  for (const o of list ?? []) {
    const m = /^(qemu|strace|kernel)=(-?\d+(?:\.\d+)?)$/.exec(o);
    if (!m) fail(`--offset ${o}: expected qemu|strace|kernel=<seconds>, e.g. kernel=-37`);
    out[m[1] as Source] = Math.round(Number(m[2]) * 1e6);
  }
  return out;
}

export function registerReplay(program: Command): void {
  program
    .command('replay')
    .description(
      'replay traced memslot calls, faults and unmaps under every zap design, and compare with the kernel',
    )
    .argument(
      '<inputs...>',
      'QEMU trace (-trace kvm_set_user_memory -msg timestamp=on), strace -f -ttt -e trace=ioctl, tracefs/trace-cmd report text; or a bundle dir from `zaplab record`',
    )
    .option(
      '--format <list>',
      `formats in input order, comma-separated (${FORMATS.join('|')}); default: detected`,
    )
    .addOption(
      new Option('--profile <name>', "the traced host (default: the bundle's, else upstream-6.18)").choices([
        'upstream-6.18',
        'pvm-6.18',
      ]),
    )
    .addOption(
      new Option('--kernel <version>', 'kernel version to model where versions differ').choices(
        KERNEL_VERSIONS,
      ),
    )
    .option('--no-tdp-mmu', 'the traced host ran kvm.tdp_mmu=N')
    .option('--pid <pids...>', 'keep only kernel events of these pids/tids (task pid or tgid)')
    .option('--strict', 'a malformed line is fatal')
    .option(
      '--touch <pages>',
      'when the trace has no fault events: assume a working set of N pages per writable slot (labelled assumed)',
    )
    .addOption(
      new Option('--backing <kind>', 'host backing of guest memory').choices(['4k', 'thp']).default('4k'),
    )
    .option(
      '--offset <src=seconds...>',
      "add seconds to a source's clock before merging (e.g. kernel=-37 for a TAI offset)",
    )
    .addOption(
      new Option('--audit <level>', 'checker audit level')
        .choices(['off', 'points', 'steps', 'full'])
        .default('points'),
    )
    .option('--json', 'compare --json output plus a "replay" section')
    .action(async (inputs: string[], opts: Opts) => {
      const formats = (opts.format?.split(',') ?? []).map((f) => {
        if (!(FORMATS as readonly string[]).includes(f))
          fail(`--format ${f}: expected one of ${FORMATS.join(', ')}`);
        return f as Format;
      });
      const pids = opts.pid
        ? new Set(opts.pid.flatMap((p) => p.split(',')).map((p) => int(p, '--pid')))
        : undefined;
      let loaded;
      try {
        loaded = loadInputs(inputs, formats, {
          ...(opts.strict ? { strict: true } : {}),
          ...(pids ? { pids } : {}),
        });
      } catch (e) {
        if (e instanceof TraceFormatError || e instanceof Error) fail(e.message);
        throw e;
      }
      const host: NonNullable<Scenario['host']> = { ...(loaded.bundle?.host ?? {}) };
      if (opts.profile) host.profile = opts.profile;
      if (opts.kernel) host.kernel = opts.kernel as NonNullable<Scenario['host']>['kernel'];
      if (opts.tdpMmu === false) host.tdpMmu = false;
      const { mergeStreams, replayEvents, formatReplay, replayJson } = await loadReplay();
      let merged;
      try {
        merged = mergeStreams(loaded.streams, { offsetUs: offsets(opts.offset) });
      } catch (e) {
        fail(e instanceof Error ? e.message : String(e));
      }
      const r = await replayEvents(merged.table, merged.reports, {
        name: loaded.bundle
          ? `replay of ${loaded.bundle.command.join(' ').slice(0, 60)}`
          : `replay of ${inputs.join(' ')}`.slice(0, 80),
        host,
        ...(opts.touch ? { touch: { pages: int(opts.touch, '--touch') } } : {}),
        ...(opts.backing ? { backing: opts.backing } : {}),
        audit: (opts.audit ?? 'points') as 'points',
      });
      r.notes.unshift(...merged.notes);
      const color = process.stdout.isTTY === true && !process.env['NO_COLOR'];
      process.stdout.write(
        opts.json ? JSON.stringify(replayJson(r), null, 2) + '\n' : formatReplay(r, { color }),
      );
      if (r.answers.disagreements.length) process.exitCode = 1;
    });
}

/** The longest --seconds a Node timer holds (2^31 - 1 ms). */
const MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/** `zaplab record [-o dir] [-t seconds] -- <vmm command…>`: one bundle `zaplab replay <dir>` reads. */
export function registerRecord(program: Command): void {
  program
    .command('record')
    .description(
      'run a VMM with tracefs (kvm/kvmmmu events), strace and (QEMU) its trace events; write a bundle for replay',
    )
    .argument('<command...>', 'the VMM command line, after --')
    .option('-o, --out <dir>', 'bundle directory', 'zaplab-recording')
    .option('-t, --seconds <n>', 'stop the VMM after this many seconds', '10')
    .action(async (argv: string[], opts: { out: string; seconds: string }) => {
      if (existsSync(join(opts.out, 'bundle.json')))
        fail(`${opts.out}: already holds a bundle (bundle.json); choose another --out`);
      try {
        checkOutputDir('--out', opts.out);
      } catch (e) {
        fail(e instanceof Error ? e.message : String(e));
      }
      const seconds = int(opts.seconds, '--seconds');
      // a timer longer than 2^31-1 ms fires at once (Node clamps it to 1 ms): the VMM would be stopped
      // as it starts
      if (seconds > MAX_SECONDS) fail(`--seconds ${opts.seconds}: at most ${MAX_SECONDS} (24 days)`);
      const { record } = await loadRecord();
      try {
        const meta = await record({
          argv,
          out: opts.out,
          seconds,
          log: (s) => process.stderr.write(s + '\n'),
        });
        process.stdout.write(
          `${opts.out}: ${meta.files.map((f) => f.file).join(', ')}, bundle.json (host ${meta.host.profile ?? 'unprobed'})\nreplay: zaplab replay ${opts.out}\n`,
        );
      } catch (e) {
        fail(e instanceof Error ? e.message : String(e));
      }
    });
}
