/**
 * A worker thread of a parallel compare (compare_workers.ts): loads the model, waits for its job (the
 * first message), then takes the next design nobody has taken from the shared counter, runs the scenario
 * under it with the one copy of the model (the scenario runner), posts the result, and repeats until
 * every design is taken. Model-only file.
 */
import { parentPort } from 'node:worker_threads';
import { designById } from './designs.ts';
import { runScenario } from './runner.ts';
import type { CompareWorkerData, CompareWorkerMessage } from './compare_workers.ts';

async function work(data: CompareWorkerData): Promise<void> {
  const next = new Int32Array(data.counter);
  for (;;) {
    const i = Atomics.add(next, 0, 1);
    if (i >= data.designs.length) break;
    const id = data.designs[i]!;
    const design = designById(id);
    // the main thread built the list from DESIGNS; a miss is a build mismatch, reported as a task error
    if (design === undefined) throw new Error(`compare worker: unknown design '${id}'`);
    const opts =
      data.incrementalAudits === undefined
        ? { audit: data.audit }
        : { audit: data.audit, incrementalAudits: data.incrementalAudits };
    const result = await runScenario(data.scenario, design, opts);
    const msg: CompareWorkerMessage = { index: i, result };
    parentPort!.postMessage(msg);
  }
}

// (a run that throws rejects unhandled: the thread's 'error' event, and the compare fails with its message)
parentPort!.once('message', (data: CompareWorkerData) => void work(data));
