"""Test pillar documents, shaped exactly like docs/contracts.md (checked by render.py).

Two stacks, one per provider; each has a Salt master, a Teleport machine, one GitHub
Actions runner and one Buildkite runner. Secret values are obvious fakes.
"""
import base64
import copy
import gzip

FAKE_CERT = "-----BEGIN CERTIFICATE-----\nFAKE-CERT\n-----END CERTIFICATE-----\n"
FAKE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nFAKE-SECRET-KEY\n-----END RSA PRIVATE KEY-----\n"
FAKE_PUBLIC = "-----BEGIN PUBLIC KEY-----\nFAKE-PUBLIC-{id}\n-----END PUBLIC KEY-----\n"

MASTER_CONFIG = (
    "# Managed by ci-fleet (infra/bootstrap/salt-config.ts).\n"
    "interface: 0.0.0.0\n"
    "user: root\n"
    "auto_accept: false\n"
    "file_roots:\n  base:\n    - /srv/ci-fleet/repo/salt\n"
    "pillar_roots:\n  base:\n    - /srv/ci-fleet/repo/salt/pillar\n    - /srv/ci-fleet/pillar\n"
    "ci_fleet:\n  master_minion_id: {master_id}\n"
)
MASTER_SERVICE_DROP_IN = (
    "# Managed by ci-fleet (infra/bootstrap/salt-config.ts).\n"
    "[Service]\nUser=root\nGroup=root\n"
)
GIT_CONFIG = (
    "# Managed by ci-fleet (infra/bootstrap/salt-config.ts).\n"
    "[core]\n\tsshCommand = ssh -i /etc/ci-fleet/salt-repo-deploy-key -o IdentitiesOnly=yes"
    " -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/ci-fleet/salt-repo-known-hosts\n"
)

STACKS = {
    # stack: (provider, master ip, teleport ip, {queue: (runner, agent, trusted, group)})
    "production": ("equinix-metal", "10.0.0.5", "10.0.0.6", {
        "default": ("r1", "github-actions", False, "untrusted"),
        "release": ("r1", "buildkite", True, None),
    }),
    "staging": ("aws", "10.1.0.5", "10.1.0.6", {
        "infra": ("r1", "github-actions", True, "trusted"),
        "default": ("r1", "buildkite", False, None),
    }),
}


def _common(stack, provider, minion_id, role, role_arn, teleport_ip, labels):
    aws = {
        "region": "us-east-1",
        "role_arn": role_arn,
        "ssm_prefix": "/ci-fleet/%s/" % stack,
    }
    if provider == "equinix-metal":
        aws["roles_anywhere"] = {
            "trust_anchor_arn": "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/ta-1",
            "profile_arn": "arn:aws:rolesanywhere:us-east-1:123456789012:profile/p-1",
        }
    return {
        "ci_fleet": {
            "stack": stack,
            "minion_id": minion_id,
            "role": role,
            "provider": provider,
            "salt": {
                "master_address": STACKS[stack][1],
                "repository": "https://github.com/example-org/ci-fleet.git",
                "ref": "0123456789abcdef0123456789abcdef01234567",
            },
            "aws": aws,
            "teleport": {
                "auth_address": "%s:3025" % teleport_ip,
                "proxy_private_ipv4": teleport_ip,
                "node_config": "version: v3\nteleport:\n  nodename: %s\n" % minion_id,
                "labels": {"dynamic/" + key: value for key, value in labels.items()},
            },
        }
    }


def documents():
    """{minion_id: pillar document} for every test minion."""
    docs = {}
    for stack, (provider, _master_ip, teleport_ip, queues) in STACKS.items():
        master_id = "%s-salt-master" % stack
        teleport_id = "%s-teleport" % stack
        minions = {}
        master = _common(stack, provider, master_id, "salt-master",
                         "arn:aws:iam::123456789012:role/ci-fleet-%s-salt-master" % stack,
                         teleport_ip, {"role": "salt-master", "stack": stack})
        docs[master_id] = master
        minions[master_id] = {"role": "salt-master"}
        teleport = _common(stack, provider, teleport_id, "teleport",
                           "arn:aws:iam::123456789012:role/ci-fleet-%s-teleport" % stack,
                           teleport_ip, {"role": "teleport", "stack": stack})
        teleport["ci_fleet_teleport"] = {
            "auth_config": "version: v3\nteleport:\n  nodename: %s\n" % teleport_id,
            "resources_gzip_base64": base64.b64encode(gzip.compress(
                b"kind: github\nspec:\n  client_secret: FAKE-SECRET-KEY\n", mtime=0)).decode(),
        }
        if provider == "aws":
            teleport["ci_fleet_teleport"]["audit"] = {"bucket": "ci-fleet-audit", "region": "us-east-1"}
        docs[teleport_id] = teleport
        minions[teleport_id] = {"role": "teleport"}
        for queue, (runner, agent, trusted, group) in queues.items():
            runner_id = "%s-%s-%s" % (stack, queue, runner)
            doc = _common(stack, provider, runner_id, "runner",
                          "arn:aws:iam::123456789012:role/ci-fleet-%s-agent-%s" % (stack, queue),
                          teleport_ip, {"role": "runner", "queue": queue, "stack": stack})
            doc["ci_fleet"]["aws"]["ssm_prefix"] = "/ci-fleet/%s/%s/" % (stack, queue)
            spec = {
                "queue": queue,
                "agent": agent,
                "trusted": trusted,
                "labels": ["self-hosted", "linux", "x64", "netboot"],
            }
            if agent == "github-actions":
                spec["runner_group"] = group
                spec["github_organization"] = "example-org"
            else:
                spec["buildkite_organization"] = "example"
                spec["buildkite_agent_token"] = "fixture-agent-token-%s" % queue
            doc["ci_fleet"]["runner"] = spec
            docs[runner_id] = doc
            minions[runner_id] = {"role": "runner", "queue": queue, "agent": agent}
        for minion_id, entry in minions.items():
            entry["public_key_pem"] = FAKE_PUBLIC.format(id=minion_id)
        master["ci_fleet_master"] = {
            "minions": minions,
            # Shaped like infra/bootstrap/salt-config.ts renders them (test/salt/master-config.test.ts
            # checks the real texts against cloud-init).
            "master_config": MASTER_CONFIG.format(master_id=master_id),
            "master_service_drop_in": MASTER_SERVICE_DROP_IN,
            "github_app": {"app_id": "123", "installation_id": "456", "private_key_pem": FAKE_KEY},
        }
        if provider == "equinix-metal":
            master["ci_fleet"]["salt"]["repository"] = "git@github.com:example-org/ci-fleet.git"
            master["ci_fleet_master"].update({
                "salt_repository_deploy_key": FAKE_KEY,
                "salt_repository_known_hosts": "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAKE\n",
                "salt_repository_git_config": GIT_CONFIG,
            })
    return copy.deepcopy(docs)
