/**
 * One worker pool for the tools that run many independent model instances (sweep points, explorer
 * schedules): a task module runs on N worker threads, results stream back as they finish. Model-only
 * file (no kernel counterpart); tools never share model state across threads, each task builds its own.
 *
 * The threads come from piscina (pinned 5.x, the pool DESIGN.md names): it queues, load-balances,
 * propagates task errors with their message, and tears threads down on close/abort, which is what a
 * hand-written Worker pool gets wrong. A task module's default export is `(input) => output | Promise`;
 * inputs and outputs must survive structured clone (plain data: no class instances, no functions).
 *
 * Determinism: a task's output depends only on its input (seeds travel in the input), so the pool can
 * finish items in any order; each result carries the item's index, and `runPoolOrdered` puts them back.
 *
 * Loading: from sources (tsx, vitest) the task module is a `.ts` file, which a bare worker thread cannot
 * import, so the workers get `--import tsx` when the resolved file ends in `.ts`; from the compiled dist/
 * build it is `.js` and needs nothing. Callers pass the module as a URL resolved against their own
 * `import.meta.url` (e.g. `new URL('./point_task.ts', import.meta.url)`; the dist build rewrites the
 * extension), so both layouts work.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { setMaxListeners } from 'node:events';
import { Piscina } from 'piscina';

export interface PoolOptions {
  /** worker threads; 0 runs every task in this thread, one at a time (same results, no threads) */
  workers: number;
  /** stop early: pending tasks are cancelled, the generator ends after the results already yielded */
  signal?: AbortSignal;
  /**
   * threads kept across runs (openPool: started once, for the same task module): their loaded modules and
   * compiled code serve the next run too; the run leaves them running. `workers` must be its size.
   */
  pool?: KeptPool;
}

/** Worker threads started once and used by several runs (a long-lived tool, the bench's steady state). */
export interface KeptPool {
  readonly file: string;
  readonly threads: number;
  readonly piscina: Piscina;
  /** stop the threads */
  close(): Promise<void>;
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** Start `workers` threads for the task module, to pass as PoolOptions.pool to any number of runs. */
export function openPool(module: URL, workers: number): KeptPool {
  const bad = checkWorkers(workers);
  if (bad !== null || workers === 0) throw new RangeError(bad ?? 'openPool: 0 workers is no pool');
  const file = resolveTaskFile(module);
  const piscina = new Piscina({
    filename: pathToFileURL(file).href,
    minThreads: workers,
    maxThreads: workers,
    execArgv: workerExecArgv(file),
  });
  dropLateResults(piscina);
  return { file, threads: workers, piscina, close: () => piscina.destroy() };
}

/**
 * A run that ends early aborts its tasks still running, and piscina terminates their threads. A thread
 * that had already posted its result races that: piscina then finds no task for the message and emits
 * 'error' ("Unexpected message from Worker"), which with no listener is an uncaught exception that
 * kills the process after the run has ended cleanly. Such a message is the answer to a task this module
 * cancelled, so it is dropped, here and by a run's own error listener (a kept pool's next run must not
 * fail over the previous run's late answer). Any other pool error still surfaces: to a run's listener,
 * or, with none attached, as the uncaught exception it would have been.
 */
export function isLateResult(e: unknown): boolean {
  return message(e).startsWith('Unexpected message from Worker');
}

export function dropLateResults(pool: Piscina): void {
  pool.on('error', (e: unknown) => {
    if (!isLateResult(e) && pool.listenerCount('error') === 1) throw e;
  });
}

export type PoolResult<I, O> =
  { index: number; input: I; ok: true; output: O } | { index: number; input: I; ok: false; error: string };

/** The default worker count: the machine's parallelism, at least 1. */
export function defaultWorkers(): number {
  return Math.max(1, availableParallelism());
}

/** Checks a --workers value; returns an error naming the flag, or null. */
export function checkWorkers(n: number, flag = '--workers'): string | null {
  return Number.isSafeInteger(n) && n >= 0 && n <= 256
    ? null
    : `${flag} ${n}: expected an integer from 0 to 256`;
}

/**
 * Worker execArgv for a task file: the tsx loader for TypeScript sources, nothing for compiled JS. The
 * loader is resolved from this package, not from the working directory, so `zaplab` run from anywhere
 * finds it.
 */
export function workerExecArgv(file: string): string[] {
  if (!/\.[cm]?ts$/.test(file)) return [];
  return ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href];
}

/**
 * The task module's file: the URL as given, or, in the compiled dist/ build where callers' `.ts` URLs
 * name files that tsc emitted as `.js` (it rewrites import specifiers, not URL strings), the `.js` twin.
 */
