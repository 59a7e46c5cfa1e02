import * as fs from "fs";
import * as path from "path";
import { MachineProviderName } from "../../infra/config/model";
import { FleetIdentity, identityConfigProblems } from "../../infra/identity/identity";
import { runUnderMocks } from "../../tools/preview/mock-runtime";
import { Capture, captureIdentity, countByType, named, ofType, parsePolicy, settle } from "./capture";
import {
  FLEET_ACCOUNT,
  INFRA_ACCOUNT_A,
  INFRA_ACCOUNT_B,
  MANY_QUEUES,
  MANY_RUNNERS_PER_QUEUE,
  REGION,
  SECRET_VALUES,
  deployTargetCount,
  manyQueueFleet,
  productionFleet,
} from "./fleets";

const ROLE = "aws:iam/role:Role";
const ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy";
const ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment";
const PARAMETER = "aws:ssm/parameter:Parameter";
const KEY = "aws:kms/key:Key";
const PROVIDER = "pulumi:providers:aws";
const TAGGABLE = [ROLE, KEY, PARAMETER, "aws:iam/instanceProfile:InstanceProfile", "aws:rolesanywhere/trustAnchor:TrustAnchor", "aws:rolesanywhere/profile:Profile"];

const PROVIDERS: MachineProviderName[] = ["aws", "equinix-metal"];
const agentArn = (queue: string) => `arn:aws:iam::${FLEET_ACCOUNT}:role/ci-fleet-production-agent-${queue}`;

const captures = new Map<string, Capture>();
beforeAll(async () => {
  for (const provider of PROVIDERS) {
    captures.set(`production/${provider}`, await captureIdentity(() => productionFleet(provider)));
    captures.set(`many/${provider}`, await captureIdentity(() => manyQueueFleet(provider)));
  }
});
const capture = (fleet: "production" | "many", provider: MachineProviderName) => captures.get(`${fleet}/${provider}`) as Capture;

