/** `plural(1, 'target')` → "1 target", `plural(2, 'target')` → "2 targets". */
export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** `['s3', 'dir']` → "s3 or dir", `['a', 'b', 'c']` → "a, b or c". */
export function orList(words: readonly string[]): string {
  return words.length < 2 ? words.join('') : `${words.slice(0, -1).join(', ')} or ${words.at(-1)}`;
}
