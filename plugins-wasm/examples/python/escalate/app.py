"""escalate: raises the severity of chosen fault types (e.g. OOMKilled to
critical) so that a later `severity` stage lets them through. Place it
before the severity stage (docs/plugins.md says why).

Build (see docs/plugins.md): componentize-py with its default settings;
plugins-wasm/build-guest-examples.sh runs it.

config = { fault_types = ["OOMKilled", "NodeNotReady"], to = "critical" }
"""

from dataclasses import replace

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.filter import Severity, Verdict_Keep, Verdict_Replace
from wit_world.imports.host import LogLevel, log

LEVELS = ["debug", "info", "warning", "error", "critical"]

# Module state: componentize-py creates a new `Filter` object for every
# call, so what `init` learns must live at module level.
FAULT_TYPES: set[str] = set()
TO = Severity.CRITICAL


class Filter(exports.Filter):
    def init(self, config: list[tuple[str, str]]) -> None:
        global FAULT_TYPES, TO
        for key, value in config:
            if key == "fault_types":
                FAULT_TYPES = {v.strip() for v in value.split(",") if v.strip()}
            elif key == "to":
                if value not in LEVELS:
                    raise Err(f"to = {value!r}: one of {', '.join(LEVELS)}")
                TO = Severity[value.upper()]
            else:
                # Typos fail `runner validate` instead of silently doing nothing.
                raise Err(f"unknown config key {key!r} (allowed: fault_types, to)")
        log(LogLevel.INFO, f"escalate: {', '.join(sorted(FAULT_TYPES))} -> {TO.name.lower()}")

    def filter(self, event):
        if event.fault_type in FAULT_TYPES and event.severity.value < TO.value:
            print(f"escalating {event.fault_type} in {event.resource.namespace}")
            return Verdict_Replace(replace(event, severity=TO))
        return Verdict_Keep()
