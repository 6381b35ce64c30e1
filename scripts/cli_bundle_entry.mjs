// The CLI bundle's entry (scripts/bundle_cli.mjs → dist/bin/zaplab.cjs): what the loader
// (src/cli/code_cache.ts) calls. Each function loads its part of the bundle when called (esbuild keeps an
// import() target's modules uninitialised until then), so `zaplab list` runs no model code.

/** run the CLI on process.argv (dist/cli/main.js parses it when it loads) */
export const cli = () => import('../dist/cli/main.js');

/** be a compare worker thread (it waits for its job on parentPort) */
export const worker = () => import('../dist/scenario/compare_worker.js');

/**
 * The code cache's training (scripts/code_cache.mjs): compare each [library scenario, params] in this
 * thread at check's default audit level and format the results, as the CLI and its worker
 * threads do, so V8 has compiled what they run when the cache is saved. No output.
 */
export async function train(runs) {
  const [{ loadScenario }, { compareScenarioParallel }, { formatCompare, formatViolations }, limits] =
    await Promise.all([
      import('../dist/scenario/library.js'),
      import('../dist/scenario/compare_parallel.js'),
      import('../dist/report/text.js'),
      import('../dist/scenario/limits.js'),
    ]);
  for (const [name, params] of runs) {
    const r = loadScenario(name, params, { maxSteps: limits.DEFAULT_MAX_STEPS });
    if (!r.ok) throw new Error(`code cache training: ${r.error}`);
    // ('steps', check's default, audits at the named points as compare's 'points' does, and after each step)
    const { runs: results, skipped } = await compareScenarioParallel(r.scenario, {
      workers: 0,
      audit: 'steps',
    });
    formatCompare(results, skipped, { color: false });
    for (const x of results) formatViolations(x, { color: false });
    JSON.stringify(results);
  }
}
