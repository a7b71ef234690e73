//! The MCP server the tests hand sessions: tests/mcp/server.mjs, on the
//! official MCP SDK for Node.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Node, from the PATH the test suite runs with.
pub fn node() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("node"))
        .find(|path| path.is_file())
        .expect("node on the PATH (scripts/test makes sure of it)")
}

pub fn test_server() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/server.mjs")
}

/// A stdio MCP server entry of `mcpServers`: the test server with `args`
/// and `env`.
pub fn stdio(name: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut argv = vec![test_server().display().to_string()];
    argv.extend(args.iter().map(|arg| (*arg).to_owned()));
    let env: Vec<Value> = env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    json!({"name": name, "command": node(), "args": argv, "env": env})
}
