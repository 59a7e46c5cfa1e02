/**
 * Salt configuration written at bootstrap: the master's hardened drop-in and each
 * minion's drop-in. Pure builders. The master's drop-in is rendered here, once: the same
 * text goes to cloud-init and to the master's pillar.
 */
import * as YAML from "yaml";

/** Where the master serves states and pillar from (see docs/contracts.md). */
export const SALT_PATHS = {
  repositoryCheckout: "/srv/ci-fleet/repo",
  /** This repository's `salt/` tree: states, and `pillar/top.sls`. */
  stateTree: "/srv/ci-fleet/repo/salt",
  pillarTree: "/srv/ci-fleet/repo/salt/pillar",
  /** Written by ci-fleet-pillar-sync from SSM; root-only; never under a file root. */
  generatedPillar: "/srv/ci-fleet/pillar",
  pillarSync: "/srv/ci-fleet/repo/salt/salt_master/files/ci_fleet_pillar_sync.py",
  masterConfig: "/etc/salt/master.d/ci-fleet.conf",
  /** The private repository's deploy key and the host keys it trusts: one path each, for cloud-init and Salt. */
  saltRepositoryDeployKey: "/etc/ci-fleet/salt-repo-deploy-key",
  saltRepositoryKnownHosts: "/etc/ci-fleet/salt-repo-known-hosts",
  /** systemd drop-in that fixes the user salt-master.service starts as (whatever the packaged unit says). */
  masterServiceDropIn: "/etc/systemd/system/salt-master.service.d/ci-fleet.conf",
  /**
   * Git's system config: holds `core.sshCommand` for a private Salt repository. System scope,
   * not the checkout's own config, because Salt's git.latest first runs `git ls-remote <url>`
   * with no working directory (salt/modules/git.py remote_refs), where only system and global
   * config apply, and root's global config depends on $HOME, which the minion may not have.
   */
  gitSystemConfig: "/etc/gitconfig",
  /** Run by the master's first boot (cloud-init/scripts/bootstrap-salt-master.sh) from the checkout. */
  masterPkiFetch: "/srv/ci-fleet/repo/salt/salt_master/files/ci_fleet_master_pki.py",
} as const;

/**
 * The SSM SecureString holding the master's key pairs (its own, `master.pem`/`master.pub`, and
 * its minion's) as JSON: under the master's own path (`/ci-fleet/<stack>/pillar/`, which only
 * its role reads) one level down, so the pillar sync, which lists that path non-recursively,
 * never takes it for a minion's document. The master reads it once, at first boot, before
 * salt-master starts: key material stays out of user-data (16 KiB) and survives the machine.
 */
export const saltMasterPkiParameterName = (stack: string): string => `/ci-fleet/${stack}/pillar/bootstrap/salt-master-pki`;

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

/** Orchestration the master runs itself (salt/_runners/ci_fleet.py, salt/orch/reactor/). */
export const SALT_MASTER_ORCHESTRATION = {
  runnerDir: "/srv/ci-fleet/repo/salt/_runners",
  reconcileFunction: "ci_fleet.reconcile",
  reconcileMinutes: 5,
  /** Drain requests of runners `pulumi up` is about to delete (salt/_runners/ci_fleet_drain.py, infra/fleet/drain-hook.ts). */
  drainFunction: "ci_fleet_drain.run",
  drainMinutes: 1,
  githubRunnerEvent: "ci-fleet/github-runner/unregistered",
  githubRunnerReactor: "/srv/ci-fleet/repo/salt/orch/reactor/github_register.sls",
  /** A minion's Roles Anywhere certificate request (salt/aws_credentials/files/ci_fleet_roles_anywhere.py). */
  rolesAnywhereCsrEvent: "ci-fleet/roles-anywhere/csr",
  rolesAnywhereCsrReactor: "/srv/ci-fleet/repo/salt/orch/reactor/roles_anywhere_csr.sls",
  /**
   * Convergence that does not depend on a machine's first-boot timing (salt/_runners/ci_fleet_converge.py):
   * the master highstates every accepted minion it has no completed highstate on record for since
   * its last start, every minute from the schedule (a start event only marks the minion due), and
   * joins/labels a minion's Teleport agent as soon as its highstate has answered.
   */
  convergeFunction: "ci_fleet_converge.run",
  convergeMinutes: 1,
  minionStartEvent: "salt/minion/*/start",
  minionStartReactor: "/srv/ci-fleet/repo/salt/orch/reactor/minion_start.sls",
} as const;

/** Job returns can carry inline pillar (join/registration tokens): keep them one hour. */
export const SALT_MASTER_KEEP_JOBS_SECONDS = 3600;

/**
 * The oldest request-payload (authentication protocol) version the master accepts. Version 3 carries
 * the per-minion session key and token checks; older formats let a minion impersonate another
 * (CVE-2025-62349). 0 disables the check. See .conformance/salt-release.md.
 */
