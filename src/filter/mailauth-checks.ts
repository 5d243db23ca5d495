import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import type { AuthenticateResult, DKIMVerifyResult, DNSResolver } from 'mailauth';
import { arc } from 'mailauth/lib/arc/index.js';
import { evaluateDmarc } from 'mailauth/lib/dmarc/index.js';
import { spf } from 'mailauth/lib/spf/index.js';
import { AnswerBoundMemo, type CachedAnswers } from './answer-memo.ts';
import type { DkimKeyCache, MessageKeyLookup } from './dkim-keys.ts';
import { passingDkim } from './dkim-pass.ts';
import type { MailauthResolver } from './dns.ts';

// What mailauth's authenticate() does (lib/mailauth.js, mailauth 7.1.0, pinned in package.json
// for this reason), for the options popgate uses — strict, BIMI off, no ARC sealing, the
// client from the SMTP session rather than Received fields — from mailauth's own pieces, with
// three changes that make it cheaper and none that changes a verdict or a header byte
// (test/filter-mailauth-checks.test.ts compares the two on the same messages):
//
//   - DKIM and ARC keys come from a key cache shared by all messages (src/filter/dkim-keys.ts)
//     instead of one per message;
//   - the message is handed to the DKIM verifier directly, not through a Writable stream fed
//     on setImmediate, and the end of the header section is found with indexOf instead of a
//     loop that allocates an array per header octet (lib/dkim/message-parser.js);
//   - SPF runs while the DKIM signatures are checked (authenticate() waits for DKIM first,
//     though SPF needs nothing from it without trustReceived), and the Received chain, which
//     popgate does not use, is not parsed.
//
// DMARC and ARC need the DKIM results, so they follow as in mailauth.
//
// With `memos` (the Authenticator's, for a resolver that can say what its cache holds), SPF and
// DMARC results are used again while the DNS answers they came from stand
// (src/filter/answer-memo.ts), with their Authentication-Results lines already folded.

const requireFromHere = createRequire(import.meta.url);

interface DkimVerifierInstance {
  keyCache: MessageKeyLookup;
  arc: { keyCache?: MessageKeyLookup };
  state: 'header' | 'body';
  headerBytes: number;
  headerFrom: string[];
  fromFields: number;
  envelopeFrom: string | false;
  results: DKIMVerifyResult['results'];
  writeAsync(chunk: Buffer): Promise<void>;
  finish(): Promise<void>;
  emitHeaders(chunk?: Buffer): Promise<void>;
  nextChunk(chunk: Buffer): Promise<void>;
  processChunk(chunk: Buffer): Promise<void>;
}
type DkimVerifierClass = new (options: { resolver: MailauthResolver; sender: string; strict: boolean }) => DkimVerifierInstance;

const { DkimVerifier } = requireFromHere('mailauth/lib/dkim/dkim-verifier.js') as { DkimVerifier: DkimVerifierClass };
const tools = requireFromHere('mailauth/lib/tools.js') as {
  formatAuthservId(authservId: string, strict: boolean): string;
  formatDomain(domain: string): string;
  getAlignment(fromDomain: string, domainList: string[], strict: boolean): { domain?: string } | false;
};
// mailauth's own libmime, whichever version it resolves to: the folding must be its.
const libmime = createRequire(requireFromHere.resolve('mailauth'))('libmime') as { foldLines(text: string, lineLength: number): string };

/** Messages are handed to the verifier in pieces of this size, other connections served between them (as mailauth's writeToStream does). */
const PIECE = 64 * 1024;

/**
 * mailauth's DKIM verifier with the shared key cache and a quicker way to the end of the
 * header section; the body hash, the signatures and the results are its own.
 */
class SharedKeyDkimVerifier extends DkimVerifier {
  constructor(resolver: MailauthResolver, sender: string, lookups: MessageKeyLookup) {
    super({ resolver, sender, strict: true });
    this.keyCache = lookups;
    this.arc.keyCache = this.keyCache; // ARC validation reuses the message's lookups through it
  }

