import { JobSecretsError } from "../../hooks/buildkite/src/errors";
import { describeRepo, envNameFor, parseRepoUrl, pipelineLevelName, repoSlug } from "../../hooks/buildkite/src/slugs";

describe("repoSlug", () => {
  test.each([
    ["git@github.com:a/b.git", "github.com_a_b.git"],
    ["ssh://git@host:7999/a/b.git", "host-7999_a_b.git"],
    ["https://github.com/a/b.git", "github.com_a_b.git"],
    ["https://github.com/a/b", "github.com_a_b"],
    ["https://github.com/a/b/", "github.com_a_b"],
    ["ssh://git@github.com/a/b.git", "github.com_a_b.git"],
    ["git+ssh://git@host/a/b.git", "host_a_b.git"],
    ["ssh://git@host/~alice/b.git", "host__alice_b.git"],
    ["git@host:~alice/b.git", "host__alice_b.git"],
    ["https://x-access-token:ghs_SECRET@github.com/a/b.git", "github.com_a_b.git"],
    ["https://GitHub.com/Org/Repo.git", "github.com_Org_Repo.git"],
    ["https://bitbucket.example.org:8443/scm/team/repo.git", "bitbucket.example.org-8443_scm_team_repo.git"],
    ["git://git.example.org/deep/nested/group/repo.git", "git.example.org_deep_nested_group_repo.git"],
    ["github.com:a/b.git", "github.com_a_b.git"],
  ])("%s -> %s", (repo, slug) => {
    expect(repoSlug(repo)).toBe(slug);
  });

  test.each([
    ["/srv/git/repo.git", /neither a URL nor user@host:path/],
    ["file:///srv/git/repo.git", /neither a URL nor user@host:path/],
    ["ftp://host/a/b.git", /unsupported scheme "ftp:\/\/"/],
    ["https://github.com", /no repository path/],
    ["https://github.com/a/b.git?ref=main", /query or fragment/],
    ["https://github.com/a/b c.git", /not a valid SSM path component/],
    ["git@[::1]:a/b.git", /neither a URL|not a valid SSM path component/],
  ])("rejects %s", (repo, message) => {
    expect(() => repoSlug(repo)).toThrow(JobSecretsError);
    expect(() => repoSlug(repo)).toThrow(message);
  });

  test("knows which repositories are fetched over SSH", () => {
    expect(parseRepoUrl("git@github.com:a/b.git").overSsh).toBe(true);
    expect(parseRepoUrl("ssh://git@host:7999/a/b.git").overSsh).toBe(true);
    expect(parseRepoUrl("https://github.com/a/b.git").overSsh).toBe(false);
  });

  test("never repeats a password from the URL in a message", () => {
    expect(describeRepo("https://user:hunter2@host/a/b.git")).toBe('"https://host/a/b.git"');
    expect(() => repoSlug("https://user:hunter2@host/a/b c.git")).toThrow(/^(?!.*hunter2)/s);
  });
});

describe("envNameFor", () => {
  test.each([
    ["/ci-fleet/p/q/global/env/npm-token", "NPM_TOKEN"],
    ["/ci-fleet/p/q/global/env/NPM_TOKEN", "NPM_TOKEN"],
    ["/ci-fleet/p/q/global/env/Sentry-DSN", "SENTRY_DSN"],
    ["/ci-fleet/p/q/global/env/_private", "_PRIVATE"],
    ["/ci-fleet/p/q/global/env/a1", "A1"],
    ["/ci-fleet/p/q/global/env/group/nested-name", "NESTED_NAME"],
  ])("%s -> %s", (parameter, name) => {
    expect(envNameFor(parameter)).toBe(name);
  });

  test.each([
    ["/q/global/env/1password", /"1PASSWORD", which is not a shell identifier/],
    ["/q/global/env/npm.token", /"NPM\.TOKEN", which is not a shell identifier/],
    ["/q/global/env/path", /would set PATH, which is reserved/],
    ["/q/global/env/ld-preload", /would set LD_PRELOAD, which is reserved \(LD_\*\)/],
    ["/q/global/env/bash-env", /BASH_ENV, which is reserved/],
    ["/q/global/env/buildkite-repo", /BUILDKITE_REPO, which is reserved \(BUILDKITE\*\)/],
    ["/q/global/env/ssh-auth-sock", /SSH_AUTH_SOCK, which is reserved/],
    ["/q/global/env/aws-secret-access-key", /AWS_SECRET_ACCESS_KEY, which is reserved \(AWS_\*\)/],
    ["/q/global/env/ci-fleet-ssm-prefix", /CI_FLEET_SSM_PREFIX, which is reserved/],
  ])("rejects %s", (parameter, message) => {
    expect(() => envNameFor(parameter)).toThrow(message);
  });
});

describe("pipelineLevelName", () => {
  test("accepts Buildkite slugs", () => {
    expect(pipelineLevelName("release-tools")).toBe("release-tools");
  });
  test.each([
    ["global", /collides with the queue's "global\/" namespace/],
    ["buildkite", /collides with the queue's "buildkite\/" namespace/],
    ["../other", /is not a Buildkite pipeline slug/],
    ["Upper", /is not a Buildkite pipeline slug/],
    ["", /is not a Buildkite pipeline slug/],
  ])("rejects %j", (slug, message) => {
    expect(() => pipelineLevelName(slug)).toThrow(message);
  });
});
