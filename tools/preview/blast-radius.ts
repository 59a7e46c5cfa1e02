/**
 * The blast radius of the fleet: for each kind of machine (the Salt master, the Teleport
 * machine, a runner of each queue), what root on it yields, computed from what the program
 * rendered, never from a hand-written list:
 *
 * - AWS: the roles the machine can wear (its EC2 instance profile; a Roles Anywhere
 *   certificate whose key it holds, evaluated against every role's trust; any role a CA key
 *   it holds lets it mint a certificate for; the role its pillar names), then every role
 *   those can assume (trust + identity policy, evaluated), and for each role what its
 *   policies grant and which of the fleet's SSM paths it can read and decrypt (evaluated with
 *   the access matrix's IAM evaluator, KMS key policy included);
 * - pillar: what salt/pillar/top.sls gives the minion (its own document by its id, the shared
 *   common pillar, the orchestration's one-time keys), key by key, secret leaves marked;
 * - Salt and Teleport: the minions whose pillar names it as their master, Salt peer rights,
 *   the reactor tags any minion can fire; the Teleport services its config runs, who logs in
 *   there with which login, and whether a forwarded agent would hand it anyone's access;
 * - CI credentials on it and how long each lasts (sessions, certificates, tokens, keys).
 *
 * The check: a runner of an untrusted queue yields nothing beyond its own queue's path.
 *
 * Uses the access matrix's evaluator (@cloud-copilot/iam-simulate, AGPL-3.0-or-later, a
 * devDependency): tools and tests only. Nothing under infra/ may import this file.
 */
import * as fs from "fs";
import * as path from "path";
import { gunzipSync } from "zlib";
import * as YAML from "yaml";
import type { CapturedResource } from "./mock-runtime";
import type { PreviewRun } from "./run";
import { collectRoles, decide, KmsDecryptEvaluator, sessionOf, simulation, type Decision, type PolicyDocumentShape, type RoleInfo } from "./access-matrix";
import { arns, fleetTag, kmsAliasName, ssmPaths, ssmViaService } from "../../infra/identity/names";
import { buildRoles, type TeleportRole } from "../../infra/teleport/roles";
import { roleSetAccess } from "../../infra/teleport/access";
import { OFFLINE_PLACEHOLDER } from "../../infra/config/secret-values";
import { CERTIFICATE_RENEW_AT_REMAINING, UNTRUSTED_CERTIFICATE_MAX_HOURS } from "../../infra/identity/lifetimes";

/** One kind of machine and what root on it yields. */
export interface BlastRadiusRow {
  /** `Salt master`, `Teleport`, `runner of queue <q> (untrusted)`. */
  kind: string;
  machines: string[];
  /** Roles it can wear and how, what they grant, the SSM paths they read. */
  aws: string[];
  /** Pillar keys it receives (secret ones marked). */
  pillar: string[];
  /** Salt and Teleport reach. */
  access: string[];
  /** CI credentials on the machine and how long each lasts. */
  credentials: string[];
}

export interface BlastRadius {
  rows: BlastRadiusRow[];
  /** What an untrusted queue's runner yields beyond its queue's path: the preview fails on any. */
  problems: string[];
}

export interface BlastRadiusOptions {
  /** The repository's salt/ tree (pillar top, the orchestration's lifetimes). */
  saltRoot: string;
}

type Obj = Record<string, unknown>;
const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

const patternCache = new Map<string, RegExp>();
/** IAM's pattern match (`*` any run, `?` one character); actions compare case-insensitively. */
function iamMatch(pattern: string, value: string, ignoreCase = false): boolean {
  const key = `${ignoreCase ? "i" : "s"}${pattern}`;
  let re = patternCache.get(key);
  if (!re) {
    re = new RegExp(`^${pattern.split("").map((ch) => (ch === "*" ? ".*" : ch === "?" ? "." : ch.replace(/[.+^${}()|[\]\\/]/g, "\\$&"))).join("")}$`, ignoreCase ? "i" : "");
    patternCache.set(key, re);
  }
  return re.test(value);
}

/** Salt's glob target (fnmatch): `*`, `?` and `[...]` classes. */
function globMatch(pattern: string, value: string): boolean {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === "*") re += ".*";
    else if (ch === "?") re += ".";
    else if (ch === "[" && pattern.indexOf("]", i + 1) > i + 1) {
      const end = pattern.indexOf("]", i + 1);
      re += `[${pattern.slice(i + 1, end).replace(/^!/, "^").replace(/\\/g, "\\\\")}]`;
      i = end;
    } else re += ch.replace(/[.+^${}()|[\]\\/]/g, "\\$&");
  }
  return new RegExp(`^${re}$`).test(value);
}

function get(doc: unknown, dotted: string): unknown {
  return dotted.split(".").reduce<unknown>((n, k) => (isObj(n) ? n[k] : undefined), doc);
}

/** Leaf paths of a pillar document: `ci_fleet.aws.role_arn` -> value. */
function leaves(doc: unknown, prefix = ""): [string, unknown][] {
  if (!isObj(doc)) return [[prefix, doc]];
  const out: [string, unknown][] = [];
  for (const [k, v] of Object.entries(doc)) out.push(...(isObj(v) ? leaves(v, prefix ? `${prefix}.${k}` : k) : [[prefix ? `${prefix}.${k}` : k, v] as [string, unknown]]));
  return out;
}

const PRIVATE_KEY_PEM = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----/g;
/** A PEM as text compares: escaped newlines undone, each line trimmed (YAML indents block scalars). */
const normalizePem = (pem: string) =>
  pem
    .replace(/\\n/g, "\n")
    .replace(/\r/g, "")
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .join("\n");

const hoursText = (seconds: number) => (seconds % 3600 === 0 ? (seconds % 86400 === 0 && seconds >= 86400 ? `${seconds / 86400} d` : `${seconds / 3600} h`) : `${Math.round(seconds / 60)} min`);

// ---------------------------------------------------------------------------------------
// The pillar a minion receives: salt/pillar/top.sls and the sls files it names, evaluated
// for what this tree uses; anything else fails closed (a problem, never a guess).

interface PillarSource {
  /** The minion's own document (by its authenticated id). */
  ownDocument: boolean;
  /** Documents of other minions it is given (by a top entry or an import not named by opts.id). */
  otherDocuments: string[];
  /** Keys of plain YAML sls files every matched minion shares. */
  shared: Obj;
  /** One-time keys the orchestration may add for this minion alone (`ci_fleet_inline.<key>`). */
  inline: string[];
  problems: string[];
}

/**
 * Files every minion's pillar may include that hold nothing secret: the keys they set, with
 * a placeholder value that says what they are. The master writes them itself; they are what
 * root on any machine may see anyway (a CA pin is the sha256 of a public key).
 */
const FLEET_PUBLIC_PILLAR_FILES: Record<string, Obj> = {
  "'teleport/ca_pins.json'": { ci_fleet_teleport_ca: { pins: "the Teleport cluster's CA pins (sha256 of public keys)" } },
};

class PillarTop {
  private readonly topText: string;
  private readonly slsCache = new Map<string, { kind: "document"; inline: string[]; public: Obj } | { kind: "plain"; data: Obj } | { kind: "unknown"; why: string }>();
  readonly problems: string[] = [];

