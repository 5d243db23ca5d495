import { SMTPServer, type SMTPServerOptions } from 'smtp-server';

// A real SMTP server (nodemailer's smtp-server) standing in for another provider's MX on a
// loopback address of its own. It records what arrives and answers as a test tells it to.

export interface ReceivedMessage {
  from: string;
  to: string[];
  data: Buffer;
  /** The session had upgraded with STARTTLS (or was implicit TLS). */
  secure: boolean;
  user?: string;
  clientHostname: string;
}

export interface SinkBehaviour {
  /** Return "451 4.2.0 Try later" style text to refuse the recipient (first 3 digits = code). */
  rcpt?(address: string, attempt: number): string | undefined;
  /** Return a reply to refuse the message after DATA. */
  data?(message: ReceivedMessage): string | undefined;
  /** Wait for this before answering DATA (to hold a delivery in flight). */
  hold?(message: ReceivedMessage): Promise<void>;
}

export interface Sink {
  host: string;
  port: number;
  messages: ReceivedMessage[];
  /** RCPT TO commands seen, per address. */
  rcptAttempts: Map<string, number>;
  connections: number;
  behaviour: SinkBehaviour;
  waitFor(count: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  close(): Promise<void>;
}

export interface SinkOptions extends SinkBehaviour {
  host: string;
  port?: number;
  /** Offer STARTTLS (smtp-server's own self-signed certificate). Default true. */
  starttls?: boolean;
  /** Require this login (AUTH PLAIN/LOGIN). */
  auth?: { user: string; pass: string };
}

export async function startSink(options: SinkOptions): Promise<Sink> {
  const sink: Sink = {
    host: options.host,
    port: 0,
    messages: [],
    rcptAttempts: new Map(),
    connections: 0,
    behaviour: { rcpt: options.rcpt, data: options.data, hold: options.hold },
    async waitFor(count, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (sink.messages.length < count) {
        if (Date.now() > deadline) throw new Error(`sink ${sink.host}:${sink.port} got ${sink.messages.length} of ${count} messages`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return sink.messages;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const settings: SMTPServerOptions = {
    logger: false,
    authOptional: !options.auth,
    // Disabled, not just hidden: a hidden STARTTLS still works when a client insists.
    disabledCommands: [...(options.auth ? [] : ['AUTH']), ...(options.starttls === false ? ['STARTTLS'] : [])],
    allowInsecureAuth: true,
    size: 50 * 1024 * 1024,
    onConnect(_session, callback) {
      sink.connections++;
      callback();
    },
    onAuth(auth, _session, callback) {
      if (options.auth && auth.username === options.auth.user && auth.password === options.auth.pass) return callback(null, { user: auth.username });
      callback(Object.assign(new Error('Authentication failed'), { responseCode: 535 }));
    },
    onRcptTo(address, _session, callback) {
      const attempt = (sink.rcptAttempts.get(address.address) ?? 0) + 1;
      sink.rcptAttempts.set(address.address, attempt);
      const refusal = sink.behaviour.rcpt?.(address.address, attempt);
      callback(refusal ? replyError(refusal) : null);
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', async () => {
        const message: ReceivedMessage = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          data: Buffer.concat(chunks),
          secure: session.secure,
          user: session.user as string | undefined,
          clientHostname: session.hostNameAppearsAs,
        };
        await sink.behaviour.hold?.(message);
        const refusal = sink.behaviour.data?.(message);
        if (refusal) return callback(replyError(refusal));
        sink.messages.push(message);
        callback();
      });
    },
  };
  const server = new SMTPServer(settings);
  server.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(options.port ?? 0, options.host, () => resolve());
  });
  sink.port = (server.server.address() as { port: number }).port;
  return sink;
}

/** Several sinks on different loopback addresses sharing one port (outbound.port). */
export async function startSinks(list: SinkOptions[]): Promise<Sink[]> {
  for (let tries = 0; tries < 20; tries++) {
    const sinks: Sink[] = [];
    try {
      for (const options of list) sinks.push(await startSink({ ...options, port: sinks[0]?.port ?? options.port }));
      return sinks;
    } catch (error) {
      await Promise.all(sinks.map((s) => s.close()));
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    }
  }
  throw new Error('no common free port for the sinks');
}

function replyError(reply: string): Error {
  const code = Number(reply.slice(0, 3));
  return Object.assign(new Error(reply.slice(4)), { responseCode: code });
}