  /**
   * The first piece (CRLF-clean: the parent's writeAsync splits at bare LFs) usually holds the
   * whole header section: its end is the first empty line, where the parent's loop would find
   * it (an empty first line is an empty header section, RFC 5322 §2.1). Anything else is the
   * parent's loop, from the start.
   */
  async processChunk(chunk: Buffer): Promise<void> {
    if (this.state === 'header' && this.headerBytes === 0 && chunk.length > 0) {
      const blank = chunk[0] === 0x0d && chunk[1] === 0x0a ? 0 : chunk.indexOf('\n\r\n');
      if (blank !== -1) {
        const end = blank === 0 ? 2 : blank + 3;
        this.headerBytes = end;
        if (end === chunk.length) return this.emitHeaders(chunk);
        await this.emitHeaders(chunk.subarray(0, end));
        return this.nextChunk(chunk.subarray(end));
      }
    }
    return super.processChunk(chunk);
  }
}

export interface MessageChecks {
  message: Buffer;
  ip: string;
  helo: string;
  /** MAIL FROM, "" for the null sender. */
  sender: string;
  /** popgate's hostname, the authserv-id. */
  hostname: string;
  resolver: MailauthResolver;
  keys: DkimKeyCache;
  memos?: CheckMemos;
}

type SpfResult = Awaited<ReturnType<typeof spf>>;
type DmarcEvaluation = Awaited<ReturnType<typeof evaluateDmarc>>;

/** SPF and DMARC results of one hostname (the authserv-id and SPF's receiver), each with its Authentication-Results line folded. */
export class CheckMemos {
  readonly spf: AnswerBoundMemo<{ result: SpfResult; line: string | undefined }>;
  readonly dmarc: AnswerBoundMemo<{ evaluated: DmarcEvaluation; line: string | undefined }>;

  constructor(answers: CachedAnswers, limit?: number) {
    this.spf = new AnswerBoundMemo(answers, limit);
    this.dmarc = new AnswerBoundMemo(answers, limit);
  }
}

