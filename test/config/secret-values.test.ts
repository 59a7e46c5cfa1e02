import { FleetConfigError } from "../../infra/config/check";
import { OFFLINE_PLACEHOLDER } from "../../infra/config/load";
import { loaderError } from "./run-loader";
import { readStackInput } from "../../tools/preview/stack-files";
import { ROOT } from "../support/preview";
import { githubClientId, githubClientSecret, opensshPrivateKey, rsaPrivateKeyPem } from "./secret-fixtures";
import { generateKeyPairSync } from "crypto";

/**
 * Every secret's value is checked for its shape before anything is created, under both
 * `pulumi up` and the offline preview: each bad value is one listed problem with its
 * config path, all of them at once, and no message ever contains the value.
 */

const NS = "ci-fleet";
const SSH_REPO = "git@github.com:example-metal/ci-fleet.git";

/** A complete, well-formed set of secrets for the production stack. */
function goodSecrets(): Record<string, unknown> {
  return {
    [`${NS}:teleportGithubClientId`]: githubClientId("good"),
    [`${NS}:teleportGithubClientSecret`]: githubClientSecret("good"),
    [`${NS}:githubAppPrivateKey`]: rsaPrivateKeyPem("good"),
    [`${NS}:queueSecrets`]: {
      infra: {
        buildkite: { "agent-token": "3f9a0c5d7e1b2a4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b" },
        global: { env: { NPM_TOKEN: "npm_0123456789abcdefABCDEF0123456789abcd" } },
        "deploy-docs": { ssh: { key: opensshPrivateKey("docs") }, allowed_pipelines: "deploy-docs\n# the nightly one too\n\ndeploy-docs-nightly\n", allowed_teams: "release-managers" },
      },
      release: { buildkite: { "agent-token": "bkct_0123456789abcdefghijklmnopqrstuvwxyz" } },
    },
  };
}

/** Runs the loader over the production stack with `overrides` (secret keys stay secret). */
async function load(overrides: Record<string, unknown>, offlinePreview: boolean): Promise<FleetConfigError | undefined> {
  const input = readStackInput(ROOT, "production");
  const config: Record<string, string> = { ...input.config };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete config[k];
    else config[k] = typeof v === "string" ? v : JSON.stringify(v, (_key, x) => x);
  }
  const secretKeys = [...new Set([...input.secretKeys, ...Object.keys(overrides).filter((k) => !k.endsWith(":saltMaster"))])];
  const error = await loaderError(config, secretKeys, offlinePreview);
  if (error !== undefined && !(error instanceof FleetConfigError)) throw error;
  return error as FleetConfigError | undefined;
}

const lines = (e: FleetConfigError | undefined) => (e ? e.problems.map((p) => `${p.path}: ${p.message}`) : []);

function withQueueSecret(edit: (tree: any) => void): Record<string, unknown> {
  const tree = JSON.parse(JSON.stringify(goodSecrets()[`${NS}:queueSecrets`]));
  edit(tree);
  return { [`${NS}:queueSecrets`]: tree };
}

const sshRepository = () => ({ [`${NS}:saltMaster`]: { plan: "control", repository: SSH_REPO, ref: "bf06e068810b270fc9acd650d1a40e5fcd7cc108" } });
const ecKey = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({ type: "sec1", format: "pem" }).toString();
const CLIENT_ID = "expected a GitHub OAuth client id (Iv1. and 16 hex digits, 20 characters starting Iv23 or Ov23, or 20 hex digits)";
const CLIENT_SECRET = "expected a GitHub OAuth client secret (40 hex digits)";
const APP_KEY = "expected the GitHub App's private key as GitHub issues it (-----BEGIN RSA PRIVATE KEY-----, unencrypted), but it does not parse as one";
const SSH_ARMOUR = "expected an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----, as ssh-keygen writes it)";
const SSH_UNREADABLE = "is armoured as an OpenSSH private key but is not a readable openssh-key-v1 key (truncated or altered?)";
const SSH_PASSPHRASE = "is protected by a passphrase, but it is used without a prompt: remove the passphrase (ssh-keygen -p -N '' -f KEY) and set it again";
const AGENT_TOKEN = "expected a Buildkite agent token (one line, at least 20 letters, digits, '.', '_' or '-')";

