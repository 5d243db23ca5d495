import { Agent, request, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { z } from 'zod';
import type { Logger } from '../log/logger.ts';

// A client for rspamd's HTTP protocol (https://rspamd.com/doc/architecture/protocol.html):
// POST /checkv2 on the normal worker (port 11333 by default) with the raw message as the body
// and the envelope as request headers; rspamd answers JSON with the action it recommends.
//
// Every check ends within `timeoutMs` and never throws: an rspamd that is down, slow, or
// answers something that is not its JSON is `ok: false` with the reason, and the filter
// decides what that means for the message. Connections are kept alive and reused where the
// server allows it; rspamd 3.4's normal worker answers `Connection: close` to every request,
// so there a check costs one loopback connect plus one request and answer.

export interface RspamdSettings {
  /** The normal worker, e.g. "http://127.0.0.1:11333". */
  url: string;
  /** The whole check: connecting, sending the message, rspamd's scan and its answer. */
  timeoutMs: number;
  /**
   * Sent as the `Password` header. The normal worker needs none; the controller (port 11334)
   * answers /checkv2 too, and asks for its password unless the client is one of its `secure_ip`.
   */
  password?: string;
}

export interface RspamdRequest {
  /** The message as received (with popgate's trace headers if the caller added them). */
  message: Buffer | Buffer[];
  /** The SMTP client's address (the `IP` header: RBLs, SPF and rspamd's `local_addrs` use it). */
  ip: string;
  /** The EHLO/HELO argument. */
  helo: string;
  /** MAIL FROM, "" for the null sender. */
  from: string;
  /** RCPT TO, one `Rcpt` header each. */
  recipients: string[];
  /** The SASL user, for a client that authenticated (rspamd then skips some checks). */
  user?: string;
  /** popgate's queue id, which rspamd logs and puts in its history. */
  queueId?: string;
  /**
   * The SMTP client's hostname from reverse DNS, forward-confirmed — not popgate's own name.
   * Omitted when the client has none: rspamd then assumes "unknown", which its hfilter scores.
   */
  hostname?: string;
  /** A settings id of rspamd's configuration to apply (https://rspamd.com/doc/configuration/settings.html). */
  settingsId?: string;
}

export const RSPAMD_ACTIONS = ['reject', 'soft reject', 'add header', 'rewrite subject', 'greylist', 'no action'] as const;
export type RspamdAction = (typeof RSPAMD_ACTIONS)[number];

export type RspamdVerdict =
  | {
      ok: true;
      action: RspamdAction;
      score: number;
      /** The score at which rspamd rejects (its `required_score`). */
      required: number;
      /** The symbols that matched, highest score first (ties by name). */
      symbols: string[];
      /** The new Subject for "rewrite subject". */
      subject?: string;
      /** Header fields rspamd asks to add, in its order; a value may be folded (CRLF + tab/space). */
      addHeaders: { name: string; value: string }[];
      /** Header fields rspamd asks to remove (every instance: rspamd's milter_headers asks for all). */
      removeHeaders: string[];
      /** Text for the SMTP reply (`messages.smtp_message`): one line of printable ASCII. */
      message?: string;
    }
  | { ok: false; reason: string };

/** rspamd's answer is a few KiB; a MiB is a broken or hostile server. */
const ANSWER_LIMIT = 1024 * 1024;
/** Reply text longer than this would not fit an SMTP reply line (RFC 5321 §4.5.3.1.5: 512 octets). */
const REPLY_TEXT_LIMIT = 400;
/** Connections to rspamd at once; further checks wait for a free one, within their timeout. */
const MAX_CONNECTIONS = 64;

/** A header field name (RFC 5322 §3.6.8: printable ASCII but the colon). */
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;
/** A header field value without control characters, folded only as CRLF + space or tab. */
const FIELD_VALUE = /^(?:[^\x00-\x1f\x7f]|\t|\r\n[ \t])*$/;
const CONTROL = /[\x00-\x1f\x7f]/;

const headerToAdd = z.union([z.string(), z.object({ value: z.string() })]);
const answerSchema = z.object({
  action: z.enum(RSPAMD_ACTIONS),
  score: z.number(),
  required_score: z.number(),
  symbols: z.record(z.string(), z.object({ score: z.number() })).optional(),
  subject: z.string().optional(),
  messages: z.object({ smtp_message: z.string().optional() }).optional(),
  milter: z
    .object({
      add_headers: z.record(z.string(), z.union([headerToAdd, z.array(headerToAdd)])).optional(),
      remove_headers: z.record(z.string(), z.number()).optional(),
    })
    .optional(),
});
type Answer = z.infer<typeof answerSchema>;

/**
 * A header value as Node writes it: Node sends header strings as Latin-1, so UTF-8 text goes
 * out as its bytes, each a Latin-1 character (rspamd reads header values as bytes).
 */
function wire(value: string): string {
  return /^[\x00-\x7f]*$/.test(value) ? value : Buffer.from(value, 'utf8').toString('latin1');
}

/**
 * An envelope address for the `From`/`Rcpt` headers: rspamd 3.4 parses them with its
 * RFC 5321 grammar, which refuses non-ASCII, so an internationalized domain goes as its
 * A-labels (the same domain, RFC 5890). A non-ASCII local part has no ASCII form: it goes as
 * UTF-8 (RFC 6531), which newer rspamd parses and 3.4 ignores (it logs "bad rcpt address"
 * and scans without that address).
 */
function envelopeAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0 || /^[\x00-\x7f]*$/.test(address)) return address;
  const domain = address.slice(at + 1);
  const ascii = /^[\x00-\x7f]*$/.test(domain) ? domain : domainToASCII(domain);
  return `${address.slice(0, at)}@${ascii || domain}`;
}

