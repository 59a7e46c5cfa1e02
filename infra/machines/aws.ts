import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { AwsSite, MachineRole } from "../config/model";
import { gzipUserData } from "../bootstrap/cloud-config";
import { ignoreUserData, Machine, MachineRequest, MachineSite, machineTags } from "./site";

/** Ports a machine role accepts, and from where (egress is open: jobs fetch dependencies). */
const SALT_PORTS = { fromPort: 4505, toPort: 4506 };
const TELEPORT_AUTH_PORT = 3025;
const TELEPORT_NODE_PORT = 3022;

export interface AwsNetworkArgs {
  stack: string;
  site: AwsSite;
}

/**
 * The fleet's VPC: per availability zone (map keys, never positions) a public subnet with
 * a NAT gateway and a private subnet; machines live in private subnets, only the Teleport
 * machine in a public one. One security group per machine role.
 */
export class AwsNetwork extends pulumi.ComponentResource {
  readonly vpcId: pulumi.Output<string>;
  readonly privateSubnetIds: Record<string, pulumi.Output<string>> = {};
  readonly publicSubnetIds: Record<string, pulumi.Output<string>> = {};
  readonly securityGroupIds: Record<MachineRole, pulumi.Output<string>>;

  constructor(name: string, args: AwsNetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:machines:AwsNetwork", name, {}, opts);
    const { stack, site } = args;
    const tags = (extra: string, role?: MachineRole) => ({ Name: `${stack}-${extra}`, "ci-fleet:stack": stack, ...(role ? { "ci-fleet:role": role } : {}) });
    const child = { parent: this };

    const vpc = new aws.ec2.Vpc(`${name}-vpc`, { cidrBlock: site.vpcCidr, enableDnsHostnames: true, enableDnsSupport: true, tags: tags("vpc") }, child);
    this.vpcId = vpc.id;
    const igw = new aws.ec2.InternetGateway(`${name}-igw`, { vpcId: vpc.id, tags: tags("igw") }, child);
    const publicRoutes = new aws.ec2.RouteTable(`${name}-public`, { vpcId: vpc.id, routes: [{ cidrBlock: "0.0.0.0/0", gatewayId: igw.id }], tags: tags("public") }, child);

    for (const [zone, cidrs] of Object.entries(site.subnets)) {
      const pub = new aws.ec2.Subnet(`${name}-public-${zone}`, { vpcId: vpc.id, availabilityZone: zone, cidrBlock: cidrs.publicCidr, mapPublicIpOnLaunch: false, tags: tags(`public-${zone}`) }, child);
      new aws.ec2.RouteTableAssociation(`${name}-public-${zone}`, { subnetId: pub.id, routeTableId: publicRoutes.id }, child);
      const eip = new aws.ec2.Eip(`${name}-nat-${zone}`, { domain: "vpc", tags: tags(`nat-${zone}`) }, child);
      const nat = new aws.ec2.NatGateway(`${name}-nat-${zone}`, { subnetId: pub.id, allocationId: eip.id, tags: tags(`nat-${zone}`) }, child);
      const priv = new aws.ec2.Subnet(`${name}-private-${zone}`, { vpcId: vpc.id, availabilityZone: zone, cidrBlock: cidrs.privateCidr, mapPublicIpOnLaunch: false, tags: tags(`private-${zone}`) }, child);
      const privateRoutes = new aws.ec2.RouteTable(`${name}-private-${zone}`, { vpcId: vpc.id, routes: [{ cidrBlock: "0.0.0.0/0", natGatewayId: nat.id }], tags: tags(`private-${zone}`) }, child);
      new aws.ec2.RouteTableAssociation(`${name}-private-${zone}`, { subnetId: priv.id, routeTableId: privateRoutes.id }, child);
      this.publicSubnetIds[zone] = pub.id;
      this.privateSubnetIds[zone] = priv.id;
    }

    const egress = [{ protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"], description: "jobs and package installs reach the internet" }];
    const teleport = new aws.ec2.SecurityGroup(`${name}-teleport`, {
      vpcId: vpc.id,
      description: "Teleport proxy (public 443) and auth (private 3025)",
      ingress: [
        { protocol: "tcp", fromPort: 443, toPort: 443, cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"], description: "Teleport proxy: the only public entry point" },
        { protocol: "tcp", fromPort: TELEPORT_AUTH_PORT, toPort: TELEPORT_AUTH_PORT, cidrBlocks: [site.vpcCidr], description: "Teleport auth, for agents joining over private IPv4" },
      ],
      egress,
      tags: tags("teleport", "teleport"),
    }, child);
    const nodeFromTeleport = { protocol: "tcp", fromPort: TELEPORT_NODE_PORT, toPort: TELEPORT_NODE_PORT, securityGroups: [teleport.id], description: "Teleport proxy to the node's SSH service" };
    const saltMaster = new aws.ec2.SecurityGroup(`${name}-salt-master`, {
      vpcId: vpc.id,
      description: "Salt master: ZeroMQ from the fleet only",
      ingress: [{ protocol: "tcp", ...SALT_PORTS, cidrBlocks: [site.vpcCidr], description: "Salt minions (ZeroMQ publish and return)" }, nodeFromTeleport],
      egress,
      tags: tags("salt-master", "salt-master"),
    }, child);
    const runner = new aws.ec2.SecurityGroup(`${name}-runner`, {
      vpcId: vpc.id,
      description: "Runners: nothing inbound but Teleport",
      ingress: [nodeFromTeleport],
      egress,
      tags: tags("runner", "runner"),
    }, child);
    this.securityGroupIds = { teleport: teleport.id, "salt-master": saltMaster.id, runner: runner.id };
    this.registerOutputs({ vpcId: this.vpcId });
  }
}

/**
 * Canonical's public SSM parameter for the current Ubuntu 24.04 LTS server image, amd64,
 * HVM, gp3 root volume (Canonical, "Find Ubuntu images on AWS":
 * `ubuntu/$PRODUCT/$RELEASE/stable/current/$ARCH/$VIRT_TYPE/$VOL_TYPE/ami-id`, gp3 for
 * releases from 23.10). Every EC2 type the fleet allows is amd64 (config/check.ts).
 */
export const UBUNTU_IMAGE_PARAMETER = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id";

/** Where a machine's image comes from: the AMI id, and a tag value that says so. */
export interface AwsImage {
  imageId: pulumi.Input<string>;
  /** `ssm:<parameter>` or `pinned`: tagged on every instance, shown in the preview. */
  source: string;
}

/**
 * The image for the site's machines: a maintainer-pinned AMI, or Canonical's current
 * Ubuntu 24.04 resolved in the machines' region through the site's provider. The AMI id
 * is public: `insecureValue`, because `value` is always marked secret by the provider.
 */
export function resolveAwsImage(site: AwsSite, provider: aws.Provider, parent?: pulumi.Resource): AwsImage {
  if (site.imageId) return { imageId: site.imageId, source: "pinned" };
  const parameter = aws.ssm.getParameterOutput({ name: UBUNTU_IMAGE_PARAMETER, region: site.region, withDecryption: false }, { provider, ...(parent ? { parent } : {}) });
  return { imageId: parameter.insecureValue, source: `ssm:${UBUNTU_IMAGE_PARAMETER}` };
}

/**
 * Properties whose change the provider applies in place by stopping and starting the instance
 * (@pulumi/aws 7.48.0 ec2/instance.d.ts): made replacements on drained machines. `userDataBase64`
 * is ignored after creation (ignoreUserData), so it never stops one.
 */
export const DRAINED_REPLACE_ON_CHANGES = ["instanceType"] as const;

function gzipBase64UserData(rendered: string): string {
  return gzipUserData(rendered).toString("base64");
}

/** EC2 machines: bare-metal types for runners (they expose /dev/kvm), IMDSv2 only, hop limit 1. */
export class AwsSiteMachines implements MachineSite {
  readonly provider = "aws" as const;
  private image?: AwsImage;

  constructor(
    private readonly stack: string,
    private readonly site: AwsSite,
    private readonly network: AwsNetwork,
    /** The site's regional provider (machines are not children of the network). */
    private readonly awsProvider: aws.Provider,
  ) {}

  createMachine(name: string, request: MachineRequest, parent: pulumi.Resource): Machine {
    const isPublic = request.role === "teleport";
    const zone = this.site.defaultZone;
    // One lookup for the whole fleet.
    this.image ??= resolveAwsImage(this.site, this.awsProvider);
    const instance = new aws.ec2.Instance(
      name,
      {
        ami: this.image.imageId,
        instanceType: request.instanceType,
        subnetId: isPublic ? this.network.publicSubnetIds[zone] : this.network.privateSubnetIds[zone],
        vpcSecurityGroupIds: [this.network.securityGroupIds[request.role]],
        associatePublicIpAddress: isPublic,
        iamInstanceProfile: request.instanceProfileName,
        // Gzip: EC2's 16 KiB limit applies to what it receives, and cloud-init inflates it.
        userDataBase64: pulumi.secret(request.userData.apply(gzipBase64UserData)),
        userDataReplaceOnChange: false,
        // Hop limit 1: containers and VMs a job starts cannot reach the metadata service.
        metadataOptions: { httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: 1, instanceMetadataTags: "disabled" },
        rootBlockDevice: { encrypted: true, volumeType: "gp3", volumeSize: request.role === "runner" ? 200 : 50, deleteOnTermination: true },
        tags: { Name: request.hostname, ...machineTags(this.stack, request), "ci-fleet:image": this.image.source },
      },
      // The image decides only a machine's first boot; Salt upgrades it in place after that.
      // A new Canonical release (or a newly pinned id) never replaces a running machine:
      // roll one deliberately with `pulumi up --replace <its URN>`.
      {
        parent,
        provider: this.awsProvider,
        ...ignoreUserData("userDataBase64", "ami"),
        ...(request.dependsOn ? { dependsOn: request.dependsOn } : {}),
        ...request.lifecycle,
        // A drained machine (a runner) is never stopped under a job: a change of instance type
        // is an in-place update that stops and starts the instance (@pulumi/aws 7.48.0
        // ec2/instance.d.ts `instanceType`: "Updates to this field will trigger a stop/start"),
        // which no delete hook sees. Made a replacement, it is drained like a delete (Pulumi runs
        // delete hooks "as part of a resource replacement": docs, resource option `hooks`), delete
        // before create. Changes that already replace (subnet, zone, ...) are drained the same way.
        ...(request.lifecycle?.hooks ? { replaceOnChanges: [...DRAINED_REPLACE_ON_CHANGES] } : {}),
      },
    );
    return {
      hostname: request.hostname,
      role: request.role,
      ...(request.queue ? { queue: request.queue } : {}),
      id: instance.id,
      privateIpv4: instance.privateIp,
      ...(isPublic ? { publicIpv4: instance.publicIp } : {}),
    };
  }
}
