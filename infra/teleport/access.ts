import type { LabelSelector, TeleportRole } from "./roles";

/**
 * Evaluates Teleport role sets against machine labels the way Teleport's RBAC does for SSH
 * access, so the access report is derived from the very role objects the cluster gets:
 *
 * - a selector matches when EVERY key matches; a key matches when the machine has the
 *   label and ANY of the selector's values matches it (a value is a glob with `*`, or a
 *   regular expression written `^...$`); `{'*': '*'}` matches every machine; an empty
 *   selector matches nothing;
 * - a deny selector in ANY of a user's roles that matches the machine denies it, whatever
 *   the other roles allow;
 * - the logins on a machine are the union of `allow.logins` of the roles whose allow
 *   selector matches it, minus `deny.logins` of every role.
 */

export function matchLabelValue(pattern: string, value: string): boolean {
  if (pattern.startsWith("^") && pattern.endsWith("$")) return new RegExp(pattern).test(value);
  const glob = pattern.split("*").map(escapeRegExp).join(".*");
  return new RegExp(`^${glob}$`).test(value);
}

export function matchLabels(selector: LabelSelector | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  if ("*" in selector) {
    const values = asList(selector["*"]);
    // Teleport accepts the wildcard key only as `'*': '*'`; anything else is an error there.
    if (values.length !== 1 || values[0] !== "*" || Object.keys(selector).length !== 1) {
      throw new Error(`label selector ${JSON.stringify(selector)}: the '*' key is only valid as {'*': '*'}`);
    }
    return true;
  }
  return Object.entries(selector).every(([key, patterns]) => {
    const value = labels[key];
    return value !== undefined && asList(patterns).some((pattern) => matchLabelValue(pattern, value));
  });
}

export interface MachineAccess {
  allowed: boolean;
  logins: string[];
}

/** What a user holding `roles` may do on a machine with `labels`. */
export function roleSetAccess(roles: readonly TeleportRole[], labels: Readonly<Record<string, string>>): MachineAccess {
  if (roles.some((role) => matchLabels(role.spec.deny.node_labels, labels))) return { allowed: false, logins: [] };
  const denied = new Set(roles.flatMap((role) => role.spec.deny.logins ?? []));
  const logins = new Set<string>();
  for (const role of roles) {
    if (!matchLabels(role.spec.allow.node_labels, labels)) continue;
    for (const login of role.spec.allow.logins ?? []) if (!denied.has(login)) logins.add(login);
  }
  return { allowed: logins.size > 0, logins: [...logins].sort() };
}

export interface AccessMatrixInput {
  roles: readonly TeleportRole[];
  /** GitHub team slug -> role names, as in config `teleport.teamsToRoles`. */
  teamsToRoles: Readonly<Record<string, readonly string[]>>;
  /** Machine name -> its Teleport labels (`teleportNodeLabels`). */
  machines: Readonly<Record<string, Readonly<Record<string, string>>>>;
}

export interface AccessMatrixRow {
  team: string;
  roles: string[];
  machines: string[];
  logins: string[];
}

/** Which GitHub team reaches which machines with which logins (rows sorted by team). */
export function teleportAccessMatrix(input: AccessMatrixInput): AccessMatrixRow[] {
  const byName = new Map(input.roles.map((role) => [role.metadata.name, role]));
  return Object.keys(input.teamsToRoles)
    .sort()
    .map((team) => {
      const roleNames = [...new Set(input.teamsToRoles[team])].sort();
      const roles = roleNames.map((name) => {
        const role = byName.get(name);
        if (!role) throw new Error(`access matrix: team ${team} maps to unknown role ${JSON.stringify(name)}`);
        return role;
      });
      const machines: string[] = [];
      const logins = new Set<string>();
      for (const machine of Object.keys(input.machines).sort()) {
        const access = roleSetAccess(roles, input.machines[machine]);
        if (!access.allowed) continue;
        machines.push(machine);
        access.logins.forEach((login) => logins.add(login));
      }
      return { team, roles: roleNames, machines, logins: [...logins].sort() };
    });
}

/** The matrix as a Markdown table for the preview's report.md. */
export function renderAccessMatrixMarkdown(rows: readonly AccessMatrixRow[]): string {
  const cell = (items: readonly string[]) => (items.length === 0 ? "(none)" : items.map((i) => `\`${i}\``).join(", "));
  const lines = ["| GitHub team | Teleport roles | machines | logins |", "|---|---|---|---|"];
  for (const row of rows) lines.push(`| \`${row.team}\` | ${cell(row.roles)} | ${cell(row.machines)} | ${cell(row.logins)} |`);
  return `${lines.join("\n")}\n`;
}

function asList(value: string | string[]): string[] {
  return Array.isArray(value) ? value : [value];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
