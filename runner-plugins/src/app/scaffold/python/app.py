"""{{name}}: an Event Runner WASM plugin. It drops events whose fault type
is listed in `drop_fault_types` and keeps everything else; change `filter`
to do what you need. See the runner's docs/plugins.md.

config = { drop_fault_types = ["NoisyProbe"] }
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.filter import Verdict_Drop, Verdict_Keep
from wit_world.imports.host import LogLevel, log

# Module state: componentize-py creates a new `Filter` object for every
# call, so what `init` learns must live at module level.
DROP_FAULT_TYPES: set[str] = set()


class Filter(exports.Filter):
    def init(self, config: list[tuple[str, str]]) -> None:
        global DROP_FAULT_TYPES
        for key, value in config:
            if key == "drop_fault_types":
                DROP_FAULT_TYPES = {v.strip() for v in value.split(",") if v.strip()}
            else:
                # Typos fail `runner validate` instead of doing nothing.
                raise Err(f"unknown config key {key!r} (allowed: drop_fault_types)")
        log(LogLevel.INFO, f"{{name}}: dropping {', '.join(sorted(DROP_FAULT_TYPES))}")

    def filter(self, event):
        if event.fault_type in DROP_FAULT_TYPES:
            return Verdict_Drop(f"fault type {event.fault_type} is dropped")
        return Verdict_Keep()
