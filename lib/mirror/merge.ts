/** One key seen in either listing (or both), in key order. */
export interface Joined<S, D> {
  key: string;
  source?: S;
  destination?: D;
}

const utf8 = (s: string) => Buffer.from(s, 'utf8');

/** S3 lists keys in UTF-8 byte order; JavaScript's < compares UTF-16 units, which differs above U+FFFF. */
export function compareKeys(a: string, b: string): number {
  return a === b ? 0 : Buffer.compare(utf8(a), utf8(b));
}

/**
 * Merge-joins two listings that are each sorted by key. Holds one item from each side at a time, so
 * memory does not grow with the number of objects.
 */
export async function* mergeJoin<S, D>(
  source: AsyncIterable<S>,
  destination: AsyncIterable<D>,
  sourceKey: (s: S) => string,
  destinationKey: (d: D) => string,
): AsyncIterable<Joined<S, D>> {
  const si = source[Symbol.asyncIterator]();
  const di = destination[Symbol.asyncIterator]();
  let s = await si.next();
  let d = await di.next();
  let last: string | undefined;
  while (!s.done || !d.done) {
    const order = s.done ? 1 : d.done ? -1 : compareKeys(sourceKey(s.value), destinationKey(d.value));
    const key = order <= 0 ? sourceKey(s.value as S) : destinationKey(d.value as D);
    if (last !== undefined && compareKeys(key, last) <= 0) throw new Error(`listing out of order: ${JSON.stringify(key)} after ${JSON.stringify(last)}`);
    last = key;
    if (order === 0) {
      yield { key, source: s.value as S, destination: d.value as D };
      [s, d] = await Promise.all([si.next(), di.next()]);
    } else if (order < 0) {
      yield { key, source: s.value as S };
      s = await si.next();
    } else {
      yield { key, destination: d.value as D };
      d = await di.next();
    }
  }
}
