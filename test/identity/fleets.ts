import * as pulumi from "@pulumi/pulumi";
import { FleetConfig, MachineProviderName, QueueSpec } from "../../infra/config/model";

/**
 * Fleet configs written out literally, as `loadFleetConfig` would return them. Built
 * inside the mocked program (secrets are Outputs).
 */

export const FLEET_ACCOUNT = "111111111111";
export const INFRA_ACCOUNT_A = "222222222222";
export const INFRA_ACCOUNT_B = "333333333333";
export const RELEASE_ACCOUNT = INFRA_ACCOUNT_A;
export const REGION = "us-east-1";

/** Plain values of every secret in the fixtures: none may appear unmasked in captures. */
export const SECRET_VALUES = {
  buildkiteInfra: "bk-token-infra-Zq81",
  buildkiteRelease: "bk-token-release-Hx27",
  npmRelease: "npm-release-Wd55",
  deployKeyDefault: "ssh-ed25519-private-default-Pk09",
};

function baseConfig(provider: MachineProviderName, stack: string, queues: Record<string, QueueSpec>): FleetConfig {
  return {
    project: "ci-fleet",
    stack,
    provider,
    ...(provider === "equinix-metal"
      ? { equinix: { projectId: "0b9e5f4c-5d2e-4a8e-9d61-2a7e3c1f0a11", metro: "da", os: "debian_12" } }
      : {
          aws: {
            region: REGION,
            vpcCidr: "10.40.0.0/16",
            subnets: { "us-east-1a": { privateCidr: "10.40.0.0/20", publicCidr: "10.40.128.0/24" } },
            defaultZone: "us-east-1a",
            imageId: "ami-0123456789abcdef0",
          },
        }),
    plans: { small: { "equinix-metal": "c3.small.x86", aws: "m5.large" }, metal: { "equinix-metal": "m3.large.x86", aws: "c5.metal" } },
    saltMaster: { plan: "small", repository: "https://github.com/example-org/ci-fleet.git", ref: "main" },
    teleport: {
      plan: "small",
      clusterName: "ci.example.org",
      publicAddr: "ci.example.org",
      acmeEmail: "ops@example.org",
      githubOrg: "example-org",
      teamsToRoles: { "ci-admins": ["access", "editor"] },
      auditRetentionDays: 365,
    },
    dns: { zone: "fleet.ci.example.org" },
    identity: { accountId: FLEET_ACCOUNT, region: REGION, bootstrapRoleName: "ci-fleet-bootstrap", runnerCertificateHours: 168 },
    github: { organization: "example-org", appId: "123456", installationId: "7890123" },
    buildkite: { organization: "example-org" },
    auditArchive: { enabled: false },
    queues,
    secrets: {
      teleportGithubClientId: pulumi.secret("gh-client-id"),
      teleportGithubClientSecret: pulumi.secret("gh-client-secret"),
      githubAppPrivateKey: pulumi.secret("gh-app-key"),
      queueParameters: {},
    },
    missingSecrets: [],
  };
}

/** Production-like: an untrusted pull-request queue and two trusted deploying queues. */
export function productionFleet(provider: MachineProviderName): FleetConfig {
  const config = baseConfig(provider, "production", {
    default: {
      agent: "github-actions",
      trusted: false,
      labels: ["self-hosted", "linux", "x64", "netboot"],
      runnerGroup: "untrusted",
      runners: { r1: { plan: "metal" }, r2: { plan: "metal" } },
      deployTargets: {},
    },
    infra: {
      agent: "buildkite",
      trusted: true,
      labels: ["netboot"],
      runners: { r1: { plan: "metal" } },
      deployTargets: {
        "staging-web": {
          accountId: INFRA_ACCOUNT_A,
          roleName: "ci-fleet-production-deploy-staging-web",
          managedPolicyArns: ["arn:aws:iam::aws:policy/AmazonS3FullAccess", "arn:aws:iam::aws:policy/CloudFrontFullAccess"],
        },
        "dns": {
          accountId: INFRA_ACCOUNT_B,
          roleName: "ci-fleet-production-deploy-dns",
          managedPolicyArns: ["arn:aws:iam::aws:policy/AmazonRoute53FullAccess"],
          permissionsBoundaryArn: `arn:aws:iam::${INFRA_ACCOUNT_B}:policy/ci-deploy-boundary`,
        },
      },
    },
    release: {
      agent: "buildkite",
      trusted: true,
      labels: ["release"],
      runners: { r1: { plan: "metal" } },
      deployTargets: {
        artifacts: {
          accountId: RELEASE_ACCOUNT,
          roleName: "ci-fleet-production-deploy-artifacts",
          managedPolicyArns: [`arn:aws:iam::${RELEASE_ACCOUNT}:policy/release-artifacts-write`],
        },
      },
    },
  });
  config.secrets.queueParameters = {
    default: { "ci-netboot/ssh/key": pulumi.secret(SECRET_VALUES.deployKeyDefault) },
    infra: { "buildkite/agent-token": pulumi.secret(SECRET_VALUES.buildkiteInfra) },
    release: {
      "buildkite/agent-token": pulumi.secret(SECRET_VALUES.buildkiteRelease),
      "global/env/NPM_TOKEN": pulumi.secret(SECRET_VALUES.npmRelease),
    },
  };
  return config;
}

export const MANY_QUEUES = 16;
export const MANY_RUNNERS_PER_QUEUE = 3;

/**
 * A generated fleet: `MANY_QUEUES` queues; every third queue is untrusted without deploy
 * targets, the others deploy to 1-2 targets spread over four accounts.
 */
export function manyQueueFleet(provider: MachineProviderName): FleetConfig {
  const queues: Record<string, QueueSpec> = {};
  const queueParameters: Record<string, Record<string, pulumi.Output<string>>> = {};
  for (let i = 0; i < MANY_QUEUES; i++) {
    const queue = `q${String(i).padStart(2, "0")}`;
    const untrusted = i % 3 === 0;
    const runners: QueueSpec["runners"] = {};
    for (let r = 1; r <= MANY_RUNNERS_PER_QUEUE; r++) runners[`r${r}`] = { plan: "metal" };
    const deployTargets: QueueSpec["deployTargets"] = {};
    if (!untrusted) {
      for (let t = 0; t < 1 + (i % 2); t++) {
        deployTargets[`t${t}`] = {
          accountId: `4444444444${String((i + t) % 4).padStart(2, "0")}`,
          roleName: `ci-fleet-scale-deploy-${queue}-t${t}`,
          managedPolicyArns: ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
        };
      }
    }
    queues[queue] = {
      agent: untrusted ? "github-actions" : "buildkite",
      trusted: !untrusted,
      labels: ["netboot"],
      ...(untrusted ? { runnerGroup: "untrusted" } : {}),
      runners,
      deployTargets,
    };
    queueParameters[queue] = { "global/env/TOKEN": pulumi.secret(`token-${queue}`) };
  }
  const config = baseConfig(provider, "scale", queues);
  config.secrets.queueParameters = queueParameters;
  return config;
}

/** Deploy targets of a config, as (queue, target) pairs. */
export function deployTargetCount(config: FleetConfig): number {
  return Object.values(config.queues).reduce((n, q) => n + Object.keys(q.deployTargets).length, 0);
}
