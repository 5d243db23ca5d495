import type { AuthenticateResult } from 'mailauth';
import { uncheckedResult, type AuthenticationInput, type AuthenticationSettings, type AuthResult, type SenderAuthentication, type SenderChecks } from './authentication.ts';
import { DkimKeyCache } from './dkim-keys.ts';
import { FilterDns } from './dns.ts';
import { authenticateMessage, CheckMemos } from './mailauth-checks.ts';

// The sender checks themselves (src/filter/authentication.ts says what they are): mailauth and
// the modules around it, some 40 MB of memory in a process that loads them. They run on the
// checks' own thread (src/filter/check-worker.ts); the event loop's thread loads this module only
// when that thread has stopped (src/filter/check-thread.ts).

const KEYWORDS = new Set<AuthResult>(['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror', 'policy']);

function keyword(result: string | undefined): AuthResult {
  if (result === 'temperr') return 'temperror';
  return result && KEYWORDS.has(result as AuthResult) ? (result as AuthResult) : 'none';
}

/** The order in which a signature's result matters: one pass is enough. */
const DKIM_RANK: AuthResult[] = ['pass', 'temperror', 'fail', 'permerror', 'policy', 'neutral', 'softfail', 'none'];

export class Authenticator implements SenderChecks {
  readonly #settings: AuthenticationSettings;
  readonly #keys = new DkimKeyCache();
  /** Only with a resolver that says what its cache holds (src/filter/dns.ts). */
  readonly #memos: CheckMemos | undefined;

  constructor(settings: AuthenticationSettings) {
    this.#settings = settings;
    const { cached } = settings.resolver;
    this.#memos = cached ? new CheckMemos({ cached }) : undefined;
  }

  /** Never throws: a failure or the deadline is a temperror for every check. */
  async check(input: AuthenticationInput): Promise<SenderAuthentication> {
    const { hostname, resolver, deadlineMs } = this.#settings;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), deadlineMs)));
    // mailauth's strict mode: the RFCs as written (a body hash mismatch is dkim=fail, RFC 8601
    // §2.7.1; rsa-sha1 is not trusted, RFC 8301 §3.1; malformed signatures and records are told apart).
    const checks = authenticateMessage({ message: input.message, ip: input.ip, helo: input.helo, sender: input.sender, hostname, resolver, keys: this.#keys, memos: this.#memos });
    checks.catch(() => {}); // settled later than the deadline: nobody waits for it any more
    let result: AuthenticateResult | 'timeout' | 'error';
    try {
      result = await Promise.race([checks, deadline]);
    } catch {
      result = 'error';
    } finally {
      clearTimeout(timer);
    }
    if (result === 'timeout' || result === 'error') return uncheckedResult(hostname, input, result === 'timeout');
    return this.#summarize(result);
  }

  #summarize(result: AuthenticateResult): SenderAuthentication {
    const spf = result.spf ? keyword(result.spf.status.result) : 'none';
    const signatures = result.dkim.results.map((r) => keyword(r.status.result));
    const dkim = DKIM_RANK.find((rank) => signatures.includes(rank)) ?? 'none';
    const dmarc = result.dmarc ? keyword(result.dmarc.status.result) : 'none';
    const arc = result.arc ? keyword(result.arc.status.result) : 'none';
    const policy = result.dmarc ? result.dmarc.policy : undefined;
    return {
      spf,
      dkim,
      dmarc,
      arc,
      dmarcPolicy: policy === 'none' || policy === 'quarantine' || policy === 'reject' ? policy : undefined,
      fromDomain: result.dmarc ? result.dmarc.status.header?.from : undefined,
      alignedDkim: result.dmarc ? result.dmarc.alignment?.dkim?.result !== undefined && dkim === 'pass' : false,
      headers: result.headers.endsWith('\r\n') || result.headers === '' ? result.headers : `${result.headers}\r\n`,
      timedOut: false,
    };
  }
}

/** What checks with a resolver of their own are made from (src/filter/check-thread.ts passes them on). */
export interface CheckSettings {
  hostname: string;
  /** [dns] servers and timeout: the checks make their own resolver with them. */
  dnsServers: readonly string[];
  dnsTimeoutMs: number;
  deadlineMs: number;
}

/** An Authenticator with its own resolver, as the thread makes one (and this thread when it has stopped). */
export function checksInThisThread(settings: CheckSettings): Authenticator {
  const dns = new FilterDns(settings.dnsServers, settings.dnsTimeoutMs);
  return new Authenticator({ hostname: settings.hostname, resolver: dns.resolve, deadlineMs: settings.deadlineMs });
}
