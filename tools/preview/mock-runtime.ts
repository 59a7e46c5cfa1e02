import { createHash } from "crypto";
import { readFileSync } from "fs";
import { join as pathJoin } from "path";
import * as pulumi from "@pulumi/pulumi";
import type { CapturedResource } from "../../policy/offline";

/**
 * Pulumi mock runtime for the offline preview and the tests: records every resource
 * registration with realistic, deterministic outputs, and refuses every data-source
 * call so a lookup can never silently return nothing.
 */

/** The value written wherever a secret would be. */
export const SECRET_MASK = "[secret]";

// The shape resources.json stores; the offline policy check reads the same objects.
export type { CapturedResource } from "../../policy/offline";
/** Resource hook names by binding (`beforeDelete`: [...]): resources.json `options.hooks`. */
export type HookNames = Partial<Record<keyof pulumi.ResourceHookBinding, string[]>>;
type ReplacementOptions = CapturedResource["options"] & { hooks?: HookNames };

export interface MockAccount {
  accountId: string;
  region: string;
}

type Plain = Record<string, unknown>;

export function isSecretEnvelope(v: unknown): v is { value: unknown } {
  return (
    typeof v === "object" &&
    v !== null &&
    (v as Plain)[pulumi.runtime.specialSigKey] === pulumi.runtime.specialSecretSig
  );
}

function wrapSecret(value: unknown): Plain {
  return { [pulumi.runtime.specialSigKey]: pulumi.runtime.specialSecretSig, value };
}

/** Replaces every secret envelope by SECRET_MASK (for files) and collects the plain values. */
export function maskSecrets(v: unknown, found?: Set<string>): unknown {
  if (isSecretEnvelope(v)) {
    if (found) collectStrings(v.value, found);
    return SECRET_MASK;
  }
  if (Array.isArray(v)) return v.map((x) => maskSecrets(x, found));
  if (typeof v === "object" && v !== null) {
    const out: Plain = {};
    for (const [k, x] of Object.entries(v as Plain)) out[k] = maskSecrets(x, found);
    return out;
  }
  return v;
}

/** Unwraps secret envelopes, keeping plain values (for in-memory checks only). */
export function unwrapSecrets(v: unknown): unknown {
  if (isSecretEnvelope(v)) return unwrapSecrets(v.value);
  if (Array.isArray(v)) return v.map(unwrapSecrets);
  if (typeof v === "object" && v !== null) {
    const out: Plain = {};
    for (const [k, x] of Object.entries(v as Plain)) out[k] = unwrapSecrets(x);
    return out;
  }
  return v;
}

function collectStrings(v: unknown, into: Set<string>): void {
  if (typeof v === "string") {
    if (v.length > 0) into.add(v);
  } else if (Array.isArray(v)) v.forEach((x) => collectStrings(x, into));
  else if (typeof v === "object" && v !== null) Object.values(v as Plain).forEach((x) => collectStrings(x, into));
}

function digest(...parts: string[]): string {
  return createHash("sha256").update(parts.join("\u0000")).digest("hex");
}

