import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Config } from '../config/schema.ts';
import { parseListenAddress } from '../net/listen.ts';

// The listeners a config names, and what it takes to reach one from this machine: used by
// `popgate doctor` (is each one serving?) and by `popgate restore` (is a server running?).

export interface ConfiguredListener {
  /** The config section: pop3, pop3s, smtp, submission, submissions. */
  section: 'pop3' | 'pop3s' | 'smtp' | 'submission' | 'submissions';
  /** As written in the config. */
  address: string;
  /** Where to connect from this machine: a wildcard address becomes loopback. */
  host: string;
  port: number;
  protocol: 'pop3' | 'smtp';
  /** TLS from the first byte (POP3S, submissions). */
  implicitTls: boolean;
  /** The load balancers allowed to send a PROXY header first (proxy_protocol_from). */
  proxyProtocolFrom: readonly string[];
}

const SECTIONS = [
  { section: 'pop3', protocol: 'pop3', implicitTls: false },
  { section: 'pop3s', protocol: 'pop3', implicitTls: true },
  { section: 'smtp', protocol: 'smtp', implicitTls: false },
  { section: 'submission', protocol: 'smtp', implicitTls: false },
  { section: 'submissions', protocol: 'smtp', implicitTls: true },
] as const;

/** Every listener of the config, in section order. Port 0 (a free port chosen at start) cannot be reached from outside and is left out. */
export function configuredListeners(config: Config): ConfiguredListener[] {
  const listeners: ConfiguredListener[] = [];
  for (const { section, protocol, implicitTls } of SECTIONS) {
    for (const address of config[section].listen) {
      const parsed = parseListenAddress(address);
      if (!parsed.ok || parsed.value.port === 0) continue;
      const { host, port } = parsed.value;
      // A listener on every address is reached through loopback.
      const reachable = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
      listeners.push({ section, address, host: reachable, port, protocol, implicitTls, proxyProtocolFrom: config[section].proxy_protocol_from });
    }
  }
  return listeners;
}

export interface Greeting {
  /** The first line the server sent. */
  line: string;
  /** The SHA-256 fingerprint of the certificate served (implicit TLS only). */
  certificateFingerprint?: string;
}

const MAX_GREETING = 4096;

/**
 * Connects, reads the greeting's first line (after the TLS handshake for implicit TLS, and
 * after sending `proxyHeader` when given), says QUIT and closes. Rejects with the reason
 * after `timeoutMs` or when the connection fails or closes first.
 */
export async function readGreeting(listener: ConfiguredListener, timeoutMs: number, proxyHeader?: string): Promise<Greeting> {
  const plain = netConnect({ host: listener.host, port: listener.port });
  let socket: Socket | TLSSocket = plain;
  try {
    return await new Promise<Greeting>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no greeting within ${timeoutMs} ms`)), timeoutMs);
      const done = (outcome: () => void) => {
        clearTimeout(timer);
        outcome();
      };
      const failed = (error: Error) => done(() => reject(error));
      plain.once('error', failed);
      plain.once('connect', () => {
        if (proxyHeader) plain.write(proxyHeader);
        if (listener.implicitTls) {
          // The certificate itself is judged by the certificate check; here only that TLS works.
          socket = tlsConnect({ socket: plain, rejectUnauthorized: false });
          socket.once('error', failed);
        }
        let received = Buffer.alloc(0);
        socket.on('data', (chunk: Buffer) => {
          received = Buffer.concat([received, chunk]);
          const end = received.indexOf('\r\n');
          if (end === -1 && received.length < MAX_GREETING) return;
          const line = received.toString('latin1', 0, end === -1 ? MAX_GREETING : end);
          const certificate = listener.implicitTls ? (socket as TLSSocket).getPeerX509Certificate() : undefined;
          socket.end('QUIT\r\n');
          done(() => resolve({ line, certificateFingerprint: certificate?.fingerprint256 }));
        });
        socket.once('close', () => failed(new Error(received.length > 0 ? 'the connection closed within the greeting' : 'the connection closed before a greeting')));
      });
    });
  } finally {
    socket.destroy();
    plain.destroy();
  }
}

/** Whether something accepts connections at the listener's address (within `timeoutMs`). */
export function accepting(listener: ConfiguredListener, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: listener.host, port: listener.port });
    const settle = (answer: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => settle(false), timeoutMs);
    socket.once('connect', () => settle(true));
    socket.once('error', () => settle(false));
  });
}
