import { buildAuthProxyConfig, buildNodeConfig, teleportNodeLabels, type AuthProxyConfigInput } from "../../infra/teleport/config";

/** A small fleet: the control plane plus two queues, one untrusted and one trusted. */
export const STACK = "production";
export const QUEUES = ["default", "release"] as const;
export const ORG = "example-org";
export const PUBLIC_ADDR = "teleport.example.org";
export const AUTH_IP = "10.0.0.6";
export const AUTH_ADDRESS = `${AUTH_IP}:3025`;

/** Stand-ins for the secret OAuth app credentials: distinctive so a leak is easy to find. */
export const FAKE_CLIENT_ID = "Iv1.fake-client-id-0123";
export const FAKE_CLIENT_SECRET = "fake-client-secret-4d1c0ffee";

export const MACHINES: Record<string, Record<string, string>> = {
  "production-salt-master": teleportNodeLabels({ stack: STACK, role: "salt-master" }),
  "production-teleport": teleportNodeLabels({ stack: STACK, role: "teleport" }),
  "production-default-r1": teleportNodeLabels({ stack: STACK, role: "runner", queue: "default" }),
  "production-default-r2": teleportNodeLabels({ stack: STACK, role: "runner", queue: "default" }),
  "production-release-r1": teleportNodeLabels({ stack: STACK, role: "runner", queue: "release" }),
};

export const TEAMS_TO_ROLES: Record<string, string[]> = {
  "ci-admins": ["fleet-admin"],
  "ci-operators": ["runner-operator-default"],
  "release-managers": ["runner-operator-release", "fleet-auditor"],
  "security": ["fleet-auditor"],
};

export function authInput(overrides: Partial<AuthProxyConfigInput> = {}): AuthProxyConfigInput {
  return {
    provider: "aws",
    nodename: "production-teleport",
    privateIpv4: AUTH_IP,
    clusterName: "ci.example.org",
    publicAddr: PUBLIC_ADDR,
    acmeEmail: "ops@example.org",
    audit: {
      kind: "aws",
      region: "us-east-1",
      stateTable: "ci-fleet-production-teleport-state",
      sessionsBucket: "ci-fleet-production-teleport-audit-123456789012",
      eventsTable: "ci-fleet-production-teleport-events",
      retentionDays: 365,
    },
    labels: MACHINES["production-teleport"],
    ...overrides,
  };
}

export function authConfig(overrides: Partial<AuthProxyConfigInput> = {}) {
  return buildAuthProxyConfig(authInput(overrides));
}

export function nodeConfigs(provider: "aws" | "equinix-metal" = "equinix-metal") {
  return Object.entries(MACHINES)
    .filter(([name]) => name !== "production-teleport")
    .map(([name, labels], index) => buildNodeConfig({ provider, nodename: name, privateIpv4: `10.0.1.${10 + index}`, authAddress: AUTH_ADDRESS, labels }));
}