export const SALT_MASTER_MINIMUM_AUTH_VERSION = 3;

export interface SaltMasterConfig {
  interface: string;
  ipv6: boolean;
  user: "root";
  hash_type: "sha256";
  auto_accept: false;
  open_mode: false;
  minimum_auth_version: typeof SALT_MASTER_MINIMUM_AUTH_VERSION;
  permissive_pki_access: false;
  publisher_acl: Record<string, string[]>;
  publisher_acl_blacklist: { users: string[]; modules: string[] };
  external_auth: Record<string, never>;
  peer: Record<string, never>;
  peer_run: Record<string, never>;
  file_recv: false;
  pillar_opts: false;
  on_demand_ext_pillar: [];
  keep_jobs_seconds: number;
  fileserver_backend: string[];
  file_roots: { base: string[] };
  pillar_roots: { base: string[] };
  pillar_safe_render_error: true;
  runner_dirs: string[];
  ci_fleet: { master_minion_id: string };
  schedule: Record<string, { function: string; minutes: number; maxrunning: number }>;
  reactor: Record<string, string[]>[];
}

/**
 * The master's whole drop-in `/etc/salt/master.d/ci-fleet.conf`: the ONE builder of that
 * file. cloud-init writes its rendering at first boot; the same text travels in the master's
 * pillar (`ci_fleet_master:master_config`) and the salt_master.config state writes it with
 * `contents_pillar`, so both writers put the same bytes (test/salt/master-config.test.ts).
 *
 * `interface: 0.0.0.0`: on equinix-metal a machine's private address is only known after
 * the device exists, so the master cannot be told its own address in its user-data; it
 * listens everywhere and an nftables rule (bootcmd) admits ports 4505/4506 only from
 * loopback and the fleet's private networks. Its own minion talks to 127.0.0.1.
 *
 * `user: root`: Salt's Debian package writes `user: salt` into /etc/salt/master; master.d
 * files are read after it and win. The generated pillar and the pki dir are root-only.
 *
 * No `autosign_grains_dir`: an empty value is a path, not "off"; the default directory is
 * kept absent by salt_master.config, so no grain ever accepts a key.
 */
export function buildSaltMasterConfig(input: { masterMinionId: string }): SaltMasterConfig {
  const o = SALT_MASTER_ORCHESTRATION;
  return {
    interface: "0.0.0.0",
    ipv6: false,
    user: "root",
    hash_type: "sha256",
    // Only pre-seeded keys (write_files, pillar) are ever accepted; no autosign of any kind.
    auto_accept: false,
    open_mode: false,
    // Refuse every payload older than protocol version 3 (the downgrade of CVE-2025-62349), explicitly:
    // the code's fallback when the option is missing is 0 (off).
    minimum_auth_version: SALT_MASTER_MINIMUM_AUTH_VERSION,
    permissive_pki_access: false,
    // No non-root user may publish anything.
    publisher_acl: {},
    // Checked before the root check in ClearFuncs.publish: binds root and the runners too.
    publisher_acl_blacklist: { users: [], modules: [...BLOCKED_PUBLISH_FUNCTIONS] },
    external_auth: {},
    // Minions may not publish to each other or run runners, nor push files.
    peer: {},
    peer_run: {},
    file_recv: false,
    // The master's own config (and its secrets) is not pillar.
    pillar_opts: false,
    // No external pillar may be compiled on demand (pillar.ext / `pillar_ext`); Salt's default
    // list is ["libvirt", "virtkey"]. ci-fleet uses no external pillar at all.
    on_demand_ext_pillar: [],
    keep_jobs_seconds: SALT_MASTER_KEEP_JOBS_SECONDS,
    fileserver_backend: ["roots"],
    file_roots: { base: [SALT_PATHS.stateTree] },
    pillar_roots: { base: [SALT_PATHS.pillarTree, SALT_PATHS.generatedPillar] },
    // An unreadable pillar document fails the minion's run instead of giving it nothing.
    pillar_safe_render_error: true,
    runner_dirs: [o.runnerDir],
    // Read by salt/_runners/ci_fleet.py: the master's own minion (its pillar holds the fleet).
    ci_fleet: { master_minion_id: input.masterMinionId },
    // The master's scheduler runs runner functions: join Teleport agents, register and
    // remove GitHub runners.
    schedule: {
      "ci-fleet-reconcile": { function: o.reconcileFunction, minutes: o.reconcileMinutes, maxrunning: 1 },
      "ci-fleet-drain": { function: o.drainFunction, minutes: o.drainMinutes, maxrunning: 1 },
      "ci-fleet-converge": { function: o.convergeFunction, minutes: o.convergeMinutes, maxrunning: 1 },
    },
    // One tag per list item: Salt's reactor reads each item as a one-key mapping.
    reactor: [
      { [o.githubRunnerEvent]: [o.githubRunnerReactor] },
      { [o.rolesAnywhereCsrEvent]: [o.rolesAnywhereCsrReactor] },
      { [o.minionStartEvent]: [o.minionStartReactor] },
    ],
  };
}

