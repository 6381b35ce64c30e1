/**
 * `compare`/`check` on more than one core: a scenario's designs are independent, deterministic runs (each
 * builds its own Kvm; the only randomness is the scenario's seed), so this thread and `workers` worker
 * threads each take the next design nobody has taken yet (an Atomics counter in shared memory, so a
 * worker that starts late simply takes fewer) until all are taken, and the results go back in design
 * order. The RunResults are the sequential loop's (test/scenarios/compare_parallel.test.ts compares them
 * on library scenarios, violations and their trace tails included). Progress callbacks report this
 * thread's designs; a Chrome trace recorder lives in this thread, so a traced compare runs sequentially.
 * The threads themselves are compare_workers.ts (the CLI starts them before it loads the model).
 * Model-only file.
 */
import { designsFor } from './designs.ts';
import { runScenario, type RunAudit, type RunOptions, type RunResult } from './runner.ts';
import type { Scenario } from './schema.ts';
import { DesignWorkers, defaultCompareWorkers, type CompareWorkerData } from './compare_workers.ts';

export { defaultCompareWorkers } from './compare_workers.ts';
export type { CompareWorkerData, CompareWorkerMessage } from './compare_workers.ts';

export type CompareOptions = RunOptions & {
  onDesign?: (i: number, n: number, id: string) => void;
  /**
   * worker threads running designs beside this thread (0: all here, one after another); default:
   * defaultCompareWorkers (the cores idle, by the load average or what runs now)
   */
  workers?: number;
  /**
   * threads started beforehand (new DesignWorkers(k)), used instead of starting `workers` new ones; the
   * compare owns them from here: it ends those it does not need, and all of them when it is done
   */
  pool?: DesignWorkers;
  /** this thread runs designs too (default true); false leaves them all to the workers (needs workers ≥ 1) */
  runHere?: boolean;
};

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
  const wanted = opts.pool?.size ?? opts.workers ?? defaultCompareWorkers(n);
  const workers =
    opts.trace !== undefined ? 0 : runHere ? Math.min(wanted, Math.max(0, n - 1)) : Math.min(wanted, n);
  if (!runHere && workers === 0 && n > 0) {
    await opts.pool?.terminate();
    throw new RangeError('compare: runHere false needs at least one worker and no trace');
  }
  const counter = new SharedArrayBuffer(4);
  const next = new Int32Array(counter);
  const runs: RunResult[] = new Array<RunResult>(n);
  let pool: DesignWorkers | null = opts.pool ?? null;
  if (pool !== null && pool.size > workers) await pool.trim(workers);
  if (pool === null && workers > 0) pool = new DesignWorkers(workers);
  if (pool !== null && pool.size === 0) pool = null;
  const audit: RunAudit = opts.audit ?? 'points';
  const job: CompareWorkerData = { scenario: sc, designs: allowed.map((d) => d.id), audit, counter };
  if (opts.incrementalAudits !== undefined) job.incrementalAudits = opts.incrementalAudits;
  pool?.run(job, runs);
  const { onDesign, workers: _w, runHere: _h, pool: _p, ...runOpts } = opts;
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
