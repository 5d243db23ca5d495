import { pino, type Logger } from 'pino';

export type { Logger };

/** One JSON line per event on stdout; sessions log through child loggers carrying sid, ip, user. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { pid: process.pid },
    name: 'popgate',
    timestamp: pino.stdTimeFunctions.isoTime,
    // Belt and braces: nothing named like a secret ever reaches the log.
    redact: { paths: ['password', '*.password', 'secret', '*.secret'], censor: '[redacted]' },
  });
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
