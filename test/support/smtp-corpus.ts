/**
 * Hostile and malformed messages, shipped with the tests so the malformed-MIME test has material
 * even on a machine without CPython's test_email data. CRLF line endings, as SMTP carries them.
 */
const crlf = (lines: string[]): string => lines.join('\r\n');

const head = (subject: string, extra: string[] = []): string[] => [
  'From: Mallory <mallory@example.org>',
  'To: victim@mail.test',
  `Subject: ${subject}`,
  'Date: Sun, 23 Nov 2026 10:00:00 +0000',
  `Message-ID: <${subject.replace(/\W+/g, '-')}@example.org>`,
  'MIME-Version: 1.0',
  ...extra,
];

function nested(depth: number): string[] {
  const lines: string[] = [];
  for (let i = 0; i < depth; i++) lines.push(`--b${i}`, `Content-Type: multipart/mixed; boundary="b${i + 1}"`, '');
  lines.push(`--b${depth}`, 'Content-Type: text/plain', '', 'deep inside', `--b${depth}--`);
  for (let i = depth - 1; i >= 0; i--) lines.push(`--b${i}--`);
  return lines;
}

function manyParts(n: number): string[] {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push('--many', `Content-Type: application/octet-stream; name="p${i}.bin"`, 'Content-Disposition: attachment', '', `part ${i}`);
  lines.push('--many--');
  return lines;
}

export const HOSTILE_MESSAGES: { name: string; raw: string }[] = [
  { name: 'deeply nested multipart', raw: crlf([...head('deeply nested', ['Content-Type: multipart/mixed; boundary="b0"']), '', ...nested(200), '']) },
  {
    name: 'missing closing boundary',
    raw: crlf([...head('no closing boundary', ['Content-Type: multipart/mixed; boundary="xyz"']), '', '--xyz', 'Content-Type: text/plain', '', 'text and then nothing', '']),
  },
  { name: 'boundary never appears', raw: crlf([...head('boundary never appears', ['Content-Type: multipart/alternative; boundary="nope"']), '', 'just text', '']) },
  {
    name: 'broken base64 attachment',
    raw: crlf([
      ...head('broken base64', ['Content-Type: multipart/mixed; boundary="q"']),
      '',
      '--q',
      'Content-Type: application/pdf; name="x.pdf"',
      'Content-Transfer-Encoding: base64',
      'Content-Disposition: attachment; filename="x.pdf"',
      '',
      '!!!! not base64 at all ####',
      'QUJD=====RA==',
      '--q--',
      '',
    ]),
  },
  { name: 'unknown charset', raw: crlf([...head('unknown charset', ['Content-Type: text/plain; charset="x-no-such-charset"']), '', 'caf\xe9', '']) },
  {
    name: 'garbage header lines',
    raw: crlf(['From: a@example.org', 'this line has no colon', ': empty name', 'X-\x01Control: y', 'Subject: garbage headers', '', 'body', '']),
  },
  { name: '8-bit bytes in headers', raw: crlf([...head('8bit \xe9\xe8\xff headers', ['X-Raw: \xc3\x28\xa0\xa1']), '', 'body', '']) },
  { name: 'malformed encoded words', raw: crlf([...head('=?utf-8?B?####?= =?unknown?Q?=ZZ?= =?utf-8?Q?ok?='), '', 'body', '']) },
  {
    name: 'broken quoted-printable',
    raw: crlf([...head('broken qp', ['Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: quoted-printable']), '', 'a=ZZb=\r\n=', 'c=E', '']),
  },
  {
    name: 'broken embedded message',
    raw: crlf([
      ...head('broken embedded', ['Content-Type: multipart/mixed; boundary="e"']),
      '',
      '--e',
      'Content-Type: message/rfc822',
      'Content-Disposition: inline',
      '',
      'Content-Type: multipart/mixed; boundary="inner"',
      '',
      '--inner',
      'garbage',
      '--e--',
      '',
    ]),
  },
  { name: 'very long header', raw: crlf([...head('long header', [`X-Long: ${'h'.repeat(200_000)}`]), '', 'body', '']) },
  { name: 'duplicate singleton headers', raw: crlf(['From: a@example.org', 'From: b@example.org', 'Subject: dup one', 'Subject: dup two', 'Date: not a date', 'Date: Mon, 1 Jan 2024 00:00:00 +0000', '', 'body', '']) },
  { name: 'garbage address headers', raw: crlf([...head('garbage addresses'), 'Cc: <<<@@@>>>, "unterminated, ;;; @', 'Reply-To: =?utf-8?B?broken', '', 'body', '']) },
  { name: 'headers only, no body', raw: crlf([...head('headers only')]) },
  { name: 'no headers at all', raw: crlf(['', 'a body without any header', '']) },
  { name: 'too many parts', raw: crlf([...head('too many parts', ['Content-Type: multipart/mixed; boundary="many"']), '', ...manyParts(600), '']) },
];
