import { randomFillSync } from 'node:crypto';

// Random parts of Maildir names and queue ids, several per message: drawn from a pool filled
// 4 KiB at a time, because each randomBytes() call is a trip into OpenSSL that costs far more
// than the few bytes it returns. The bytes are the same CSPRNG's.

const POOL_SIZE = 4096;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let offset = POOL_SIZE;

/** `bytes` random bytes as lowercase hex. */
export function randomHex(bytes: number): string {
  if (offset + bytes > POOL_SIZE) {
    randomFillSync(pool);
    offset = 0;
  }
  const text = pool.toString('hex', offset, offset + bytes);
  offset += bytes;
  return text;
}
