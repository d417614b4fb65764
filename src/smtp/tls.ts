import { generateKeyPairSync, randomBytes, sign, X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.js';

/**
 * TLS material for STARTTLS and SMTPS: the operator's key and certificate (TLS_KEY/TLS_CERT,
 * PEM files), or else a self-signed certificate generated once into DATA_DIR/tls and reused.
 *
 * The self-signed certificate is made with node:crypto alone (an ECDSA P-256 key and a minimal
 * X.509 v3 certificate encoded here in DER), so there is no dependency on an openssl binary.
 */

export interface TlsMaterial {
  key: string;
  cert: string;
  selfSigned: boolean;
}

export function loadTlsMaterial(opts: { keyFile?: string; certFile?: string; dataDir: string; hostname: string; logger: Logger }): TlsMaterial {
  if (opts.keyFile && opts.certFile) {
    const read = (file: string, name: string): string => {
      try {
        return readFileSync(file, 'utf8');
      } catch (error) {
        throw new Error(`${name}: cannot read ${file}: ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    const key = read(opts.keyFile, 'TLS_KEY');
    const cert = read(opts.certFile, 'TLS_CERT');
    try {
      const x509 = new X509Certificate(cert);
      if (!x509.checkPrivateKey(createPrivateKey(key))) throw new Error('the key does not match the certificate');
    } catch (error) {
      throw new Error(`TLS_KEY/TLS_CERT: ${error instanceof Error ? error.message : String(error)}`);
    }
    return { key, cert, selfSigned: false };
  }
  const dir = path.join(opts.dataDir, 'tls');
  const keyFile = path.join(dir, 'smtp-selfsigned-key.pem');
  const certFile = path.join(dir, 'smtp-selfsigned-cert.pem');
  try {
    const key = readFileSync(keyFile, 'utf8');
    const cert = readFileSync(certFile, 'utf8');
    const x509 = new X509Certificate(cert);
    const stillValid = Date.parse(x509.validTo) > Date.now() + 30 * 86_400_000;
    if (stillValid && x509.checkPrivateKey(createPrivateKey(key)) && x509.checkHost(opts.hostname)) {
      opts.logger.warn({ certFile }, 'STARTTLS uses a self-signed certificate (set TLS_KEY and TLS_CERT for a real one)');
      return { key, cert, selfSigned: true };
    }
  } catch {
    // missing or unusable: make a new one
  }
  const { key, cert } = selfSignedCertificate(opts.hostname);
  mkdirSync(dir, { recursive: true });
  const write = (file: string, content: string, mode: number): void => {
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, content, { mode });
    renameSync(tmp, file);
  };
  write(keyFile, key, 0o600);
  write(certFile, cert, 0o644);
  opts.logger.warn({ certFile }, 'generated a self-signed certificate for STARTTLS (set TLS_KEY and TLS_CERT for a real one)');
  return { key, cert, selfSigned: true };
}

// --- a minimal DER encoder, enough for one self-signed certificate ---------------------------

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

const tlv = (tag: number, ...content: Buffer[]): Buffer => {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
};
const seq = (...parts: Buffer[]): Buffer => tlv(0x30, ...parts);
const set = (...parts: Buffer[]): Buffer => tlv(0x31, ...parts);
/** A non-negative INTEGER in minimal form (DER refuses redundant leading zero bytes). */
export function derInteger(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i += 1;
  const v = bytes.subarray(i);
  return tlv(0x02, v[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
const octets = (b: Buffer): Buffer => tlv(0x04, b);
const bits = (b: Buffer): Buffer => tlv(0x03, Buffer.from([0]), b);
const bool = (v: boolean): Buffer => tlv(0x01, Buffer.from([v ? 0xff : 0]));

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [a! * 40 + b!];
  for (const n of rest) {
    const chunk = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${iso}Z`));
}

const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';
const COMMON_NAME = '2.5.4.3';
const SUBJECT_ALT_NAME = '2.5.29.17';
const BASIC_CONSTRAINTS = '2.5.29.19';

export function selfSignedCertificate(hostname: string, days = 3650): { key: string; cert: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const name = seq(set(seq(oid(COMMON_NAME), utf8(hostname))));
  const now = Date.now();
  const algorithm = seq(oid(ECDSA_WITH_SHA256));
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f;
  const extensions = seq(
    seq(oid(SUBJECT_ALT_NAME), octets(seq(tlv(0x82, Buffer.from(hostname, 'ascii'))))),
    seq(oid(BASIC_CONSTRAINTS), bool(true), octets(seq())),
  );
  const tbs = seq(
    tlv(0xa0, derInteger(Buffer.from([2]))),
    derInteger(serial),
    algorithm,
    name,
    seq(time(new Date(now - 3_600_000)), time(new Date(now + days * 86_400_000))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    tlv(0xa3, extensions),
  );
  const signature = sign('sha256', tbs, privateKey);
  const der = seq(tbs, algorithm, bits(signature));
  const pem = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END CERTIFICATE-----\n`;
  return { key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), cert: pem };
}
