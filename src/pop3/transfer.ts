import { replaceNuls } from './workarounds.ts';

// Encodes a stored message for a POP3 multi-line response (RFC 1939 §3): every line ends in
// CRLF whatever the file uses, a line beginning with "." gets a second ".", and the caller
// appends the ".\r\n" terminator. For TOP (RFC 1939 §7) it stops after the header, the blank
// line and the first `bodyLines` lines of the body. Runs of ordinary bytes are passed on as
// views of the input chunk, never copied. The client workarounds (src/pop3/workarounds.ts)
// are applied on the way: NULs replaced in the chunk itself (a copy read for sending), an
// end-of-headers line added after a message that is all header.

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF = Buffer.from('\r\n');
const LF_ONLY = Buffer.from('\n');
const DOT_BYTE = Buffer.from('.');

export class MultilineEncoder {
  #atLineStart = true;
  #lineBytes = 0;
  #lastWasCR = false;
  #inHeader = true;
  #bodyLinesLeft: number;
  #done = false;
  readonly #replaceNuls: boolean;
  readonly #addEndOfHeaders: boolean;

  constructor(bodyLines = Infinity, fixes: { replaceNuls?: boolean; addEndOfHeaders?: boolean } = {}) {
    this.#bodyLinesLeft = bodyLines;
    this.#replaceNuls = fixes.replaceNuls ?? false;
    this.#addEndOfHeaders = fixes.addEndOfHeaders ?? false;
  }

  /** True once TOP's line limit is reached: the rest of the file need not be read. */
  get done(): boolean {
    return this.#done;
  }

  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (this.#done) return out;
    if (this.#replaceNuls) replaceNuls(chunk);
    const length = chunk.length;
    let start = 0;
    let i = 0;
    while (i < length) {
      if (this.#atLineStart) {
        this.#atLineStart = false;
        this.#lineBytes = 0;
        this.#lastWasCR = false;
        if (chunk[i] === DOT) {
          if (i > start) out.push(chunk.subarray(start, i));
          out.push(DOT_BYTE);
          start = i;
        }
      }
      const lf = chunk.indexOf(LF, i);
      if (lf === -1) {
        this.#lineBytes += length - i;
        this.#lastWasCR = chunk[length - 1] === CR;
        break;
      }
      this.#lineBytes += lf - i;
      const hadCR = lf > i ? chunk[lf - 1] === CR : i === 0 && this.#lastWasCR;
      if (!hadCR) {
        if (lf > start) out.push(chunk.subarray(start, lf));
        out.push(CRLF);
        start = lf + 1;
      }
      const empty = this.#lineBytes - (hadCR ? 1 : 0) === 0;
      i = lf + 1;
      this.#atLineStart = true;
      let limitReached = false;
      if (this.#inHeader) {
        if (empty) {
          this.#inHeader = false;
          limitReached = this.#bodyLinesLeft === 0;
        }
      } else if (this.#bodyLinesLeft !== Infinity) {
        limitReached = --this.#bodyLinesLeft <= 0;
      }
      if (limitReached) {
        if (i > start) out.push(chunk.subarray(start, i));
        this.#done = true;
        return out;
      }
    }
    if (length > start) out.push(chunk.subarray(start, length));
    return out;
  }

  /**
   * What must follow the last chunk so the response ends on a line boundary, and, with
   * `addEndOfHeaders`, the empty line a message that never left its header lacks.
   */
  end(): Buffer[] {
    if (this.#done) return [];
    const out = this.#atLineStart ? [] : [this.#lastWasCR ? LF_ONLY : CRLF];
    if (this.#addEndOfHeaders && this.#inHeader) out.push(CRLF);
    return out;
  }
}
