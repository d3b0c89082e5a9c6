// {{name}}: an Event Runner WASM plugin. It drops events whose fault type
// is listed in `drop_fault_types` and keeps everything else; change
// `filter` to do what you need. See the runner's docs/plugins.md.
//
// config = { drop_fault_types = ["NoisyProbe"] }

import { log } from "event-runner:plugin/host@0.1.0";
import type { Event, Verdict } from "./plugin-types";

// Module state persists between events (one instance serves them all).
let dropFaultTypes: string[] = [];

export const filter = {
  init(config: Array<[string, string]>): void {
    for (const [key, value] of config) {
      if (key === "drop_fault_types") {
        dropFaultTypes = value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
      } else {
        // Typos fail `runner validate` instead of doing nothing.
        throw `unknown config key ${JSON.stringify(key)} (allowed: drop_fault_types)`;
      }
    }
    log("info", `{{name}}: dropping ${dropFaultTypes.join(", ")}`);
  },

  filter(event: Event): Verdict {
    if (dropFaultTypes.includes(event.faultType)) {
      return { tag: "drop", val: `fault type ${event.faultType} is dropped` };
    }
    return { tag: "keep" };
  },
};
