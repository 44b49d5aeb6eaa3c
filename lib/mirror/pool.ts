/**
 * At most `concurrency` tasks in flight, and, when a byte budget is given, at most `maxWeight` of their
 * combined weight (the bytes they carry), though one task always runs however heavy. `run` waits for
 * room, so a producer that awaits it is held back (memory stays flat); a task's rejection surfaces from
 * `run` or `drain`, never unhandled. Small objects thus go many at a time, large ones few.
 */
export function taskPool(concurrency: number, maxWeight = Infinity) {
  const inFlight = new Map<Promise<void>, number>();
  let weightInFlight = 0;
  const full = (weight: number) => inFlight.size >= concurrency || (inFlight.size > 0 && weightInFlight + weight > maxWeight);
  return {
    async run(task: () => Promise<void>, weight = 0): Promise<void> {
      while (full(weight)) await Promise.race(inFlight.keys());
      weightInFlight += weight;
      const p = task().finally(() => {
        inFlight.delete(p);
        weightInFlight -= weight;
      });
      p.catch(() => {}); // awaited later through inFlight; this only keeps an early rejection from being "unhandled"
      inFlight.set(p, weight);
    },
    async drain(): Promise<void> {
      while (inFlight.size > 0) await Promise.all(inFlight.keys());
    },
  };
}
