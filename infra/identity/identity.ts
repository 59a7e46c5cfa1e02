import * as pulumi from "@pulumi/pulumi";
import * as aws from "@pulumi/aws";
import * as tls from "@pulumi/tls";
import { FleetConfig, machineNames } from "../config/model";
import {
  IdentityTagRole,
  RESERVED_QUEUE_NAMES,
  SALT_MASTER_OU,
  TELEPORT_OU,
  agentRoleName,
  arns,
  fleetTag,
  kmsAliasName,
  queueNameProblems,
  relativeParameterPathProblem,
  roleNameProblem,
  roleNames,
  sidSuffix,
  ssmPaths,
} from "./names";
import {
  KMS_KEY_POLICY_MAX_CHARS,
  KmsReader,
  agentPermissionsPolicy,
  agentRoleTrustForHostPolicy,
  deployRoleTrustPolicy,
  ec2TrustPolicy,
  hostRolePermissionsPolicy,
  kmsKeyPolicy,
  policyJson,
  rolesAnywhereTrustPolicy,
  saltMasterPermissionsPolicy,
} from "./policies";
import {
  BOOTSTRAP_CERTIFICATE_HOURS,
  BOOTSTRAP_EARLY_RENEWAL_HOURS,
  CA_EARLY_RENEWAL_HOURS,
  CA_VALIDITY_HOURS,
  SESSION_SECONDS,
} from "./lifetimes";
import { OIDC_AUDIENCE, OIDC_ISSUERS, ciIdentityTrustPolicy } from "./ci-identity";
import type { CiAgentKind } from "../config/model";

export const FLEET_IDENTITY_TYPE = "ci-fleet:identity:FleetIdentity";

/** The fleet's own certificates (salt/_runners/ci_fleet_pki.py accepts this range). */
export const FLEET_CERTIFICATE_HOURS_RANGE = { min: 24, max: 720 } as const;

export interface FleetIdentityArgs {
  config: FleetConfig;
}

export interface IssuedCertificate {
  certificatePem: pulumi.Output<string>;
  /** Always a Pulumi secret. */
  privateKeyPem: pulumi.Output<string>;
}

export interface InstanceProfileNames {
  saltMaster: pulumi.Output<string>;
  teleport: pulumi.Output<string>;
  /** By queue: the queue's host role (it can only assume the queue's agent role). */
  queues: Record<string, pulumi.Output<string>>;
}

export interface RolesAnywhereIdentity {
  trustAnchorArn: pulumi.Output<string>;
  /** By queue name, `salt-master` and `teleport`. */
  profileArns: Record<string, pulumi.Output<string>>;
  /**
   * The Salt master's first certificate, for its first pillar sync (user-data). Every other
   * certificate, the master's later ones included, the fleet issues itself
   * (salt/_runners/ci_fleet_pki.py): no key of any other machine exists outside it.
   */
  bootstrapCertificate: IssuedCertificate;
  /** The CA the fleet signs with; its key goes to the Salt master's pillar only. */
  ca: { certificatePem: pulumi.Output<string>; /** Always a Pulumi secret. */ privateKeyPem: pulumi.Output<string> };
  /** Lifetime of a fleet-issued certificate (identity.runnerCertificateHours). */
  certificateHours: number;
}

/**
 * Every problem the identity layer has with a config, all at once. Config validation
 * should call this too, so a bad name fails before any resource is built.
 */
