//! `docs/tools.md` documents every tool the model is offered, with the exact
//! JSON schema of its arguments: this test keeps it true. When a tool changes,
//! `PUNIE_WRITE_DOCS=1 cargo test --test tool_docs` rewrites the file.

use std::path::Path;

/// The document as the tools make it.
fn tools_document() -> String {
    let mut text = String::from(
        "# Tools\n\n\
         The tools Punie offers the model, as the model sees them: the name, the\n\
         description and the JSON Schema of the arguments object. The README's\n\
         [Tools](../README.md#tools) section says how calls are reported, confined\n\
         to the workspace and permitted. This file is checked against the code by\n\
         `tests/tool_docs.rs`; `PUNIE_WRITE_DOCS=1 cargo test --test tool_docs`\n\
         rewrites it.\n",
    );
    for tool in punie::tools::specs() {
        let schema =
            serde_json::to_string_pretty(&tool.parameters).expect("a schema is plain JSON");
        text.push_str(&format!(
            "\n## `{}`\n\n{}\n\n```json\n{schema}\n```\n",
            tool.name, tool.description
        ));
    }
    text
}

#[test]
fn docs_tools_md_shows_every_tool_and_its_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tools.md");
    let expected = tools_document();
    if std::env::var_os("PUNIE_WRITE_DOCS").is_some() {
        std::fs::write(&path, &expected).expect("docs/tools.md is writable");
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == expected,
        "docs/tools.md is out of date; rewrite it with `PUNIE_WRITE_DOCS=1 cargo test --test tool_docs`"
    );
    for name in [
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search",
        "run_command",
    ] {
        assert!(
            written.contains(&format!("## `{name}`")),
            "{name} is documented"
        );
    }
}
