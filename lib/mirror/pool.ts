/**
 * At most `concurrency` tasks in flight. `run` waits for a free slot, so a producer that awaits it is
 * held back (memory stays flat); a task's rejection surfaces from `run` or `drain`, never unhandled.
 */
export function taskPool(concurrency: number) {
  const inFlight = new Set<Promise<void>>();
  return {
    async run(task: () => Promise<void>): Promise<void> {
      while (inFlight.size >= concurrency) await Promise.race(inFlight);
      const p = task().finally(() => inFlight.delete(p));
      p.catch(() => {}); // awaited later through inFlight; this only keeps an early rejection from being "unhandled"
      inFlight.add(p);
    },
    async drain(): Promise<void> {
      while (inFlight.size > 0) await Promise.all(inFlight);
    },
  };
}
