import nodemailer from 'nodemailer';
import type { Endpoint } from './pop3-load.ts';

// Authenticated submission: each message on a connection of its own, as mail programs send
// (connect, EHLO, STARTTLS, EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT), from N clients at once.
// nodemailer's SMTP client does the protocol, so the figures include a real client's work.

export interface SubmissionOptions {
  endpoint: Endpoint;
  clients: number;
  total: number;
  user: string;
  password: string;
  to: string;
  size: number;
}

export interface SubmissionResult {
  sent: number;
  elapsedMs: number;
  messagesPerSecond: number;
  latency: number[];
}

export async function runSubmission(options: SubmissionOptions): Promise<SubmissionResult> {
  const transport = nodemailer.createTransport({
    host: options.endpoint.host,
    port: options.endpoint.port,
    secure: false,
    requireTLS: true,
    tls: { rejectUnauthorized: false },
    auth: { user: options.user, pass: options.password },
  });
  const body = 'x'.repeat(Math.max(0, options.size - 300)).replace(/(.{76})/g, '$1\r\n');
  const latency: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: options.clients }, async () => {
      for (;;) {
        const n = next++;
        if (n >= options.total) return;
        const t0 = performance.now();
        const info = await transport.sendMail({ from: options.user, to: options.to, subject: `submission ${n}`, text: body });
        if (info.accepted.length !== 1) throw new Error(`submission: message ${n} was not accepted: ${info.response}`);
        latency.push(performance.now() - t0);
      }
    }),
  );
  const elapsedMs = performance.now() - started;
  transport.close();
  return { sent: options.total, elapsedMs, messagesPerSecond: options.total / (elapsedMs / 1000), latency };
}
