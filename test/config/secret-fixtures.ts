import { createHash, generateKeyPairSync, KeyObject } from "crypto";

/**
 * Secret values shaped like the real ones (so the config check accepts them), each
 * distinct per `tag`, for tests that plant or rotate secrets. Not a real credential.
 */

/** `length` hex digits wholly of `tag` and `what`: two tags share no prefix, suffix or middle. */
export function hex(tag: string, what: string, length: number): string {
  let out = "";
  for (let i = 0; out.length < length; i++) out += createHash("sha256").update(`${tag}:${what}:${i}`).digest("hex");
  return out.slice(0, length);
}

const rsaKeys = new Map<string, string>();
/** A PKCS#1 RSA private key, as GitHub issues a GitHub App's key (generated once per tag). */
export function rsaPrivateKeyPem(tag: string, bits = 2048): string {
  const k = `${tag}:${bits}`;
  if (!rsaKeys.has(k)) {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: bits, publicExponent: 0x10001 });
    rsaKeys.set(k, privateKey.export({ type: "pkcs1", format: "pem" }).toString());
  }
  return rsaKeys.get(k)!;
}

/** Buffer.concat, typed for the installed @types/node (Buffer vs Uint8Array<ArrayBuffer>). */
const concat = (parts: Buffer[]): Buffer => Buffer.concat(parts as unknown as Uint8Array[]);

function sshString(b: Buffer | string): Buffer {
  const body = typeof b === "string" ? Buffer.from(b, "utf8") : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return concat([len, body]);
}
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * An `openssh-key-v1` ed25519 private key as `ssh-keygen -t ed25519` writes it (PROTOCOL.key).
 * `cipher` other than "none" makes a key that claims a passphrase (its private section is junk).
 */
export function opensshPrivateKey(tag: string, options: { cipher?: string; magic?: string; checkMismatch?: boolean } = {}): string {
  const cipher = options.cipher ?? "none";
  const { privateKey, publicKey } = generateKeyPairSync("ed25519") as { privateKey: KeyObject; publicKey: KeyObject };
  const pub = Buffer.from(publicKey.export({ format: "jwk" }).x as string, "base64url");
  const seed = Buffer.from(privateKey.export({ format: "jwk" }).d as string, "base64url");
  const publicBlob = concat([sshString("ssh-ed25519"), sshString(pub)]);
  const check = parseInt(hex(tag, "check", 8), 16);
  let priv = concat([
    u32(check),
    u32(options.checkMismatch ? (check ^ 1) >>> 0 : check),
    sshString("ssh-ed25519"),
    sshString(pub),
    sshString(concat([seed, pub])),
    sshString(`deploy-key-${tag}`),
  ]);
  const pad: number[] = [];
  for (let i = 1; (priv.length + pad.length) % 8 !== 0; i++) pad.push(i);
  priv = concat([priv, Buffer.from(pad)]);
  const blob = concat([
    Buffer.from(options.magic ?? "openssh-key-v1\0", "binary"),
    sshString(cipher),
    sshString(cipher === "none" ? "none" : "bcrypt"),
    sshString(cipher === "none" ? Buffer.alloc(0) : concat([sshString(Buffer.alloc(16, 7)), u32(16)])),
    u32(1),
    sshString(publicBlob),
    sshString(priv),
  ]);
  const lines = blob.toString("base64").match(/.{1,70}/g)!;
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join("\n")}\n-----END OPENSSH PRIVATE KEY-----\n`;
}

/** A GitHub App's OAuth client id in the classic `Iv1.` + 16 hex form. */
export const githubClientId = (tag: string) => `Iv1.${hex(tag, "client-id", 16)}`;
/** A GitHub OAuth client secret: 40 hex digits. */
export const githubClientSecret = (tag: string) => hex(tag, "client-secret", 40);