/** Reply text from rspamd, made safe for an SMTP reply line. */
function replyText(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const line = text.replace(/[^\x20-\x7e]+/g, ' ').trim();
  if (line === '') return undefined;
  return line.length > REPLY_TEXT_LIMIT ? `${line.slice(0, REPLY_TEXT_LIMIT - 3)}...` : line;
}

/** A check that failed, with the reason as its message. */
class CheckFailure extends Error {}
/** A reused kept-alive connection was reset before any answer: the server had closed it. */
class StaleConnection extends Error {}

export class RspamdClient {
  readonly #endpoint: URL;
  readonly #settings: RspamdSettings;
  readonly #log: Logger;
  readonly #agent = new Agent({ keepAlive: true, maxSockets: MAX_CONNECTIONS });
  /** Whether the last check reached rspamd: failures are logged once per outage. */
  #reachable = true;

  /** Throws on a URL that is not http:// (rspamd speaks plain HTTP; its own encryption is not supported). */
  constructor(settings: RspamdSettings, log: Logger) {
    const base = new URL(settings.url);
    if (base.protocol !== 'http:') throw new Error(`rspamd url ${settings.url}: only http:// is supported`);
    this.#endpoint = new URL('/checkv2', base);
    this.#settings = settings;
    this.#log = log.child({ rspamd: base.host });
  }

  /** Never throws; settles within `timeoutMs` (plus the moment to settle a destroyed socket). */
  async check(input: RspamdRequest): Promise<RspamdVerdict> {
    const prepared = this.#headers(input);
    if ('refused' in prepared) return { ok: false, reason: prepared.refused };
    const { headers } = prepared;
    const body = Buffer.isBuffer(input.message) ? [input.message] : input.message;
    const deadline = Date.now() + this.#settings.timeoutMs;
    let verdict: RspamdVerdict;
    try {
      let answer: Answer;
      try {
        answer = await this.#post(headers, body, deadline);
      } catch (error) {
        // A kept-alive connection the server had closed when we reused it, so the request
        // (almost certainly) never reached rspamd: it is sent once more, on a new connection,
        // within the same deadline. A scan is safe to repeat.
        if (!(error instanceof StaleConnection)) throw error;
        answer = await this.#post(headers, body, deadline);
      }
      verdict = this.#verdict(answer);
    } catch (error) {
      verdict = { ok: false, reason: error instanceof CheckFailure ? error.message : `rspamd: ${(error as Error).message}` };
    }
    this.#noteReachable(verdict);
    return verdict;
  }

  /** Closes the kept-alive connections, at shutdown. */
  close(): void {
    this.#agent.destroy();
  }

