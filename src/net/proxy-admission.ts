import type { Socket } from 'node:net';
import type { Logger } from '../log/logger.ts';
import { normalizeIp } from './ip.ts';
import { PROXY_HEADER_TIMEOUT_MS, readProxyHeader } from './proxy-protocol.ts';

// What a listener with proxy_protocol_from does with a new connection, the same for the mail
// listeners (src/net/service.ts) and the web listeners (src/web/service.ts), so that both
// refuse, read and log alike. HAProxy's doc/proxy-protocol.txt §2: a receiver must not guess
// whether a header is there, so a listener that takes headers takes them only from its
// balancers and refuses every other peer; the header comes before anything else, TLS included.

/** Where a connection arrived, for the log lines: the service ("pop3", "web") and the listener ("pop3s", "https"). */
export interface ProxyListenerName {
  log: Logger;
  service: string;
  listener: string;
}

/** A peer that is not one of the listener's balancers: its header would be a lie it could tell. Logged `proxy_refused`, closed. */
export function refuseUnproxiedPeer(socket: Socket, peer: string, where: ProxyListenerName): void {
  where.log.warn(
    { event: 'proxy_refused', service: where.service, listener: where.listener, ip: peer },
    `connection from ${peer} refused: ${where.listener} takes connections only through its load balancers (proxy_protocol_from)`,
  );
  socket.destroy();
}

/**
 * The client's address from the PROXY header a trusted balancer sent first, or the
 * balancer's own when the header carries none (its health checks: v2 LOCAL, v1 UNKNOWN;
 * spec §2.1, §2.2). Whatever followed the header stays in the socket, paused, for its next
 * reader. Undefined when the header is invalid, late or cut short: the connection is then
 * destroyed without a word, as the spec asks, since nothing the peer sent can be trusted,
 * and logged `proxy_error`.
 */
export async function readProxiedClient(socket: Socket, peer: string, where: ProxyListenerName): Promise<string | undefined> {
  const read = await readProxyHeader(socket, PROXY_HEADER_TIMEOUT_MS);
  if (!read.ok) {
    socket.destroy();
    if (read.nothingSent) {
      // Connect and close: a balancer's plain TCP health check (HAProxy's "check" without
      // "check-send-proxy"), every few seconds. Nothing went wrong; not worth a warning.
      where.log.debug({ event: 'proxy_no_header', listener: where.listener, via: peer }, 'a balancer closed its connection before sending anything');
      return undefined;
    }
    where.log.warn(
      { event: 'proxy_error', service: where.service, listener: where.listener, via: peer, reason: read.reason },
      `invalid PROXY protocol header from ${peer}: ${read.reason}`,
    );
    return undefined;
  }
  const { source, withoutAddresses } = read.header;
  if (!source) {
    where.log.debug({ event: 'proxy_without_address', listener: where.listener, via: peer, kind: withoutAddresses }, 'PROXY header without a client address: the balancer itself');
    return peer;
  }
  return normalizeIp(source.address);
}
