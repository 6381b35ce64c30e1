/**
 * Progress of run/compare/check, inside each design: a cli-progress bar on a TTY (stderr), and on a
 * pipe or a CI log a plain line at most every few seconds (so quick runs print nothing). The unit is a
 * leaf step (repeats unrolled), so a long repeat shows movement.
 */

export interface Progress {
  /** a new design starts (index i of n) */
  design(i: number, n: number, id: string): void;
  /** leaf step `done` of `total` in the current design */
  step(done: number, total: number): void;
  stop(): void;
}

const PLAIN_EVERY_MS = 5000;

export async function progress(what: string, isTty = process.stderr.isTTY === true): Promise<Progress> {
  let design = '';
  let di = 0;
  let dn = 1;
  if (isTty) {
    const { default: cliProgress } = await import('cli-progress'); // only a TTY draws a bar
    const bar = new cliProgress.SingleBar(
      {
        format: `${what} [{bar}] {percentage}% {design} ({d}/{n}) step {value}/{total}`,
        stream: process.stderr,
        clearOnComplete: true,
        hideCursor: true,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      design(i, n, id) {
        [di, dn, design] = [i, n, id];
      },
      step(done, total) {
        if (!started) {
          bar.start(total, 0, { design, d: di + 1, n: dn });
          started = true;
        }
        bar.setTotal(total);
        bar.update(done, { design, d: di + 1, n: dn });
      },
      stop() {
        if (started) bar.stop();
      },
    };
  }
  const t0 = Date.now();
  let last = t0;
  return {
    design(i, n, id) {
      [di, dn, design] = [i, n, id];
    },
    step(done, total) {
      const now = Date.now();
      if (now - last < PLAIN_EVERY_MS) return;
      last = now;
      const pct = total ? Math.floor((100 * done) / total) : 100;
      process.stderr.write(
        `${what}: ${design} (design ${di + 1}/${dn}): step ${done}/${total} (${pct}%), ${Math.round((now - t0) / 1000)} s\n`,
      );
    },
    stop() {},
  };
}
