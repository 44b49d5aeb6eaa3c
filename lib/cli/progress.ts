import type { Progress } from '../../queue/define.js';
import { statusLine } from '../plumbing/logger.js';
import { progressLine } from './steps.js';

/** On a pipe or in a log file: one line at most this often, so a long dump does not flood it. */
export const QUIET_PROGRESS_INTERVAL_MS = 10_000;
/** On a terminal: the live line is redrawn at most this often. */
const LIVE_PROGRESS_INTERVAL_MS = 500;

export interface ProgressPrinter {
  report(label: string, progress: Progress): void;
  /** Ends a live line, so what follows starts on its own line. */
  end(): void;
}

/**
 * Job progress for someone waiting: "\r  dumpPostgres dumping 1.2 GiB of 3.4 GiB (35%)  84.0 MiB/s  ETA 27 s"
 * redrawn in place on a terminal; a plain line every 10 s otherwise. Rate and ETA count from the first
 * report of each phase.
 */
export function progressPrinter(stream: NodeJS.WriteStream = process.stderr, now: () => number = Date.now): ProgressPrinter {
  const live = stream.isTTY === true;
  // Log lines on stderr are written above the live line (lib/plumbing/logger.ts).
  const shared = stream === process.stderr ? statusLine : { text: '' };
  const interval = live ? LIVE_PROGRESS_INTERVAL_MS : QUIET_PROGRESS_INTERVAL_MS;
  let phase: { key: string; startedAt: number } | undefined;
  let printedAt = -Infinity;
  let open = false;
  return {
    report(label, progress) {
      const key = `${label} ${progress.phase}`;
      const at = now();
      if (phase?.key !== key) phase = { key, startedAt: at };
      else if (at - printedAt < interval) return;
      printedAt = at;
      const total = progress.total === undefined ? undefined : { bytes: progress.total, objects: progress.totalObjects };
      const line = progressLine(key, { bytes: progress.bytes ?? 0, objects: progress.objects }, (at - phase.startedAt) / 1000, total);
      if (live) {
        shared.text = `  ${line}`;
        stream.write(`\r\x1b[2K${shared.text}`);
        open = true;
      } else stream.write(`  ${line}\n`);
    },
    end() {
      if (open) stream.write('\n');
      open = false;
      shared.text = '';
    },
  };
}
