/**
 * How long each AWS credential of the fleet lives, when it is renewed and when its machine
 * raises the alarm. One place for the numbers: the identity component issues with them,
 * the preview's report lists them, and test/identity/lifetimes.test.ts holds the Salt tree's
 * scripts (salt/aws_credentials/files/*.py) to the same values.
 */
import { FleetConfig } from "../config/model";

/** Every session a machine or a job gets (Roles Anywhere profiles, role MaxSessionDuration). */
export const SESSION_SECONDS = 3600;
/** ci-fleet-aws-session: a new session when the current one has less than this left. */
export const SESSION_REFRESH_BEFORE_SECONDS = 40 * 60;
/** ci-fleet-aws-session: the alarm when the CI user's session has less than this left. */
export const SESSION_ALARM_BEFORE_SECONDS = 15 * 60;
/** ci-fleet-roles-anywhere: renew with this fraction of the certificate's lifetime left. */
export const CERTIFICATE_RENEW_AT_REMAINING = 0.5;
/**
 * Runners of an untrusted queue get certificates of at most this many hours, whatever
 * identity.runnerCertificateHours says (salt/_runners/ci_fleet_pki.py UNTRUSTED_MAX_LIFETIME_HOURS):
 * a certificate copied off a rooted runner is worth less, and the master signs a new one only past
 * half-life, one per hour at most (no stockpiling). The price: their renewal tolerates a master
 * outage of about a day and a half (half of 72 h), not half of the configured lifetime.
 */
export const UNTRUSTED_CERTIFICATE_MAX_HOURS = 72;
/** ci-fleet-roles-anywhere: alarm with this fraction left (renewal failing for a quarter of it). */
export const CERTIFICATE_ALARM_AT_REMAINING = 0.25;
/**
 * The Salt master's first certificate, issued by `pulumi up` into its user-data for its first
 * pillar sync only (the fleet issues every later one). Any `pulumi up` in its last 48 hours
 * issues a new one, so a master created by any `pulumi up` gets one with at least a day left
 * (it waits at most 6 h for its pillar).
 */
export const BOOTSTRAP_CERTIFICATE_HOURS = 72;
export const BOOTSTRAP_EARLY_RENEWAL_HOURS = 48;
/** The Roles Anywhere CA: five years, re-issued (same key) by `pulumi up` in its last year. */
export const CA_VALIDITY_HOURS = 5 * 365 * 24;
export const CA_EARLY_RENEWAL_HOURS = 365 * 24;

export interface CredentialLifetime {
  credential: string;
  where: string;
  lifetime: string;
  renewed: string;
  alarm: string;
}

const hours = (h: number) => (h >= 24 ? `${Math.round((h / 24) * 10) / 10} d (${h} h)` : `${h} h`);

/** The report's table for one stack. */
export function credentialLifetimes(config: Pick<FleetConfig, "provider" | "identity">): CredentialLifetime[] {
  const rows: CredentialLifetime[] = [
    {
      credential: "CI job session (queue agent role)",
      where: "runners: /run/ci-fleet/aws/credentials.json, root:ci-agent 0640, written by root's ci-fleet-aws-session.timer",
      lifetime: `${SESSION_SECONDS / 60} min`,
      renewed: `by the runner, with ${SESSION_REFRESH_BEFORE_SECONDS / 60} min left (timer every 5 min)`,
      alarm: `${SESSION_ALARM_BEFORE_SECONDS / 60} min before expiry: /run/ci-fleet/alarms/aws-session.alarm, journal warning, unit failed`,
    },
  ];
  if (config.provider === "equinix-metal") {
    const h = config.identity.runnerCertificateHours;
    rows.push(
      {
        credential: "Roles Anywhere certificate + key (every machine)",
        where: "/etc/ci-fleet/roles-anywhere/current/, root 0700, key 0600, made on the machine; a new key with every certificate",
        lifetime: hours(h),
        renewed: `by the fleet (minion → master event, master signs; the master itself locally) with ${hours(h * CERTIFICATE_RENEW_AT_REMAINING)} left; no \`pulumi up\``,
        alarm: `${hours(h * CERTIFICATE_ALARM_AT_REMAINING)} before expiry: /run/ci-fleet/alarms/roles-anywhere-certificate.alarm, journal warning, unit failed`,
      },
      {
        credential: "Roles Anywhere certificate + key (runners of untrusted queues)",
        where: "as above; the master signs a new one only past half-life, at most one an hour",
        lifetime: hours(Math.min(h, UNTRUSTED_CERTIFICATE_MAX_HOURS)),
        renewed: `as above, with ${hours(Math.min(h, UNTRUSTED_CERTIFICATE_MAX_HOURS) * CERTIFICATE_RENEW_AT_REMAINING)} left`,
        alarm: `${hours(Math.min(h, UNTRUSTED_CERTIFICATE_MAX_HOURS) * CERTIFICATE_ALARM_AT_REMAINING)} before expiry, as above`,
      },
      {
        credential: "Salt master bootstrap certificate (user-data)",
        where: "master only, first pillar sync; removed from disk after the first highstate",
        lifetime: hours(BOOTSTRAP_CERTIFICATE_HOURS),
        renewed: `by any \`pulumi up\` with ${BOOTSTRAP_EARLY_RENEWAL_HOURS} h left (matters only for a new master)`,
        alarm: "none (not used after first boot)",
      },
      {
        credential: "Roles Anywhere CA (trust anchor)",
        where: "key in Pulumi state and the master's pillar only (/etc/ci-fleet/pki/ca, root 0700)",
        lifetime: hours(CA_VALIDITY_HOURS),
        renewed: `by any \`pulumi up\` in its last ${CA_EARLY_RENEWAL_HOURS / 24} days (same key: issued certificates stay valid)`,
        alarm: "the preview lists it; no machine alarm",
      },
    );
  } else {
    rows.push({
      credential: "instance role (master, Teleport: own role; runners: host role, sts:AssumeRole only)",
      where: "IMDS, uid 0 only (metadata guard)",
      lifetime: "AWS-managed (hours)",
      renewed: "by EC2, automatically",
      alarm: "the CI job session's alarm covers runners",
    });
  }
  return rows;
}
