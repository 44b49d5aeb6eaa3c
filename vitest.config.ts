import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/rgw.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // The default is one file at a time on two cores; the suite mostly waits on Postgres, RGW and child
    // processes, and every file has its own databases, buckets and Redis prefixes, so two run side by side.
    maxWorkers: 2,
    // Under CI also a JSON report, from which .ci/run prints a plain "N passed, N failed" line.
    reporters: process.env.CI ? ['default', ['json', { outputFile: 'test-results.json' }]] : ['default'],
  },
});