export function identityConfigProblems(config: FleetConfig): string[] {
  const { stack, identity } = config;
  const problems: string[] = [];
  for (const queue of Object.keys(config.queues).sort()) problems.push(...queueNameProblems(stack, queue));
  for (const name of [roleNames.saltMaster(stack), roleNames.teleport(stack)]) {
    const problem = roleNameProblem(name);
    if (problem) problems.push(problem);
  }
  if (!/^\d{12}$/.test(identity.accountId)) problems.push(`identity.accountId "${identity.accountId}" is not a 12-digit account id`);
  const hours = identity.runnerCertificateHours;
  const range = FLEET_CERTIFICATE_HOURS_RANGE;
  if (config.provider === "equinix-metal" && !(Number.isInteger(hours) && hours >= range.min && hours <= range.max)) {
    problems.push(`identity.runnerCertificateHours must be an integer from ${range.min} to ${range.max} (the fleet renews at half of it), got ${hours}`);
  }
  // One role name per account: fleet roles and every deploy role.
  const owners = new Map<string, string>();
  const claim = (accountId: string, roleName: string, owner: string) => {
    const key = `${accountId}/${roleName}`;
    const previous = owners.get(key);
    if (previous) problems.push(`role ${roleName} in account ${accountId} is claimed by ${previous} and ${owner}`);
    else owners.set(key, owner);
  };
  for (const queue of Object.keys(config.queues).sort()) claim(identity.accountId, roleNames.agent(stack, queue), `queue ${queue}`);
  if (config.provider === "aws") {
    for (const queue of Object.keys(config.queues).sort()) {
      const problem = roleNameProblem(roleNames.host(stack, queue));
      if (problem) problems.push(`host role of queue "${queue}": ${problem}`);
      claim(identity.accountId, roleNames.host(stack, queue), `queue ${queue} (host)`);
    }
  }
  claim(identity.accountId, roleNames.saltMaster(stack), "the Salt master");
  claim(identity.accountId, roleNames.teleport(stack), "the Teleport machine");
  for (const [queue, spec] of sortedEntries(config.queues)) {
    for (const [targetName, target] of sortedEntries(spec.deployTargets)) {
      const where = `queue ${queue} deploy target ${targetName}`;
      if (!/^\d{12}$/.test(target.accountId)) problems.push(`${where}: accountId "${target.accountId}" is not a 12-digit account id`);
      const problem = roleNameProblem(target.roleName);
      if (problem) problems.push(`${where}: ${problem}`);
      claim(target.accountId, target.roleName, where);
      if (target.trust === "ci-identity" && (target.identities ?? []).length === 0) problems.push(`${where}: trust ci-identity needs at least one identity`);
      if (target.trust !== "ci-identity" && (target.identities ?? []).length > 0) problems.push(`${where}: identities apply only with trust ci-identity`);
      const attachmentNames = target.managedPolicyArns.map(policyAttachmentSuffix);
      const duplicate = attachmentNames.find((n, i) => attachmentNames.indexOf(n) !== i);
      if (duplicate !== undefined) problems.push(`${where}: managed policy ${duplicate} is listed twice`);
    }
  }
  for (const [queue, parameters] of sortedEntries(config.secrets.queueParameters)) {
    if (!(queue in config.queues)) problems.push(`secrets.queueParameters has unknown queue "${queue}"`);
    for (const relative of Object.keys(parameters).sort()) {
      const problem = relativeParameterPathProblem(relative);
      if (problem) problems.push(`secrets.queueParameters.${queue}: ${problem}`);
    }
  }
  // Statement ids of the key policy are built from these names and must stay distinct.
  const sidOwners = new Map<string, string>();
  const sidReaders = Object.keys(config.queues).filter((q) => !RESERVED_QUEUE_NAMES.includes(q)).sort();
  for (const reader of [...sidReaders, SALT_MASTER_OU]) {
    const sid = sidSuffix(reader);
    const previous = sidOwners.get(sid);
    if (previous !== undefined) problems.push(`"${previous}" and "${reader}" give the same IAM statement id ${sid}`);
    else sidOwners.set(sid, reader);
  }
  // Role ARNs are predictable (no IAM path), so the key policy's size is known now.
  if (problems.length === 0) {
    const readers: KmsReader[] = [
      ...Object.keys(config.queues).map((queue) => ({
        name: queue,
        roleArn: arns.role(identity.accountId, roleNames.agent(stack, queue)),
        parameterPath: ssmPaths.queue(stack, queue),
      })),
      { name: SALT_MASTER_OU, roleArn: arns.role(identity.accountId, roleNames.saltMaster(stack)), parameterPath: ssmPaths.pillar(stack) },
    ];
    const size = policyJson(kmsKeyPolicy({ accountId: identity.accountId, region: identity.region, readers })).length;
    if (size > KMS_KEY_POLICY_MAX_CHARS) {
      problems.push(`the KMS key policy for ${readers.length - 1} queues is ${size} characters; KMS allows ${KMS_KEY_POLICY_MAX_CHARS} (fewer or shorter queue names)`);
    }
  }
  return problems;
}

