import type { Mailstore, StoredMessage } from '../mailstore/store.ts';

// Workarounds for known bugs of old mail programs, as Dovecot's pop3_client_workarounds
// (doc.dovecot.org, pop3_client_workarounds) has them. They change what is sent, never what
// is stored, and the sizes POP3 announces (login, STAT, LIST, RETR) count what is sent.
//
// - "outlook-no-nuls": Outlook (2003 and later) hangs on a NUL byte in a message. NULs are
//   sent as 0x80, as Dovecot does: the same length, so no size changes.
// - "oe-ns-eoh": Outlook Express and Netscape mishandle a message without an end-of-headers
//   line (RFC 5322 §2.1: header, then an empty line, then the body). Where a message has none
//   (it is all header), an empty line is sent after it: 2 octets more, in RETR and TOP alike.

export const CLIENT_WORKAROUNDS = ['outlook-no-nuls', 'oe-ns-eoh'] as const;
export type ClientWorkaround = (typeof CLIENT_WORKAROUNDS)[number];

/** The octets an added end-of-headers line takes: CRLF. */
export const END_OF_HEADERS_OCTETS = 2;

const NUL = 0x00;
const REPLACEMENT = 0x80;
const LF = 0x0a;
const CR = 0x0d;

/** Replaces every NUL of `buffer` (a copy of the message, never the stored file) in place. */
export function replaceNuls(buffer: Buffer): void {
  for (let at = buffer.indexOf(NUL); at !== -1; at = buffer.indexOf(NUL, at + 1)) buffer[at] = REPLACEMENT;
}

/**
 * Looks for the empty line that ends a header, piece by piece, with the line rules of the POP3
 * encoder (src/pop3/transfer.ts): a line ends at LF, and is empty when nothing but a CR
 * precedes its LF.
 */
class EndOfHeadersScan {
  #lineBytes = 0;
  #lastWasCR = false;
  found = false;

  push(chunk: Buffer): void {
    let from = 0;
    while (!this.found) {
      const lf = chunk.indexOf(LF, from);
      if (lf === -1) {
        this.#lineBytes += chunk.length - from;
        if (chunk.length > 0) this.#lastWasCR = chunk[chunk.length - 1] === CR;
        return;
      }
      const bytes = this.#lineBytes + lf - from;
      const endsInCR = lf > from ? chunk[lf - 1] === CR : this.#lastWasCR;
      this.found = bytes === 0 || (bytes === 1 && endsInCR);
      this.#lineBytes = 0;
      this.#lastWasCR = false;
      from = lf + 1;
    }
  }
}

/** Most headers end within this many octets: one read decides for almost every message. */
const HEAD_BYTES = 16 * 1024;
/** Messages remembered (about 100 bytes each); the oldest are checked again after that. */
const CACHE_LIMIT = 1_000_000;

/**
 * Which messages lack an end-of-headers line. A message is looked at once per process: the
 * first listing that contains it reads its head (usually one read of at most 16 KiB), and the
 * answer is kept under its reference (a Maildir file name changes only with its flags, and its
 * content never). RETR itself then costs nothing more.
 */
export class EndOfHeadersCheck {
  readonly #store: Mailstore;
  readonly #missing = new Map<string, boolean>();
  readonly #head = Buffer.allocUnsafeSlow(HEAD_BYTES);

  constructor(store: Mailstore) {
    this.#store = store;
  }

  /** One flag per listed message: 1 where the message has no end-of-headers line. */
  async missing(messages: readonly StoredMessage[]): Promise<Uint8Array> {
    const flags = new Uint8Array(messages.length);
    for (let i = 0; i < messages.length; i++) {
      const ref = messages[i].ref;
      let missing = this.#missing.get(ref);
      if (missing === undefined) {
        try {
          missing = await this.#lacksEndOfHeaders(messages[i]);
        } catch (error) {
          // Gone since the listing (deleted by another program): RETR will say so.
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw error;
        }
        this.#remember(ref, missing);
      }
      if (missing) flags[i] = 1;
    }
    return flags;
  }

  async #lacksEndOfHeaders(message: StoredMessage): Promise<boolean> {
    if (this.#store.readInto) {
      const scan = new EndOfHeadersScan();
      const whole = this.#store.readInto(message, this.#head, 0, HEAD_BYTES, 0);
      // Undefined: the file filled the buffer and may go on; the head decides all the same
      // when the header ends in it.
      scan.push(whole ?? this.#head);
      if (whole || scan.found) return !scan.found;
    }
    const scan = new EndOfHeadersScan();
    for await (const chunk of this.#store.read(message)) {
      scan.push(chunk);
      if (scan.found) return false;
    }
    return true;
  }

  #remember(ref: string, missing: boolean): void {
    if (this.#missing.size >= CACHE_LIMIT) {
      for (const oldest of this.#missing.keys()) {
        this.#missing.delete(oldest);
        break;
      }
    }
    this.#missing.set(ref, missing);
  }
}
