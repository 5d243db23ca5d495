import dns2 from 'dns2';

// A real DNS server on loopback (UDP), serving a zone a test writes as a plain object.
// popgate's resolver is pointed at it through [dns] servers. A name "*.<suffix>" is a
// wildcard (RFC 4592): it answers for every name below <suffix> that has no entry of its own.

const { Packet } = dns2;

export interface ZoneEntry {
  MX?: [priority: number, exchange: string][];
  A?: string[];
  AAAA?: string[];
  TXT?: string[];
  /** Names for a reverse zone entry such as "1.2.0.192.in-addr.arpa". */
  PTR?: string[];
  /** Answer SERVFAIL for this name (a broken resolver or zone). */
  servfail?: boolean;
  /** The TTL of the records (seconds); 60 when not given. */
  ttl?: number;
  /** Answer only after this long (a slow or unreachable zone). */
  delayMs?: number;
}

export interface TestDns {
  /** "127.0.0.1:port", for [dns] servers. */
  address: string;
  zone: Record<string, ZoneEntry>;
  /** Names asked, in order, as "TYPE name". */
  queries: string[];
  close(): Promise<void>;
}

const TYPE_NAMES: Record<number, string> = { [Packet.TYPE.A]: 'A', [Packet.TYPE.AAAA]: 'AAAA', [Packet.TYPE.MX]: 'MX', [Packet.TYPE.TXT]: 'TXT', [Packet.TYPE.PTR]: 'PTR' };

export async function startDns(zone: Record<string, ZoneEntry>): Promise<TestDns> {
  const queries: string[] = [];
  const delayed = new Set<NodeJS.Timeout>();
  const server = dns2.createServer({
    udp: true,
    handle: (request, send) => {
      const response = Packet.createResponseFromRequest(request);
      const [question] = request.questions;
      const name = question.name.toLowerCase().replace(/\.$/, '');
      const type = TYPE_NAMES[question.type] ?? String(question.type);
      queries.push(`${type} ${name}`);
      const entry = zone[name] ?? wildcardFor(zone, name);
      if (!entry) {
        response.header.rcode = Packet.RCODE.NXDOMAIN;
      } else if (entry.servfail) {
        response.header.rcode = Packet.RCODE.SERVFAIL;
      } else {
        const base = { name: question.name, class: Packet.CLASS.IN, ttl: entry.ttl ?? 60 };
        // dns2's typings want Resource objects; plain records are what its encoder reads.
        const answers = response.answers as unknown as object[];
        if (type === 'MX') for (const [priority, exchange] of entry.MX ?? []) answers.push({ ...base, type: Packet.TYPE.MX, priority, exchange });
        if (type === 'A') for (const address of entry.A ?? []) answers.push({ ...base, type: Packet.TYPE.A, address });
        if (type === 'AAAA') for (const address of entry.AAAA ?? []) answers.push({ ...base, type: Packet.TYPE.AAAA, address });
        if (type === 'TXT') for (const data of entry.TXT ?? []) answers.push({ ...base, type: Packet.TYPE.TXT, data: chunk(data) });
        if (type === 'PTR') for (const domain of entry.PTR ?? []) answers.push({ ...base, type: Packet.TYPE.PTR, domain });
      }
      if (!entry?.delayMs) return void send(response);
      const timer = setTimeout(() => {
        delayed.delete(timer);
        void send(response);
      }, entry.delayMs);
      delayed.add(timer);
    },
  });
  const listening = new Promise<void>((resolve) => server.once('listening', () => resolve()));
  server.listen({ udp: { port: 0, address: '127.0.0.1' } });
  await listening;
  const { udp } = server.addresses() as { udp: { port: number } };
  return {
    address: `127.0.0.1:${udp.port}`,
    zone,
    queries,
    close: () => {
      for (const timer of delayed) clearTimeout(timer);
      return server.close().then(() => undefined);
    },
  };
}

/** The entry of the closest wildcard above `name`, if any. */
function wildcardFor(zone: Record<string, ZoneEntry>, name: string): ZoneEntry | undefined {
  for (let dot = name.indexOf('.'); dot !== -1; dot = name.indexOf('.', dot + 1)) {
    const entry = zone[`*${name.slice(dot)}`];
    if (entry) return entry;
  }
  return undefined;
}

/** TXT character-strings hold at most 255 octets (RFC 1035 §3.3). */
function chunk(text: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += 255) out.push(text.slice(i, i + 255));
  return out.length > 0 ? out : [''];
}