  #headers(input: RspamdRequest): { headers: OutgoingHttpHeaders } | { refused: string } {
    if (isIP(input.ip) === 0) return { refused: `rspamd: not an IP address: ${JSON.stringify(input.ip)}` };
    const fields: [name: string, value: string][] = [
      ['IP', input.ip],
      ['Helo', input.helo],
      // rspamd reads "<>" as the null sender (its SMTP address grammar).
      ['From', input.from === '' ? '<>' : envelopeAddress(input.from)],
      ...input.recipients.map((recipient): [string, string] => ['Rcpt', envelopeAddress(recipient)]),
    ];
    if (input.user !== undefined) fields.push(['User', input.user]);
    if (input.queueId !== undefined) fields.push(['Queue-Id', input.queueId]);
    if (input.hostname !== undefined) fields.push(['Hostname', input.hostname]);
    if (input.settingsId !== undefined) fields.push(['Settings-ID', input.settingsId]);
    if (this.#settings.password !== undefined) fields.push(['Password', this.#settings.password]);
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of fields) {
      // CR or LF would end the header early: whatever follows would be a header of its own.
      if (CONTROL.test(value)) return { refused: `rspamd: the ${name} value contains a control character` };
      const existing = headers[name];
      if (existing === undefined) headers[name] = wire(value);
      else headers[name] = [existing, wire(value)].flat();
    }
    return { headers };
  }

  #post(headers: OutgoingHttpHeaders, body: Buffer[], deadline: number): Promise<Answer> {
    const length = body.reduce((sum, chunk) => sum + chunk.length, 0);
    return new Promise<Answer>((resolve, reject) => {
      const req: ClientRequest = request(this.#endpoint, { method: 'POST', agent: this.#agent, headers: { ...headers, 'Content-Length': length } });
      let answered = false;
      const timer = setTimeout(() => req.destroy(new CheckFailure(`rspamd: no answer within ${this.#settings.timeoutMs} ms`)), Math.max(0, deadline - Date.now()));
      const fail = (error: Error) => {
        clearTimeout(timer);
        if (error instanceof CheckFailure) return reject(error);
        const code = (error as NodeJS.ErrnoException).code;
        if (!answered && req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE')) return reject(new StaleConnection());
        reject(new CheckFailure(`rspamd: ${code === 'ECONNREFUSED' ? 'connection refused' : error.message}`));
      };
      req.on('error', fail);
      req.on('response', (response: IncomingMessage) => {
        answered = true;
        response.on('error', fail);
        const declared = Number(response.headers['content-length'] ?? 0);
        if (declared > ANSWER_LIMIT) return req.destroy(new CheckFailure(`rspamd: answer of ${declared} bytes, more than ${ANSWER_LIMIT}`));
        const chunks: Buffer[] = [];
        let received = 0;
        response.on('data', (chunk: Buffer) => {
          received += chunk.length;
          if (received > ANSWER_LIMIT) return req.destroy(new CheckFailure(`rspamd: answer longer than ${ANSWER_LIMIT} bytes`));
          chunks.push(chunk);
        });
        response.on('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          if (response.statusCode !== 200) {
            const said = replyText(text.slice(0, 200));
            return reject(new CheckFailure(`rspamd answered HTTP ${response.statusCode}${said ? `: ${said}` : ''}`));
          }
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            return reject(new CheckFailure('rspamd: the answer is not JSON'));
          }
          const parsed = answerSchema.safeParse(json);
          if (!parsed.success) {
            const issue = parsed.error.issues[0];
            return reject(new CheckFailure(`rspamd: unexpected answer (${issue.path.join('.') || 'answer'}: ${issue.message})`));
          }
          resolve(parsed.data);
        });
      });
      for (const chunk of body) req.write(chunk);
      req.end();
    });
  }

  #verdict(answer: Answer): RspamdVerdict {
    const symbols = Object.entries(answer.symbols ?? {})
      .sort(([nameA, a], [nameB, b]) => b.score - a.score || (nameA < nameB ? -1 : nameA > nameB ? 1 : 0))
      .map(([name]) => name);
    const addHeaders: { name: string; value: string }[] = [];
    for (const [name, entries] of Object.entries(answer.milter?.add_headers ?? {})) {
      for (const entry of [entries].flat()) {
        const value = typeof entry === 'string' ? entry : entry.value;
        // What rspamd asks to add goes into the stored message: a name or value that would
        // break the header section (a bare CR or LF, a line that is not a continuation) is
        // left out rather than trusted.
        if (FIELD_NAME.test(name) && FIELD_VALUE.test(value)) addHeaders.push({ name, value });
        else this.#log.warn({ header: name }, 'rspamd asked to add a header field that is not well-formed; left out');
      }
    }
    const removeHeaders = Object.keys(answer.milter?.remove_headers ?? {}).filter((name) => FIELD_NAME.test(name));
    let subject = answer.subject;
    if (subject !== undefined && !FIELD_VALUE.test(subject)) {
      this.#log.warn('rspamd asked for a Subject that is not a well-formed header value; left out');
      subject = undefined;
    }
    const message = replyText(answer.messages?.smtp_message);
    return {
      ok: true,
      action: answer.action,
      score: answer.score,
      required: answer.required_score,
      symbols,
      ...(subject !== undefined && { subject }),
      addHeaders,
      removeHeaders,
      ...(message !== undefined && { message }),
    };
  }

  #noteReachable(verdict: RspamdVerdict): void {
    if (!verdict.ok && this.#reachable) this.#log.warn({ reason: verdict.reason }, 'rspamd check failed; further failures are logged at debug level until it answers again');
    else if (!verdict.ok) this.#log.debug({ reason: verdict.reason }, 'rspamd check failed');
    else if (!this.#reachable) this.#log.info('rspamd answers again');
    this.#reachable = verdict.ok;
  }
}
