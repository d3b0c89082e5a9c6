// namespace-deny: drops events from namespaces on a deny list (exact names
// or `prefix*`), the TypeScript counterpart of the Rust namespace-filter.
//
// Build (see docs/plugins.md): tsc, then componentize-js with its default
// settings; plugins-wasm/build-guest-examples.sh does both.
//
// config = { deny_namespaces = ["kube-*", "dev"], log_every = 0 }

import { log } from "event-runner:plugin/host@0.1.0";
import type { Event, Verdict } from "./plugin-types";

let deny: string[] = [];
let seen = 0;
let logEvery = 0;

function denied(ns: string): string | undefined {
  return deny.find((p) => (p.endsWith("*") ? ns.startsWith(p.slice(0, -1)) : ns === p));
}

export const filter = {
  init(config: Array<[string, string]>): void {
    for (const [key, value] of config) {
      if (key === "deny_namespaces") {
        deny = value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
      } else if (key === "log_every") {
        logEvery = Number.parseInt(value, 10);
        if (!Number.isInteger(logEvery) || logEvery < 0) {
          throw `log_every: ${JSON.stringify(value)} is not a whole number`;
        }
      } else {
        // Typos fail `runner validate` instead of silently doing nothing.
        throw `unknown config key ${JSON.stringify(key)} (allowed: deny_namespaces, log_every)`;
      }
    }
    log("info", `namespace-deny: ${deny.length} pattern(s): ${deny.join(", ")}`);
  },

  filter(event: Event): Verdict {
    seen += 1;
    if (logEvery > 0 && seen % logEvery === 0) {
      console.log(`namespace-deny: ${seen} events seen`);
    }
    const ns = event.resource.namespace;
    const hit = denied(ns);
    if (hit !== undefined) {
      return { tag: "drop", val: `namespace ${ns} matches ${hit}` };
    }
    return { tag: "keep" };
  },
};
