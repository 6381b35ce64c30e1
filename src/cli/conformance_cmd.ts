/**
 * `zaplab conformance`: the shared ABI cases (src/conformance/cases.ts) on the model configured as this
 * host and on the real /dev/kvm, printing every disagreement side by side; exit status 1 on any, 2 when
 * there is nothing to compare with. `--record file.json` saves the kernel's answers with the host info;
 * `--against file.json` compares the model with a recording instead (no /dev/kvm needed); `--mmu file`
 * records the MMU differential scenarios (mmu_cases.ts) from the real kernel.
 *
 * A separate module (registered from main.ts) so the command can evolve without touching main.ts.
 */
import type { Command } from 'commander';
import type { compareRuns, CaseVerdict } from '../conformance/abi_runner.ts';
import { checkOutputFile, writeOutputFile } from '../report/output_files.ts';

// The cases and runners load when the command runs, not when the CLI starts (`zaplab list` stays quick).
const loadConformance = async () => ({
  ...(await import('../conformance/cases.ts')),
  ...(await import('../conformance/abi_runner.ts')),
  ...(await import('../conformance/live.ts')),
  ...(await import('../conformance/recording.ts')),
});
type Conformance = Awaited<ReturnType<typeof loadConformance>>;

// The backend pulls in koffi, which a model-only machine may not have: loaded only when used. These
// loaders stay outside the functions that hold a `using` resource: tsc 6.0 leaves the '.ts' of a dynamic
// import inside a downlevelled `using` function unrewritten, and dist/ could not load it.
const loadBackend = () => import('../backends/kvm/index.ts');
const loadMmuRunner = () => import('../conformance/mmu_runner.ts');

interface Opts {
  record?: string;
  against?: string;
  mmu?: string;
  json?: boolean;
}

export function registerConformance(program: Command): void {
  program
    .command('conformance')
    .description(
      'run the memslot ABI conformance cases on the model (as this host) and on the real /dev/kvm; list disagreements',
    )
    .option('--record <file>', "save the kernel's answers (and host info) as JSON")
    .option('--against <file>', 'compare the model with a recording instead of the live kernel')
    .option('--mmu <file>', 'also record the MMU differential scenarios (stat deltas per step) to this file')
    .option('--json', 'print the comparison as JSON')
    .action(async (opts: Opts) => {
      // before the kernel runs the cases: an output path that cannot be written fails now
      if (opts.record !== undefined) checkOutputFile('--record', opts.record);
      if (opts.mmu !== undefined) checkOutputFile('--mmu', opts.mmu);
      const c = await loadConformance();
      process.exitCode = opts.against ? againstRecording(c, opts) : await live(c, opts);
    });
}

function inputError(msg: string): number {
  process.stderr.write(msg + '\n');
  return 2;
}

function againstRecording(c: Conformance, opts: Opts): number {
  const { ABI_CASES, compareRuns, loadAbiRecording, recordingRuns, runModel } = c;
  const file = opts.against!;
  // a file that is not a recording, or whose host the model refuses, is an input error (exit 2)
  let rec: ReturnType<typeof loadAbiRecording>;
  let model: ReturnType<typeof runModel>;
  try {
    rec = loadAbiRecording(file);
  } catch (e) {
    // loadAbiRecording names what is wrong; a TypeError is its shape check meeting a non-object
    const msg =
      e instanceof TypeError
        ? `expected a JSON object with "format": "zaplab-abi-recording/1", host and cases`
        : e instanceof Error
          ? e.message
          : String(e);
    return inputError(msg.startsWith(`${file}:`) ? msg : `${file}: not a zaplab ABI recording (${msg})`);
  }
  try {
    model = runModel(rec.host.modelOptions, ABI_CASES);
  } catch (e) {
    // new Kvm's option checks throw "Kvm: <option> must be …"; anything else is zaplab's own bug
    if (!(e instanceof Error && e.message.startsWith('Kvm: '))) throw e;
    return inputError(`${file}: host.modelOptions: ${e.message}`);
  }
  const { compared, diffs, cases } = compareRuns(model, recordingRuns(rec));
  report(c, opts, compared, diffs, cases, `recording ${opts.against} (kernel ${rec.host.kernel})`);
  return diffs.length ? 1 : 0;
}

async function live(c: Conformance, opts: Opts): Promise<number> {
  const { ABI_CASES, compareLive, makeAbiRecording, recordedHost } = c;
  const { RealKvm, realKvmAvailability, formatProbe } = await loadBackend();
  const avail = realKvmAvailability();
  if (!avail.ok) {
    process.stderr.write(
      `zaplab conformance: real /dev/kvm not usable (${avail.reason}); use --against <recording>\n`,
    );
    return 2;
  }
  using real = new RealKvm();
  if (!opts.json) process.stdout.write(formatProbe(real.hostProfile()) + '\n');
  const r = compareLive(real, ABI_CASES);
  if (opts.record) write('--record', opts.record, makeAbiRecording(recordedHost(real), r.kernel));
  if (opts.mmu) {
    const { recordMmu } = await loadMmuRunner();
    write('--mmu', opts.mmu, recordMmu(real));
  }
  const us = (ns: number) => `${(ns / 1000).toFixed(2)} µs`;
  const cost =
    `one call (median): kernel ${us(r.nsMedianCall.kernel)}, model ${us(r.nsMedianCall.model)}; ` +
    `mean incl. 2×32764-slot SMR-4: kernel ${us(r.nsPerCall.kernel)}, model ${us(r.nsPerCall.model)}`;
  report(c, opts, r.compared, r.diffs, r.cases, `kernel ${real.hostProfile().kernel}; ${cost}`);
  return r.diffs.length ? 1 : 0;
}

/** recording.ts's writeJson's format, failing as one line naming the option */
const write = (opt: string, path: string, value: unknown): void =>
  writeOutputFile(opt, path, JSON.stringify(value, null, 1) + '\n');

function report(
  { ABI_CASES, formatCaseVerdicts, formatDisagreements }: Conformance,
  opts: Opts,
  compared: number,
  diffs: ReturnType<typeof compareRuns>['diffs'],
  cases: readonly CaseVerdict[],
  what: string,
): void {
  const na = cases.filter((c) => c.status === 'n/a');
  if (opts.json) {
    const out = {
      cases: ABI_CASES.length,
      compared,
      notApplicable: na.length,
      verdicts: cases,
      disagreements: diffs,
    };
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    return;
  }
  process.stdout.write(formatCaseVerdicts(cases) + '\n');
  process.stdout.write(formatDisagreements(diffs));
  process.stdout.write(
    `${ABI_CASES.length} cases (${na.length} not applicable on this host), ${compared} calls compared with ${what}: ` +
      `${diffs.length} disagreement${diffs.length === 1 ? '' : 's'}\n`,
  );
}

/** `zaplab host`: what the probe reads from /dev/kvm and the model options it implies. */
export function registerHost(program: Command): void {
  program
    .command('host')
    .description(
      'probe the real /dev/kvm: what it reports, the model options that follow, and what the model cannot express',
    )
    .option('--json', 'print the probe as JSON')
    .action(async (opts: { json?: boolean }) => {
      const { RealKvm, realKvmAvailability, formatProbe } = await loadBackend();
      const avail = realKvmAvailability();
      if (!avail.ok) {
        process.stderr.write(`zaplab host: real /dev/kvm not usable (${avail.reason})\n`);
        process.exitCode = 2;
        return;
      }
      using real = new RealKvm();
      const p = real.hostProfile();
      process.stdout.write(opts.json ? JSON.stringify(p, null, 2) + '\n' : formatProbe(p));
    });
}
