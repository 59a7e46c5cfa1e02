import { loadFleetConfig, LoadOptions } from "./config/load";
import { FleetConfig } from "./config/model";
import { Fleet } from "./fleet/fleet";

/**
 * The program, as a function: `index.ts` runs it under `pulumi up`; the offline preview
 * and the tests run it under the mock runtime after setting config.
 */
export function createFleet(options: LoadOptions = {}): { config: FleetConfig; fleet: Fleet } {
  const config = loadFleetConfig(options);
  const fleet = new Fleet(config.stack, { config });
  return { config, fleet };
}
