// Dovecot's dovecot-uidlist, the file that gives each Maildir message its IMAP UID and, for
// POP3, a kept UIDL and place in the order (src/lib-storage/index/maildir/maildir-uidlist.c):
//
//   version 3 (Dovecot 1.1 and later):  header  3 V<uidvalidity> N<nextuid> G<mailbox guid> ...
//                                       record  <uid> [<key><value> ...] :<filename>
//   version 1 (Dovecot 1.0, Courier):   header  1 <uidvalidity> <nextuid>
//                                       record  <uid> <filename>
//
// Record keys are one upper-case letter: S file size, W size with CRLF, P the POP3 UIDL (empty:
// the base file name), O the POP3 order (listed first, lowest first), G the message GUID.
// Dovecot replaces the file whole (it writes dovecot-uidlist.lock and renames it), so a last
// line without its line end, UIDs out of order or a line of another form mean the file is
// damaged: it is refused whole, with the line that shows it.

export class UidlistError extends Error {}

export interface UidlistRecord {
  uid: number;
  /** The record's fields by key (P, O, G, S, W ...). */
  fields: Map<string, string>;
  filename: string;
}

export interface Uidlist {
  version: 1 | 3;
  uidValidity: number;
  nextUid: number;
  /** The records by base file name (the name before ":", as Dovecot matches files). */
  records: Map<string, UidlistRecord>;
}

/** Limits: a real uidlist of a million messages is some 60 MB. */
export const UIDLIST_LIMITS = { bytes: 256 * 1024 * 1024, lineLength: 8192 };

const UINT32_MAX = 0xffff_ffff;

/** The name Dovecot matches a file by: everything before the ":" of its flags. */
export function baseName(filename: string): string {
  const colon = filename.indexOf(':');
  return colon === -1 ? filename : filename.slice(0, colon);
}

export function parseUidlist(text: string): Uidlist {
  if (text.length > UIDLIST_LIMITS.bytes) throw new UidlistError(`larger than ${UIDLIST_LIMITS.bytes} bytes`);
  if (text === '') throw new UidlistError('empty');
  if (!text.endsWith('\n')) throw new UidlistError('truncated: the last line has no line end');
  const lines = text.split('\n');
  lines.pop();
  const fail = (index: number, why: string): never => {
    const line = lines[index];
    throw new UidlistError(`line ${index + 1}: ${why}: ${JSON.stringify(line.length > 80 ? `${line.slice(0, 80)}...` : line)}`);
  };
  for (let i = 0; i < lines.length; i++) if (lines[i].length > UIDLIST_LIMITS.lineLength) fail(i, `longer than ${UIDLIST_LIMITS.lineLength} characters`);

  const header = lines[0].split(' ');
  let uidValidity = 0;
  let nextUid = 0;
  let version: 1 | 3;
  if (header[0] === '3') {
    version = 3;
    for (const field of header.slice(1)) {
      if (field === '') continue;
      const value = field.slice(1);
      if (field[0] === 'V') uidValidity = number(value);
      else if (field[0] === 'N') nextUid = number(value);
    }
  } else if (header[0] === '1' && header.length === 3) {
    version = 1;
    uidValidity = number(header[1]);
    nextUid = number(header[2]);
  } else {
    return fail(0, header[0] === '2' ? 'version 2 (written only by development versions of Dovecot 1.0) is not read' : 'not a dovecot-uidlist header');
  }
  if (!(uidValidity > 0 && uidValidity <= UINT32_MAX)) fail(0, 'no valid UID validity');
  if (!(nextUid > 0 && nextUid <= UINT32_MAX)) fail(0, 'no valid next UID');

  const records = new Map<string, UidlistRecord>();
  let previousUid = 0;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const space = line.indexOf(' ');
    const uid = space > 0 ? number(line.slice(0, space)) : NaN;
    if (!(uid > 0 && uid < UINT32_MAX)) fail(i, 'no valid UID');
    if (uid <= previousUid) fail(i, `UID ${uid} is not above the UID before it (${previousUid})`);
    if (version === 1 && uid >= nextUid) fail(i, `UID ${uid} is not below the next UID ${nextUid}`);
    previousUid = uid;
    const fields = new Map<string, string>();
    let filename: string;
    if (version === 3) {
      const colon = line.indexOf(' :', space);
      const fieldText = colon === -1 ? fail(i, 'no " :" before the file name') : line.slice(space + 1, colon);
      for (const field of fieldText.split(' ')) {
        if (field === '') continue;
        if (!/^[A-Z]/.test(field)) fail(i, `field "${field}" does not start with an upper-case key`);
        fields.set(field[0], field.slice(1));
      }
      filename = line.slice(colon + 2);
    } else {
      filename = line.slice(space + 1);
    }
    if (filename === '' || filename.includes('/') || filename.includes(' ')) fail(i, 'no valid file name');
    // A file listed twice (a message expunged and moved back): the later UID holds, as in Dovecot.
    records.set(baseName(filename), { uid, fields, filename });
  }
  return { version, uidValidity, nextUid, records };
}

function number(text: string): number {
  return /^\d{1,10}$/.test(text) ? Number(text) : NaN;
}
