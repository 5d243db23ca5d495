// Dovecot's pop3_uidl_format (Dovecot 2.3 default "%08Xu%08Xv"): the UIDL a message without a
// kept one ("P" in dovecot-uidlist) is served under. Expanded as Dovecot's var_expand()
// (src/lib/var-expand.c) does: "%[-][0][width][.[0][-]width][modifiers]<variable>", where a
// width pads with zeros when it starts with 0 and otherwise cuts, an offset (before ".") skips
// characters, and the modifiers L (lower case), U (upper case) and X (decimal to hexadecimal,
// lower case) apply in order. Variables: %u / %{uid}, %v / %{uidvalidity}, %f / %{filename}
// (the Maildir base name), %g / %{guid}, %%. The header MD5 (%m) exists only for mbox.

export class UidlFormatError extends Error {}

export interface UidlVariables {
  uid: number;
  uidValidity: number;
  /** The Maildir file name before ":". */
  filename: string;
  /** The G field of the message's uidlist record, else the base file name (as Dovecot does). */
  guid: string;
}

type Variable = 'uid' | 'uidValidity' | 'filename' | 'guid';

type Part = string | { variable: Variable; modifiers: string; offset: number; width: number; zeroPadding: boolean };

const SHORT: Record<string, Variable> = { u: 'uid', v: 'uidValidity', f: 'filename', g: 'guid' };
const LONG: Record<string, Variable> = { uid: 'uid', uidvalidity: 'uidValidity', filename: 'filename', guid: 'guid' };

export class UidlFormat {
  readonly #parts: Part[];
  /** Whether the format needs the message's uidlist record (UID, UID validity or GUID). */
  readonly needsUid: boolean;

  readonly text: string;

  constructor(text: string) {
    this.text = text;
    if (text.length === 0 || text.length > 200) throw new UidlFormatError('the UIDL format must have 1 to 200 characters');
    this.#parts = parse(text);
    this.needsUid = this.#parts.some((part) => typeof part !== 'string' && part.variable !== 'filename');
  }

  expand(values: UidlVariables): string {
    let out = '';
    for (const part of this.#parts) {
      if (typeof part === 'string') {
        out += part;
        continue;
      }
      let value = String(values[part.variable]);
      for (const modifier of part.modifiers) {
        if (modifier === 'L') value = value.toLowerCase();
        else if (modifier === 'U') value = value.toUpperCase();
        else value = /^\d+$/.test(value) ? BigInt(value).toString(16) : '0';
      }
      if (part.offset < 0) {
        if (value.length > -part.offset) value = value.slice(value.length + part.offset);
      } else value = value.slice(part.offset);
      if (part.width === 0) out += value;
      else if (part.zeroPadding) out += value.padStart(part.width, '0');
      else out += value.slice(0, part.width < 0 ? Math.max(0, value.length + part.width) : part.width);
    }
    return out;
  }
}

function parse(text: string): Part[] {
  const parts: Part[] = [];
  let literal = '';
  let i = 0;
  const digits = () => {
    let value = 0;
    const start = i;
    while (i < text.length && text[i] >= '0' && text[i] <= '9') value = value * 10 + Number(text[i++]);
    if (i - start > 4) throw new UidlFormatError(`a width in "${text}" is too large`);
    return value;
  };
  while (i < text.length) {
    if (text[i] !== '%') {
      literal += text[i++];
      continue;
    }
    const start = i++;
    let sign = 1;
    if (text[i] === '-') {
      sign = -1;
      i++;
    }
    let zeroPadding = false;
    if (text[i] === '0') {
      zeroPadding = true;
      i++;
    }
    let width = digits();
    let offset = 0;
    if (text[i] === '.') {
      offset = sign * width;
      sign = 1;
      i++;
      zeroPadding = false;
      if (text[i] === '0') {
        zeroPadding = true;
        i++;
      }
      if (text[i] === '-') {
        sign = -1;
        i++;
      }
      width = digits();
    }
    width *= sign;
    let modifiers = '';
    while ('LUX'.includes(text[i] ?? '') && text[i] !== undefined) modifiers += text[i++];
    if (/^[ERHNMDT]$/.test(text[i] ?? '')) throw new UidlFormatError(`the modifier %${text[i]} in "${text}" is not supported (only L, U and X)`);
    let variable: Variable | undefined;
    if (text[i] === '%' && i === start + 1) {
      literal += '%';
      i++;
      continue;
    } else if (text[i] === '{') {
      const end = text.indexOf('}', i);
      if (end === -1) throw new UidlFormatError(`"${text}" has a "%{" without its "}"`);
      const name = text.slice(i + 1, end);
      if (name === 'md5') throw new UidlFormatError('%{md5} (the header MD5) exists only for mbox mailboxes');
      variable = LONG[name];
      if (!variable) throw new UidlFormatError(`unknown variable %{${name}} in "${text}" (uid, uidvalidity, filename, guid)`);
      i = end + 1;
    } else {
      const key = text[i];
      if (key === undefined) throw new UidlFormatError(`"${text}" ends inside a variable`);
      if (key === 'm') throw new UidlFormatError('%m (the header MD5) exists only for mbox mailboxes');
      variable = SHORT[key];
      if (!variable) throw new UidlFormatError(`unknown variable %${key} in "${text}" (%u, %v, %f, %g)`);
      i++;
    }
    if (literal) parts.push(literal);
    literal = '';
    parts.push({ variable, modifiers, offset, width, zeroPadding });
  }
  if (literal) parts.push(literal);
  return parts;
}