// Each row: what is wrong, the overrides, the exact problem lines.
const CASES: [string, () => Record<string, unknown>, string[]][] = [
  ["a client id that is not GitHub's", () => ({ [`${NS}:teleportGithubClientId`]: "my-client-id" }), [`${NS}:teleportGithubClientId: ${CLIENT_ID}`]],
  ["a client id with a trailing newline", () => ({ [`${NS}:teleportGithubClientId`]: `${githubClientId("x")}\n` }), [`${NS}:teleportGithubClientId: ${CLIENT_ID}`]],
  ["a client secret that is too short", () => ({ [`${NS}:teleportGithubClientSecret`]: "0123456789abcdef" }), [`${NS}:teleportGithubClientSecret: ${CLIENT_SECRET}`]],
  ["a client secret pasted with the client id", () => ({ [`${NS}:teleportGithubClientSecret`]: githubClientId("y") }), [`${NS}:teleportGithubClientSecret: ${CLIENT_SECRET}`]],
  ["an App key that is not a key", () => ({ [`${NS}:githubAppPrivateKey`]: "also not a key" }), [`${NS}:githubAppPrivateKey: ${APP_KEY}`]],
  ["an App key whose body is broken", () => ({ [`${NS}:githubAppPrivateKey`]: "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----\n" }), [`${NS}:githubAppPrivateKey: ${APP_KEY}`]],
  ["an App key that is the public key", () => ({ [`${NS}:githubAppPrivateKey`]: "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END PUBLIC KEY-----\n" }), [`${NS}:githubAppPrivateKey: ${APP_KEY}`]],
  ["an App key that is not RSA", () => ({ [`${NS}:githubAppPrivateKey`]: ecKey }), [`${NS}:githubAppPrivateKey: is an ec key; a GitHub App's private key is RSA (download a new one from the App's settings)`]],
  ["an App key of 1024 bits", () => ({ [`${NS}:githubAppPrivateKey`]: rsaPrivateKeyPem("small", 1024) }), [`${NS}:githubAppPrivateKey: is a 1024-bit RSA key; GitHub issues App keys of at least 2048 bits`]],
  ["a deploy key that is not a key", () => ({ ...sshRepository(), [`${NS}:saltRepositoryDeployKey`]: "not a key at all" }), [`${NS}:saltRepositoryDeployKey: ${SSH_ARMOUR}`]],
  ["a deploy key that is a PEM RSA key", () => ({ ...sshRepository(), [`${NS}:saltRepositoryDeployKey`]: rsaPrivateKeyPem("pem") }), [`${NS}:saltRepositoryDeployKey: ${SSH_ARMOUR}`]],
  ["a deploy key with the wrong magic", () => ({ ...sshRepository(), [`${NS}:saltRepositoryDeployKey`]: opensshPrivateKey("m", { magic: "openssh-key-v2\0" }) }), [`${NS}:saltRepositoryDeployKey: ${SSH_UNREADABLE}`]],
  ["a deploy key whose check words differ", () => ({ ...sshRepository(), [`${NS}:saltRepositoryDeployKey`]: opensshPrivateKey("c", { checkMismatch: true }) }), [`${NS}:saltRepositoryDeployKey: ${SSH_UNREADABLE}`]],
  ["a deploy key cut short", () => ({ ...sshRepository(), [`${NS}:saltRepositoryDeployKey`]: opensshPrivateKey("t").replace(/\n[^\n]+\n-----END/, "\n-----END") }), [`${NS}:saltRepositoryDeployKey: ${SSH_UNREADABLE}`]],
  ["a deploy key with a passphrase", () => ({ ...sshRepository(), [`${NS}:saltRepositoryDeployKey`]: opensshPrivateKey("p", { cipher: "aes256-ctr" }) }), [`${NS}:saltRepositoryDeployKey: ${SSH_PASSPHRASE}`]],
  ["a deploy key with an https repository", () => ({ [`${NS}:saltRepositoryDeployKey`]: opensshPrivateKey("h") }), [`${NS}:saltRepositoryDeployKey: is set, but saltMaster.repository is an https URL, which never uses it: remove it (pulumi config rm ${NS}:saltRepositoryDeployKey) or use the repository's ssh URL`]],
  ["an agent token with a space", () => withQueueSecret((t) => (t.infra.buildkite["agent-token"] = "token with spaces in it, quite long")), [`${NS}:queueSecrets.infra.buildkite.agent-token: ${AGENT_TOKEN}`]],
  ["an agent token that is an API token", () => withQueueSecret((t) => (t.release.buildkite["agent-token"] = "bkua_MTA0123456789abcdef0123456789abcdef01")), [`${NS}:queueSecrets.release.buildkite.agent-token: is a Buildkite API access token (bkua_); the agent needs an agent token from the cluster's Agent Tokens page`]],
  ["a job ssh key that is not OpenSSH", () => withQueueSecret((t) => (t.infra["deploy-docs"].ssh.key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI public key")), [`${NS}:queueSecrets.infra.deploy-docs.ssh.key: ${SSH_ARMOUR}`]],
  ["a job ssh key with a passphrase", () => withQueueSecret((t) => (t.infra["deploy-docs"].ssh.key = opensshPrivateKey("q", { cipher: "aes256-ctr" }))), [`${NS}:queueSecrets.infra.deploy-docs.ssh.key: ${SSH_PASSPHRASE}`]],
  ["an access list with something that is not a slug", () => withQueueSecret((t) => (t.infra["deploy-docs"].allowed_pipelines = "deploy-docs\nDeploy Docs!\n")), [`${NS}:queueSecrets.infra.deploy-docs.allowed_pipelines: line 2 is not a Buildkite pipeline slug (a-z, 0-9, '-'); one entry per line, # for comments`]],
  ["a team list with a comma-separated line", () => withQueueSecret((t) => (t.infra["deploy-docs"].allowed_teams = "release-managers, ci-admins")), [`${NS}:queueSecrets.infra.deploy-docs.allowed_teams: line 1 is not a Buildkite team slug (a-z, 0-9, '-', '_'); one entry per line, # for comments`]],
  ["an empty environment variable", () => withQueueSecret((t) => (t.infra.global.env.NPM_TOKEN = "")), [`${NS}:queueSecrets.infra.global.env.NPM_TOKEN: is empty`]],
];

describe("secret values are checked before anything is created", () => {
  test("a well-formed set of secrets passes under pulumi up", async () => {
    expect(lines(await load(goodSecrets(), false))).toEqual([]);
  });

  test("a well-formed private repository with its deploy key passes", async () => {
    expect(lines(await load({ ...goodSecrets(), ...sshRepository(), [`${NS}:saltRepositoryDeployKey`]: opensshPrivateKey("ok") }, false))).toEqual([]);
  });

  test.each([
    ["Iv1.0123456789abcdef"],
    ["Iv23liAbCdEf01234567"],
    ["Ov23liAbCdEf01234567"],
    ["0123456789abcdef0123"],
  ])("plausible client id %s is accepted", async (id) => {
    expect(lines(await load({ ...goodSecrets(), [`${NS}:teleportGithubClientId`]: id }, false))).toEqual([]);
  });

  test("an App key in PKCS#8 (as openssl re-encodes it) is accepted", async () => {
    const pkcs8 = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    expect(lines(await load({ ...goodSecrets(), [`${NS}:githubAppPrivateKey`]: pkcs8 }, false))).toEqual([]);
  });

  test.each(CASES)("%s", async (_what, overrides, expected) => {
    const values = overrides();
    for (const offlinePreview of [false, true]) {
      const error = await load({ ...goodSecrets(), ...values }, offlinePreview);
      expect(lines(error)).toEqual(expected);
      // The message names the key, never the value.
      for (const v of leaves(Object.entries(values).filter(([k]) => !k.endsWith(":saltMaster")).map(([, x]) => x))) if (v.length >= 6) expect(error!.message).not.toContain(v);
    }
  });

  test("several bad values: one error listing every one", async () => {
    const error = await load(
      {
        ...goodSecrets(),
        ...sshRepository(),
        [`${NS}:teleportGithubClientId`]: "nope",
        [`${NS}:teleportGithubClientSecret`]: "nope",
        [`${NS}:githubAppPrivateKey`]: "nope",
        [`${NS}:saltRepositoryDeployKey`]: "nope",
      },
      false,
    );
    expect(lines(error)).toEqual([
      `${NS}:teleportGithubClientId: ${CLIENT_ID}`,
      `${NS}:teleportGithubClientSecret: ${CLIENT_SECRET}`,
      `${NS}:githubAppPrivateKey: ${APP_KEY}`,
      `${NS}:saltRepositoryDeployKey: ${SSH_ARMOUR}`,
    ]);
  });

  test("bad secret values and bad plain settings are reported together", async () => {
    const error = await load({ ...goodSecrets(), [`${NS}:teleportGithubClientSecret`]: "nope", [`${NS}:provider`]: "gce" }, false);
    expect(lines(error)).toEqual([`${NS}:provider: expected one of equinix-metal | aws, got "gce"`, `${NS}:teleportGithubClientSecret: ${CLIENT_SECRET}`]);
  });

  test("the offline preview's placeholder counts as missing, never as malformed", async () => {
    const placeholders = {
      [`${NS}:teleportGithubClientId`]: OFFLINE_PLACEHOLDER,
      [`${NS}:teleportGithubClientSecret`]: OFFLINE_PLACEHOLDER,
      [`${NS}:githubAppPrivateKey`]: OFFLINE_PLACEHOLDER,
      [`${NS}:queueSecrets`]: { infra: { buildkite: { "agent-token": OFFLINE_PLACEHOLDER }, "deploy-docs": { ssh: { key: OFFLINE_PLACEHOLDER } } } },
      ...sshRepository(),
      [`${NS}:saltRepositoryDeployKey`]: OFFLINE_PLACEHOLDER,
    };
    expect(lines(await load(placeholders, true))).toEqual([]);
  });
});

function leaves(v: unknown): string[] {
  if (typeof v === "string") return [v];
  if (typeof v === "object" && v !== null) return Object.values(v).flatMap(leaves);
  return [];
}