/** SPF's %{t} macro (RFC 7208 §7.3) expands to the current time: a record using it is evaluated every time. */
const TIME_MACRO = /%\{t/i;
const usesTimeMacro = (answers: readonly { rrtype: string; answer: object }[]) => answers.some(({ rrtype, answer }) => rrtype === 'TXT' && Array.isArray(answer) && answer.some((record) => TIME_MACRO.test(String(record))));

/** authenticate(message, { ip, helo, sender, mta: hostname, resolver, strict: true, disableBimi: true }), as described above. */
export async function authenticateMessage(checks: MessageChecks): Promise<AuthenticateResult> {
  const { message, ip, sender, resolver } = checks;
  // RFC 8601 §2.5: a hostname that is not a token is quoted (or throws) before any work is done.
  const authservId = tools.formatAuthservId(checks.hostname, true);
  const helo = bracketed(checks.helo || ip);
  const evaluateSpf = async (through: MailauthResolver) => {
    const result = await spf({ sender, ip, helo, mta: checks.hostname, resolver: through as DNSResolver, strict: true } as Parameters<typeof spf>[0]);
    return { result, line: result ? libmime.foldLines(result.info, 160) : undefined };
  };
  const spfCheck = checks.memos
    ? checks.memos.spf.get(JSON.stringify([sender, ip, helo, checks.hostname]), resolver, evaluateSpf, (_, answers) => !usesTimeMacro(answers))
    : evaluateSpf(resolver);
  spfCheck.catch(() => {}); // awaited below, after DKIM
  const dkim = await verifyDkim(message, resolver, sender, checks.keys);
  const { result: spfResult, line: spfLine } = await spfCheck;

  const arcResult = await arc(dkim.arcData as Parameters<typeof arc>[0], { resolver: resolver as DNSResolver, strict: true, ip } as Parameters<typeof arc>[1]);

  const resultLines: string[] = [];
  for (const row of dkim.result.results) resultLines.push(libmime.foldLines((row as { info: string }).info, 160));
  if (spfLine !== undefined) resultLines.push(spfLine);
  if (arcResult?.info) resultLines.push(libmime.foldLines(arcResult.info, 160));

  let dmarcResult: AuthenticateResult['dmarc'] = false;
  if (dkim.result.headerFrom) {
    const dkimResults = dkim.result.results as (DKIMVerifyResult['results'][number] & { status: { aligned?: string | false } })[];
    const passing = dkimResults.filter((r) => r.status.result === 'pass');
    const spfDomains = spfResult && spfResult.status.result === 'pass' && spfResult.domain ? [spfResult.domain] : [];
    const evaluate = async (through: MailauthResolver) => {
      const evaluated = await evaluateDmarc({
        headerFrom: dkim.result.headerFrom,
        fromFields: dkim.fromFields,
        spfDomains,
        dkimDomains: passing.map((r) => ({ id: r.id, domain: r.signingDomain, aligned: r.status.aligned, underSized: r.status.underSized })),
        arcResult,
        resolver: through as DNSResolver,
        strict: true,
      } as Parameters<typeof evaluateDmarc>[0]);
      return { evaluated, line: evaluated.response && evaluated.response.info ? libmime.foldLines(evaluated.response.info, 160) : undefined };
    };
    // evaluateDmarc reads of a signature its domain and underSized (the id and aligned only pass through), and of ARC the result.
    const { evaluated, line: dmarcLine } = checks.memos
      ? await checks.memos.dmarc.get(
          JSON.stringify([dkim.result.headerFrom, dkim.fromFields, spfDomains, passing.map((r) => [r.signingDomain, r.status.underSized]), arcResult ? arcResult.status?.result : null]),
          resolver,
          evaluate,
        )
      : await evaluate(resolver);
    dmarcResult = evaluated.response;
    if (dmarcLine !== undefined) resultLines.push(dmarcLine);
    if (evaluated.dkimAligned && dmarcResult) {
      // As authenticate() does: passing signatures take the DMARC verdict on alignment,
      // failing ones the record's alignment mode.
      const fromDomain = dmarcResult.status.header!.from!;
      for (const row of dkimResults) {
        if (row.status.result === 'pass') row.status.aligned = evaluated.dkimAligned.has(tools.formatDomain(row.signingDomain!)) ? row.signingDomain : false;
        else if (dmarcResult.alignment.dkim.strict) row.status.aligned = (row.status.aligned && (tools.getAlignment(fromDomain, [row.signingDomain!], true) || undefined)?.domain) || false;
      }
    }
  }
  if (arcResult) (arcResult as { authResults?: string }).authResults = `${authservId};\r\n ${resultLines.join(';\r\n ')}`;

  // RFC 8601 §5: Authentication-Results above the other trace fields, Received-SPF among them (RFC 7208 §9.1).
  const headers = [`Authentication-Results: ${authservId};\r\n ${resultLines.join(';\r\n ')}`];
  if (spfResult?.header) headers.push(spfResult.header);
  return { dkim: dkim.result, spf: spfResult, dmarc: dmarcResult, arc: arcResult || false, bimi: false, headers: `${headers.join('\r\n')}\r\n` } as AuthenticateResult;
}

/** A HELO that is an address literal is checked as one (mailauth's bracket syntax). */
function bracketed(helo: string): string {
  return helo && isIP(helo) ? `[${helo}]` : helo;
}

async function verifyDkim(message: Buffer, resolver: MailauthResolver, sender: string, keys: DkimKeyCache) {
  // Most mail: every signature passes, and src/filter/dkim-pass.ts says so with mailauth's pieces alone.
  // The same key lookups for both: what one asked the DNS, the other does not ask again.
  const lookups = keys.forMessage(resolver);
  const passing = await passingDkim(message, sender, lookups);
  if (passing) return passing;
  const verifier = new SharedKeyDkimVerifier(resolver, sender, lookups);
  for (let offset = 0; offset < message.length; offset += PIECE) {
    if (offset > 0) await new Promise((resolve) => setImmediate(resolve));
    await verifier.writeAsync(message.subarray(offset, offset + PIECE));
  }
  await verifier.finish();
  const result = { headerFrom: verifier.headerFrom, fromFields: verifier.fromFields, envelopeFrom: verifier.envelopeFrom, results: verifier.results } as unknown as DKIMVerifyResult;
  return { result, fromFields: verifier.fromFields, arcData: verifier.arc };
}