  constructor(private readonly pillarRoot: string) {
    const file = path.join(pillarRoot, "top.sls");
    this.topText = fs.existsSync(file) ? fs.readFileSync(file, "utf8").replace(/\{#[\s\S]*?#\}/g, "") : "";
    if (!this.topText) this.problems.push(`${file}: missing`);
  }

  /** The top file rendered once with a stand-in for opts.id, then matched per minion. */
  private parsed?: { top: unknown; problems: string[] };
  private static readonly ID = "ci-fleet-blast-radius-minion-id-stand-in";

  private parse(): { top: unknown; problems: string[] } {
    if (this.parsed) return this.parsed;
    const stand = PillarTop.ID;
    const rendered = this.topText.replace(/\{\{-?\s*opts\.id\s*\|\s*json\s*-?\}\}/g, JSON.stringify(stand)).replace(/\{\{-?\s*opts\.id\s*-?\}\}/g, stand);
    if (/\{\{|\{%/.test(rendered)) this.parsed = { top: {}, problems: ["salt/pillar/top.sls: Jinja other than opts.id, which the preview does not evaluate (fail closed)"] };
    else {
      try {
        this.parsed = { top: YAML.parse(rendered), problems: [] };
      } catch (e) {
        this.parsed = { top: {}, problems: [`salt/pillar/top.sls: not YAML after rendering (${(e as Error).message.split("\n")[0]})`] };
      }
    }
    return this.parsed;
  }

  /** The sls names the top file gives `id`, evaluated with opts.id = id. */
  private slsFor(id: string): { names: string[]; problems: string[] } {
    const { top, problems: parseProblems } = this.parse();
    const names: string[] = [];
    const problems: string[] = [...parseProblems];
    for (const [env, targets] of Object.entries(isObj(top) ? top : {})) {
      if (env !== "base") problems.push(`salt/pillar/top.sls: environment ${env} is not evaluated (fail closed)`);
      for (const [rawTarget, entries] of Object.entries(isObj(targets) ? targets : {})) {
        const target = rawTarget.split(PillarTop.ID).join(id);
        let match = "glob";
        const slses: string[] = [];
        for (const e of asArray(entries as unknown[])) {
          if (isObj(e) && typeof e.match === "string") match = e.match;
          else if (typeof e === "string") slses.push(e);
        }
        let hit: boolean;
        if (match === "glob") hit = globMatch(target, id);
        else if (match === "list") hit = target.split(",").map((t) => t.trim()).includes(id);
        else if (match === "pcre") hit = new RegExp(target).test(id);
        else {
          problems.push(`salt/pillar/top.sls: target ${JSON.stringify(target)} uses the ${match} matcher, which the preview does not evaluate (fail closed)`);
          hit = true;
        }
        if (hit) for (const sls of slses) if (!names.includes(sls)) names.push(sls);
      }
    }
    return { names, problems };
  }

  private sls(name: string) {
    let cached = this.slsCache.get(name);
    if (cached) return cached;
    const candidates = [path.join(this.pillarRoot, `${name.replace(/\./g, "/")}.sls`), path.join(this.pillarRoot, name.replace(/\./g, "/"), "init.sls")];
    const file = candidates.find((f) => fs.existsSync(f));
    if (!file) cached = { kind: "unknown", why: "no such file" };
    else {
      const text = fs.readFileSync(file, "utf8").replace(/\{#[\s\S]*?#\}/g, "").replace(/^#!.*\n/, "");
      const imports = [...text.matchAll(/import_(?:json|yaml)\s+([^%]+?)\s+as\s+\w+/g)].map((m) => m[1].trim());
      if (imports.length) {
        // The one document named by the compiled minion's authenticated id, and one-time keys
        // read from files named by that id too.
        const ownOnly = imports.every((expr) => /^'[^']*'\s*~\s*opts\.id\s*~\s*'[^']*'$/.test(expr));
        const includes = [...text.matchAll(/include\s+([^%]+?)\s+ignore missing/g)].map((m) => m[1].trim());
        const ownInclude = (expr: string) => /^'[^']*'\s*~\s*opts\.id\s*~\s*'[^']*'\s*~\s*key\s*~\s*'[^']*'$/.test(expr);
        const includesOwn = includes.every((expr) => ownInclude(expr) || expr in FLEET_PUBLIC_PILLAR_FILES);
        const publicFiles = includes.filter((expr) => !ownInclude(expr) && expr in FLEET_PUBLIC_PILLAR_FILES);
        const keyList = /for\s+key\s+in\s+\[([^\]]*)\]/.exec(text);
        const inlineKey = /update\(\{\s*'([A-Za-z0-9_]+)'\s*:\s*inline\s*\}\)/.exec(text);
        if (!ownOnly) cached = { kind: "unknown", why: `imports ${imports.join(", ")}: not a document named by opts.id` };
        else if (!includesOwn) cached = { kind: "unknown", why: `includes ${includes.join(", ")}: not files named by opts.id` };
        else {
          const keys = includes.length && keyList ? [...keyList[1].matchAll(/'([^']+)'/g)].map((m) => m[1]) : [];
          cached = {
            kind: "document",
            inline: keys.map((k) => `${inlineKey ? inlineKey[1] : "?"}.${k}`),
            public: Object.assign({}, ...publicFiles.map((expr) => FLEET_PUBLIC_PILLAR_FILES[expr])),
          };
        }
      } else if (/\{\{|\{%/.test(text)) cached = { kind: "unknown", why: "Jinja the preview does not evaluate" };
      else {
        try {
          const data = YAML.parse(text) as unknown;
          cached = { kind: "plain", data: isObj(data) ? data : {} };
        } catch {
          cached = { kind: "unknown", why: "not YAML" };
        }
      }
    }
    this.slsCache.set(name, cached);
    return cached;
  }

  resolve(id: string): PillarSource {
    const { names, problems } = this.slsFor(id);
    const out: PillarSource = { ownDocument: false, otherDocuments: [], shared: {}, inline: [], problems: [...this.problems, ...problems] };
    for (const name of names) {
      const s = this.sls(name);
      if (s.kind === "document") {
        out.ownDocument = true;
        out.inline.push(...s.inline);
        Object.assign(out.shared, s.public);
      } else if (s.kind === "plain") Object.assign(out.shared, s.data);
      else out.problems.push(`salt/pillar/${name}.sls: ${s.why} (fail closed)`);
    }
    return out;
  }
}

/** The OUs a statement pins with StringEquals (undefined: it does not pin them that way). */
function pinnedOus(st: { Condition?: unknown }): string[] | undefined {
  const block = isObj(st.Condition) ? (st.Condition as Obj).StringEquals : undefined;
  const values = isObj(block) ? block["aws:PrincipalTag/x509Subject/OU"] : undefined;
  return values === undefined ? undefined : asArray(values as string | string[]);
}

/** The certificate OUs a Roles Anywhere trust admits (`aws:PrincipalTag/x509Subject/OU` in an Allow). */
function subjectOus(trust: PolicyDocumentShape | undefined): string[] {
  const out = new Set<string>();
  for (const st of trust?.Statement ?? []) {
    if (st.Effect !== "Allow" || !isObj(st.Condition)) continue;
    for (const op of ["StringEquals", "StringLike"]) {
      const block = (st.Condition as Obj)[op];
      if (isObj(block)) for (const v of asArray(block["aws:PrincipalTag/x509Subject/OU"] as string | string[] | undefined)) out.add(v);
    }
  }
  return [...out].sort();
}

/** `INLINE_LIFETIME_SECONDS = {"teleport_join_token": 15 * 60, ...}` in the orchestration. */
function inlineLifetimes(saltRoot: string): Record<string, number> {
  const file = path.join(saltRoot, "_runners", "ci_fleet.py");
  if (!fs.existsSync(file)) return {};
  const m = /INLINE_LIFETIME_SECONDS\s*=\s*\{([^}]*)\}/.exec(fs.readFileSync(file, "utf8"));
  const out: Record<string, number> = {};
  for (const [, key, expr] of m ? m[1].matchAll(/"([^"]+)"\s*:\s*([\d\s*]+)/g) : []) {
    out[key] = expr.split("*").reduce((a, x) => a * Number(x.trim()), 1);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// AWS: identities, roles, grants, reads.

interface Grant {
  role: string;
  actions: string[];
  resources: string[];
  notAction: boolean;
  notResource: boolean;
  conditions: boolean;
}

interface RoleYield {
  role: RoleInfo;
  /** Roles this role can assume (evaluated). */
  assumes: string[];
  grants: Grant[];
  /** SSM probe paths (with trailing slash) readable: GetParameter and kms:Decrypt via SSM allowed. */
  reads: string[];
  /** Probe paths where GetParameter or GetParametersByPath is allowed (whatever Decrypt says). */
  gets: string[];
  /** Registered parameters under a readable path. */
  parameters: string[];
}

interface Wear {
  roleArn: string;
  how: string;
  /** Session lifetime of this way in, seconds (undefined: set by EC2). */
  sessionSeconds?: number;
}

interface MachineYield {
  hostname: string;
  role: string;
  queue?: string;
  trusted?: boolean;
  kind: string;
  wears: Wear[];
  /** Every role reachable (worn or assumed in a chain), by ARN, with how. */
  reach: Map<string, string>;
  pillarKeys: { path: string; secret: boolean; shared?: boolean; transient?: string }[];
  pillarProblems: string[];
  saltControls: string[];
  saltPeer: string[];
  reactorTags: string[];
  teleportServices: string[];
  teleportJoin?: string;
  teleportReachedBy: string[];
  teleportForwarded: string[];
  teleportCluster: boolean;
  certificates: string[];
  minionKey?: string;
}

export async function computeBlastRadius(run: PreviewRun, options: BlastRadiusOptions): Promise<BlastRadius> {
  const c = run.config;
  const { stack } = c;
  const { accountId, region } = c.identity;
  const resources = run.resources;
  const problems: string[] = [];
  const errors: string[] = [];
  const byType = (t: string) => resources.filter((r) => r.type === t);

  // --- roles and how they are worn
  const readProblems: string[] = [];
  const roles = collectRoles(resources, { stack, accountId, region, queues: Object.keys(c.queues) }, readProblems);
  const roleByArn = new Map(roles.map((r) => [r.arn, r]));
  const roleByName = new Map(roles.filter((r) => r.accountId === accountId).map((r) => [r.name, r]));
  const roleResource = new Map<string, CapturedResource>();
  for (const r of byType("aws:iam/role:Role")) {
    const arn = str(r.outputs.arn);
    if (arn) roleResource.set(arn, r);
  }
  // Managed policies by role ARN: deploy roles of one name live in several accounts, so an
  // attachment belongs to the role whose resource it is named after when the name is shared.
  const attachments = new Map<string, string[]>();
  for (const att of byType("aws:iam/rolePolicyAttachment:RolePolicyAttachment")) {
    const ref = str(att.inputs.role);
    const candidates = [...roleResource.entries()].filter(([arn, r]) => ref === arn || ref === str(r.outputs.name) || ref === str(r.inputs.name));
    const named = candidates.filter(([, r]) => att.name.startsWith(`${r.name}-`));
    for (const [arn] of candidates.length > 1 && named.length ? named : candidates) (attachments.get(arn) ?? attachments.set(arn, []).get(arn)!).push(String(att.inputs.policyArn));
  }
  const attachedTo = (arn: string) => attachments.get(arn) ?? [];
  const maxSession = (arn: string) => Number(roleResource.get(arn)?.inputs.maxSessionDuration ?? 3600);
  const roleLabel = (arn: string) => {
    const r = roleByArn.get(arn);
    const kind = r?.tags[fleetTag.role];
    const q = r?.tags[fleetTag.queue];
    const target = r?.tags[fleetTag.deployTarget];
    const acct = arn.split(":")[4];
    return `\`${arn.split("/").pop()}\`${kind ? ` (${kind}${q ? ` of ${q}` : ""}${target ? `, target ${target}` : ""}${acct !== accountId ? `, account ${acct}` : ""})` : ""}`;
  };

  const instanceProfiles = new Map<string, string>();
  for (const p of byType("aws:iam/instanceProfile:InstanceProfile")) {
    const name = str(p.outputs.name) ?? str(p.inputs.name);
    const role = str(p.inputs.role);
    if (name && role) instanceProfiles.set(name, role);
  }
  const instances = new Map<string, CapturedResource>();
  for (const i of byType("aws:ec2/instance:Instance")) {
    const name = str((i.inputs.tags as Obj | undefined)?.Name);
    if (name) instances.set(name, i);
  }
  const raProfiles = byType("aws:rolesanywhere/profile:Profile").filter((p) => p.inputs.enabled !== false);
  const anchors = byType("aws:rolesanywhere/trustAnchor:TrustAnchor").filter((a) => a.inputs.enabled !== false);
  const anchorArns = anchors.map((a) => str(a.outputs.arn)).filter((a): a is string => !!a);
  const profileFor = (roleArn: string) => raProfiles.find((p) => asArray(p.inputs.roleArns as string[] | undefined).includes(roleArn));

  // Private keys in the program's hands: certificate requests (subject) and trust anchors' CAs.
  const raw = (r: CapturedResource) => run.rawInputs.get(`${r.type}::${r.name}`) ?? {};
  const certByKey = new Map<string, { cn?: string; ou?: string; hours?: number; renewHours?: number }>();
  const signed = byType("tls:index/locallySignedCert:LocallySignedCert");
  for (const req of byType("tls:index/certRequest:CertRequest")) {
    const key = str(raw(req).privateKeyPem);
    const subject = (req.inputs.subject ?? {}) as Obj;
    const cert = signed.find((s) => s.inputs.certRequestPem === req.outputs.certRequestPem);
    if (key) certByKey.set(normalizePem(key), { cn: str(subject.commonName), ou: str(subject.organizationalUnit), hours: Number(cert?.inputs.validityPeriodHours ?? NaN), renewHours: Number(cert?.inputs.earlyRenewalHours ?? NaN) });
  }
  const caKeys = new Map<string, string>();
  for (const ca of byType("tls:index/selfSignedCert:SelfSignedCert")) {
    const key = str(raw(ca).privateKeyPem);
    const pem = str(ca.outputs.certPem);
    const anchor = anchors.find((a) => JSON.stringify(a.inputs.source ?? {}).includes(JSON.stringify(pem ?? "\u0000").slice(1, -1)));
    if (key && anchor) caKeys.set(normalizePem(key), str(anchor.outputs.arn) ?? "");
  }
  const minionKeys = new Map<string, string>();
  for (const k of byType("tls:index/privateKey:PrivateKey")) {
    const pub = str(k.outputs.publicKeyPem);
    if (pub) minionKeys.set(pub.trim(), k.name);
  }

  // --- pillar documents, by minion id (in memory only; only key paths leave this file)
  const documents = new Map<string, Obj>();
  const pillarPrefix = `${ssmPaths.pillar(stack)}/`;
  for (const r of byType("aws:ssm/parameter:Parameter")) {
    const name = str(r.inputs.name);
    const value = str(raw(r).value);
    // The pillar sync lists the prefix non-recursively: a nested parameter (the master's key pairs) is no document.
    if (!name?.startsWith(pillarPrefix) || name.slice(pillarPrefix.length).includes("/") || value === undefined) continue;
    try {
      documents.set(name.slice(pillarPrefix.length), JSON.parse(value) as Obj);
    } catch {
      problems.push(`pillar document ${name} is not JSON (fail closed)`);
    }
  }
  const parameterNames = byType("aws:ssm/parameter:Parameter").map((r) => str(r.inputs.name)).filter((n): n is string => !!n).sort();

  // --- the fleet key and the evaluators
  const keys = byType("aws:kms/key:Key");
  const alias = resources.find((r) => r.type === "aws:kms/alias:Alias" && r.inputs.name === kmsAliasName(stack));
  const keyResource = keys.find((k) => alias && [k.outputs.keyId, k.outputs.id, k.outputs.arn].includes(alias.inputs.targetKeyId)) ?? (keys.length === 1 ? keys[0] : undefined);
  const keyArn = keyResource ? str(keyResource.outputs.arn) : undefined;
  let keyPolicy: PolicyDocumentShape | undefined;
  try {
    const p = keyResource?.inputs.policy;
    keyPolicy = (typeof p === "string" ? JSON.parse(p) : p) as PolicyDocumentShape | undefined;
    if (keyPolicy) keyPolicy = { ...keyPolicy, Statement: asArray(keyPolicy.Statement) };
  } catch {
    keyPolicy = undefined;
  }
  const kms = keyArn && keyPolicy ? new KmsDecryptEvaluator({ arn: keyArn, policy: keyPolicy }, errors) : undefined;
  if (!kms) problems.push(`no fleet KMS key behind ${kmsAliasName(stack)} to evaluate kms:Decrypt (fail closed)`);

  // Probe paths: every queue's prefix, the pillar prefix, the fleet's root, and every directory
  // a registered parameter sits in (runners share directories, so probes do not grow with them).
  const probeSet = new Set<string>([`/ci-fleet/${stack}/`, pillarPrefix, ...Object.keys(c.queues).map((q) => `${ssmPaths.queue(stack, q)}/`)]);
  for (const n of parameterNames) probeSet.add(n.slice(0, n.lastIndexOf("/") + 1));
  const probes = [...probeSet].sort();

  const roleYields = new Map<string, RoleYield>();
  const yieldOf = async (role: RoleInfo): Promise<RoleYield> => {
    const cached = roleYields.get(role.arn);
    if (cached) return cached;
    const grants: Grant[] = [];
    for (const { policy } of role.identityPolicies) {
      for (const s of policy.Statement) {
        if (s.Effect !== "Allow") continue;
        grants.push({
          role: role.name,
          actions: asArray(s.Action ?? s.NotAction),
          resources: asArray(s.Resource ?? s.NotResource),
          notAction: s.NotAction !== undefined,
          notResource: s.NotResource !== undefined,
          conditions: s.Condition !== undefined,
        });
      }
    }
    const principal = sessionOf(role.arn);
    // Which roles can this one assume? Only targets whose trust could name it are evaluated.
    const assumes: string[] = [];
    for (const target of roles) {
      if (target.arn === role.arn || !target.trust) continue;
      const trustText = JSON.stringify(target.trust.Statement.filter((s) => s.Effect === "Allow").map((s) => s.Principal ?? s.NotPrincipal ?? null));
      const couldName = trustText.includes(role.arn) || trustText.includes(arns.accountRoot(role.accountId)) || trustText.includes(`"${role.accountId}"`) || /"\*"/.test(trustText) || trustText.includes(":assumed-role/");
      if (!couldName) continue;
      const d = await decide(simulation(principal, "sts:AssumeRole", target.arn, role.identityPolicies, target.trust), `sts:AssumeRole ${role.name} -> ${target.arn}`, errors);
      if (d === "Allowed") assumes.push(target.arn);
    }
    // Which SSM paths can it read? Only probes some identity grant could match are evaluated.
    const reads: string[] = [];
    const gets: string[] = [];
    for (const probe of probes) {
      const parameterArn = arns.ssmParameter(region, accountId, `${probe}blast-radius/probe`);
      const pathArn = arns.ssmParameter(region, accountId, probe.replace(/\/$/, ""));
      const mayGet = grants.some((g) => !g.notAction && !g.notResource && g.actions.some((a) => iamMatch(a, "ssm:GetParameter", true) || iamMatch(a, "ssm:GetParametersByPath", true)) && g.resources.some((r) => iamMatch(r, parameterArn) || iamMatch(r, pathArn)));
      const notGrant = grants.some((g) => g.notAction || g.notResource);
      if (!mayGet && !notGrant) continue;
      const getParameter = await decide(simulation(principal, "ssm:GetParameter", parameterArn, role.identityPolicies), `ssm:GetParameter ${role.name} ${probe}`, errors);
      const byPath = await decide(simulation(principal, "ssm:GetParametersByPath", pathArn, role.identityPolicies), `ssm:GetParametersByPath ${role.name} ${probe}`, errors);
      if (getParameter !== "Allowed" && byPath !== "Allowed") continue;
      gets.push(probe);
      const decrypt: Decision = kms ? await kms.decide(role.arn, role.identityPolicies, { "kms:ViaService": ssmViaService(region), "kms:EncryptionContext:PARAMETER_ARN": parameterArn }) : "Error";
      if (decrypt === "Allowed") reads.push(probe);
    }
    // Registered parameters: under a readable probe, or matched by a grant outside any (evaluated one by one).
    const parameters: string[] = [];
    for (const n of parameterNames) {
      if (reads.some((p) => n.startsWith(p))) {
        parameters.push(n);
        continue;
      }
      const parameterArn = arns.ssmParameter(region, accountId, n);
      const granted = grants.some((g) => !g.notAction && !g.notResource && g.actions.some((a) => iamMatch(a, "ssm:GetParameter", true)) && g.resources.some((r) => iamMatch(r, parameterArn)));
      if (!granted) continue;
      if ((await decide(simulation(principal, "ssm:GetParameter", parameterArn, role.identityPolicies), `ssm:GetParameter ${role.name} ${n}`, errors)) !== "Allowed") continue;
      gets.push(n);
      const decrypt: Decision = kms ? await kms.decide(role.arn, role.identityPolicies, { "kms:ViaService": ssmViaService(region), "kms:EncryptionContext:PARAMETER_ARN": parameterArn }) : "Error";
      if (decrypt === "Allowed") {
        reads.push(n);
        parameters.push(n);
      }
    }
    const y: RoleYield = { role, assumes, grants, reads, gets, parameters };
    roleYields.set(role.arn, y);
    return y;
  };

  // Roles Anywhere: which roles admit a certificate with this subject (cached by what the
  // trust policies can see of it: the OU, and the CN only where some trust names a CN).
  const trustsNameCn = roles.some((r) => JSON.stringify(r.trust ?? {}).includes("x509Subject/CN"));
  const raCache = new Map<string, string[]>();
  const rolesForSubject = async (ou: string | undefined, cn: string | undefined): Promise<string[]> => {
    const key = `${ou ?? "*"}|${trustsNameCn ? cn ?? "*" : "*"}`;
    const cached = raCache.get(key);
    if (cached) return cached;
    const out: string[] = [];
    for (const role of roles) {
      if (!role.trust || !profileFor(role.arn)) continue;
      if (!JSON.stringify(role.trust).includes("rolesanywhere.amazonaws.com")) continue;
      // Evaluated unless every Allow pins the OU by StringEquals to other values (exact match
      // cannot admit this OU): one queue's certificate is not evaluated against every queue's role.
      if (ou !== undefined && role.trust.Statement.filter((st) => st.Effect === "Allow").every((st) => pinnedOus(st)?.includes(ou) === false)) continue;
      for (const anchor of anchorArns) {
        const context: Record<string, string> = { "aws:SourceArn": anchor };
        if (ou !== undefined) context["aws:PrincipalTag/x509Subject/OU"] = ou;
        if (cn !== undefined) context["aws:PrincipalTag/x509Subject/CN"] = cn;
        const d = await decide(simulation("rolesanywhere.amazonaws.com", "sts:AssumeRole", role.arn, [], role.trust, context), `rolesanywhere -> ${role.arn}`, errors);
        if (d === "Allowed") {
          out.push(role.arn);
          break;
        }
      }
    }
    raCache.set(key, out);
    return out;
  };
  /** Every role a CA key's holder can mint a certificate for: any trust that admits some subject from that anchor. */
  const rolesForAnyCertificate = (anchorArn: string): string[] =>
    roles.filter((r) => r.trust && profileFor(r.arn) && JSON.stringify(r.trust).includes("rolesanywhere.amazonaws.com") && (JSON.stringify(r.trust).includes(anchorArn) || !JSON.stringify(r.trust).includes("aws:SourceArn"))).map((r) => r.arn);

  // --- Teleport
  // The roles and the connector the Teleport machine applies (`tctl create -f` of its pillar's
  // resources); the builders' output only if no pillar carries them.
  let teleportRoles: TeleportRole[] = buildRoles({ queues: Object.keys(c.queues) });
  let teamsToRoles: Record<string, string[]> = c.teleport.teamsToRoles;
  for (const d of documents.values()) {
    const packed = str(get(d, "ci_fleet_teleport.resources_gzip_base64"));
    if (!packed) continue;
    try {
      const docs = YAML.parseAllDocuments(gunzipBase64(packed)).map((x) => x.toJS() as Obj);
      const rendered = docs.filter((x) => x.kind === "role") as unknown as TeleportRole[];
      const connector = docs.find((x) => x.kind === "github");
      if (rendered.length) teleportRoles = rendered;
      const mapping = asArray(get(connector, "spec.teams_to_roles") as { team?: string; roles?: string[] }[] | undefined);
      if (mapping.length) {
        teamsToRoles = {};
        for (const t of mapping) if (t.team) teamsToRoles[t.team] = [...(teamsToRoles[t.team] ?? []), ...(t.roles ?? [])];
      }
    } catch {
      problems.push("the Teleport resources in the Teleport machine's pillar do not decode (fail closed)");
    }
  }
  const teamRoles = Object.entries(teamsToRoles).map(([team, names]) => ({ team, roles: teleportRoles.filter((r) => names.includes(r.metadata.name)) }));
  const machineNamesSet = new Set(run.machines.map((m) => m.hostname));
  const addressOf = new Map(run.machines.map((m) => [m.hostname, m.privateIpv4]));

  // --- Salt master config (from the master's pillar): peer rights and reactor tags.
  const masterDocs = [...documents.entries()].filter(([, d]) => isObj(d.ci_fleet_master));
  const peer: { pattern: string; functions: string[]; kind: string }[] = [];
  const reactorTags: string[] = [];
  for (const [id, d] of masterDocs) {
    const text = str(get(d, "ci_fleet_master.master_config"));
    if (!text) continue;
    try {
      const conf = YAML.parse(text) as Obj;
      for (const kind of ["peer", "peer_run"]) {
        for (const [pattern, fns] of Object.entries(isObj(conf[kind]) ? (conf[kind] as Obj) : {})) peer.push({ pattern, functions: asArray(fns as string[]), kind });
      }
      for (const entry of asArray(conf.reactor as unknown[])) if (isObj(entry)) reactorTags.push(...Object.keys(entry));
    } catch {
      problems.push(`the master config in ${id}'s pillar is not YAML (fail closed)`);
    }
  }

  // --- pillar ownership: which top-level keys belong to which kind of machine
  const kindOf = (m: { role: string; queue?: string }) => (m.queue ? `runner:${m.queue}` : m.role);
  const keyKinds = new Map<string, Set<string>>();
  for (const m of run.machines) for (const k of Object.keys(documents.get(m.hostname) ?? {})) (keyKinds.get(k) ?? keyKinds.set(k, new Set()).get(k)!).add(kindOf(m));
  const allKinds = new Set(run.machines.map(kindOf));

  // A secret leaf: a secret value itself, or (compressed fields) text that holds one.
  const longSecrets = [...run.secretValues].filter((v) => v.length >= 16);
  const isSecretLeaf = (p: string, v: unknown): boolean => {
    if (typeof v !== "string") return false;
    if (run.secretValues.has(v) || v === OFFLINE_PLACEHOLDER) return true;
    if (!/_gzip_base64$/.test(p)) return false;
    try {
      const text = gunzipBase64(v);
      return text.includes(OFFLINE_PLACEHOLDER) || longSecrets.some((x) => x.length <= text.length && text.includes(x));
    } catch {
      return true;
    }
  };

  // Private keys in a text (JSON-escaped newlines undone), and in the SSM parameters a role reads.
  const pemKeys = (text: string): string[] => (text.replace(/\\n/g, "\n").match(PRIVATE_KEY_PEM) ?? []).map(normalizePem);
  const parameterValue = new Map<string, string>();
  for (const r of byType("aws:ssm/parameter:Parameter")) {
    const name = str(r.inputs.name);
    const value = str(raw(r).value);
    if (name && value !== undefined) parameterValue.set(name, value);
  }
  const keysByRole = new Map<string, string[]>();
  const keysReadableBy = (y: RoleYield): string[] => {
    let found = keysByRole.get(y.role.arn);
    if (!found) {
      found = [...new Set(y.parameters.flatMap((n) => pemKeys(parameterValue.get(n) ?? "")))];
      keysByRole.set(y.role.arn, found);
    }
    return found;
  };

  // Who names whom as Salt master: address or host name (before any domain or port) -> minions.
  const mastersOf = new Map<string, string[]>();
  for (const m of run.machines) {
    const a = str(get(documents.get(m.hostname), "ci_fleet.salt.master_address"));
    if (a === undefined) continue;
    for (const k of new Set([a, a.split(/[.:]/)[0]])) (mastersOf.get(k) ?? mastersOf.set(k, []).get(k)!).push(m.hostname);
  }
  const runnerNames = new Set(run.machines.filter((o) => o.queue !== undefined).map((o) => o.hostname));

  const top = new PillarTop(path.join(options.saltRoot, "pillar"));
  const lifetimes = inlineLifetimes(options.saltRoot);
  const roleArnSet = new Set(roles.map((r) => r.arn));

  // --- per machine
  const yields: MachineYield[] = [];
  for (const m of run.machines) {
    const doc = documents.get(m.hostname);
    const queue = m.queue;
    const trusted = queue ? c.queues[queue]?.trusted : undefined;

    // Ways in to AWS: its instance profile, then every certificate or CA key it holds (in its
    // pillar, its user-data, or an SSM parameter a role it reaches can read), then what those
    // roles can assume; last, the role its pillar names if nothing above reaches it.
    const wears: Wear[] = [];
    const reach = new Map<string, string>();
    const pending: RoleInfo[] = [];
    const certificates: string[] = [];
    const seenKeys = new Set<string>();
    const wear = (w: Wear) => {
      wears.push(w);
      if (reach.has(w.roleArn)) return;
      reach.set(w.roleArn, w.how);
      const r = roleByArn.get(w.roleArn);
      if (r) pending.push(r);
    };
    const useKeys = async (held: Iterable<string>, from: string) => {
      for (const k of held) {
        if (seenKeys.has(k)) continue;
        seenKeys.add(k);
        const cert = certByKey.get(k);
        if (cert) {
          for (const arn of await rolesForSubject(cert.ou, cert.cn)) {
            wear({ roleArn: arn, how: `Roles Anywhere certificate OU=${cert.ou ?? "?"}${cert.cn && cert.cn !== m.hostname ? ` CN=${cert.cn}` : ""} (key ${from})`, sessionSeconds: Number(profileFor(arn)?.inputs.durationSeconds ?? 3600) });
          }
          certificates.push(`Roles Anywhere certificate and key${cert.cn && cert.cn !== m.hostname ? ` of ${cert.cn}` : ""} (${from}): ${Number.isFinite(cert.hours) ? `valid ${cert.hours} h` : "validity unknown"}${Number.isFinite(cert.renewHours) ? `, renewed by \`pulumi up\` in its last ${cert.renewHours} h` : ""}`);
        }
        const anchor = caKeys.get(k);
        if (anchor !== undefined) {
          for (const arn of rolesForAnyCertificate(anchor)) wear({ roleArn: arn, how: `a certificate it signs with the Roles Anywhere CA key (${from})`, sessionSeconds: Number(profileFor(arn)?.inputs.durationSeconds ?? 3600) });
          certificates.push(`the Roles Anywhere CA key (${from}): certificates for any subject, for the CA's life`);
        }
      }
    };
    const closure = async () => {
      while (pending.length) {
        const r = pending.shift()!;
        const y = await yieldOf(r);
        for (const t of y.assumes) {
          if (reach.has(t)) continue;
          reach.set(t, `sts:AssumeRole from \`${r.name}\``);
          const tr = roleByArn.get(t);
          if (tr) pending.push(tr);
        }
        await useKeys(keysReadableBy(y), `in SSM, read with \`${r.name}\``);
      }
    };

    const instance = instances.get(m.hostname);
    const profileName = instance ? str(instance.inputs.iamInstanceProfile) : undefined;
    if (profileName) {
      const roleName = instanceProfiles.get(profileName);
      const role = roleName ? roleByName.get(roleName) ?? roleByArn.get(roleName) : undefined;
      if (role) wear({ roleArn: role.arn, how: `EC2 instance profile \`${profileName}\`` });
      else problems.push(`${m.hostname}: instance profile ${profileName} names no registered role (fail closed)`);
    }
    const docText = doc ? JSON.stringify(doc).replace(/\\n/g, "\n") : "";
    await useKeys(pemKeys(docText), "in its pillar");
    await useKeys(pemKeys(run.userData[m.hostname] ?? ""), "in its user-data");
    await closure();
    const pillarRole = str(get(doc, "ci_fleet.aws.role_arn"));
    if (pillarRole && !reach.has(pillarRole)) {
      if (roleArnSet.has(pillarRole)) {
        // A certificate the fleet issues (no key of it exists outside the machine) carries the
        // subject the named role's trust requires: every role that subject opens is worn too.
        const profile = profileFor(pillarRole);
        const ous = profile ? subjectOus(roleByArn.get(pillarRole)?.trust) : [];
        const opened = new Set<string>();
        for (const ou of ous) for (const arn of await rolesForSubject(ou, m.hostname)) opened.add(arn);
        if (!opened.has(pillarRole)) wear({ roleArn: pillarRole, how: "the role its pillar names (`ci_fleet.aws.role_arn`)", ...(profile ? { sessionSeconds: Number(profile.inputs.durationSeconds ?? 3600) } : {}) });
        for (const arn of opened) {
          wear({ roleArn: arn, how: `the certificate the fleet issues it (OU=${ous.join("|")}, what the trust of its pillar's role requires)`, sessionSeconds: Number(profileFor(arn)?.inputs.durationSeconds ?? 3600) });
        }
        if (opened.size) {
          // The key and certificate on the machine are root's to copy: they open those roles
          // until the certificate expires (the trust anchor has no revocation list).
          const h = trusted === false ? Math.min(c.identity.runnerCertificateHours, UNTRUSTED_CERTIFICATE_MAX_HOURS) : c.identity.runnerCertificateHours;
          certificates.push(`Roles Anywhere certificate and key it makes (root-only, on the machine): valid ${h} h, the master signs the next one with ${h * CERTIFICATE_RENEW_AT_REMAINING} h left, so two may be valid at once; no revocation list: a copy works until it expires`);
        }
        await closure();
      } else problems.push(`${m.hostname}: its pillar names role ${pillarRole}, which is not registered (fail closed)`);
    }

    // Pillar.
    const source = top.resolve(m.hostname);
    const pillarProblems = [...source.problems];
    if (!source.ownDocument) pillarProblems.push("salt/pillar/top.sls gives it no document of its own");
    if (!doc) pillarProblems.push("no pillar document");
    const pillarKeys: MachineYield["pillarKeys"] = [];
    for (const [p, v] of leaves(doc ?? {})) pillarKeys.push({ path: p, secret: isSecretLeaf(p, v) });
    for (const [p, v] of leaves(source.shared)) pillarKeys.push({ path: p, secret: isSecretLeaf(p, v), shared: true });
    // The orchestration's one-time keys, only where it mints them (salt/_runners/ci_fleet.py): a
    // Teleport join token only on equinix-metal (aws joins with the ec2 method), a JIT config
    // only for a GitHub Actions runner. An unknown key is listed.
    const fleet = (doc?.ci_fleet ?? {}) as { provider?: string; runner?: { agent?: string } };
    const minted: Record<string, boolean> = { teleport_join_token: fleet.provider === "equinix-metal", github_jit_config: fleet.runner?.agent === "github-actions" };
    for (const k of source.inline) {
      const short = k.split(".").pop()!;
      if (minted[short] === false) continue;
      pillarKeys.push({ path: k, secret: true, transient: lifetimes[short] !== undefined ? hoursText(lifetimes[short]) : "lifetime unknown" });
    }

    // Salt: the minions whose pillar names this machine (by address or host name) as their master.
    const own = addressOf.get(m.hostname);
    const saltControls = [...new Set([...(own ? mastersOf.get(own) ?? [] : []), ...(mastersOf.get(m.hostname) ?? []), ...(mastersOf.get("127.0.0.1") ?? []).filter((o) => o === m.hostname)])].sort();
    const saltPeer = peer.filter((p) => { try { return new RegExp(p.pattern).test(m.hostname); } catch { return true; } }).map((p) => `${p.kind}: ${p.functions.join(", ")}`);

    // Teleport.
    const configs: string[] = [str(get(doc, "ci_fleet.teleport.node_config")), str(get(doc, "ci_fleet_teleport.auth_config"))].filter((t): t is string => !!t);
    const services: string[] = [];
    let join: string | undefined;
    for (const text of configs) {
      try {
        const conf = YAML.parse(text) as Obj;
        for (const s of ["auth_service", "proxy_service", "ssh_service"]) if (get(conf, `${s}.enabled`) === true || get(conf, `${s}.enabled`) === "yes") services.push(s);
        const method = str(get(conf, "teleport.join_params.method"));
        if (method) join = method;
        else if (get(conf, "teleport.auth_token") !== undefined || get(conf, "teleport.join_params.token_name") !== undefined) join = "token";
      } catch {
        pillarProblems.push("a Teleport config in its pillar is not YAML (fail closed)");
      }
    }
    const labels = (get(doc, "ci_fleet.teleport.labels") ?? {}) as Record<string, string>;
    const reachedBy: string[] = [];
    const forwarded: string[] = [];
    for (const { team, roles: tr } of teamRoles) {
      const access = roleSetAccess(tr, labels);
      if (!access.allowed) continue;
      reachedBy.push(`\`${team}\` as ${access.logins.map((l) => `\`${l}\``).join(", ")}`);
      if (tr.some((r) => r.spec.options.forward_agent)) forwarded.push(`team ${team} forwards agents (forward_agent): every machine its roles reach, while one of them is logged in here`);
    }

    const pub = str(get(doc, "ci_fleet.salt.minion_public_key_pem"));
    yields.push({
      hostname: m.hostname,
      role: m.role,
      ...(queue ? { queue } : {}),
      ...(trusted !== undefined ? { trusted } : {}),
      kind: kindOf(m),
      wears,
      reach,
      pillarKeys,
      pillarProblems,
      saltControls,
      saltPeer,
      reactorTags,
      teleportServices: [...new Set(services)],
      ...(join ? { teleportJoin: join } : {}),
      teleportReachedBy: reachedBy,
      teleportForwarded: forwarded,
      teleportCluster: services.includes("auth_service"),
      certificates,
      ...(pub && minionKeys.has(pub.trim()) ? { minionKey: minionKeys.get(pub.trim())! } : {}),
    });
  }

  // --- the check: an untrusted queue's runner yields only its own queue's path.
  for (const y of yields.filter((x) => x.queue !== undefined && x.trusted === false)) {
    const q = y.queue!;
    const where = `${y.hostname} (queue ${q}, untrusted)`;
    const own = `${ssmPaths.queue(stack, q)}/`;
    const ownArn = arns.ssmParameter(region, accountId, own);
    const ownPathArn = arns.ssmParameter(region, accountId, ssmPaths.queue(stack, q));
    for (const [arn, how] of y.reach) {
      const role = roleByArn.get(arn);
      const tagQueue = role?.tags[fleetTag.queue];
      const tagRole = role?.tags[fleetTag.role];
      if (tagQueue !== q || (tagRole !== "agent" && tagRole !== "host")) {
        problems.push(`${where}: can wear ${roleLabel(arn).replace(/`/g, "")} through ${how.replace(/`/g, "")}`);
        continue;
      }
      if (!role) continue;
      for (const a of attachedTo(role.arn)) problems.push(`${where}: role ${role.name} has managed policy ${a} attached (not evaluated; fail closed)`);
      const ry = await yieldOf(role);
      for (const g of ry.grants) {
        if (g.notAction || g.notResource) {
          problems.push(`${where}: role ${role.name} has an Allow with NotAction/NotResource (${g.actions.join(", ")})`);
          continue;
        }
        for (const a of g.actions) {
          for (const r of g.resources) {
            const lower = a.toLowerCase();
            const ok = lower.startsWith("ssm:") && !a.includes("*") && (r.startsWith(ownArn) || r === ownPathArn)
              ? true
              : lower === "kms:decrypt" && r === keyArn
                ? true
                : (lower === "sts:assumerole") && roleByArn.get(r)?.tags[fleetTag.queue] === q && ["agent", "host"].includes(roleByArn.get(r)?.tags[fleetTag.role] ?? "");
            if (!ok) problems.push(`${where}: role ${role.name} grants ${a} on ${r}`);
          }
        }
      }
      for (const p of ry.gets) if (!p.startsWith(own)) problems.push(`${where}: role ${role.name} can read SSM ${p} (evaluated: GetParameter or GetParametersByPath allowed)`);
      for (const p of ry.reads) if (!p.startsWith(own) && !ry.gets.includes(p)) problems.push(`${where}: role ${role.name} can decrypt SSM ${p}`);
    }
    // Pillar: its own document only, no key of another kind of machine, nothing naming another runner or queue.
    for (const p of y.pillarProblems) problems.push(`${where}: pillar: ${p}`);
    const doc = documents.get(y.hostname) ?? {};
    for (const k of Object.keys(doc)) {
      const kinds = keyKinds.get(k) ?? new Set();
      const others = [...kinds].filter((x) => x !== y.kind);
      if (others.length && kinds.size < allKinds.size) problems.push(`${where}: pillar key ${k} is the ${others.join(", ")}'s`);
    }
    for (const [p, v] of leaves(doc)) {
      if (typeof v !== "string") continue;
      for (const token of v.split(/[\s"'`,;()[\]{}<>|=]+/)) {
        if (!token) continue;
        const host = token.split(/[.:]/)[0];
        if (host !== y.hostname && runnerNames.has(host)) problems.push(`${where}: pillar ${p} names another runner, ${host}`);
        else if (token.startsWith(`/ci-fleet/${stack}/`) && !token.startsWith(own)) problems.push(`${where}: pillar ${p} names ${token}, outside ${own}`);
        else if (/^arn:aws[a-z-]*:iam::\d{12}:role\//.test(token) && !y.reach.has(token)) problems.push(`${where}: pillar ${p} names role ${token}, which it cannot wear`);
      }
    }
    for (const k of y.pillarKeys) if (k.secret && k.shared) problems.push(`${where}: the shared pillar's ${k.path} holds a secret (every minion gets it)`);
    // Salt: no minion takes orders from it; no peer rights.
    for (const o of y.saltControls) if (o !== y.hostname) problems.push(`${where}: ${o}'s pillar names it as the Salt master`);
    for (const p of y.saltPeer) problems.push(`${where}: Salt ${p} (it could publish to other minions)`);
    // Teleport: no cluster service, no forwarded agent.
    for (const s of y.teleportServices) if (s !== "ssh_service") problems.push(`${where}: runs Teleport's ${s}`);
    for (const f of y.teleportForwarded) problems.push(`${where}: ${f}`);
  }
  problems.push(...readProblems.map((p) => `policy not readable: ${p} (fail closed)`));
  problems.push(...[...new Set(errors)].map((e) => `the IAM evaluator refused: ${e}`));

  // --- the table: one row per kind, from its first machine (others differ only by name).
  const rows: BlastRadiusRow[] = [];
  const order = (y: MachineYield) => (y.role === "salt-master" ? 0 : y.role === "teleport" ? 1 : 2);
  const kinds = [...new Set(yields.sort((a, b) => order(a) - order(b) || (a.queue ?? "").localeCompare(b.queue ?? "") || a.hostname.localeCompare(b.hostname)).map((y) => y.kind))];
  for (const kind of kinds) {
    const members = yields.filter((y) => y.kind === kind);
    const y = members[0];
    const label = y.role === "salt-master" ? "Salt master" : y.role === "teleport" ? "Teleport" : `runner of queue \`${y.queue}\` (${y.trusted ? "trusted" : "untrusted"})`;
    const aws: string[] = [];
    for (const [arn, how] of y.reach) {
      const role = roleByArn.get(arn);
      aws.push(`wears ${roleLabel(arn)} via ${how}`);
      if (!role) continue;
      const ry = await yieldOf(role);
      for (const g of ry.grants) {
        const acts = g.actions.join(", ");
        const res = g.resources.map((r) => shortResource(r, { region, accountId, keyArn })).join(", ");
        aws.push(`&nbsp;&nbsp;${g.notAction ? "NOT " : ""}${acts} on ${g.notResource ? "NOT " : ""}${res}${g.conditions ? " (with conditions)" : ""}`);
      }
      for (const a of attachedTo(role.arn)) aws.push(`&nbsp;&nbsp;managed policy \`${a}\` (not evaluated here)`);
      if (ry.reads.length) aws.push(`&nbsp;&nbsp;reads and decrypts (evaluated): ${ry.reads.map((p) => `\`${p}*\``).join(", ")}${ry.parameters.length ? ` (${ry.parameters.length} registered parameter${ry.parameters.length === 1 ? "" : "s"})` : ""}`);
      const undecryptable = ry.gets.filter((p) => !ry.reads.includes(p));
      if (undecryptable.length) aws.push(`&nbsp;&nbsp;lists but cannot decrypt (evaluated): ${undecryptable.map((p) => `\`${p}*\``).join(", ")}`);
    }
    if (!y.reach.size) aws.push("no AWS role");

    const pillar: string[] = [];
    const groups = new Map<string, { n: number; secrets: string[]; transient: string[] }>();
    for (const k of y.pillarKeys) {
      const head = k.path.split(".")[0];
      const g = groups.get(head) ?? groups.set(head, { n: 0, secrets: [], transient: [] }).get(head)!;
      g.n++;
      if (k.transient) g.transient.push(`\`${k.path}\` (secret, one-time, ${k.transient})`);
      else if (k.secret) g.secrets.push(`\`${k.path}\` (secret)`);
    }
    for (const [head, g] of groups) {
      pillar.push(`\`${head}\`: ${g.n} key${g.n === 1 ? "" : "s"}`);
      for (const s of [...g.secrets, ...g.transient]) pillar.push(`&nbsp;&nbsp;${s}`);
    }
    const sources = y.pillarProblems.length ? y.pillarProblems : ["its own document (by its authenticated minion id), the shared common pillar, the orchestration's one-time keys for it"];
    pillar.push(...sources);

    const access: string[] = [];
    const controlled = y.saltControls.filter((o) => o !== y.hostname);
    if (controlled.length) access.push(`Salt: master of ${controlled.length} other minion${controlled.length === 1 ? "" : "s"}${controlled.length === machineNamesSet.size - 1 ? " (every other machine)" : ""}: states as root on each, hence everything in this table`);
    else access.push("Salt: a minion; requests its own pillar only");
    if (y.saltPeer.length) access.push(`Salt peer rights: ${y.saltPeer.join("; ")}`);
    if (!controlled.length && y.reactorTags.length) access.push(`Salt events it can fire that the master reacts to: ${y.reactorTags.map((t) => `\`${t}\``).join(", ")} (the master decides from its own records)`);
    if (y.teleportCluster) access.push(`Teleport: the cluster's auth service (its CAs sign any login on every node: ${machineNamesSet.size - 1} machines, \`ci-admin\` with sudo)`);
    if (y.teleportServices.includes("ssh_service") && !y.teleportCluster) access.push(`Teleport: its own node identity${y.teleportJoin ? ` (joined with \`${y.teleportJoin}\`)` : ""}; no access to other machines`);
    if (y.teleportReachedBy.length) access.push(`engineers who log in here (a rooted machine sees their sessions): ${y.teleportReachedBy.join("; ")}`);
    access.push(y.teleportForwarded.length ? y.teleportForwarded.join("; ") : "no forwarded agent (forward_agent off in every role)");

    const credentials: string[] = [];
    for (const w of y.wears) credentials.push(`${roleLabel(w.roleArn)} session: ${w.sessionSeconds !== undefined ? `at most ${hoursText(w.sessionSeconds)}` : "EC2 instance-profile credentials, rotated by EC2"}`);
    for (const [arn, how] of y.reach) if (how.startsWith("sts:AssumeRole")) credentials.push(`${roleLabel(arn)} session: at most ${hoursText(Math.min(maxSession(arn), 3600))} (a role chain lasts 1 h at most)`);
    credentials.push(...y.certificates);
    // SSM parameters it can read, by directory (a directory of many, such as every pillar document, is one line).
    const readable = new Set<string>();
    for (const [arn] of y.reach) {
      const role = roleByArn.get(arn);
      if (role) for (const n of (await yieldOf(role)).parameters) readable.add(n);
    }
    const byDir = new Map<string, string[]>();
    for (const n of [...readable].sort()) {
      const dir = n.slice(0, n.lastIndexOf("/") + 1);
      (byDir.get(dir) ?? byDir.set(dir, []).get(dir)!).push(n);
    }
    for (const [dir, names] of byDir) {
      const lines = names.length > 3 ? [`\`${dir}*\` (${names.length} parameters)`] : names.map((n) => `\`${n}\``);
      for (const l of lines) credentials.push(`SSM ${l}: as long as the parameter holds it (\`pulumi up\` rewrites it; secrets rotate with \`pulumi config set --secret\`)`);
    }
    // A Teleport join token is good for any number of joins until the master revokes it (after
    // this node joined, or at its TTL); a JIT config registers one runner once.
    const reuse: Record<string, string> = { teleport_join_token: "reusable by whoever holds it until the master revokes it", github_jit_config: "single use (one runner registration)" };
    for (const k of y.pillarKeys) if (k.transient) credentials.push(`pillar \`${k.path}\` (only while the orchestration has one for this minion): served at most ${k.transient}, ${reuse[k.path.split(".").pop()!] ?? "reuse unknown"}`);
    for (const k of y.pillarKeys) if (k.secret && !k.transient) credentials.push(`pillar \`${k.path}\`: until rotated`);
    if (y.minionKey) credentials.push("its Salt minion key: no expiry (its own pillar only; replaced with the machine)");
    rows.push({ kind: label, machines: members.map((x) => x.hostname), aws, pillar, access, credentials: [...new Set(credentials)] });
  }
  return { rows, problems: [...new Set(problems)] };
}

function shortResource(r: string, ctx: { region: string; accountId: string; keyArn?: string }): string {
  if (r === ctx.keyArn) return "the fleet KMS key";
  const ssm = /^arn:aws[a-z-]*:ssm:[^:]*:[^:]*:parameter(\/.*)$/.exec(r);
  if (ssm) return `\`${ssm[1]}\``;
  const role = /^arn:aws[a-z-]*:iam::(\d{12}):role\/(.+)$/.exec(r);
  if (role) return `role \`${role[2]}\`${role[1] !== ctx.accountId ? ` (account ${role[1]})` : ""}`;
  return `\`${r}\``;
}

/** The table for report.md. */
export function renderBlastRadiusMarkdown(result: BlastRadius): string {
  const cell = (lines: string[]) => lines.map((l) => l.replace(/\|/g, "\\|")).join("<br>");
  const lines = [
    "| machine kind | AWS: roles, grants, SSM paths | pillar keys | Salt and Teleport | CI credentials and lifetimes |",
    "|---|---|---|---|---|",
  ];
  for (const r of result.rows) {
    lines.push(`| ${r.kind}<br>${r.machines.length} machine${r.machines.length === 1 ? "" : "s"} | ${cell(r.aws)} | ${cell(r.pillar)} | ${cell(r.access)} | ${cell(r.credentials)} |`);
  }
  lines.push("");
  lines.push(result.problems.length ? `**What an untrusted runner yields beyond its queue's path:**\n\n${result.problems.map((p) => `- ${p}`).join("\n")}` : "No runner of an untrusted queue yields anything beyond its own queue's path.");
  return `${lines.join("\n")}\n`;
}

export const BLAST_RADIUS_CHECK = "untrusted runners yield only their own queue's path";

export function blastRadiusCheck(result: BlastRadius): { name: string; ok: boolean; detail: string } {
  const untrusted = result.rows.filter((r) => r.kind.includes("(untrusted)")).reduce((a, r) => a + r.machines.length, 0);
  return {
    name: BLAST_RADIUS_CHECK,
    ok: result.problems.length === 0,
    detail: result.problems.length ? result.problems.join("; ") : `${untrusted} untrusted runner${untrusted === 1 ? "" : "s"} checked`,
  };
}

/** For tests: decode a `*_gzip_base64` pillar value (never written anywhere). */
export function gunzipBase64(value: string): string {
  return gunzipSync(new Uint8Array(Buffer.from(value, "base64"))).toString("utf8");
}
