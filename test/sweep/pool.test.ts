/**
 * The worker pool (src/sweep/pool.ts): tasks run on real worker threads from the TypeScript sources
 * (tsx loader in the workers), results stream with their item index, match the in-thread run exactly,
 * and task errors come back as results without stopping the others.
 */
import { describe, expect, it } from 'vitest';
import {
  checkWorkers,
  openPool,
  resolveTaskFile,
  runPool,
  runPoolOrdered,
  workerExecArgv,
  type PoolResult,
} from '../../src/sweep/pool.ts';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { FixtureInput, FixtureOutput } from './pool_task_fixture.ts';

const TASK = new URL('./pool_task_fixture.ts', import.meta.url);
const ITEMS: FixtureInput[] = [
  { pages: 3 },
  { pages: 17 },
  { pages: 5, fail: true },
  { pages: 64 },
  { pages: 1 },
];

const strip = (rs: PoolResult<FixtureInput, FixtureOutput>[]) =>
  rs.map((r) =>
    r.ok
      ? { index: r.index, ok: true, pages: r.output.pages, pf: r.output.pfFixed, zapped: r.output.zapped }
      : r,
  );

describe('runPool', () => {
  it('runs each item on worker threads and matches the in-thread results exactly', async () => {
    const threaded = await runPoolOrdered<FixtureInput, FixtureOutput>(TASK, ITEMS, { workers: 2 });
    const inline = await runPoolOrdered<FixtureInput, FixtureOutput>(TASK, ITEMS, { workers: 0 });
    expect(strip(threaded)).toEqual([
      { index: 0, ok: true, pages: 3, pf: 3, zapped: 3 },
      { index: 1, ok: true, pages: 17, pf: 17, zapped: 17 },
      { index: 2, input: { pages: 5, fail: true }, ok: false, error: 'fixture refused 5 pages' },
      { index: 3, ok: true, pages: 64, pf: 64, zapped: 64 },
      { index: 4, ok: true, pages: 1, pf: 1, zapped: 1 },
    ]);
    expect(strip(inline)).toEqual(strip(threaded));
    const threads = new Set(threaded.flatMap((r) => (r.ok ? [r.output.threadId] : [])));
    expect([...threads].every((t) => t > 0)).toBe(true); // not the main thread
    expect(threads.size).toBeLessThanOrEqual(2);
    expect(inline.flatMap((r) => (r.ok ? [r.output.threadId] : []))).toEqual([0, 0, 0, 0]);
  });

  it('streams every index exactly once', async () => {
    const seen: number[] = [];
    for await (const r of runPool<FixtureInput, FixtureOutput>(TASK, ITEMS, { workers: 3 }))
      seen.push(r.index);
    expect(seen.sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it('stops cleanly when the consumer breaks out or the signal aborts', async () => {
    let got = 0;
    for await (const r of runPool<FixtureInput, FixtureOutput>(TASK, ITEMS, { workers: 2 })) {
      got += r.ok ? 1 : 0;
      break;
    }
    expect(got).toBeLessThanOrEqual(1);
    const ac = new AbortController();
    const seen: number[] = [];
    for await (const r of runPool<FixtureInput, FixtureOutput>(TASK, ITEMS, {
      workers: 0,
      signal: ac.signal,
    })) {
      seen.push(r.index);
      ac.abort();
    }
    expect(seen).toEqual([0]);
  });

  it("drops a cancelled task's late answer (piscina's 'Unexpected message from Worker') and still surfaces other pool errors", async () => {
    // The race this covers: a run that stops early aborts a running task just after its thread posted
    // the result; piscina then emits 'error' for a message with no task. It is simulated here by the
    // exact emit piscina makes (ThreadPool.onMessage → publicInterface.emit('error', …)).
    const late = () => new Error('Unexpected message from Worker: { taskId: 14, result: {}, error: null }');
    const kept = openPool(TASK, 2);
    try {
      expect(() => kept.piscina.emit('error', late())).not.toThrow();
      // with no run listening, any other error is still the uncaught exception it would have been
      expect(() => kept.piscina.emit('error', new Error('worker exited with code 1'))).toThrow(
        'worker exited with code 1',
      );
      // a late answer arriving during the next run does not fail that run
      const got: number[] = [];
      for await (const r of runPool<FixtureInput, FixtureOutput>(TASK, ITEMS, { workers: 2, pool: kept })) {
        if (got.length === 0) kept.piscina.emit('error', late());
        got.push(r.index);
      }
      expect(got.sort()).toEqual([0, 1, 2, 3, 4]);
    } finally {
      await kept.close();
    }
  });

  it('an empty list yields nothing; bad worker counts name the flag', async () => {
    expect(await runPoolOrdered(TASK, [], { workers: 2 })).toEqual([]);
    expect(checkWorkers(-1)).toBe('--workers -1: expected an integer from 0 to 256');
    expect(checkWorkers(1.5)).toBe('--workers 1.5: expected an integer from 0 to 256');
    expect(checkWorkers(4)).toBeNull();
    await expect(runPoolOrdered(TASK, ITEMS, { workers: 300 })).rejects.toThrow(
      '--workers 300: expected an integer from 0 to 256',
    );
  });

  it('gives .ts task files the tsx loader and compiled .js files nothing', () => {
    const ts = workerExecArgv('/x/point_task.ts');
    expect(ts[0]).toBe('--import');
    expect(ts[1]).toMatch(/^file:\/\/.*\/node_modules\/tsx\/dist\/loader\.mjs$/);
    expect(workerExecArgv('/x/dist/sweep/point_task.js')).toEqual([]);
  });

  it('finds the compiled .js twin of a .ts task URL (dist/), and names a missing module', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'zaplab-pool-'));
    writeFileSync(join(dir, 'task.js'), 'export default (x) => ({ doubled: x.n * 2 });\n');
    const url = pathToFileURL(join(dir, 'task.ts'));
    expect(resolveTaskFile(url)).toBe(join(dir, 'task.js'));
    expect(
      (
        await runPoolOrdered<{ n: number }, { doubled: number }>(url, [{ n: 4 }, { n: 5 }], { workers: 1 })
      ).map((r) => (r.ok ? r.output.doubled : r.error)),
    ).toEqual([8, 10]);
    expect(() => resolveTaskFile(pathToFileURL(join(dir, 'gone.ts')))).toThrow(
      `${join(dir, 'gone.ts')}: pool task module not found`,
    );
  });
  it('a task module that cannot load ends the run with its error, neither hanging nor crashing the process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'zaplab-pool-'));
    writeFileSync(join(dir, 'task.mjs'), "import './missing-dep.mjs';\nexport default (x) => x;\n");
    const file = join(dir, 'task.mjs');
    const t0 = performance.now();
    const got: string[] = [];
    let thrown = '';
    try {
      for await (const r of runPool<number, number>(pathToFileURL(file), [1, 2, 3, 4], { workers: 2 }))
        got.push(r.ok ? 'ok' : r.error);
    } catch (e) {
      thrown = (e as Error).message;
    }
    // Tasks already sent to a worker fail with the load error; the pool's own error ends the run.
    for (const g of got) expect(g).toContain(`Cannot find module '${join(dir, 'missing-dep.mjs')}'`);
    expect(thrown).toMatch(
      new RegExp(
        `^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: a pool worker failed: .*missing-dep\\.mjs`,
      ),
    );
    expect(performance.now() - t0).toBeLessThan(20_000);
  }, 30_000);
});
