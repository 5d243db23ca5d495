// Reads the DATA section of an SMTP transaction (RFC 5321 §4.1.1.4, §4.5.2).
//
// Only <CRLF>.<CRLF> ends the data. A bare LF or a bare CR anywhere is remembered and the
// message is refused after the real end (550 5.5.2), so the session stays in step with the
// client: this is the SMTP smuggling defence. A bare LF never starts a new line here, so
// "\n.\r\n", "\n.\n" and "\r.\r" can never end the data early. Leading dots are removed
// (transparency, §4.5.2). Content goes to a sink as views of the input chunks (the session's
// sink, src/smtp/incoming-body.ts, keeps it in memory or a file, as it sees fit).

/** Where the message's octets go as they are read. */
export interface BodySink {
  append(piece: Buffer): void;
  /** The message grew past the size limit: nothing of it is wanted any more. */
  discard(): void;
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CR_BYTE = Buffer.from('\r');

const MID_LINE = 0;
const LINE_START = 1;
const AFTER_CR = 2;
const AFTER_DOT = 3; // a "." at the start of a line
const AFTER_DOT_CR = 4; // ".\r" at the start of a line: the end, if LF follows

export class DataReader {
  #state = LINE_START;
  #size = 0;
  #firstBareOffset: number | undefined;
  #offset = 0;
  readonly #maxSize: number;
  readonly #sink: BodySink;

  constructor(maxSize: number, sink: BodySink) {
    this.#maxSize = maxSize;
    this.#sink = sink;
  }

  /** Message octets received so far (after removing stuffed dots). */
  get size(): number {
    return this.#size;
  }

  get tooBig(): boolean {
    return this.#size > this.#maxSize;
  }

  /** Byte offset of the first bare CR or LF, if any. */
  get bareLineEnding(): number | undefined {
    return this.#firstBareOffset;
  }

  /**
   * Consumes a chunk. Returns undefined while the data goes on, or the bytes after the
   * terminating <CRLF>.<CRLF> (the next pipelined commands) once it has ended.
   */
  push(chunk: Buffer): Buffer | undefined {
    let segmentStart = 0;
    let state = this.#state;
    const length = chunk.length;
    let i = 0;
    while (i < length) {
      if (state === MID_LINE) {
        // Almost every byte is ordinary, and CR and LF sort below all printable ones: one
        // comparison per byte until a line end (this loop is most of the work for large mail).
        let byte = chunk[i];
        while (byte > CR || (byte !== CR && byte !== LF)) {
          if (++i === length) break;
          byte = chunk[i];
        }
        if (i === length) break;
        if (byte === CR) state = AFTER_CR;
        else this.#bare(i); // a bare LF does not end the line
        i++;
        continue;
      }
      const byte = chunk[i];
      if (state === LINE_START) {
        if (byte === DOT) {
          this.#emit(chunk, segmentStart, i);
          segmentStart = i + 1; // the stuffed dot is dropped
          state = AFTER_DOT;
          i++;
        } else {
          state = MID_LINE; // and this byte is read as part of the line
        }
      } else if (state === AFTER_DOT) {
        if (byte === CR) {
          this.#emit(chunk, segmentStart, i);
          segmentStart = i + 1; // held back: part of the terminator if LF follows
          state = AFTER_DOT_CR;
          i++;
        } else {
          state = MID_LINE;
        }
      } else if (state === AFTER_DOT_CR) {
        if (byte === LF) {
          this.#emit(chunk, segmentStart, segmentStart); // nothing: ".\r\n" is not content
          this.#state = LINE_START;
          this.#offset += i + 1;
          return chunk.subarray(i + 1);
        }
        // ".\r" followed by something else: the CR was content after all, and bare.
        this.#emit(chunk, segmentStart, i);
        this.#emitBuffer(CR_BYTE);
        segmentStart = i;
        this.#bare(i - 1);
        state = MID_LINE;
      } else {
        // AFTER_CR
        if (byte === LF) {
          state = LINE_START;
          i++;
        } else {
          this.#bare(i - 1);
          state = MID_LINE;
        }
      }
    }
    this.#emit(chunk, segmentStart, length);
    this.#state = state;
    this.#offset += length;
    return undefined;
  }

  #bare(index: number): void {
    this.#firstBareOffset ??= this.#offset + Math.max(0, index);
  }

  #emit(chunk: Buffer, start: number, end: number): void {
    if (end > start) this.#emitBuffer(chunk.subarray(start, end));
  }

  #emitBuffer(piece: Buffer): void {
    const wasTooBig = this.tooBig;
    this.#size += piece.length;
    if (this.tooBig) {
      if (!wasTooBig) this.#sink.discard();
      return;
    }
    this.#sink.append(piece);
  }
}
