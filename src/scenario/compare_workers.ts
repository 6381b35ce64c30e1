/**
 * The worker threads of a parallel compare (compare_parallel.ts), kept apart from the model: this module
 * loads nothing but Node's own, so the CLI can start the threads before it reads the scenario or loads
 * the model itself. A thread loads the model (compare_worker.ts) while this thread parses the scenario
 * and loads its own copy, then waits for the job (the scenario, its design ids, the audit level and the
 * shared design counter) and takes designs until none is left. Starting early changes when a thread is
 * ready, not what it computes: each design is the same runScenario call on the same data.
 * Model-only file.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import type { RunAudit, RunResult } from './runner.ts';
import type { Scenario } from './schema.ts';

/** The job a worker thread gets in its first message. */
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

/**
 * Tasks the kernel has runnable right now, system-wide, the calling thread included (Linux's
 * /proc/loadavg, fourth field: running/total), or null where that cannot be read.
 */
export function runnableNow(): number | null {
  try {
    const m = /^\S+ \S+ \S+ (\d+)\//.exec(readFileSync('/proc/loadavg', 'utf8'));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}

/**
 * The default number of extra threads for `designs` runs: one per core the machine has idle beside this
 * thread, at most one fewer than the designs. A core counts as idle when the 1-minute load average
 * leaves at least 1.5 of the CPUs free (this thread's and one more), or, while it leaves half a CPU free,
 * when fewer tasks than CPUs are runnable right now, this thread included (`runnable`, runnableNow()):
 * the average lags by a minute, so a machine whose last run ended a moment ago (a script running
 * compares back to back) still shows that run's load. On a busy machine a worker only adds its own start-up and JIT warm-up to the CPU time
 * (measured at load 3-4 on 2 cores: slower), so the default there is 0.
 */
export function defaultCompareWorkers(
  designs: number,
  cpus = availableParallelism(),
  load1 = loadavg()[0]!,
  runnable: number | null = runnableNow(),
): number {
  const byAverage = Math.floor(cpus - load1 - 0.5);
  // (only where the average leaves half a CPU free: on a machine busy for a minute, a moment with
  // nothing else runnable says little — measured at load 3.4 on 2 cores, a worker started then was slower)
  const byNow = runnable === null || load1 >= cpus - 0.5 ? 0 : cpus - runnable;
  return Math.max(0, Math.min(Math.max(byAverage, byNow), designs - 1));
}

/** compare_worker next to this file: `.ts` from sources, `.js` in the dist/ build (piscina not loaded). */
function workerFile(): string {
  const own = fileURLToPath(import.meta.url);
  return fileURLToPath(new URL(`./compare_worker${own.slice(own.lastIndexOf('.'))}`, import.meta.url));
}

/**
 * The worker's entry code: import the module; from sources (a `.ts` file, under tsx or vitest) through
 * tsx's tsImport, since Node 20 workers do not apply a loader given as `--import` in execArgv. In the CLI
 * bundle (this module inside dist/bin/zaplab.cjs, scripts/bundle_cli.mjs) the thread loads the bundle
 * itself with its code cache (dist/bin/load.cjs: src/cli/code_cache.ts as CommonJS, so the thread needs
 * no ES module loader) and runs the bundle's worker.
 */
function workerEntry(file: string): string {
  const own = fileURLToPath(import.meta.url);
  if (own.endsWith('.cjs')) {
    const loader = JSON.stringify(fileURLToPath(new URL('./load.cjs', import.meta.url)));
    return `require(${loader}).runBundle(${JSON.stringify(own)}, 'worker')`;
  }
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

/**
 * Worker threads for one compare: started (loading the model) by start(), given their job by run(),
 * their results landing in the caller's `runs` as they come.
 */
export class DesignWorkers {
  private readonly threads: Worker[] = [];
  private failure: Error | null = null;
  private alive = 0;
  private wake: (() => void) | null = null;
  private runs: RunResult[] | null = null;

  /** Start `count` threads; each loads the model and waits for run(). */
  constructor(count: number) {
    const file = workerFile();
    for (let k = 0; k < count; k++) {
      const w = new Worker(workerEntry(file), { eval: true });
      w.on('message', (m: CompareWorkerMessage) => {
        if (this.runs !== null) this.runs[m.index] = m.result;
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

  get size(): number {
    return this.threads.length;
  }

  /** Keep the first `count` threads, end the others (a compare with fewer designs than threads). */
  async trim(count: number): Promise<void> {
    const extra = this.threads.splice(count);
    // (ended on purpose: their exit is not a failure, nor do they count as alive)
    for (const w of extra) w.removeAllListeners('exit');
    this.alive -= extra.length;
    await Promise.all(extra.map((w) => w.terminate()));
  }

  /** Give every thread the job; results go to `runs[index]`. */
  run(job: CompareWorkerData, runs: RunResult[]): void {
    this.runs = runs;
    for (const w of this.threads) w.postMessage(job);
  }

  private fail(why: string): void {
    this.failure ??= new Error(why);
    this.wake?.();
  }

  /** Every design taken (the counter is past the end): wait until each has its result. */
  async finished(): Promise<void> {
    const runs = this.runs ?? [];
    for (;;) {
      if (this.failure !== null) throw this.failure;
      let missing = false;
      for (let i = 0; i < runs.length; i++) if (runs[i] === undefined) missing = true;
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
