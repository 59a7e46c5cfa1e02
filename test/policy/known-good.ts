/**
 * One known-good input per resource type, in the shapes the ci-fleet program passes. Every
 * test starts from a fresh copy and breaks it exactly one way.
 */

export const ACCOUNT = "123456789012";
export const TARGET_ACCOUNT = "210987654321";
export const FLEET_KEY_ARN = `arn:aws:kms:us-east-1:${ACCOUNT}:key/0b7e5c4a-1f2d-4c3b-9a8e-7d6c5b4a3f21`;

export function trustDocument(principal: unknown, extra: Record<string, unknown> = {}) {
  return {
    Version: "2012-10-17",
    Statement: [{ Sid: "Trust", Effect: "Allow", Principal: principal, Action: "sts:AssumeRole", ...extra }],
  };
}

/** Agent role of queue `default` on AWS: trusted by EC2 (the runner's instance profile). */
export function agentRole(): Record<string, unknown> {
  return {
    name: "ci-fleet-production-agent-default",
    assumeRolePolicy: JSON.stringify(trustDocument({ Service: "ec2.amazonaws.com" })),
    maxSessionDuration: 3600,
    tags: { "ci-fleet:role": "agent", "ci-fleet:stack": "production", "ci-fleet:queue": "default" },
  };
}

/** Deploy role in a target account: trusts exactly the `infra` queue's agent role. */
export function deployRole(): Record<string, unknown> {
  return {
    name: "ci-fleet-deploy",
    assumeRolePolicy: trustDocument({ AWS: `arn:aws:iam::${ACCOUNT}:role/ci-fleet-production-agent-infra` }),
    maxSessionDuration: 3600,
    permissionsBoundary: `arn:aws:iam::${ACCOUNT}:policy/ci-fleet-boundary`,
    tags: { "ci-fleet:role": "deploy", "ci-fleet:stack": "production", "ci-fleet:queue": "infra" },
  };
}

export function queueParameter(): Record<string, unknown> {
  return {
    name: "/ci-fleet/production/default/buildkite/agent-token",
    type: "SecureString",
    keyId: FLEET_KEY_ARN,
    value: "[secret]",
    tags: { "ci-fleet:stack": "production" },
  };
}

export function fleetKey(): Record<string, unknown> {
  return { description: "ci-fleet production", enableKeyRotation: true, deletionWindowInDays: 30 };
}

export function runnerInstance(): Record<string, unknown> {
  return {
    ami: "ami-0123456789abcdef0",
    instanceType: "c5.metal",
    subnetId: "subnet-0a",
    associatePublicIpAddress: false,
    metadataOptions: { httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: 1 },
    rootBlockDevice: { encrypted: true, volumeSize: 200, volumeType: "gp3" },
    userData: "[secret]",
    tags: { Name: "production-default-r1", "ci-fleet:role": "runner", "ci-fleet:stack": "production", "ci-fleet:queue": "default" },
  };
}

export function teleportInstance(): Record<string, unknown> {
  return {
    ...runnerInstance(),
    instanceType: "m6i.large",
    associatePublicIpAddress: true,
    tags: { Name: "production-teleport", "ci-fleet:role": "teleport", "ci-fleet:stack": "production" },
  };
}

export function equinixDevice(): Record<string, unknown> {
  return {
    hostname: "production-default-r1",
    plan: "c3.small.x86",
    metro: "da",
    operatingSystem: "debian_12",
    billingCycle: "hourly",
    projectId: "8e7a0c3e-0000-4000-8000-000000000000",
    userData: "[secret]",
    tags: ["ci-fleet:role=runner", "ci-fleet:stack=production"],
  };
}

export function teleportSecurityGroup(): Record<string, unknown> {
  return {
    vpcId: "vpc-0a",
    description: "Teleport proxy",
    ingress: [
      { protocol: "tcp", fromPort: 443, toPort: 443, cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"] },
      { protocol: "tcp", fromPort: 3025, toPort: 3025, cidrBlocks: ["10.0.0.0/16"] },
    ],
    egress: [{ protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"] }],
    tags: { "ci-fleet:role": "teleport", "ci-fleet:stack": "production" },
  };
}

export function runnerSecurityGroup(): Record<string, unknown> {
  return {
    vpcId: "vpc-0a",
    description: "runners",
    ingress: [{ protocol: "tcp", fromPort: 3022, toPort: 3022, securityGroups: ["sg-teleport"] }],
    tags: { "ci-fleet:role": "runner", "ci-fleet:stack": "production" },
  };
}

export function adminFreeManagedPolicy(): Record<string, unknown> {
  return {
    name: "ci-fleet-production-agent-default-ssm",
    policy: JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        {
          Effect: "Allow",
          Action: ["ssm:GetParameter", "ssm:GetParametersByPath"],
          Resource: `arn:aws:ssm:us-east-1:${ACCOUNT}:parameter/ci-fleet/production/default/*`,
        },
        { Effect: "Allow", Action: "kms:Decrypt", Resource: FLEET_KEY_ARN },
      ],
    }),
  };
}