function uuidFrom(seed: string): string {
  const h = digest(seed);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** A deterministic, syntactically valid PEM block (not a real key: the mock never needs one). */
export function fakePem(label: string, seed: string, bodyBytes = 270): string {
  let hex = "";
  for (let i = 0; hex.length < bodyBytes * 2; i++) hex += digest(seed, String(i));
  const b64 = Buffer.from(hex.slice(0, bodyBytes * 2), "hex").toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let x = n; x > 0; x = Math.floor(x / 256)) bytes.unshift(x % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
function der(tag: number, ...body: Buffer[]): Buffer {
  const concat = (parts: Buffer[]) => Buffer.concat(parts as unknown as Uint8Array[]);
  const content = concat(body);
  return concat([Buffer.from([tag]), derLength(content.length), content]);
}

/**
 * A deterministic RSA public key (SubjectPublicKeyInfo PEM) that parses like a real one:
 * the modulus is seeded random bytes, which is all a public key's parser checks. The
 * matching private key does not exist; the mock's private keys are placeholders.
 */
export function fakeRsaPublicKeyPem(seed: string, bits: number): string {
  const digests: string[] = [];
  for (let i = 0; digests.length * 64 < bits / 4; i++) digests.push(digest(seed, "modulus", String(i)));
  const modulus = Buffer.from(digests.join("").slice(0, bits / 4), "hex");
  modulus[0] |= 0x80; // full length
  modulus[modulus.length - 1] |= 0x01; // odd
  const integer = (b: Buffer) => der(0x02, ...(b[0] & 0x80 ? [Buffer.from([0]), b] : [b]));
  const rsaPublicKey = der(0x30, integer(modulus), integer(Buffer.from([0x01, 0x00, 0x01])));
  const algorithm = der(0x30, der(0x06, Buffer.from("2a864886f70d010101", "hex")), Buffer.from([0x05, 0x00]));
  const spki = der(0x30, algorithm, der(0x03, Buffer.from([0]), rsaPublicKey));
  const lines = spki.toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN PUBLIC KEY-----\n${lines.join("\n")}\n-----END PUBLIC KEY-----\n`;
}

function ipv4ToInt(ip: string): number {
  return ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
}
function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
}
/** A deterministic host address inside `cidr`, skipping the first 4 and the last (AWS reserves them). */
export function hostIn(cidr: string, seed: string): string {
  const [base, bitsText] = cidr.split("/");
  const bits = Number(bitsText);
  const size = 2 ** (32 - bits);
  const usable = Math.max(size - 5, 1);
  const offset = 4 + (parseInt(digest(seed).slice(0, 8), 16) % usable);
  return intToIpv4(ipv4ToInt(base) + offset);
}

export class RecordingMocks implements pulumi.runtime.Mocks {
  readonly resources: CapturedResource[] = [];
  /** Unmasked inputs by `<type>::<name>`: in memory only, for tests that compare runs (never written). */
  readonly rawInputs = new Map<string, Record<string, unknown>>();
  /** Every plain value that was secret anywhere: config secrets, secret inputs, secret outputs. */
  readonly secretValues = new Set<string>();
  private readonly options = new Map<string, ReplacementOptions>();
  private readonly subnetCidrs = new Map<string, string>();

  /**
   * `replaced`: names of resources to treat as replaced (`pulumi up --replace`): each gets new
   * provider-side outputs (id, addresses, ARN), as a new machine would. The replacement drill
   * (tools/preview/drill.ts) uses it for the control plane.
   */
  constructor(
    private readonly account: MockAccount,
    private readonly replaced: ReadonlySet<string> = new Set(),
    /** Mixed into every secret the mocks generate (private keys), nothing else: see MockRunOptions. */
    private readonly generatedSecretSeed = "",
  ) {}

  /**
   * Resource options are invisible to mocks; an in-process stack transformation sees them
   * (engine-side transforms are not available under mocks). Call before the program runs.
   */
  captureOptions(): void {
    pulumi.runtime.registerStackTransformation((args) => {
      const o = args.opts as pulumi.CustomResourceOptions;
      const picked: ReplacementOptions = {};
      if (o.ignoreChanges?.length) picked.ignoreChanges = [...o.ignoreChanges];
      if (o.replaceOnChanges?.length) picked.replaceOnChanges = [...o.replaceOnChanges];
      if (o.deleteBeforeReplace !== undefined) picked.deleteBeforeReplace = o.deleteBeforeReplace;
      if (o.protect !== undefined) picked.protect = o.protect;
      if (o.hooks) picked.hooks = hookNames(o.hooks);
      const parent = (o.parent as unknown as { __name?: string } | undefined)?.__name;
      this.options.set(`${args.type}::${args.name}`, picked);
      if (parent) this.parents.set(`${args.type}::${args.name}`, parent);
      return undefined;
    });
  }
  private readonly parents = new Map<string, string>();
  /** Deterministic counts of the SDK's work under these mocks (see leanRuntime). */
  readonly work: MockRuntimeWork = { outputsDeclared: 0, outputsMade: 0, trackedPromises: 0, monitorReplies: 0 };
  /** Resource hooks the program registered, by name (stubResourceHookRegistration): tests may call them. */
  readonly resourceHooks = new Map<string, pulumi.ResourceHook>();
  /** Provider name -> the account its assumed role lives in. */
  private readonly providerAccounts = new Map<string, string>();

  /** Resources created through a provider that assumes a role in another account live in that account. */
  private accountOf(args: pulumi.runtime.MockResourceArgs): string {
    // A provider reference is "<urn>::<id>"; the URN ends with "::<name>".
    const parts = (args.provider ?? "").split("::");
    const providerName = parts.length >= 2 ? parts[parts.length - 2] : "";
    return this.providerAccounts.get(providerName) ?? this.account.accountId;
  }

  /**
   * Data-source calls: only Canonical's public Ubuntu image parameters are answered (with
   * a deterministic AMI id per region and parameter); every other call is refused, so a
   * lookup can never silently return nothing.
   */
  call(args: pulumi.runtime.MockCallArgs): Record<string, unknown> {
    const inputs = (args.inputs ?? {}) as Plain;
    if (
      args.token === "aws:ssm/getParameter:getParameter" &&
      typeof inputs.name === "string" &&
      /^\/aws\/service\/canonical\/ubuntu\/[a-z-]+\/[0-9a-z.]+\/stable\/current\/(amd64|arm64)\/hvm\/ebs-gp[23]\/ami-id$/.test(inputs.name) &&
      typeof inputs.region === "string"
    ) {
      const ami = `ami-${digest("canonical-ami", inputs.region, inputs.name).slice(0, 17)}`;
      // Public parameters have no account in their ARN.
      return { id: inputs.name, name: inputs.name, arn: `arn:aws:ssm:${inputs.region}::parameter${inputs.name}`, type: "String", value: ami, insecureValue: ami, version: 1, region: inputs.region, withDecryption: false };
    }
    throw new Error(`unmocked call ${args.token}: the program must not depend on data-source lookups`);
  }

  newResource(args: pulumi.runtime.MockResourceArgs): { id: string | undefined; state: Record<string, unknown> } {
    // Components have no provider-side state: their outputs are whatever they register.
    const computed = args.custom === false ? {} : this.outputsFor(args);
    const id = (computed.id as string | undefined) ?? `${args.name}-id`;
    delete computed.id;
    const state: Plain = { ...(args.inputs as Plain), ...computed };
    const key = `${args.type}::${args.name}`;
    this.rawInputs.set(key, unwrapSecrets(args.inputs) as Plain);
    const captured: CapturedResource = {
      type: args.type,
      name: args.name,
      inputs: maskSecrets(args.inputs, this.secretValues) as Plain,
      outputs: maskSecrets(args.custom === false ? state : { id, ...state }, this.secretValues) as Plain,
      options: this.options.get(key) ?? {},
    };
    const parent = this.parents.get(key);
    if (parent) captured.parent = parent;
    this.resources.push(captured);
    return { id: args.custom === false ? undefined : id, state };
  }

  private outputsFor(args: pulumi.runtime.MockResourceArgs): Plain {
    const { accountId, region } = this.account;
    const inputs = unwrapSecrets(args.inputs) as Plain;
    const seed = `${args.type}::${args.name}${this.replaced.has(args.name) ? "::replaced" : ""}`;
    const h = digest(seed);
    const named = (inputs.name as string | undefined) ?? args.name;
    switch (args.type) {
      case "aws:iam/role:Role":
        return { id: named, name: named, arn: `arn:aws:iam::${this.accountOf(args)}:role/${named}`, uniqueId: `AROA${h.slice(0, 17).toUpperCase()}` };
      case "aws:iam/openIdConnectProvider:OpenIdConnectProvider": {
        // IAM names a provider after its URL without the scheme, in the account its provider targets.
        const arn = `arn:aws:iam::${this.accountOf(args)}:oidc-provider/${String(inputs.url).replace(/^https:\/\//, "")}`;
        return { id: arn, arn };
      }
      case "aws:iam/instanceProfile:InstanceProfile":
        return { id: named, name: named, arn: `arn:aws:iam::${accountId}:instance-profile/${named}` };
      case "aws:iam/rolePolicy:RolePolicy":
        return { id: `${inputs.role}:${named}`, name: named };
      case "aws:kms/key:Key": {
        const keyId = uuidFrom(seed);
        return { id: keyId, keyId, arn: `arn:aws:kms:${region}:${accountId}:key/${keyId}` };
      }
      case "aws:kms/alias:Alias":
        return { id: named, arn: `arn:aws:kms:${region}:${accountId}:${named}` };
      case "aws:ssm/parameter:Parameter":
        return { id: named, arn: `arn:aws:ssm:${region}:${accountId}:parameter${named}`, version: 1 };
      case "aws:rolesanywhere/trustAnchor:TrustAnchor": {
        const u = uuidFrom(seed);
        return { id: u, arn: `arn:aws:rolesanywhere:${region}:${accountId}:trust-anchor/${u}` };
      }
      case "aws:rolesanywhere/profile:Profile": {
        const u = uuidFrom(seed);
        return { id: u, arn: `arn:aws:rolesanywhere:${region}:${accountId}:profile/${u}` };
      }
      case "aws:ec2/vpc:Vpc":
        return { id: `vpc-${h.slice(0, 17)}`, arn: `arn:aws:ec2:${region}:${accountId}:vpc/vpc-${h.slice(0, 17)}` };
      case "aws:ec2/subnet:Subnet": {
        const id = `subnet-${h.slice(0, 17)}`;
        if (typeof inputs.cidrBlock === "string") this.subnetCidrs.set(id, inputs.cidrBlock);
        return { id, arn: `arn:aws:ec2:${region}:${accountId}:subnet/${id}` };
      }
      case "aws:ec2/securityGroup:SecurityGroup":
        return { id: `sg-${h.slice(0, 17)}`, arn: `arn:aws:ec2:${region}:${accountId}:security-group/sg-${h.slice(0, 17)}` };
      case "aws:ec2/internetGateway:InternetGateway":
        return { id: `igw-${h.slice(0, 17)}` };
      case "aws:ec2/natGateway:NatGateway":
        return { id: `nat-${h.slice(0, 17)}` };
      case "aws:ec2/eip:Eip":
        return { id: `eipalloc-${h.slice(0, 17)}`, publicIp: `203.0.113.${parseInt(h.slice(0, 2), 16) % 250 + 2}` };
      case "aws:ec2/routeTable:RouteTable":
        return { id: `rtb-${h.slice(0, 17)}` };
      case "aws:ec2/instance:Instance": {
        const cidr = this.subnetCidrs.get(String(inputs.subnetId)) ?? "10.0.0.0/16";
        const out: Plain = { id: `i-${h.slice(0, 17)}`, arn: `arn:aws:ec2:${region}:${accountId}:instance/i-${h.slice(0, 17)}`, privateIp: hostIn(cidr, seed) };
        out.publicIp = inputs.associatePublicIpAddress ? `198.51.100.${parseInt(h.slice(2, 4), 16) % 250 + 2}` : "";
        return out;
      }
      case "equinix-metal:index/device:Device":
        return {
          id: uuidFrom(seed),
          accessPrivateIpv4: hostIn("10.70.0.0/16", seed),
          accessPublicIpv4: `147.75.${parseInt(h.slice(0, 2), 16)}.${parseInt(h.slice(2, 4), 16) % 250 + 2}`,
          state: "active",
        };
      case "aws:route53/zone:Zone": {
        const zoneId = `Z${h.slice(0, 20).toUpperCase()}`;
        const n = parseInt(h.slice(20, 24), 16);
        return {
          id: zoneId,
          zoneId,
          arn: `arn:aws:route53:::hostedzone/${zoneId}`,
          nameServers: [`ns-${n % 512}.awsdns-${n % 64}.com`, `ns-${(n >> 3) % 512 + 512}.awsdns-${(n >> 5) % 64}.net`, `ns-${(n >> 2) % 512 + 1024}.awsdns-${(n >> 4) % 64}.org`, `ns-${(n >> 1) % 512 + 1536}.awsdns-${(n >> 6) % 64}.co.uk`],
        };
      }
      case "aws:route53/record:Record":
        return { id: `${String(inputs.zoneId)}_${String(inputs.name)}_${String(inputs.type)}`, fqdn: inputs.name };
      case "aws:s3/bucket:Bucket":
      case "aws:s3/bucketV2:BucketV2":
        return { id: named, bucket: inputs.bucket ?? named, arn: `arn:aws:s3:::${inputs.bucket ?? named}` };
      case "aws:dynamodb/table:Table":
        return { id: named, name: named, arn: `arn:aws:dynamodb:${region}:${accountId}:table/${named}` };
      case "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream":
        return { id: named, arn: `arn:aws:firehose:${region}:${accountId}:deliverystream/${named}` };
      case "aws:cloudwatch/eventBus:EventBus":
        return { id: named, arn: `arn:aws:events:${region}:${accountId}:event-bus/${named}` };
      case "aws:cloudwatch/eventRule:EventRule":
        return { id: named, arn: `arn:aws:events:${region}:${accountId}:rule/${inputs.eventBusName ?? "default"}/${named}` };
      case "tls:index/privateKey:PrivateKey": {
        const pem = fakePem(inputs.algorithm === "RSA" ? "RSA PRIVATE KEY" : "EC PRIVATE KEY", `${seed}:private${this.generatedSecretSeed}`, inputs.algorithm === "RSA" ? 1190 : 121);
        return {
          id: h.slice(0, 40),
          privateKeyPem: wrapSecret(pem),
          privateKeyPemPkcs8: wrapSecret(pem),
          privateKeyOpenssh: wrapSecret(pem),
          publicKeyPem: inputs.algorithm === "RSA" ? fakeRsaPublicKeyPem(`${seed}:public`, Number(inputs.rsaBits ?? 2048)) : fakePem("PUBLIC KEY", `${seed}:public`, 91),
          publicKeyFingerprintSha256: `SHA256:${Buffer.from(h, "hex").toString("base64").replace(/=+$/, "")}`,
        };
      }
      case "tls:index/certRequest:CertRequest":
        return { id: h.slice(0, 40), certRequestPem: fakePem("CERTIFICATE REQUEST", seed, 400) };
      case "tls:index/selfSignedCert:SelfSignedCert":
      case "tls:index/locallySignedCert:LocallySignedCert":
        return {
          id: BigInt(`0x${h.slice(0, 30)}`).toString(),
          certPem: fakePem("CERTIFICATE", seed, 560),
          validityStartTime: "2026-01-01T00:00:00Z",
          validityEndTime: "2026-01-08T00:00:00Z",
          readyForRenewal: false,
        };
      default:
        if (args.type.startsWith("pulumi:providers:")) {
          // Provider inputs may arrive JSON-encoded; look for the assumed role's ARN anywhere in them.
          const account = /arn:aws:iam::(\d{12}):role\//.exec(JSON.stringify(inputs))?.[1];
          if (account) this.providerAccounts.set(args.name, account);
          return { id: `${args.name}-provider` };
        }
        return { id: `${args.name}-id`, arn: `arn:aws:${args.type.split(":")[1]?.split("/")[0] ?? "x"}:${region}:${accountId}:${named}` };
    }
  }
}


export interface MockRunOptions {
  project?: string;
  stack: string;
  account: MockAccount;
  /** Full config map, keys as `<project>:<key>`; values as strings (objects JSON-encoded). */
  config?: Record<string, string>;
  /** Keys of `config` that are secret. */
  secretKeys?: string[];
  /** Resource names to treat as replaced: new ids and addresses (see RecordingMocks). */
  replaced?: readonly string[];
  /** false: the SDK's own eager outputs and leak tracking (see leanRuntime), for the test that both give the same run. */
  leanSdk?: boolean;
  /**
   * Changes every secret the mocks generate (the private keys) and nothing else, as another
   * `pulumi up` would: two runs that differ only here (and in the stack's secret values) must
   * write the same files (test/preview/non-interference.test.ts).
   */
  generatedSecretSeed?: string;
}

let latestMocks: RecordingMocks | undefined;

/** Every secret value the latest mock run has seen so far (generated keys too): for scrubbing an error that ends it. */
export function secretsSeenByMocks(): string[] {
  return latestMocks ? [...latestMocks.secretValues] : [];
}

/**
 * Runs `program` inside a root stack under the recording mocks and waits until every
 * registration has been recorded.
 */
export async function runUnderMocks<T>(options: MockRunOptions, program: () => T): Promise<{ result: T; mocks: RecordingMocks }> {
  const project = options.project ?? "ci-fleet";
  const mocks = new RecordingMocks(options.account, new Set(options.replaced ?? []), options.generatedSecretSeed);
  latestMocks = mocks;
  pulumi.runtime.setAllConfig(options.config ?? {}, options.secretKeys ?? []);
  await pulumi.runtime.setMocks(mocks, project, options.stack, true);
  stubResourceHookRegistration(mocks);
  let result: T | undefined;
  // First: it may refuse to run (see monitorReplyPatchPlan) before anything else is changed.
  const restore = options.leanSdk === false ? () => undefined : leanRuntime(mocks.work);
  // Pulumi records a stack trace for every promise it makes; under the mocks that is most
  // of the run time. Nothing here reads those traces.
  const stackTraceLimit = Error.stackTraceLimit;
  const prepareStackTrace = Error.prepareStackTrace;
  Error.stackTraceLimit = 0;
  // ts-node's source-map support would still map each (empty) trace.
  Error.prepareStackTrace = (error) => String(error);
  try {
  await pulumi.runtime.runInPulumiStack(async () => {
    mocks.captureOptions();
    result = program();
    return {};
  });
  // runInPulumiStack resolves before the registrations it started have reached the mocks.
  await (pulumi.runtime as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs();
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
    Error.prepareStackTrace = prepareStackTrace;
    restore();
  }
  return { result: result as T, mocks };
}

/** What the SDK did under the mocks: deterministic counts for tests of the preview's cost. */
export interface MockRuntimeWork {
  /** Output properties the SDK declared on resources (one Output each, were they all made). */
  outputsDeclared: number;
  /** Of those, the ones the program (or anything else) read, so made. */
  outputsMade: number;
  /** Promises the SDK handed to its leak tracker. */
  trackedPromises: number;
  /** Registrations the mock monitor answered without the protobuf round trip (the monitor-reply patch). */
  monitorReplies: number;
}

/** The @pulumi/pulumi this checkout pins (package.json): the SDK whose internals leanRuntime replaces. */
export const PINNED_PULUMI_VERSION = (JSON.parse(readFileSync(pathJoin(__dirname, "..", "..", "package.json"), "utf8")) as { dependencies: Record<string, string> }).dependencies["@pulumi/pulumi"];

/** The @pulumi/pulumi actually loaded. */
function installedPulumiVersion(): string {
  return (require("@pulumi/pulumi/package.json") as { version: string }).version;
}

/**
 * Whether the monitor-reply patch (see leanRuntime) goes in: on the pinned SDK it must (its
 * MockMonitor is the one the patch was checked against; a shape that does not match there
 * means node_modules is not what package.json pins, and the preview stops rather than run
 * slower without saying so); on any other SDK it stays out, with one warning that says so.
 */
export function monitorReplyPatchPlan(installed: string, pinned: string, shapeMatches: boolean): { install: true } | { install: false; warning: string } {
  if (installed !== pinned) {
    return {
      install: false,
      warning:
        `ci-fleet preview: warning: @pulumi/pulumi ${installed} is installed, not the pinned ${pinned} (package.json); ` +
        "the mock monitor's direct registration replies (a speed-up of the offline preview) are off, so the preview is slower. `npm ci` installs the pinned version.",
    };
  }
  if (!shapeMatches) {
    throw new Error(
      `ci-fleet mock runtime: @pulumi/pulumi ${installed} is the pinned version, but its MockMonitor (runtime/mocks.js: registerResource, newUrn, resources, mocks) ` +
        "is not the one the monitor-reply patch replaces: node_modules does not hold the pinned package (run `npm ci`)",
    );
  }
  return { install: true };
}

/** The warning is printed once per process (the preview runs the program more than once). */
let monitorReplyWarningPrinted = false;

type Resolver = (...args: unknown[]) => void;

/** The parts of @pulumi/pulumi's MockMonitor (runtime/mocks.js) a registration uses. */
interface MockMonitorShape {
  mocks: pulumi.runtime.Mocks;
  resources: Map<string, { urn: string; id: string | null; state: unknown }>;
  newUrn(parent: string, type: string, name: string): string;
  registerResource(
    req: { getType(): string; getName(): string; getObject(): unknown; getProvider(): string; getCustom(): boolean; getImportid(): string; getParent(): string },
    callback: (err: unknown, response: unknown) => void,
  ): Promise<void>;
}

/**
 * `Struct.fromJavaScript(value).toJavaScript()` of google-protobuf without building the
 * protobuf: strings, numbers, booleans and null as they are, arrays element by element,
 * objects with their keys sorted (a protobuf map iterates its keys sorted); anything else
 * throws, as fromJavaScript does.
 */
export function structRoundTrip(value: unknown): unknown {
  if (value === null || typeof value === "string" || typeof value === "number" || typeof value === "boolean") return value;
  if (Array.isArray(value)) return value.map(structRoundTrip);
  if (typeof value === "object") {
    const out: Record<string, unknown> = {};
    // fromJavaScript reads the fields with for...in: inherited enumerable ones too.
    const keys: string[] = [];
    for (const k in value) keys.push(k);
    for (const k of keys.sort()) out[k] = structRoundTrip((value as Record<string, unknown>)[k]);
    return out;
  }
  throw new Error("Unexpected struct type");
}
type TransferProperties = (onto: Record<string, unknown>, label: string, props: Record<string, unknown>) => Record<string, Resolver>;

/**
 * Costs of Pulumi's SDK that the mocks need not pay (each swapped in for one run, and
 * swapped back after it; PULUMI_DEBUG_PROMISE_LEAKS, or `leanSdk: false`, keeps the SDK's
 * own code; test/preview/preview-scaling.test.ts holds that both record the same run):
 *
 * - A resource gets an Output for every property its class declares the moment it is
 *   constructed (four promises, each tracked for leaks, plus the Output's own chain: some
 *   25 promises a property), all pending until the registration comes back. A program reads
 *   few: of a Device's 33, two. Here each property's Output is made by the SDK's own
 *   `transferProperties` when the property is first read, and given the registration's
 *   value at once if that has already come: the same Output with the same value, and no
 *   cost for properties never read. At 1000 runners this was most of the heap and of the
 *   garbage collector's time.
 * - `debuggablePromise` gives each tracked promise a stack trace, a context string and two
 *   derived promises. Here it keeps what decides anything: the leak set the SDK checks at
 *   exit (a promise still pending then fails the process, as before) and the rejection's
 *   `promise` field, with one derived promise.
 * - The mock monitor answers each registration with a protobuf Struct that the SDK at once
 *   turns back into plain values; here the plain values are built directly (structRoundTrip).
 *   This one replaces a method of the SDK's MockMonitor: it goes in only on the pinned
 *   @pulumi/pulumi, where it must (see monitorReplyPatchPlan); `work.monitorReplies` counts
 *   the registrations it answered.
 */
function leanRuntime(work: MockRuntimeWork): () => void {
  const debuggable = require("@pulumi/pulumi/runtime/debuggable") as { debugPromiseLeaks: boolean; debuggablePromise: (p: Promise<unknown>, ctx?: unknown) => Promise<unknown> };
  const rpc = require("@pulumi/pulumi/runtime/rpc") as {
    transferProperties: TransferProperties;
    deserializeProperties(struct: unknown): Record<string, unknown>;
    serializeProperties(label: string, props: Record<string, unknown>): Promise<Record<string, unknown>>;
  };
  const state = require("@pulumi/pulumi/runtime/state") as { getStore(): { leakCandidates: Set<Promise<unknown>>; settings?: { monitor?: unknown } } };
  if (debuggable.debugPromiseLeaks) return () => undefined;
  // Decided first: on the pinned SDK a monitor of another shape stops the run before anything is swapped.
  const monitor = state.getStore().settings?.monitor as MockMonitorShape | undefined;
  const shapeMatches = Boolean(monitor && typeof monitor.registerResource === "function" && typeof monitor.newUrn === "function" && monitor.resources instanceof Map && monitor.mocks);
  const plan = monitorReplyPatchPlan(installedPulumiVersion(), PINNED_PULUMI_VERSION, shapeMatches);
  if (!plan.install && !monitorReplyWarningPrinted) {
    monitorReplyWarningPrinted = true;
    process.stderr.write(`${plan.warning}\n`);
  }
  const debuggablePromise = debuggable.debuggablePromise;
  const transferProperties = rpc.transferProperties;
  // The SDK's own wrapper, once: it installs the leak check that runs at exit.
  void debuggablePromise(Promise.resolve(), "ci-fleet: leak check");

  debuggable.debuggablePromise = (p: Promise<unknown>) => {
    work.trackedPromises++;
    const leaks = state.getStore().leakCandidates;
    leaks.add(p);
    return p.then(
      (value) => (leaks.delete(p), value),
      (err: { promise?: unknown }) => {
        leaks.delete(p);
        err.promise = p;
        throw err;
      },
    );
  };

  rpc.transferProperties = (onto, label, props) => {
    const resolvers: Record<string, Resolver> = {};
    for (const k of Object.keys(props)) {
      // The SDK's own checks, in its order.
      if (k === "id" || k === "urn") continue;
      if (Object.prototype.hasOwnProperty.call(onto, k)) throw new Error(`Property '${k}' is already initialized on target '${label}`);
      work.outputsDeclared++;
      const input = props[k];
      let resolve: Resolver | undefined;
      let settled: unknown[] | undefined;
      resolvers[k] = (...args) => (resolve ? resolve(...args) : void (settled = args));
      Object.defineProperty(onto, k, {
        configurable: true,
        enumerable: true,
        get() {
          // From here on the property is what the SDK would have made: a plain Output field.
          delete onto[k];
          work.outputsMade++;
          resolve = transferProperties(onto, label, { [k]: input })[k];
          if (settled) resolve(...settled);
          return onto[k];
        },
        set(value: unknown) {
          Object.defineProperty(onto, k, { value, writable: true, enumerable: true, configurable: true });
        },
      });
    }
    return resolvers;
  };

  // The mock monitor's answer to a registration, as the SDK reads it, without the protobuf
  // round trip (Struct.fromJavaScript, then toJavaScript on the SDK's side): the same plain
  // value, built directly (see structRoundTrip). Otherwise MockMonitor.registerResource as is.
  if (plan.install && monitor) {
    monitor.registerResource = async (req, callback) => {
      work.monitorReplies++;
      try {
        const result = await monitor.mocks.newResource({
          type: req.getType(),
          name: req.getName(),
          inputs: rpc.deserializeProperties(req.getObject()),
          provider: req.getProvider(),
          custom: req.getCustom(),
          id: req.getImportid(),
        });
        const urn = monitor.newUrn(req.getParent(), req.getType(), req.getName());
        const serializedState = await rpc.serializeProperties("", result.state);
        monitor.resources.set(urn, { urn, id: result.id ?? null, state: serializedState });
        structRoundTrip(serializedState); // fails where Struct.fromJavaScript would
        callback(null, {
          getUrn: () => urn,
          getId: () => result.id || "",
          getObject: () => ({ toJavaScript: () => structRoundTrip(serializedState) }),
          getPropertydependenciesMap: () => undefined,
          getResult: () => 0,
        });
      } catch (err) {
        callback(err, undefined);
      }
    };
  }

  return () => {
    debuggable.debuggablePromise = debuggablePromise;
    rpc.transferProperties = transferProperties;
  };
}

function hookNames(binding: pulumi.ResourceHookBinding): HookNames {
  const names: HookNames = {};
  for (const [kind, hooks] of Object.entries(binding) as [keyof pulumi.ResourceHookBinding, unknown[] | undefined][]) {
    if (hooks?.length) names[kind] = hooks.map((h) => (h as { name?: string }).name ?? "<function>");
  }
  return names;
}

/**
 * A `ResourceHook` registers itself through the engine's callback server, which the mock
 * monitor does not implement (the registration would reject). Record the hooks in process
 * instead: nothing listens on a port, and no hook runs unless a test calls it.
 */
function stubResourceHookRegistration(mocks: RecordingMocks): void {
  // Internal to @pulumi/pulumi (state.d.ts does not declare getStore): the store setMocks configured.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { getStore } = require("@pulumi/pulumi/runtime/state") as { getStore(): { callbacks?: unknown } };
  const unsupported = () => Promise.reject(new Error("transforms are not supported under the mocks"));
  getStore().callbacks = {
    registerResourceHook: async (hook: pulumi.ResourceHook) => void mocks.resourceHooks.set(hook.name, hook),
    registerErrorHook: async () => undefined,
    registerTransform: unsupported,
    registerStackTransform: unsupported,
    registerStackInvokeTransform: unsupported,
    registerStackInvokeTransformAsync: unsupported,
    awaitStackRegistrations: async () => undefined,
    shutdown: () => undefined,
  };
}
