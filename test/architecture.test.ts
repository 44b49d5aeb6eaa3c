import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { allFunctions } from '../functions/index.js';

describe('architecture', () => {
  it('no function imports bullmq (the runtime in queue/ owns it)', async () => {
    const files = (await readdir('functions')).filter((f) => f.endsWith('.ts'));
    expect(files.length).toBeGreaterThan(1);
    for (const file of files) {
      const text = await readFile(join('functions', file), 'utf8');
      expect(text, file).not.toMatch(/bullmq/);
    }
  });

  it('every function file is registered, and every function has a test file', async () => {
    const files = (await readdir('functions')).filter((f) => f.endsWith('.ts') && f !== 'index.ts');
    expect(files.map((f) => f.replace(/\.ts$/, '')).sort()).toEqual(allFunctions.map((f) => f.name).sort());
    const tests = await readdir('test');
    for (const fn of allFunctions) {
      const covered = tests.some((t) => t.startsWith(`${fn.name}.`)) || (await Promise.all(tests.filter((t) => t.endsWith('.test.ts')).map((t) => readFile(join('test', t), 'utf8')))).some((text) => text.includes(`functions/${fn.name}.js`));
      expect(covered, fn.name).toBe(true);
    }
  });
});