describe.each(PROVIDERS)("production fleet on %s", (provider) => {
  const c = () => capture("production", provider);

  test("exact resource counts", () => {
    const common = {
      // 3 agents, Salt master, Teleport, 3 deploy roles (+ 3 host roles on aws)
      "aws:iam/role:Role": provider === "aws" ? 11 : 8,
      // 3 agents + Salt master (+ 3 host roles on aws); Teleport's comes from its audit component
      "aws:iam/rolePolicy:RolePolicy": provider === "aws" ? 7 : 4,
      "aws:iam/rolePolicyAttachment:RolePolicyAttachment": 4,
      "aws:kms/alias:Alias": 1,
      "aws:kms/key:Key": 1,
      // the queue secrets (the two Buildkite agent tokens go to their runners' pillar instead)
      "aws:ssm/parameter:Parameter": 2,
      "ci-fleet:identity:FleetIdentity": 1,
      "pulumi:providers:aws": 3, // the fleet account + 2 deploy-target accounts
      "pulumi:pulumi:Stack": 1,
    };
    const perProvider =
      provider === "aws"
        ? { "aws:iam/instanceProfile:InstanceProfile": 5 }
        : {
            "aws:rolesanywhere/profile:Profile": 5,
            "aws:rolesanywhere/trustAnchor:TrustAnchor": 1,
            // The CA + the Salt master's bootstrap certificate; the fleet issues every other itself.
            "tls:index/privateKey:PrivateKey": 2,
            "tls:index/certRequest:CertRequest": 1,
            "tls:index/locallySignedCert:LocallySignedCert": 1,
            "tls:index/selfSignedCert:SelfSignedCert": 1,
          };
    expect(countByType(c().resources)).toEqual(countByType(Object.entries({ ...common, ...perProvider }).flatMap(([type, n]) => Array.from({ length: n }, () => ({ type } as never)))));
  });

  test("every child is parented to the component and named from it", () => {
    for (const r of c().resources.filter((x) => !["pulumi:pulumi:Stack", "ci-fleet:identity:FleetIdentity"].includes(x.type))) {
      expect([r.type, r.name, r.parent]).toEqual([r.type, r.name, "identity"]);
      expect(r.name.startsWith("identity-")).toBe(true);
    }
  });

  test("role names follow docs/contracts.md and fit IAM's 64 characters", () => {
    const names = ofType(c().resources, ROLE).map((r) => r.inputs.name as string).sort();
    expect(names).toEqual([
      "ci-fleet-production-agent-default",
      "ci-fleet-production-agent-infra",
      "ci-fleet-production-agent-release",
      "ci-fleet-production-deploy-artifacts",
      "ci-fleet-production-deploy-dns",
      "ci-fleet-production-deploy-staging-web",
      ...(provider === "aws" ? ["ci-fleet-production-host-default", "ci-fleet-production-host-infra", "ci-fleet-production-host-release"] : []),
      "ci-fleet-production-salt-master",
      "ci-fleet-production-teleport",
    ]);
    for (const name of names) expect(name.length).toBeLessThanOrEqual(64);
  });

  test("machine roles: EC2 or Roles Anywhere trust, one hour sessions", () => {
    const resources = c().resources;
    const anchorArn = provider === "equinix-metal" ? (ofType(resources, "aws:rolesanywhere/trustAnchor:TrustAnchor")[0].outputs.arn as string) : "";
    for (const [name, ou] of [["identity-agent-default", "default"], ["identity-agent-infra", "infra"], ["identity-agent-release", "release"], ["identity-salt-master", "salt-master"], ["identity-teleport", "teleport"]]) {
      const role = named(resources, ROLE, name);
      expect(role.inputs.maxSessionDuration).toBe(3600);
      const expected =
        provider === "aws" && name.startsWith("identity-agent-")
          ? { Sid: "QueueHostRoleAssumes", Effect: "Allow", Principal: { AWS: `arn:aws:iam::${FLEET_ACCOUNT}:role/ci-fleet-production-host-${ou}` }, Action: "sts:AssumeRole" }
          : provider === "aws"
          ? { Sid: "Ec2InstancesAssume", Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" }
          : {
              Sid: "RolesAnywhereAssumeWithFleetCertificate",
              Effect: "Allow",
              Principal: { Service: "rolesanywhere.amazonaws.com" },
              Action: ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"],
              Condition: { ArnEquals: { "aws:SourceArn": anchorArn }, StringEquals: { "aws:PrincipalTag/x509Subject/OU": ou } },
            };
      expect(parsePolicy(role.inputs.assumeRolePolicy)).toEqual({ Version: "2012-10-17", Statement: [expected] });
    }
    if (provider === "equinix-metal") expect(anchorArn).toMatch(/^arn:aws:rolesanywhere:us-east-1:111111111111:trust-anchor\//);
  });

  test("agent permissions: own queue path, own key via SSM, own deploy roles only", () => {
    const resources = c().resources;
    const keyArn = ofType(resources, KEY)[0].outputs.arn as string;
    const prefix = (queue: string) => `arn:aws:ssm:us-east-1:${FLEET_ACCOUNT}:parameter/ci-fleet/production/${queue}`;
    const expected = (queue: string, deployRoleArns: string[]) => ({
      Version: "2012-10-17",
      Statement: [
        { Sid: "ReadQueueParameters", Effect: "Allow", Action: ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"], Resource: `${prefix(queue)}/*` },
        { Sid: "ListQueueParameterPath", Effect: "Allow", Action: "ssm:GetParametersByPath", Resource: prefix(queue) },
        {
          Sid: "DecryptQueueParametersViaSsm",
          Effect: "Allow",
          Action: "kms:Decrypt",
          Resource: keyArn,
          Condition: { StringEquals: { "kms:ViaService": "ssm.us-east-1.amazonaws.com" }, StringLike: { "kms:EncryptionContext:PARAMETER_ARN": `${prefix(queue)}/*` } },
        },
        ...(deployRoleArns.length ? [{ Sid: "AssumeQueueDeployRoles", Effect: "Allow", Action: "sts:AssumeRole", Resource: deployRoleArns }] : []),
      ],
    });
    const policyOf = (name: string) => named(resources, ROLE_POLICY, name);
    expect(policyOf("identity-agent-default").inputs.role).toBe("ci-fleet-production-agent-default");
    expect(parsePolicy(policyOf("identity-agent-default").inputs.policy)).toEqual(expected("default", []));
    expect(parsePolicy(policyOf("identity-agent-infra").inputs.policy)).toEqual(
      expected("infra", [`arn:aws:iam::${INFRA_ACCOUNT_A}:role/ci-fleet-production-deploy-staging-web`, `arn:aws:iam::${INFRA_ACCOUNT_B}:role/ci-fleet-production-deploy-dns`]),
    );
    expect(parsePolicy(policyOf("identity-agent-release").inputs.policy)).toEqual(
      expected("release", [`arn:aws:iam::${INFRA_ACCOUNT_A}:role/ci-fleet-production-deploy-artifacts`]),
    );
    const master = parsePolicy(policyOf("identity-salt-master").inputs.policy) as { Statement: { Resource: string }[] };
    expect(master.Statement.map((s) => s.Resource)).toEqual([
      `${prefix("pillar")}/*`,
      prefix("pillar"),
      keyArn,
      `${prefix("salt-master")}/drain/*`,
      `${prefix("salt-master")}/drain`,
    ]);
  });

  test("deploy roles live in their target accounts and trust only their queue's agent role", () => {
    const resources = c().resources;
    const deploy = (name: string) => named(resources, ROLE, name);
    const cases: [string, string, string, string | undefined][] = [
      ["identity-deploy-infra-staging-web", "infra", INFRA_ACCOUNT_A, undefined],
      ["identity-deploy-infra-dns", "infra", INFRA_ACCOUNT_B, `arn:aws:iam::${INFRA_ACCOUNT_B}:policy/ci-deploy-boundary`],
      ["identity-deploy-release-artifacts", "release", INFRA_ACCOUNT_A, undefined],
    ];
    for (const [name, queue, account, boundary] of cases) {
      const role = deploy(name);
      expect(parsePolicy(role.inputs.assumeRolePolicy)).toEqual({
        Version: "2012-10-17",
        Statement: [{ Sid: "QueueAgentRoleAssumes", Effect: "Allow", Principal: { AWS: agentArn(queue) }, Action: "sts:AssumeRole" }],
      });
      expect(role.inputs.maxSessionDuration).toBe(3600);
      expect(role.inputs.permissionsBoundary).toBe(boundary);
      expect(role.inputs.managedPolicyArns).toBeUndefined();
      // The mock puts a role in the account its provider assumes a role in.
      expect(role.outputs.arn).toBe(`arn:aws:iam::${account}:role/${role.inputs.name}`);
    }
    const attachments = ofType(resources, ATTACHMENT).map((a) => `${a.inputs.role} <- ${a.inputs.policyArn}`).sort();
    expect(attachments).toEqual([
      `ci-fleet-production-deploy-artifacts <- arn:aws:iam::${INFRA_ACCOUNT_A}:policy/release-artifacts-write`,
      "ci-fleet-production-deploy-dns <- arn:aws:iam::aws:policy/AmazonRoute53FullAccess",
      "ci-fleet-production-deploy-staging-web <- arn:aws:iam::aws:policy/AmazonS3FullAccess",
      "ci-fleet-production-deploy-staging-web <- arn:aws:iam::aws:policy/CloudFrontFullAccess",
    ]);
  });

  test("providers: the fleet account pinned, one assume-role provider per target account", () => {
    const providers = ofType(c().resources, PROVIDER).map((p) => ({
      name: p.name,
      region: p.inputs.region,
      allowed: JSON.parse(p.inputs.allowedAccountIds as string),
      assumeRoles: p.inputs.assumeRoles === undefined ? undefined : JSON.parse(p.inputs.assumeRoles as string),
    }));
    const session = "ci-fleet-production-identity";
    expect(providers.sort((a, b) => (a.name < b.name ? -1 : 1))).toEqual([
      { name: `identity-account-${INFRA_ACCOUNT_A}`, region: REGION, allowed: [INFRA_ACCOUNT_A], assumeRoles: [{ roleArn: `arn:aws:iam::${INFRA_ACCOUNT_A}:role/ci-fleet-bootstrap`, sessionName: session }] },
      { name: `identity-account-${INFRA_ACCOUNT_B}`, region: REGION, allowed: [INFRA_ACCOUNT_B], assumeRoles: [{ roleArn: `arn:aws:iam::${INFRA_ACCOUNT_B}:role/ci-fleet-bootstrap`, sessionName: session }] },
      { name: "identity-aws", region: REGION, allowed: [FLEET_ACCOUNT], assumeRoles: undefined },
    ]);
  });

  test("the KMS key: rotation on, 30-day deletion window, its alias", () => {
    const resources = c().resources;
    const key = ofType(resources, KEY)[0];
    expect([key.inputs.enableKeyRotation, key.inputs.deletionWindowInDays]).toEqual([true, 30]);
    const policy = parsePolicy(key.inputs.policy) as { Statement: { Sid: string; Principal: { AWS: string } }[] };
    expect(policy.Statement.map((s) => [s.Sid, s.Principal.AWS])).toEqual([
      ["AccountRootAdministersKey", `arn:aws:iam::${FLEET_ACCOUNT}:root`],
      ["DecryptViaSsmDefault", agentArn("default")],
      ["DecryptViaSsmInfra", agentArn("infra")],
      ["DecryptViaSsmRelease", agentArn("release")],
      ["DecryptViaSsmSaltMaster", `arn:aws:iam::${FLEET_ACCOUNT}:role/ci-fleet-production-salt-master`],
    ]);
    const alias = ofType(resources, "aws:kms/alias:Alias")[0];
    expect([alias.inputs.name, alias.inputs.targetKeyId]).toEqual(["alias/ci-fleet-production", key.outputs.keyId]);
  });

  test("queue secrets: SecureStrings under the queue path, encrypted with the fleet key", () => {
    const resources = c().resources;
    const keyArn = ofType(resources, KEY)[0].outputs.arn;
    const parameters = ofType(resources, PARAMETER).map((p) => [p.inputs.name, p.inputs.type, p.inputs.keyId === keyArn, p.inputs.value, p.inputs.tags]);
    const tags = (queue: string) => ({ "ci-fleet:stack": "production", "ci-fleet:role": "agent", "ci-fleet:queue": queue });
    expect(parameters).toEqual([
      ["/ci-fleet/production/default/ci-netboot/ssh/key", "SecureString", true, "[secret]", tags("default")],
      // No buildkite/agent-token: the queue role (every job's) reads the whole queue path; the
      // token travels in the runners' pillar documents only (test/buildkite/agent-token.test.ts).
      ["/ci-fleet/production/release/global/env/NPM_TOKEN", "SecureString", true, "[secret]", tags("release")],
    ]);
  });

  test("secret values reach the engine as secrets and never appear in the capture", () => {
    const text = JSON.stringify(c().resources);
    for (const [name, value] of Object.entries(SECRET_VALUES)) {
      // The Buildkite agent tokens are not the identity's to store (they go to the runners' pillar).
      expect({ name, reached: c().mocks.secretValues.has(value) }).toEqual({ name, reached: !name.startsWith("buildkite") });
      expect(text).not.toContain(value);
    }
    expect(text).not.toMatch(/BEGIN EC PRIVATE KEY/);
  });

  test("every taggable resource carries stack, role and (where relevant) queue tags", () => {
    const taggable = c().resources.filter((r) => TAGGABLE.includes(r.type));
    expect(taggable.length).toBe(provider === "aws" ? 19 : 17); // 8 roles (+ 3 host roles on aws), key, 2 parameters (no agent tokens), 5 profiles (+ trust anchor)
    for (const r of taggable) {
      const tags = r.inputs.tags as Record<string, string>;
      expect([r.name, tags["ci-fleet:stack"]]).toEqual([r.name, "production"]);
      expect(["agent", "host", "deploy", "salt-master", "teleport", "fleet"]).toContain(tags["ci-fleet:role"]);
      if (["agent", "host", "deploy"].includes(tags["ci-fleet:role"])) expect([r.name, typeof tags["ci-fleet:queue"]]).toEqual([r.name, "string"]);
    }
    expect(named(c().resources, ROLE, "identity-deploy-infra-dns").inputs.tags).toEqual({
      "ci-fleet:stack": "production",
      "ci-fleet:role": "deploy",
      "ci-fleet:queue": "infra",
      "ci-fleet:deploy-target": "dns",
      "ci-fleet:deploy-trust": "queue-role",
    });
  });

  test("public fields", async () => {
    const identity = c().identity;
    expect((await settle(identity.kmsAliasName)).value).toBe("alias/ci-fleet-production");
    expect((await settle(identity.kmsKeyArn)).value).toMatch(/^arn:aws:kms:us-east-1:111111111111:key\//);
    expect(Object.keys(identity.agentRoleArns)).toEqual(["default", "infra", "release"]);
    expect((await settle(identity.agentRoleArns.infra)).value).toBe(agentArn("infra"));
    expect((await settle(identity.saltMasterRoleArn)).value).toBe(`arn:aws:iam::${FLEET_ACCOUNT}:role/ci-fleet-production-salt-master`);
    expect((await settle(identity.teleportRoleName)).value).toBe("ci-fleet-production-teleport");
    expect(Object.fromEntries(Object.entries(identity.deployRoleArns).map(([q, t]) => [q, Object.keys(t)]))).toEqual({
      default: [],
      infra: ["dns", "staging-web"],
      release: ["artifacts"],
    });
    expect((await settle(identity.deployRoleArns.infra.dns)).value).toBe(`arn:aws:iam::${INFRA_ACCOUNT_B}:role/ci-fleet-production-deploy-dns`);
    if (provider === "aws") {
      expect(identity.rolesAnywhere).toBeUndefined();
      const profiles = identity.instanceProfileNames!;
      expect((await settle(profiles.saltMaster)).value).toBe("ci-fleet-production-salt-master");
      expect(Object.keys(profiles.queues)).toEqual(["default", "infra", "release"]);
      // A runner's instance wears its queue's host role, never the agent role itself.
      expect((await settle(profiles.queues.default)).value).toBe("ci-fleet-production-host-default");
    } else {
      expect(identity.instanceProfileNames).toBeUndefined();
      const ra = identity.rolesAnywhere!;
      expect(Object.keys(ra.profileArns).sort()).toEqual(["default", "infra", "release", "salt-master", "teleport"]);
      // Only the master's bootstrap certificate and the CA leave Pulumi; both keys secret.
      for (const cert of [ra.bootstrapCertificate, ra.ca]) {
        const key = await settle(cert.privateKeyPem);
        expect(key.secret).toBe(true);
        expect(key.value).toMatch(/^-----BEGIN EC PRIVATE KEY-----/);
        expect((await settle(cert.certificatePem)).secret).toBe(false);
      }
      expect(ra.certificateHours).toBe(168);
    }
  });

  test("IAM documents (snapshot)", () => {
    const documents: Record<string, unknown> = {};
    for (const r of c().resources) {
      if (r.type === ROLE) documents[`${r.name} trust`] = parsePolicy(r.inputs.assumeRolePolicy);
      if (r.type === ROLE_POLICY) documents[`${r.name} policy`] = parsePolicy(r.inputs.policy);
      if (r.type === KEY) documents[`${r.name} policy`] = parsePolicy(r.inputs.policy);
    }
    expect(Object.fromEntries(Object.keys(documents).sort().map((k) => [k, documents[k]]))).toMatchSnapshot();
  });
});

describe("Roles Anywhere on equinix-metal", () => {
  const resources = () => capture("production", "equinix-metal").resources;

  test("the CA: ECDSA P-384, a CA certificate for leaves only, its key kept secret", () => {
    const keys = ofType(resources(), "tls:index/privateKey:PrivateKey");
    expect(named(resources(), "tls:index/privateKey:PrivateKey", "identity-ca-key").inputs).toEqual({ algorithm: "ECDSA", ecdsaCurve: "P384" });
    expect(keys.filter((k) => k.name !== "identity-ca-key").every((k) => k.inputs.ecdsaCurve === "P256" && k.inputs.algorithm === "ECDSA")).toBe(true);
    const ca = ofType(resources(), "tls:index/selfSignedCert:SelfSignedCert")[0];
    expect(ca.inputs).toMatchObject({ isCaCertificate: true, maxPathLength: 0, privateKeyPem: "[secret]", allowedUses: ["cert_signing", "crl_signing", "digital_signature"] });
    const anchor = ofType(resources(), "aws:rolesanywhere/trustAnchor:TrustAnchor")[0];
    expect(anchor.inputs.source).toEqual({ sourceType: "CERTIFICATE_BUNDLE", sourceData: { x509CertificateData: ca.outputs.certPem } });
    expect(anchor.inputs.enabled).toBe(true);
  });

  test("Pulumi issues no machine's key but the master's short bootstrap certificate (the fleet issues the rest)", () => {
    const subjects = ofType(resources(), "tls:index/certRequest:CertRequest").map((r) => r.inputs.subject);
    expect(subjects).toEqual([{ commonName: "production-salt-master", organizationalUnit: "salt-master", organization: "ci-fleet-production" }]);
    const certs = ofType(resources(), "tls:index/locallySignedCert:LocallySignedCert");
    expect(certs.map((c) => c.inputs)).toEqual([
      expect.objectContaining({ validityPeriodHours: 72, earlyRenewalHours: 48, allowedUses: ["digital_signature", "client_auth"], caPrivateKeyPem: "[secret]" }),
    ]);
  });

  test("each profile hands out only its own role, for one hour", () => {
    for (const profile of ofType(resources(), "aws:rolesanywhere/profile:Profile")) {
      expect(profile.inputs.durationSeconds).toBe(3600);
      expect(profile.inputs.roleArns).toEqual([`arn:aws:iam::${FLEET_ACCOUNT}:role/${profile.inputs.name}`]);
    }
  });
});

describe.each(PROVIDERS)("generated fleet of %i queues on %s".replace("%i", String(MANY_QUEUES)), (provider) => {
  test("exact resource counts", () => {
    const c = capture("many", provider);
    const targets = deployTargetCount(c.config);
    expect(targets).toBe(15);
    const runners = MANY_QUEUES * MANY_RUNNERS_PER_QUEUE;
    const counts = countByType(c.resources);
    expect(counts[ROLE]).toBe(MANY_QUEUES * (provider === "aws" ? 2 : 1) + 2 + targets);
    expect(counts[ROLE_POLICY]).toBe(MANY_QUEUES * (provider === "aws" ? 2 : 1) + 1);
    expect(counts[ATTACHMENT]).toBe(targets);
    expect(counts[PARAMETER]).toBe(MANY_QUEUES);
    expect(counts[PROVIDER]).toBe(1 + 4);
    if (provider === "aws") {
      expect(counts["aws:iam/instanceProfile:InstanceProfile"]).toBe(MANY_QUEUES + 2);
      // stack + component, providers, roles, role policies, attachments, parameters, key + alias, profiles
      expect(c.resources.length).toBe(2 + 5 + (2 * MANY_QUEUES + 2 + targets) + (2 * MANY_QUEUES + 1) + targets + MANY_QUEUES + 2 + (MANY_QUEUES + 2));
    } else {
      expect(counts["aws:rolesanywhere/profile:Profile"]).toBe(MANY_QUEUES + 2);
      // No resource per runner: the fleet issues their certificates itself (issue 14's scale too).
      expect(runners).toBe(48);
      expect(counts["tls:index/locallySignedCert:LocallySignedCert"]).toBe(1);
      expect(counts["tls:index/privateKey:PrivateKey"]).toBe(2);
    }
  });

  test("untrusted queues get no sts statement; every role name fits", () => {
    const c = capture("many", provider);
    for (const r of ofType(c.resources, ROLE)) expect((r.inputs.name as string).length).toBeLessThanOrEqual(64);
    for (const [queue, spec] of Object.entries(c.config.queues)) {
      const policy = named(c.resources, ROLE_POLICY, `identity-agent-${queue}`).inputs.policy as string;
      expect([queue, policy.includes("sts:AssumeRole")]).toEqual([queue, Object.keys(spec.deployTargets).length > 0]);
    }
  });
});

test("reordering queues, targets and secrets in config changes no resource", async () => {
  const reversed = <T>(record: Record<string, T>) => Object.fromEntries(Object.entries(record).reverse());
  const shuffled = await captureIdentity(() => {
    const config = productionFleet("equinix-metal");
    config.queues = reversed(config.queues);
    for (const queue of Object.values(config.queues)) queue.deployTargets = reversed(queue.deployTargets);
    config.secrets.queueParameters = reversed(config.secrets.queueParameters);
    return config;
  });
  const key = (r: { type: string; name: string }) => `${r.type}::${r.name}`;
  const sorted = (c: Capture) => [...c.resources].sort((a, b) => (key(a) < key(b) ? -1 : 1));
  expect(JSON.stringify(sorted(shuffled))).toBe(JSON.stringify(sorted(capture("production", "equinix-metal"))));
});

describe("config problems are all reported before anything is built", () => {
  const LONG_QUEUE = "a-queue-name-long-enough-to-overflow-iam";
  const broken = () => {
    const config = productionFleet("equinix-metal");
    config.queues[LONG_QUEUE] = { ...config.queues.default };
    config.queues.pillar = { ...config.queues.default };
    config.queues["salt-master"] = { ...config.queues.default };
    config.queues.release.deployTargets.artifacts.roleName = "ci-fleet-production-deploy-dns";
    config.queues.release.deployTargets.artifacts.accountId = INFRA_ACCOUNT_B;
    config.identity.runnerCertificateHours = 1;
    config.secrets.queueParameters.ghost = {};
    config.secrets.queueParameters.infra["../pillar/production-salt-master"] = config.secrets.queueParameters.infra["buildkite/agent-token"];
    return config;
  };
  const expectedProblems = [
    `agent role of queue "${LONG_QUEUE}": role name "ci-fleet-production-agent-${LONG_QUEUE}" is 66 characters; IAM allows at most 64`,
    'queue name "pillar" is reserved',
    'queue name "salt-master" is reserved',
    "identity.runnerCertificateHours must be an integer from 24 to 720 (the fleet renews at half of it), got 1",
    "role ci-fleet-production-deploy-dns in account 333333333333 is claimed by queue infra deploy target dns and queue release deploy target artifacts",
    'secrets.queueParameters has unknown queue "ghost"',
    'secrets.queueParameters.infra: "../pillar/production-salt-master" has an invalid segment ".."',
  ];

  test("identityConfigProblems lists every problem", () => {
    expect(identityConfigProblems(broken())).toEqual(expectedProblems);
  });

  test("the production fixtures have none", () => {
    expect(identityConfigProblems(productionFleet("aws"))).toEqual([]);
    expect(identityConfigProblems(manyQueueFleet("equinix-metal"))).toEqual([]);
  });

  test("FleetIdentity refuses the config with all of them, creating nothing", async () => {
    const { result, mocks } = await runUnderMocks({ stack: "production", account: { accountId: FLEET_ACCOUNT, region: REGION } }, () => {
      try {
        new FleetIdentity("identity", { config: broken() });
        return "constructed";
      } catch (e) {
        return (e as Error).message;
      }
    });
    expect(result).toBe(`FleetIdentity identity:\n- ${expectedProblems.join("\n- ")}`);
    expect(mocks.resources.filter((r) => r.type.startsWith("aws:") || r.type.startsWith("tls:"))).toEqual([]);
  });

  test("a key policy too large for KMS is a config problem", () => {
    const config = manyQueueFleet("aws");
    for (let i = 0; i < 80; i++) config.queues[`extra-queue-${String(i).padStart(3, "0")}`] = { ...config.queues.q01, deployTargets: {} };
    expect(identityConfigProblems(config)).toEqual([expect.stringMatching(/^the KMS key policy for 96 queues is \d+ characters; KMS allows 32768/)]);
  });
});

test("nothing under infra/ imports the AGPL simulator or the access matrix", () => {
  const root = path.join(__dirname, "../../infra");
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith(".ts")) files.push(full);
    }
  };
  walk(root);
  expect(files.length).toBeGreaterThan(3);
  const offenders = files.filter((f) => /@cloud-copilot|access-matrix/.test(fs.readFileSync(f, "utf8")));
  expect(offenders).toEqual([]);
});

describe("aws: a runner's host role can only start one-hour sessions of its own queue's agent role (IAM simulator)", () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { runSimulation } = require("@cloud-copilot/iam-simulate") as typeof import("@cloud-copilot/iam-simulate");
  const resources = () => capture("production", "aws").resources;
  const roleNamed = (roleName: string) => ofType(resources(), ROLE).find((r) => r.inputs.name === roleName)!;
  const inlinePolicies = (roleName: string) =>
    ofType(resources(), ROLE_POLICY).filter((p) => p.inputs.role === roleName).map((p) => ({ name: String(p.inputs.name), policy: parsePolicy(p.inputs.policy) }));
  const decide = async (principalRole: string, action: string, resource: string, resourcePolicy?: unknown) => {
    const r = await runSimulation(
      {
        request: { principal: `arn:aws:sts::${FLEET_ACCOUNT}:assumed-role/${principalRole}/i-0123456789abcdef0`, action, resource: { resource, accountId: FLEET_ACCOUNT }, contextVariables: {} },
        identityPolicies: inlinePolicies(principalRole),
        serviceControlPolicies: [],
        resourceControlPolicies: [],
        resourcePolicy,
      } as never,
      {},
    );
    return r.resultType === "error" ? "Error" : r.overallResult;
  };
  const queues = ["default", "infra", "release"];

  test("sts:AssumeRole: allowed exactly on its own queue's agent role, whose trust names only that host role", async () => {
    const decisions: string[] = [];
    for (const host of queues) {
      for (const target of queues) {
        const agent = roleNamed(`ci-fleet-production-agent-${target}`);
        const hostArn = `arn:aws:iam::${FLEET_ACCOUNT}:role/ci-fleet-production-host-${host}`;
        // The trust is a resource policy naming the host role's ARN as principal.
        const trust = parsePolicy(agent.inputs.assumeRolePolicy) as { Statement: { Principal: { AWS: string } }[] };
        const identity = await decide(`ci-fleet-production-host-${host}`, "sts:AssumeRole", String(agent.outputs.arn));
        decisions.push(`${host} -> ${target}: identity ${identity}, trusted ${trust.Statement.every((s) => s.Principal.AWS === hostArn)}`);
      }
    }
    expect(decisions).toEqual(
      queues.flatMap((host) => queues.map((target) => `${host} -> ${target}: identity ${host === target ? "Allowed" : "ImplicitlyDenied"}, trusted ${host === target}`)),
    );
  });

  test("the host role can do nothing else: no SSM, no KMS, no deploy roles, no other role", async () => {
    const key = ofType(resources(), KEY)[0].outputs.arn as string;
    const probes: [string, string][] = [
      ["ssm:GetParameter", `arn:aws:ssm:${REGION}:${FLEET_ACCOUNT}:parameter/ci-fleet/production/default/x`],
      ["ssm:GetParametersByPath", `arn:aws:ssm:${REGION}:${FLEET_ACCOUNT}:parameter/ci-fleet/production/pillar`],
      ["kms:Decrypt", key],
      ["sts:AssumeRole", `arn:aws:iam::${INFRA_ACCOUNT_A}:role/ci-fleet-production-deploy-artifacts`],
      ["sts:AssumeRole", `arn:aws:iam::${FLEET_ACCOUNT}:role/ci-fleet-production-salt-master`],
      ["sts:AssumeRole", `arn:aws:iam::${FLEET_ACCOUNT}:role/ci-fleet-production-teleport`],
      ["iam:PassRole", `arn:aws:iam::${FLEET_ACCOUNT}:role/ci-fleet-production-agent-default`],
    ];
    for (const host of queues) {
      for (const [action, resource] of probes) {
        expect([host, action, resource, await decide(`ci-fleet-production-host-${host}`, action, resource)]).toEqual([host, action, resource, "ImplicitlyDenied"]);
      }
    }
  });

  test("sessions: the agent and host roles last an hour at most, and the instance profile of a runner is its host role", () => {
    for (const q of queues) {
      expect(roleNamed(`ci-fleet-production-agent-${q}`).inputs.maxSessionDuration).toBe(3600);
      expect(roleNamed(`ci-fleet-production-host-${q}`).inputs.maxSessionDuration).toBe(3600);
      const profile = ofType(resources(), "aws:iam/instanceProfile:InstanceProfile").find((p) => p.name === `identity-host-${q}`)!;
      expect(profile.inputs.role).toBe(`ci-fleet-production-host-${q}`);
    }
    expect(ofType(resources(), "aws:iam/instanceProfile:InstanceProfile").filter((p) => String(p.inputs.role).includes("-agent-"))).toEqual([]);
  });
});
