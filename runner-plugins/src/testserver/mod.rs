//! Faithful test MCP server (rmcp server side). Placeholder until issue 3 lands.
