import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { parseNextHop } from '../net/next-hop.ts';

// How far this machine's clock is from an NTP server's, by one SNTP exchange (RFC 4330, the
// client side of NTPv4, RFC 5905). Mail carries time everywhere (Date: and Received: headers,
// DKIM's t= and x=, certificates' validity, POP-before-SMTP windows), so a clock that is
// minutes off shows up as signatures "from the future" and certificates "not yet valid".

/** Seconds from the NTP era (1900-01-01) to the Unix epoch (1970-01-01). */
const NTP_TO_UNIX_SECONDS = 2_208_988_800;
const PACKET_BYTES = 48;

export interface ClockOffset {
  /** How far the server's clock is ahead of ours (negative: behind), in milliseconds. */
  offsetMs: number;
  /** The round trip, less the server's own processing time. */
  roundTripMs: number;
  /** The server's stratum (1: a reference clock; 2: synchronised to one; …). */
  stratum: number;
}

export class NtpError extends Error {}

/**
 * One SNTP query to `server` ("host" or "host:port", port 123 by default); rejects with an
 * NtpError after `timeoutMs` or on an answer that is not a valid reply to this query.
 */
export async function queryClockOffset(server: string, timeoutMs: number): Promise<ClockOffset> {
  const parsed = parseNextHop(server, 123);
  if (!parsed.ok) throw new NtpError(parsed.reason);
  const { host, port } = parsed.value;
  const address = isIP(host) ? host : (await lookup(host).catch(() => undefined))?.address;
  if (!address) throw new NtpError(`${host} does not resolve to an address`);
  const socket = createSocket(isIP(address) === 6 ? 'udp6' : 'udp4');
  try {
    return await new Promise<ClockOffset>((resolve, reject) => {
      const timer = setTimeout(() => reject(new NtpError(`no answer from ${server} within ${timeoutMs} ms`)), timeoutMs);
      const settle = (outcome: () => void) => {
        clearTimeout(timer);
        outcome();
      };
      const request = Buffer.alloc(PACKET_BYTES);
      // LI 0 (no warning), version 4, mode 3 (client): RFC 4330 §5.
      request[0] = (0 << 6) | (4 << 3) | 3;
      let sentAt = 0;
      socket.on('error', (error) => settle(() => reject(new NtpError(`${server}: ${error.message}`))));
      socket.on('message', (reply, from) => {
        const receivedAt = Date.now();
        // Only the server asked may answer; anything else on this port is ignored.
        if (from.address !== address || from.port !== port) return;
        const problem = checkReply(reply, request);
        if (problem) return settle(() => reject(new NtpError(`${server}: ${problem}`)));
        // RFC 4330 §5: offset = ((T2 - T1) + (T3 - T4)) / 2, delay = (T4 - T1) - (T3 - T2).
        const serverReceived = readTimestamp(reply, 32);
        const serverSent = readTimestamp(reply, 40);
        settle(() =>
          resolve({
            offsetMs: (serverReceived - sentAt + (serverSent - receivedAt)) / 2,
            roundTripMs: receivedAt - sentAt - (serverSent - serverReceived),
            stratum: reply[1],
          }),
        );
      });
      sentAt = Date.now();
      // The transmit timestamp is our send time; the server echoes it as "originate", which
      // ties its reply to this request (RFC 4330 §5, the client's check of §6).
      writeTimestamp(request, 40, sentAt);
      socket.send(request, port, address, (error) => {
        if (error) settle(() => reject(new NtpError(`cannot send to ${server}: ${error.message}`)));
      });
    });
  } finally {
    socket.close();
  }
}

/** Why `reply` is not a usable answer to `request`, or undefined when it is (RFC 4330 §5). */
function checkReply(reply: Buffer, request: Buffer): string | undefined {
  if (reply.length < PACKET_BYTES) return `a reply of ${reply.length} octets is too short`;
  const leap = reply[0] >> 6;
  const mode = reply[0] & 0x07;
  if (mode !== 4) return `the reply is not from a server (mode ${mode})`;
  // Stratum 0 is a "kiss-o'-death" message (RATE, DENY …): the server refuses to serve us.
  if (reply[1] === 0) return `the server refused to answer (kiss code ${reply.toString('latin1', 12, 16)})`;
  if (leap === 3) return 'the server is not synchronised itself (leap indicator 3)';
  if (!reply.subarray(24, 32).equals(request.subarray(40, 48))) return 'the reply does not answer this query (originate timestamp differs)';
  if (reply.readUInt32BE(40) === 0 && reply.readUInt32BE(44) === 0) return 'the reply has no transmit timestamp';
  return undefined;
}

/** Milliseconds since 1970 as an NTP timestamp (seconds since 1900 and a binary fraction). */
function writeTimestamp(buffer: Buffer, offset: number, ms: number): void {
  const seconds = Math.floor(ms / 1000);
  buffer.writeUInt32BE((seconds + NTP_TO_UNIX_SECONDS) >>> 0, offset);
  buffer.writeUInt32BE(Math.floor(((ms % 1000) / 1000) * 2 ** 32) >>> 0, offset + 4);
}

function readTimestamp(buffer: Buffer, offset: number): number {
  // RFC 4330 §3: seconds with the top bit clear are in the era after 2036-02-07.
  const raw = buffer.readUInt32BE(offset);
  const seconds = (raw < 0x8000_0000 ? raw + 2 ** 32 : raw) - NTP_TO_UNIX_SECONDS;
  return seconds * 1000 + (buffer.readUInt32BE(offset + 4) / 2 ** 32) * 1000;
}
