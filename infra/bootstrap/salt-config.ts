/**
 * Salt configuration written at bootstrap: the master's hardened drop-in and each
 * minion's drop-in. Pure builders; rendered to YAML by cloud-config.ts.
 */

/** Where the master serves states and pillar from (see docs/contracts.md). */
export const SALT_PATHS = {
  repositoryCheckout: "/srv/ci-fleet/repo",
  /** This repository's `salt/` tree: states, and `pillar/top.sls`. */
  stateTree: "/srv/ci-fleet/repo/salt",
  pillarTree: "/srv/ci-fleet/repo/salt/pillar",
  /** Written by ci-fleet-pillar-sync from SSM; root-only; never under a file root. */
  generatedPillar: "/srv/ci-fleet/pillar",
  pillarSync: "/srv/ci-fleet/repo/salt/salt_master/files/ci_fleet_pillar_sync.py",
} as const;

/**
 * Execution modules no one may publish from the master, root included: they run
 * arbitrary commands or arbitrary state data on minions. States still use `cmd.run`.
 */
export const BLOCKED_PUBLISH_FUNCTIONS = [
  "cmd.*",
  "state.single",
  "state.high",
  "state.low",
  "state.template",
  "state.template_str",
] as const;

export interface SaltMasterConfig {
  interface: string;
  ipv6: boolean;
  user: string;
  hash_type: "sha256";
  auto_accept: false;
  open_mode: false;
  permissive_pki_access: false;
  publisher_acl: Record<string, string[]>;
  publisher_acl_blacklist: { users: string[]; modules: string[] };
  external_auth: Record<string, never>;
  peer: Record<string, never>;
  peer_run: Record<string, never>;
  file_recv: false;
  pillar_opts: false;
  fileserver_backend: string[];
  file_roots: { base: string[] };
  pillar_roots: { base: string[] };
}

/**
 * The master's drop-in `/etc/salt/master.d/ci-fleet.conf`.
 *
 * `interface: 0.0.0.0`: on equinix-metal a machine's private address is only known after
 * the device exists, so the master cannot be told its own address in its user-data; it
 * listens everywhere and an nftables rule (bootcmd) admits ports 4505/4506 only from
 * loopback and the fleet's private networks. Its own minion talks to 127.0.0.1.
 *
 * `user: root`: the generated pillar is root-only (docs/contracts.md).
 */
export function buildSaltMasterConfig(): SaltMasterConfig {
  return {
    interface: "0.0.0.0",
    ipv6: false,
    user: "root",
    hash_type: "sha256",
    // Only pre-seeded keys (write_files) are ever accepted; no autosign of any kind.
    auto_accept: false,
    open_mode: false,
    permissive_pki_access: false,
    // No non-root user may publish anything.
    publisher_acl: {},
    publisher_acl_blacklist: { users: [], modules: [...BLOCKED_PUBLISH_FUNCTIONS] },
    external_auth: {},
    // Minions may not publish to each other or run runners, nor push files.
    peer: {},
    peer_run: {},
    file_recv: false,
    // The master's own config (and its secrets) is not pillar.
    pillar_opts: false,
    fileserver_backend: ["roots"],
    file_roots: { base: [SALT_PATHS.stateTree] },
    pillar_roots: { base: [SALT_PATHS.pillarTree, SALT_PATHS.generatedPillar] },
  };
}

export interface SaltMinionConfig {
  master: string;
  id: string;
  master_finger: string;
  hash_type: "sha256";
  ipv6: boolean;
  file_client: "remote";
  /** Pillar (secrets) is never cached on the minion's disk. */
  minion_pillar_cache: false;
  /** Avoids slow reverse lookups at start; grains are never trusted anyway. */
  enable_fqdns_grains: false;
}

export function buildSaltMinionConfig(input: {
  masterAddress: string;
  minionId: string;
  masterFingerprint: string;
}): SaltMinionConfig {
  return {
    master: input.masterAddress,
    id: input.minionId,
    // The minion refuses any master whose public key has another fingerprint.
    master_finger: input.masterFingerprint,
    hash_type: "sha256",
    ipv6: false,
    file_client: "remote",
    minion_pillar_cache: false,
    enable_fqdns_grains: false,
  };
}
