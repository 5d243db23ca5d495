'use strict';
// Haraka queue plugin for the popgate benchmark (copied into the instance's plugins/ dir by
// bench/peers/index.ts). Haraka ships no local delivery, so this gives it popgate's guarantee:
// 250 only once the message is on disk. Each message is written to tmp/ of every recipient's
// Maildir, fsync'd, renamed into new/, and new/ is fsync'd so the rename itself survives a
// crash; only then does next(OK) let Haraka answer 250.
//
// config/maildirs.json maps each address (lower case) to its Maildir. Recipients in a domain of
// host_list without a Maildir are refused at RCPT (550), before rcpt_to.in_host_list accepts the
// whole domain, as Postfix refuses addresses missing from virtual_mailbox_maps.
//
// The message is stored with CRLF line ends as received, as popgate stores it, so a POP3 server
// can send it as is.

const fs = require('node:fs/promises');
const path = require('node:path');
const os = require('node:os');

const hostname = os.hostname().replace(/[/:]/g, '_');
let sequence = 0;

// @haraka/email-address 3 has `address` and `host` as strings; older Haraka passes objects
// where they are methods. Either way, the lower-case string.
const field = (addr, name) => String(typeof addr[name] === 'function' ? addr[name]() : addr[name]).toLowerCase();

exports.register = function () {
  this.load_maildirs();
};

exports.load_maildirs = function () {
  this.maildirs = this.config.get('maildirs.json', 'json', () => this.load_maildirs());
  this.domains = new Set(Object.keys(this.maildirs).map((address) => address.slice(address.lastIndexOf('@') + 1)));
};

// Haraka looks up every client's reverse DNS unless a plugin answers for it; the benchmark's
// resolver knows no names (Postfix here runs with smtpd_peername_lookup = no, the same thing).
exports.hook_lookup_rdns = function (next) {
  next(OK, 'unknown');
};

exports.hook_rcpt = function (next, connection, params) {
  const rcpt = params[0];
  if (this.maildirs[field(rcpt, 'address')]) return next();
  if (this.domains.has(field(rcpt, 'host'))) return next(DENY, 'No such user here');
  return next(); // not ours to judge: rcpt_to.in_host_list decides
};

exports.hook_queue = function (next, connection) {
  const transaction = connection.transaction;
  const targets = [];
  for (const rcpt of transaction.rcpt_to) {
    const maildir = this.maildirs[field(rcpt, 'address')];
    if (!maildir) return next(DENY, `No mailbox for ${field(rcpt, 'address')}`);
    targets.push(maildir);
  }
  transaction.message_stream.get_data({ line_endings: '\r\n' }, (message) => {
    Promise.all(targets.map((maildir) => deliver(maildir, message))).then(
      (names) => next(OK, `Queued as ${names[0]}`),
      (error) => {
        connection.logerror(this, `Maildir delivery failed: ${error.message}`);
        next(DENYSOFT, 'Could not store the message, try again later');
      },
    );
  });
};

/** tmp/ -> fsync -> new/ -> fsync of new/; resolves with the file name. */
async function deliver(maildir, message) {
  const now = Date.now();
  const seconds = Math.floor(now / 1000);
  const unique = `${seconds}.M${(now % 1000) * 1000}P${process.pid}Q${++sequence}.${hostname},S=${message.length}`;
  const tmpFile = path.join(maildir, 'tmp', unique);
  const file = await fs.open(tmpFile, 'wx', 0o600);
  try {
    await file.writeFile(message);
    await file.sync();
  } catch (error) {
    await file.close();
    await fs.rm(tmpFile, { force: true });
    throw error;
  }
  await file.close();
  await fs.rename(tmpFile, path.join(maildir, 'new', unique));
  const dir = await fs.open(path.join(maildir, 'new'), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return unique;
}