export function resolveTaskFile(module: URL): string {
  const file = fileURLToPath(module);
  if (existsSync(file)) return file;
  const js = file.replace(/\.([cm]?)ts$/, '.$1js');
  if (js !== file && existsSync(js)) return js;
  throw new Error(`${file}: pool task module not found`);
}

/**
 * Runs `module`'s default export once per item on `opts.workers` threads and yields each result as it
 * finishes (completion order; `index` is the item's position). A task that throws yields `ok: false`
 * with the message; the others still run. Breaking out of the loop destroys the pool.
 */
export async function* runPool<I, O>(
  module: URL,
  items: readonly I[],
  opts: PoolOptions,
): AsyncGenerator<PoolResult<I, O>> {
  const bad = checkWorkers(opts.workers);
  if (bad) throw new RangeError(bad);
  if (opts.workers === 0) {
    yield* runInline<I, O>(module, items, opts.signal);
    return;
  }
  if (items.length === 0) return;
  const file = resolveTaskFile(module);
  const kept = opts.pool;
  if (kept !== undefined && (kept.file !== file || kept.threads !== opts.workers))
    throw new TypeError(
      `runPool: the kept pool runs ${kept.file} on ${kept.threads} threads, not ${file} on ${opts.workers}`,
    );
  const pool =
    (kept?.piscina as Piscina<I, O> | undefined) ??
    new Piscina<I, O>({
      filename: pathToFileURL(file).href,
      minThreads: Math.min(opts.workers, items.length),
      maxThreads: Math.min(opts.workers, items.length),
      execArgv: workerExecArgv(file),
      idleTimeout: 1000,
    });
  if (kept === undefined) dropLateResults(pool as Piscina);
  const abort = new AbortController();
  // every queued task listens on this one signal (more than the default 10 is not a leak)
  setMaxListeners(0, abort.signal);
  const onAbort = (): void => abort.abort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  // A queue of settled results: tasks settle in any order, the generator drains them as they come.
  const settled: PoolResult<I, O>[] = [];
  let wake: (() => void) | null = null;
  const push = (r: PoolResult<I, O>): void => {
    settled.push(r);
    wake?.();
  };
  // A worker that dies outside a task (its task module fails to load, say) is reported on the pool's
  // 'error' event; with no listener that is an uncaught exception. It ends the run with that error.
  let poolError: string | null = null;
  const onError = (e: unknown): void => {
    if (isLateResult(e)) return;
    poolError ??= message(e);
    wake?.();
  };
  pool.on('error', onError);
  items.forEach((input, index) => {
    pool.run(input, { signal: abort.signal }).then(
      (output) => push({ index, input, ok: true, output }),
      (e: unknown) => push({ index, input, ok: false, error: message(e) }),
    );
  });
  try {
    for (let done = 0; done < items.length; done++) {
      while (settled.length === 0 && poolError === null) await new Promise<void>((r) => (wake = r));
      wake = null;
      if (poolError !== null) throw new Error(`${file}: a pool worker failed: ${poolError}`);
      const r = settled.shift()!;
      if (abort.signal.aborted) return;
      yield r;
    }
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    abort.abort();
    // A pool this run made keeps the run's listener through and after its teardown: when the task
    // module fails to load, every thread fails with the same error, and the ones after the first arrive
    // while (or after) the run has thrown it; with only dropLateResults' listener left they would be
    // uncaught exceptions (seen in CI: test/sweep/pool.test.ts, 'a task module that cannot load').
    // A kept pool outlives the run, so there the listener goes and the next run brings its own.
    if (kept === undefined) await pool.destroy();
    else pool.off('error', onError);
  }
}

/** workers = 0: the same task module in this thread, sequentially (debugging, profiling, tiny grids). */
async function* runInline<I, O>(
  module: URL,
  items: readonly I[],
  signal?: AbortSignal,
): AsyncGenerator<PoolResult<I, O>> {
  const mod = (await import(pathToFileURL(resolveTaskFile(module)).href)) as {
    default?: (input: I) => O | Promise<O>;
  };
  const fn = mod.default;
  if (typeof fn !== 'function')
    throw new TypeError(`${module.href}: a pool task module must export a default function`);
  for (const [index, input] of items.entries()) {
    if (signal?.aborted) return;
    try {
      // structuredClone: the same copy semantics as a worker thread, so 0 and N workers agree
      yield { index, input, ok: true, output: structuredClone(await fn(structuredClone(input))) };
    } catch (e) {
      yield { index, input, ok: false, error: message(e) };
    }
  }
}

/** All results in item order (for callers that do not stream). */
export async function runPoolOrdered<I, O>(
  module: URL,
  items: readonly I[],
  opts: PoolOptions,
): Promise<PoolResult<I, O>[]> {
  const out: PoolResult<I, O>[] = new Array(items.length);
  for await (const r of runPool<I, O>(module, items, opts)) out[r.index] = r;
  return out;
}