/** `arn:aws:iam::aws:policy/ReadOnlyAccess` -> `aws-ReadOnlyAccess`: a stable child name. */
function policyAttachmentSuffix(policyArn: string): string {
  const match = /^arn:aws[a-z-]*:iam::([^:]*):policy\/(.+)$/.exec(policyArn);
  return match ? `${match[1]}-${match[2].replace(/\//g, "-")}` : policyArn;
}

function sortedEntries<T>(record: Record<string, T>): [string, T][] {
  return Object.keys(record)
    .sort()
    .map((key) => [key, record[key]]);
}

/**
 * The fleet's AWS identity: the KMS key, the queues' SSM parameters, one agent role per
 * queue, the Salt master's and Teleport's roles, how machines wear them (instance
 * profiles on `aws`, IAM Roles Anywhere certificates on `equinix-metal`), and the deploy
 * roles in target accounts that trust only their queue's agent role.
 */
export class FleetIdentity extends pulumi.ComponentResource {
  public readonly kmsKeyArn: pulumi.Output<string>;
  public readonly kmsAliasName: pulumi.Output<string>;
  public readonly agentRoleArns: Record<string, pulumi.Output<string>>;
  public readonly saltMasterRoleArn: pulumi.Output<string>;
  public readonly teleportRoleArn: pulumi.Output<string>;
  public readonly teleportRoleName: pulumi.Output<string>;
  public readonly instanceProfileNames?: InstanceProfileNames;
  public readonly rolesAnywhere?: RolesAnywhereIdentity;
  public readonly deployRoleArns: Record<string, Record<string, pulumi.Output<string>>>;
  /** The provider for the identity account and region: other fleet resources there (pillar parameters, audit storage) use it too. */
  public readonly provider: aws.Provider;