/**
 * The exact bytes of `/etc/salt/master.d/ci-fleet.conf`. Every line ends in "\n", no "\r",
 * no blank line at the end: Salt's `contents_pillar` rewrites text line by line, and this
 * text is a fixed point of that rewrite.
 */
export function renderSaltMasterConfig(input: { masterMinionId: string }): string {
  return (
    "# Managed by ci-fleet (infra/bootstrap/salt-config.ts): cloud-init writes it once, then\n" +
    "# salt_master.config from pillar ci_fleet_master:master_config. Local edits are overwritten.\n" +
    YAML.stringify(buildSaltMasterConfig(input), { lineWidth: 0, aliasDuplicateObjects: false, sortMapEntries: false })
  );
}

/**
 * The master's systemd drop-in: `User=root`, `Group=root`. Some salt-master.service units
 * from the Salt project carry `User=salt` (saltstack/salt 35307ffd), others none (c2f129ac, an
 * older 3006 package): with `User=salt` the process could never become the `user: root` of master.d and
 * the master would not start. Drop-ins are read after the unit and win. cloud-init writes this
 * text before salt-master is installed; salt_master.service writes the same bytes from pillar
 * `ci_fleet_master:master_service_drop_in`, then reloads systemd and restarts the master.
 */
export function renderSaltMasterServiceDropIn(): string {
  return [
    "# Managed by ci-fleet (infra/bootstrap/salt-config.ts): cloud-init writes it once, then",
    "# salt_master.service from pillar ci_fleet_master:master_service_drop_in.",
    "[Service]",
    "User=root",
    "Group=root",
    "",
  ].join("\n");
}

/**
 * How git reaches a private Salt repository: only the deploy key, and only a host key that
 * is in the pinned known-hosts file (no trust on first use, no prompt). Never Salt's
 * `git.latest identity:`, whose ssh wrapper passes `-oStrictHostKeyChecking=no`.
 */
export function saltRepositorySshCommand(): string {
  return (
    `ssh -i ${SALT_PATHS.saltRepositoryDeployKey} -o IdentitiesOnly=yes` +
    ` -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${SALT_PATHS.saltRepositoryKnownHosts}`
  );
}

/**
 * The exact bytes of /etc/gitconfig on a master with a private Salt repository (cloud-init
 * and salt_master.repository, from pillar `ci_fleet_master:salt_repository_git_config`).
 * core.sshCommand wins over GIT_SSH (what Salt's `identity` sets); only GIT_SSH_COMMAND beats it.
 */
export function renderSaltRepositoryGitConfig(): string {
  return [
    "# Managed by ci-fleet (infra/bootstrap/salt-config.ts): cloud-init writes it once, then",
    "# salt_master.repository from pillar ci_fleet_master:salt_repository_git_config.",
    "[core]",
    `\tsshCommand = ${saltRepositorySshCommand()}`,
    "",
  ].join("\n");
}

/**
 * How a minion finds its master again after the master is replaced (Salt 3008's minion.py,
 * docs/upstream-conformance.md): the master is a name whose A record follows the machine, and
 *
 * - `master_type: failover` with `master` a list: every connection attempt of `eval_master`
 *   resolves the name again (`resolve_dns(opts, False)`: no fallback to 127.0.0.1), and a lost
 *   master (`__master_disconnected`) makes the minion run `eval_master(failed=True)` again;
 *   failover also forces `retry_dns` to 0, set here explicitly;
 * - `master_alive_interval`: every N seconds `status.master` resolves the name again and checks
 *   for an established connection to one of its addresses on the publish port; a connection to
 *   the old address (or none) fires `__master_disconnected`, so a changed record is followed
 *   even while the old TCP connection still looks open;
 * - `master_tries: -1`: `eval_master` never gives up (a master may be down for a while during
 *   a replacement), `acceptance_wait_time` (10 s) between attempts.
 *
 * The master's key pair survives replacement (it is in Pulumi state), so `master_finger` and
 * the minion's cached `minion_master.pub` still match the new machine.
 */
export const SALT_MINION_RECONNECT = {
  master_type: "failover",
  master_alive_interval: 30,
  master_tries: -1,
  retry_dns: 0,
} as const;

export interface SaltMinionConfig {
  /** A list of one: `master_type: failover` needs a list (older minions exit on a string). */
  master: string[];
  master_type: typeof SALT_MINION_RECONNECT.master_type;
  master_alive_interval: number;
  master_tries: number;
  retry_dns: number;
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
  /** The master's stable DNS name (`127.0.0.1` for the master's own minion). */
  masterAddress: string;
  minionId: string;
  masterFingerprint: string;
}): SaltMinionConfig {
  return {
    master: [input.masterAddress],
    ...SALT_MINION_RECONNECT,
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
