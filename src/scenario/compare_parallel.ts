/**
 * `compare`/`check` on more than one core: a scenario's designs are independent, deterministic runs (each
 * builds its own Kvm; the only randomness is the scenario's seed), so this thread and `workers` worker
 * threads each take the next design nobody has taken yet (an Atomics counter in shared memory, so a
 * worker that starts late simply takes fewer) until all are taken, and the results go back in design
 * order. The RunResults are the sequential loop's (test/scenarios/compare_parallel.test.ts compares them
 * on library scenarios, violations and their trace tails included). Progress callbacks report this
 * thread's designs; a Chrome trace recorder lives in this thread, so a traced compare runs sequentially.
 * Model-only file.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { designsFor } from './designs.ts';
import { runScenario, type RunAudit, type RunOptions, type RunResult } from './runner.ts';
import type { Scenario } from './schema.ts';
import { createRequire } from 'node:module';

export interface CompareWorkerData {
  scenario: Scenario;
  /** design ids, in compare order */
  designs: string[];
  audit: RunAudit;
  incrementalAudits?: boolean;
  /** SharedArrayBuffer holding one Int32: the next design index to take */
  counter: SharedArrayBuffer;
}

export interface CompareWorkerMessage {
  index: number;
  result: RunResult;
}

export type CompareOptions = RunOptions & {
  onDesign?: (i: number, n: number, id: string) => void;
  /**
   * worker threads running designs beside this thread (0: all here, one after another); default:
   * defaultCompareWorkers (the cores the load average leaves idle)
   */
  workers?: number;
  /** this thread runs designs too (default true); false leaves them all to the workers (needs workers ≥ 1) */
  runHere?: boolean;
};

/**
 * The default number of extra threads for `designs` runs: one per core the machine has idle beside this
 * thread, judged by the 1-minute load average (a core counts as idle when the load leaves at least 1.5
 * of the CPUs free, i.e. this thread's and one more), at most one fewer than the designs. On a busy
 * machine a worker only adds its own start-up and JIT warm-up to the CPU time (measured at load 4 on 2
 * cores: slower on 9 of 11 library compares), so the default there is 0.
 */
export function defaultCompareWorkers(
  designs: number,
  cpus = availableParallelism(),
  load1 = loadavg()[0]!,
): number {
  const idle = Math.floor(cpus - load1 - 0.5);
  return Math.max(0, Math.min(idle, designs - 1));
}

/**
 * Run under every design the scenario's VM types allow, on this thread and opts.workers worker threads.
 * A worker that fails (its module does not load, a run throws) fails the compare with its message.
 */
export async function compareScenarioParallel(
  sc: Scenario,
  opts: CompareOptions = {},
): Promise<{ runs: RunResult[]; skipped: { id: string; why: string }[] }> {
  const { allowed, skipped } = designsFor(sc);
  const n = allowed.length;
  const runHere = opts.runHere ?? true;
  const wanted = opts.workers ?? defaultCompareWorkers(n);
  const workers =
    opts.trace !== undefined ? 0 : runHere ? Math.min(wanted, Math.max(0, n - 1)) : Math.min(wanted, n);
  if (!runHere && workers === 0 && n > 0)
    throw new RangeError('compare: runHere false needs at least one worker and no trace');
  const counter = new SharedArrayBuffer(4);
  const next = new Int32Array(counter);
  const runs: RunResult[] = new Array<RunResult>(n);
  const pool =
    workers === 0
      ? null
      : new DesignWorkers(
          sc,
          allowed.map((d) => d.id),
          opts,
          counter,
          workers,
          runs,
        );
  const { onDesign, workers: _w, runHere: _h, ...runOpts } = opts;
  try {
    while (runHere) {
      const i = Atomics.add(next, 0, 1);
      if (i >= n) break;
      onDesign?.(i, n, allowed[i]!.id);
      runs[i] = await runScenario(sc, allowed[i]!, runOpts);
    }
    await pool?.finished();
  } finally {
    // a worker still loading when every design is taken has nothing left to do
    await pool?.terminate();
  }
  return { runs, skipped };
}

/** compare_worker next to this file: `.ts` from sources, `.js` in the dist/ build (piscina not loaded). */
function workerFile(): string {
  const own = fileURLToPath(import.meta.url);
  return fileURLToPath(new URL(`./compare_worker${own.slice(own.lastIndexOf('.'))}`, import.meta.url));
}

/**
 * The worker's entry code: import the module; from sources (a `.ts` file, under tsx or vitest) through
 * tsx's tsImport, since Node 20 workers do not apply a loader given as `--import` in execArgv.
 */
function workerEntry(file: string): string {
  const url = JSON.stringify(pathToFileURL(file).href);
  if (!/\.[cm]?ts$/.test(file)) return `import(${url})`;
  // the ESM build of the API (the package's "import" condition; require.resolve gives its .cjs twin)
  const api = JSON.stringify(
    pathToFileURL(
      createRequire(import.meta.url)
        .resolve('tsx/esm/api')
        .replace(/\.cjs$/, '.mjs'),
    ).href,
  );
  return `import(${api}).then(({ tsImport }) => tsImport(${url}, ${url}))`;
}

/** The worker threads of one compare: results land in `runs` as they come. */
class DesignWorkers {
  private readonly threads: Worker[] = [];
  private failure: Error | null = null;
  private alive = 0;
  private wake: (() => void) | null = null;

  constructor(
    sc: Scenario,
    designs: string[],
    opts: CompareOptions,
    counter: SharedArrayBuffer,
    count: number,
    private readonly runs: RunResult[],
  ) {
    const file = workerFile();
    const data: CompareWorkerData = { scenario: sc, designs, audit: opts.audit ?? 'points', counter };
    if (opts.incrementalAudits !== undefined) data.incrementalAudits = opts.incrementalAudits;
    for (let k = 0; k < count; k++) {
      const w = new Worker(workerEntry(file), { eval: true, workerData: data });
      w.on('message', (m: CompareWorkerMessage) => {
        runs[m.index] = m.result;
        this.wake?.();
      });
      w.on('error', (e: unknown) =>
        this.fail(`compare worker: ${e instanceof Error ? e.message : String(e)}`),
      );
      w.on('exit', (code) => {
        this.alive--;
        if (code !== 0) this.fail(`compare worker exited with code ${code}`);
        this.wake?.();
      });
      this.threads.push(w);
      this.alive++;
    }
  }

  private fail(why: string): void {
    this.failure ??= new Error(why);
    this.wake?.();
  }

  /** Every design taken (the counter is past the end): wait until each has its result. */
  async finished(): Promise<void> {
    for (;;) {
      if (this.failure !== null) throw this.failure;
      let missing = false;
      for (let i = 0; i < this.runs.length; i++) if (this.runs[i] === undefined) missing = true;
      if (!missing) return;
      if (this.alive === 0)
        throw new Error('compare workers exited without the results of the designs they took');
      await new Promise<void>((r) => (this.wake = r));
      this.wake = null;
    }
  }

  async terminate(): Promise<void> {
    await Promise.all(this.threads.map((w) => w.terminate()));
  }
}