  constructor(name: string, args: FleetIdentityArgs, opts?: pulumi.ComponentResourceOptions) {
    super(FLEET_IDENTITY_TYPE, name, {}, pulumi.mergeOptions(opts, {}));
    const { config } = args;
    const problems = identityConfigProblems(config);
    if (problems.length > 0) throw new Error(`FleetIdentity ${name}:\n- ${problems.join("\n- ")}`);

    const { stack, identity } = config;
    const { accountId, region } = identity;
    const scope = { accountId, region };
    const queues = Object.keys(config.queues).sort();
    const tags = (role: IdentityTagRole, extra: Record<string, string> = {}) => ({
      [fleetTag.stack]: stack,
      [fleetTag.role]: role,
      ...extra,
    });
    const queueTags = (role: IdentityTagRole, queue: string) => tags(role, { [fleetTag.queue]: queue });

    // Pinned to the identity account: a mistaken credential fails instead of building elsewhere.
    const provider = new aws.Provider(
      `${name}-aws`,
      { region, allowedAccountIds: [accountId] },
      { parent: this },
    );
    this.provider = provider;
    const inFleetAccount: pulumi.CustomResourceOptions = { parent: this, provider };

    // equinix-metal: machines outside AWS wear roles through IAM Roles Anywhere.
    let trustAnchor: aws.rolesanywhere.TrustAnchor | undefined;
    let caKey: tls.PrivateKey | undefined;
    let caCert: tls.SelfSignedCert | undefined;
    if (config.provider === "equinix-metal") {
      caKey = new tls.PrivateKey(`${name}-ca-key`, { algorithm: "ECDSA", ecdsaCurve: "P384" }, { parent: this });
      caCert = new tls.SelfSignedCert(
        `${name}-ca-cert`,
        {
          privateKeyPem: pulumi.secret(caKey.privateKeyPem),
          isCaCertificate: true,
          // Leaves only: no intermediate CA can be made from it.
          maxPathLength: 0,
          allowedUses: ["cert_signing", "crl_signing", "digital_signature"],
          subject: { commonName: `ci-fleet-${stack} Roles Anywhere CA`, organization: `ci-fleet-${stack}` },
          validityPeriodHours: CA_VALIDITY_HOURS,
          earlyRenewalHours: CA_EARLY_RENEWAL_HOURS,
        },
        { parent: this },
      );
      trustAnchor = new aws.rolesanywhere.TrustAnchor(
        `${name}-trust-anchor`,
        {
          name: `ci-fleet-${stack}`,
          enabled: true,
          source: { sourceType: "CERTIFICATE_BUNDLE", sourceData: { x509CertificateData: caCert.certPem } },
          tags: tags("fleet"),
        },
        inFleetAccount,
      );
    }
    const machineTrust = (organizationalUnit: string): pulumi.Input<string> =>
      trustAnchor
        ? trustAnchor.arn.apply((trustAnchorArn) => policyJson(rolesAnywhereTrustPolicy({ trustAnchorArn, organizationalUnit })))
        : policyJson(ec2TrustPolicy());

    // aws: a runner's instance wears its queue's host role, which can only assume the queue's
    // agent role; root on the runner hands one-hour sessions of that to the CI user.
    const hostRoles: Record<string, aws.iam.Role> = {};
    if (config.provider === "aws") {
      for (const queue of queues) {
        hostRoles[queue] = new aws.iam.Role(
          `${name}-host-${queue}`,
          {
            name: roleNames.host(stack, queue),
            description: `Runners of queue ${queue} (stack ${stack}): may only assume the queue's agent role`,
            assumeRolePolicy: policyJson(ec2TrustPolicy()),
            maxSessionDuration: SESSION_SECONDS,
            tags: queueTags("host", queue),
          },
          inFleetAccount,
        );
      }
    }
    const agentRoles: Record<string, aws.iam.Role> = {};
    for (const queue of queues) {
      agentRoles[queue] = new aws.iam.Role(
        `${name}-agent-${queue}`,
        {
          name: agentRoleName(stack, queue),
          description: `CI jobs of queue ${queue} (stack ${stack})`,
          assumeRolePolicy: hostRoles[queue]
            ? hostRoles[queue].arn.apply((hostRoleArn) => policyJson(agentRoleTrustForHostPolicy({ hostRoleArn })))
            : machineTrust(queue),
          maxSessionDuration: SESSION_SECONDS,
          tags: queueTags("agent", queue),
        },
        inFleetAccount,
      );
    }
    const saltMasterRole = new aws.iam.Role(
      `${name}-salt-master`,
      {
        name: roleNames.saltMaster(stack),
        description: `Salt master of stack ${stack}: reads the pillar documents`,
        assumeRolePolicy: machineTrust(SALT_MASTER_OU),
        maxSessionDuration: SESSION_SECONDS,
        tags: tags("salt-master"),
      },
      inFleetAccount,
    );
    const teleportRole = new aws.iam.Role(
      `${name}-teleport`,
      {
        name: roleNames.teleport(stack),
        description: `Teleport auth and proxy of stack ${stack}`,
        assumeRolePolicy: machineTrust(TELEPORT_OU),
        maxSessionDuration: SESSION_SECONDS,
        tags: tags("teleport"),
      },
      inFleetAccount,
    );

    // Deploy roles: one provider per target account, shared by the targets in it.
    const accountProviders = new Map<string, aws.Provider>();
    const providerFor = (targetAccount: string) => {
      let accountProvider = accountProviders.get(targetAccount);
      if (!accountProvider) {
        accountProvider = new aws.Provider(
          `${name}-account-${targetAccount}`,
          {
            region,
            allowedAccountIds: [targetAccount],
            assumeRoles: [
              {
                roleArn: arns.role(targetAccount, identity.bootstrapRoleName),
                sessionName: `ci-fleet-${stack}-identity`.slice(0, 64),
              },
            ],
          },
          { parent: this },
        );
        accountProviders.set(targetAccount, accountProvider);
      }
      return accountProvider;
    };
    // ci-identity targets: one OIDC provider per (target account, issuer), shared by the targets
    // in that account. No thumbprint: AWS validates GitHub's issuer with its own library of trusted
    // CAs (a thumbprint is kept but unused), and for any other issuer IAM fetches the top
    // intermediate CA's thumbprint itself when none is given (docs/deploy.md).
    const oidcProviders = new Map<string, aws.iam.OpenIdConnectProvider>();
    const oidcProviderFor = (targetAccount: string, platform: CiAgentKind) => {
      const key = `${targetAccount}/${platform}`;
      let oidcProvider = oidcProviders.get(key);
      if (!oidcProvider) {
        oidcProvider = new aws.iam.OpenIdConnectProvider(
          `${name}-oidc-${targetAccount}-${platform}`,
          {
            url: OIDC_ISSUERS[platform].url,
            clientIdLists: [OIDC_AUDIENCE],
            tags: tags("fleet", { [fleetTag.ciPlatform]: platform }),
          },
          { parent: this, provider: providerFor(targetAccount) },
        );
        oidcProviders.set(key, oidcProvider);
      }
      return oidcProvider;
    };
    const deployRoleArns: Record<string, Record<string, pulumi.Output<string>>> = {};
    /** Per queue, the deploy roles its agent role may assume: queue-role targets only. */
    const queueRoleDeployArns: Record<string, pulumi.Output<string>[]> = {};
    for (const queue of queues) {
      deployRoleArns[queue] = {};
      queueRoleDeployArns[queue] = [];
      for (const [targetName, target] of sortedEntries(config.queues[queue].deployTargets)) {
        const inTargetAccount = { parent: this, provider: providerFor(target.accountId) };
        const roleResourceName = `${name}-deploy-${queue}-${targetName}`;
        const trust = target.trust ?? "queue-role";
        let assumeRolePolicy: pulumi.Output<string>;
        if (trust === "ci-identity") {
          const identities = target.identities ?? [];
          const platforms = [...new Set(identities.map((i) => i.platform))].sort();
          // A provider that already exists in the account (config oidcProviderArn) is trusted as it
          // is: the stack neither creates it nor deletes it on destroy.
          const providerArnsIn = platforms.map((platform): pulumi.Input<string> => target.oidcProviderArn ?? oidcProviderFor(target.accountId, platform).arn);
          assumeRolePolicy = pulumi
            .all(providerArnsIn)
            .apply((providerArns) =>
              policyJson(
                ciIdentityTrustPolicy({
                  accountId: target.accountId,
                  identities,
                  providerArns: Object.fromEntries(platforms.map((platform, i) => [platform, providerArns[i]])),
                }),
              ),
            );
        } else {
          assumeRolePolicy = agentRoles[queue].arn.apply((agentRoleArn) => policyJson(deployRoleTrustPolicy({ agentRoleArn })));
        }
        const role = new aws.iam.Role(
          roleResourceName,
          {
            name: target.roleName,
            description: `Deploy target ${targetName} of queue ${queue} (ci-fleet stack ${stack}${trust === "ci-identity" ? ", CI identity tokens only" : ""})`,
            assumeRolePolicy,
            maxSessionDuration: SESSION_SECONDS,
            permissionsBoundary: target.permissionsBoundaryArn,
            tags: tags("deploy", { [fleetTag.queue]: queue, [fleetTag.deployTarget]: targetName, [fleetTag.deployTrust]: trust }),
          },
          inTargetAccount,
        );
        for (const policyArn of [...target.managedPolicyArns].sort()) {
          new aws.iam.RolePolicyAttachment(
            `${roleResourceName}-${policyAttachmentSuffix(policyArn)}`,
            { role: role.name, policyArn },
            inTargetAccount,
          );
        }
        deployRoleArns[queue][targetName] = role.arn;
        if (trust === "queue-role") queueRoleDeployArns[queue].push(role.arn);
      }
    }

    // The key policy names the reading roles, so they exist before it (KMS checks principals).
    const readers: pulumi.Output<KmsReader>[] = [
      ...queues.map((queue) =>
        agentRoles[queue].arn.apply((roleArn) => ({ name: queue, roleArn, parameterPath: ssmPaths.queue(stack, queue) })),
      ),
      saltMasterRole.arn.apply((roleArn) => ({ name: SALT_MASTER_OU, roleArn, parameterPath: ssmPaths.pillar(stack) })),
    ];
    const keyPolicy = pulumi.all(readers).apply((all) => policyJson(kmsKeyPolicy({ ...scope, readers: all })));
    const key = new aws.kms.Key(
      `${name}-key`,
      {
        description: `ci-fleet ${stack}: SSM SecureString parameters`,
        enableKeyRotation: true,
        deletionWindowInDays: 30,
        policy: keyPolicy,
        tags: tags("fleet"),
      },
      inFleetAccount,
    );
    const alias = new aws.kms.Alias(`${name}-key-alias`, { name: kmsAliasName(stack), targetKeyId: key.keyId }, inFleetAccount);

    for (const queue of queues) {
      new aws.iam.RolePolicy(
        `${name}-agent-${queue}`,
        {
          role: agentRoles[queue].name,
          name: "ci-fleet-queue-access",
          policy: pulumi
            .all([key.arn, ...queueRoleDeployArns[queue]])
            .apply(([kmsKeyArn, ...deployArns]) =>
              policyJson(agentPermissionsPolicy({ ...scope, stack, queue, kmsKeyArn, deployRoleArns: deployArns })),
            ),
        },
        inFleetAccount,
      );
    }
    new aws.iam.RolePolicy(
      `${name}-salt-master`,
      {
        role: saltMasterRole.name,
        name: "ci-fleet-pillar-read",
        policy: key.arn.apply((kmsKeyArn) => policyJson(saltMasterPermissionsPolicy({ ...scope, stack, kmsKeyArn }))),
      },
      inFleetAccount,
    );

    if (config.provider === "aws") {
      const profile = (resourceName: string, role: aws.iam.Role, profileTags: Record<string, string>) =>
        new aws.iam.InstanceProfile(resourceName, { name: role.name, role: role.name, tags: profileTags }, inFleetAccount).name;
      const queueProfiles: Record<string, pulumi.Output<string>> = {};
      for (const queue of queues) {
        new aws.iam.RolePolicy(
          `${name}-host-${queue}`,
          {
            role: hostRoles[queue].name,
            name: "ci-fleet-assume-queue-agent",
            policy: agentRoles[queue].arn.apply((agentRoleArn) => policyJson(hostRolePermissionsPolicy({ agentRoleArn }))),
          },
          inFleetAccount,
        );
        queueProfiles[queue] = profile(`${name}-host-${queue}`, hostRoles[queue], queueTags("host", queue));
      }
      this.instanceProfileNames = {
        saltMaster: profile(`${name}-salt-master`, saltMasterRole, tags("salt-master")),
        teleport: profile(`${name}-teleport`, teleportRole, tags("teleport")),
        queues: queueProfiles,
      };
    } else if (trustAnchor && caKey && caCert) {
      const anchor = trustAnchor;
      const ca = { key: caKey, cert: caCert };
      const profileArns: Record<string, pulumi.Output<string>> = {};
      const raProfile = (key: string, role: aws.iam.Role, profileTags: Record<string, string>) => {
        profileArns[key] = new aws.rolesanywhere.Profile(
          `${name}-ra-${key}`,
          { name: role.name, enabled: true, roleArns: [role.arn], durationSeconds: SESSION_SECONDS, tags: profileTags },
          inFleetAccount,
        ).arn;
      };
      for (const queue of queues) raProfile(queue, agentRoles[queue], queueTags("agent", queue));
      raProfile(SALT_MASTER_OU, saltMasterRole, tags("salt-master"));
      raProfile(TELEPORT_OU, teleportRole, tags("teleport"));

      // The master's first certificate only (its first pillar sync, before Salt runs): P-256,
      // the smallest key Roles Anywhere accepts; user-data bytes are scarce.
      const masterId = machineNames.saltMaster(stack);
      const key = new tls.PrivateKey(`${name}-bootstrap-${masterId}`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, { parent: this });
      const privateKeyPem = pulumi.secret(key.privateKeyPem);
      const request = new tls.CertRequest(
        `${name}-bootstrap-${masterId}`,
        { privateKeyPem, subject: { commonName: masterId, organizationalUnit: SALT_MASTER_OU, organization: `ci-fleet-${stack}` } },
        { parent: this },
      );
      const cert = new tls.LocallySignedCert(
        `${name}-bootstrap-${masterId}`,
        {
          certRequestPem: request.certRequestPem,
          caCertPem: ca.cert.certPem,
          caPrivateKeyPem: pulumi.secret(ca.key.privateKeyPem),
          validityPeriodHours: BOOTSTRAP_CERTIFICATE_HOURS,
          earlyRenewalHours: BOOTSTRAP_EARLY_RENEWAL_HOURS,
          allowedUses: ["digital_signature", "client_auth"],
        },
        { parent: this },
      );
      this.rolesAnywhere = {
        trustAnchorArn: anchor.arn,
        profileArns,
        bootstrapCertificate: { certificatePem: cert.certPem, privateKeyPem },
        ca: { certificatePem: ca.cert.certPem, privateKeyPem: pulumi.secret(ca.key.privateKeyPem) },
        certificateHours: identity.runnerCertificateHours,
      };
    }

    for (const [queue, parameters] of sortedEntries(config.secrets.queueParameters)) {
      for (const [relative, value] of sortedEntries(parameters)) {
        // The Buildkite agent token never goes under the queue's path: the queue role, which
        // every job of the queue wears, reads all of it. It reaches the queue's runners
        // through their own pillar documents only (infra/bootstrap/pillar.ts).
        if (relative === "buildkite/agent-token") continue;
        const parameterName = ssmPaths.queueParameter(stack, queue, relative);
        new aws.ssm.Parameter(
          `${name}-param-${queue}/${relative}`,
          {
            name: parameterName,
            type: "SecureString",
            keyId: key.arn,
            // Passed as the secret Output it is: never unwrapped here.
            value,
            description: `ci-fleet ${stack}: secret of queue ${queue}`,
            tags: queueTags("agent", queue),
          },
          inFleetAccount,
        );
      }
    }

    this.kmsKeyArn = key.arn;
    this.kmsAliasName = alias.name;
    this.agentRoleArns = Object.fromEntries(queues.map((queue) => [queue, agentRoles[queue].arn]));
    this.saltMasterRoleArn = saltMasterRole.arn;
    this.teleportRoleArn = teleportRole.arn;
    this.teleportRoleName = teleportRole.name;
    this.deployRoleArns = deployRoleArns;
    this.registerOutputs({
      kmsKeyArn: this.kmsKeyArn,
      kmsAliasName: this.kmsAliasName,
      agentRoleArns: this.agentRoleArns,
      saltMasterRoleArn: this.saltMasterRoleArn,
      teleportRoleArn: this.teleportRoleArn,
      deployRoleArns: this.deployRoleArns,
      trustAnchorArn: this.rolesAnywhere?.trustAnchorArn,
    });
  }
}
