//! What MCP servers offer, as tools for the model: each under a name
//! providers accept, with an input schema they take, at most
//! [`MOST_TOOLS`] of them; and a call's result as text for the model, with
//! the pictures in it for the person. It starts no server and asks no one's
//! permission.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, JsonObject, ResourceContents, Tool,
};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::Connected;
use crate::model::{Picture, ToolSpec, is_base64, picture_type};

/// What every MCP tool's name starts with, as the model knows it.
pub const PREFIX: &str = "mcp__";

/// The longest tool name model providers accept.
const NAME_LIMIT: usize = 64;

/// The most MCP tools the model is given, with Punie's own: OpenAI takes
/// at most 128 in a request. Shared among the servers ([`fair_shares`]).
const MOST_TOOLS: usize = 100;

/// Keywords at the top of an input schema that OpenAI or Anthropic refuse
/// (the whole request, not just the tool): what they say is left to the
/// server to check.
const REFUSED_AT_THE_TOP: [&str; 4] = ["$schema", "not", "enum", "const"];

/// Combinations at the top of an input schema, refused too: the properties
/// their branches name are kept.
const COMBINATIONS: [&str; 3] = ["anyOf", "oneOf", "allOf"];

/// The MCP tools one turn may call, fixed when it starts.
#[derive(Default, Clone)]
pub struct McpTools {
    tools: Vec<McpTool>,
}

/// One tool of an MCP server, as the model knows it.
#[derive(Clone)]
pub struct McpTool {
    /// `mcp__<server>__<tool>`, in the characters providers accept.
    pub name: String,
    pub server: String,
    /// The tool's own name, as its server knows it.
    tool: String,
    /// How the person is shown it.
    pub title: String,
    /// The server says calling it changes nothing.
    pub read_only: bool,
    /// What an "always" answer about it is kept under: another server under
    /// the same name is asked about afresh.
    pub permission_key: String,
    description: String,
    schema: Value,
    call_timeout: Duration,
    connected: Arc<Connected>,
}

/// What a tool call produced.
pub struct McpResult {
    /// The result as text, for the model.
    pub text: String,
    /// Images the tool returned, for the person; those of a type models
    /// take go to the model too.
    pub images: Vec<Picture>,
    /// The tool says it failed.
    pub is_error: bool,
}

impl McpTools {
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&McpTool> {
        self.tools.iter().find(|tool| tool.name == name)
    }

    /// The tools as the model is told about them: every one, or, without
    /// `asking`, only those that would not ask first.
    pub fn specs(&self, asking: bool) -> impl Iterator<Item = ToolSpec> + '_ {
        let offered = move |tool: &&McpTool| asking || tool.read_only;
        self.tools.iter().filter(offered).map(|tool| ToolSpec {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters: tool.schema.clone(),
        })
    }

    /// Add the tools of `server`, `share` of them at most; what is left
    /// out, and why, if anything is.
    pub(super) fn add(
        &mut self,
        server: &str,
        connected: &Arc<Connected>,
        call_timeout: Duration,
        share: usize,
    ) -> Option<String> {
        let mut left_out = Vec::new();
        let (mut given, mut no_room) = (0, 0);
        for tool in connected.tools().iter() {
            match self.admit(server, tool) {
                Ok(_) if given == share => no_room += 1,
                Ok((name, schema)) => {
                    given += 1;
                    self.tools.push(McpTool {
                        permission_key: format!("{name}#{}", connected.launch_key),
                        name,
                        server: server.to_owned(),
                        tool: tool.name.to_string(),
                        title: title_of(tool),
                        read_only: tool
                            .annotations
                            .as_ref()
                            .and_then(|notes| notes.read_only_hint)
                            .unwrap_or(false),
                        description: tool.description.as_deref().unwrap_or_default().to_owned(),
                        schema,
                        call_timeout,
                        connected: connected.clone(),
                    });
                }
                Err(why) => left_out.push(format!("`{}` ({why})", tool.name)),
            }
        }
        let mut said = Vec::new();
        if no_room > 0 {
            said.push(format!(
                "{no_room} of its tools are left out, as the model is given {MOST_TOOLS} MCP tools at most, shared among the servers"
            ));
        }
        if !left_out.is_empty() {
            said.push(format!("the model is not given {}", left_out.join(", ")));
        }
        (!said.is_empty()).then(|| format!("MCP server `{server}`: {}.", said.join("; ")))
    }

    /// The name and schema `tool` of `server` is given under, or why it is
    /// left out.
    fn admit(&self, server: &str, tool: &Tool) -> Result<(String, Value), String> {
        let name = exposed_name(server, &tool.name);
        let schema = arguments_schema(&tool.input_schema)
            .ok_or_else(|| "its input schema is not an object's".to_owned())?;
        if let Some(other) = self.get(&name) {
            return Err(format!(
                "as {name}, it would have the name of `{}` of server `{}`",
                other.tool, other.server
            ));
        }
        Ok((name, schema))
    }
}

/// How many of its tools a server could give the model: those whose
/// schema providers take.
pub(super) fn givable(connected: &Connected) -> usize {
    connected
        .tools()
        .iter()
        .filter(|tool| arguments_schema(&tool.input_schema).is_some())
        .count()
}

/// How many tools each server, wanting `wanted` of them, may give the
/// model: [`MOST_TOOLS`] shared equally, what a server does not use going
/// to the others. A server named first has no say over the rest.
pub(super) fn fair_shares(wanted: &[usize]) -> Vec<usize> {
    let mut shares = vec![0; wanted.len()];
    let mut left = MOST_TOOLS;
    loop {
        let hungry: Vec<usize> = (0..wanted.len())
            .filter(|&index| shares[index] < wanted[index])
            .collect();
        if hungry.is_empty() || left == 0 {
            return shares;
        }
        let each = (left / hungry.len()).max(1);
        for index in hungry {
            let given = each.min(wanted[index] - shares[index]).min(left);
            shares[index] += given;
            left -= given;
        }
    }
}

impl McpTool {
    /// Call the tool with the model's `arguments`. Dropping the future
    /// cancels the call on the server.
    pub async fn call(&self, arguments: &Value) -> Result<McpResult, String> {
        let arguments = match arguments {
            Value::Object(object) => Some(object.clone()),
            Value::Null => None,
            Value::String(raw) => {
                return Err(format!(
                    "the arguments of {} are not valid JSON: {raw}",
                    self.name
                ));
            }
            other => {
                return Err(format!(
                    "the arguments of {} must be a JSON object, not {other}",
                    self.name
                ));
            }
        };
        let mut params = CallToolRequestParams::new(self.tool.clone());
        params.arguments = arguments;
        self.connected
            .call(params, self.call_timeout)
            .await
            .map(result)
            .map_err(|why| format!("the MCP server `{}` failed the call: {why}", self.server))
    }
}

/// How the person is shown `tool`: its title, else its name.
fn title_of(tool: &Tool) -> String {
    tool.title
        .clone()
        .or_else(|| {
            tool.annotations
                .as_ref()
                .and_then(|notes| notes.title.clone())
        })
        .unwrap_or_else(|| tool.name.to_string())
}

/// A tool's result as the model reads it, and the images in it.
fn result(answer: CallToolResult) -> McpResult {
    let mut text = String::new();
    let mut images = Vec::new();
    for block in answer.content {
        if !text.is_empty() {
            text.push('\n');
        }
        match block {
            ContentBlock::Text(block) => text.push_str(&block.text),
            ContentBlock::Image(image) => {
                add_image(&mut text, &mut images, image.mime_type, image.data)
            }
            ContentBlock::Audio(audio) => {
                let _ = write!(text, "[audio, {}, not shown]", audio.mime_type);
            }
            ContentBlock::Resource(embedded) => match embedded.resource {
                ResourceContents::TextResourceContents {
                    uri, text: body, ..
                } => {
                    let _ = write!(text, "[{uri}]\n{body}");
                }
                // A picture sent as a resource is shown as one.
                ResourceContents::BlobResourceContents {
                    mime_type: Some(mime_type),
                    blob,
                    ..
                } if picture_type(&mime_type).is_some() => {
                    add_image(&mut text, &mut images, mime_type, blob);
                }
                ResourceContents::BlobResourceContents { uri, .. } => {
                    let _ = write!(text, "[{uri}: binary content, not shown]");
                }
                _ => text.push_str("[a resource of a kind Punie does not read]"),
            },
            ContentBlock::ResourceLink(link) => {
                let _ = write!(text, "[resource: {}]", link.uri);
            }
            _ => text.push_str("[content of a kind Punie does not read]"),
        }
    }
    if text.is_empty()
        && let Some(structured) = answer.structured_content
    {
        text = structured.to_string();
    }
    McpResult {
        text,
        images,
        is_error: answer.is_error.unwrap_or(false),
    }
}

/// Say in `text` that the result holds an image, and keep it in `images`
/// for the person (and, of a type models take, the model); one whose data
/// is not valid base64 is said to be so, and goes to no one.
fn add_image(text: &mut String, images: &mut Vec<Picture>, mime_type: String, data: String) {
    if !is_base64(&data) {
        let _ = write!(
            text,
            "[an image, {mime_type}, not shown: its data is not valid base64]"
        );
        return;
    }
    let seen = if picture_type(&mime_type).is_some() {
        "shown to the user and, after the tool results, to you"
    } else {
        "shown to the user"
    };
    let _ = write!(text, "[an image, {mime_type}, {seen}]");
    images.push(Picture { mime_type, data });
}

/// A tool's input schema as providers take it: an object's (a type that
/// allows an object and `null` is taken as an object's), with `properties`,
/// and without what they refuse at the top ([`REFUSED_AT_THE_TOP`],
/// [`COMBINATIONS`]): the properties the combinations' branches name are
/// kept, so the model still knows every argument, and what every branch of
/// an `allOf` requires stays required. `None` for a schema of anything else,
/// which no provider takes.
fn arguments_schema(input: &JsonObject) -> Option<Value> {
    let mut schema = with_top_reference_resolved(input);
    if !takes_an_object(schema.get("type")) {
        return None;
    }
    schema.insert("type".to_owned(), Value::from("object"));
    for refused in REFUSED_AT_THE_TOP {
        schema.remove(refused);
    }
    let mut properties = match schema.remove("properties") {
        Some(Value::Object(properties)) => properties,
        _ => Map::new(),
    };
    let mut required: Vec<Value> = match schema.remove("required") {
        Some(Value::Array(required)) => required,
        _ => Vec::new(),
    };
    for combination in COMBINATIONS {
        let Some(Value::Array(branches)) = schema.remove(combination) else {
            continue;
        };
        for branch in &branches {
            let branch = resolved(&schema, branch);
            if let Some(Value::Object(named)) = branch.get("properties") {
                for (name, property) in named {
                    properties
                        .entry(name.clone())
                        .or_insert_with(|| property.clone());
                }
            }
            if combination == "allOf"
                && let Some(Value::Array(needed)) = branch.get("required")
            {
                for name in needed {
                    if !required.contains(name) {
                        required.push(name.clone());
                    }
                }
            }
        }
    }
    schema.insert("properties".to_owned(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".to_owned(), Value::Array(required));
    }
    Some(Value::Object(schema))
}

/// Whether a schema's `type` lets its value be an object: none given, or
/// `"object"`, or a list that has it.
fn takes_an_object(kind: Option<&Value>) -> bool {
    match kind {
        None => true,
        Some(Value::String(kind)) => kind == "object",
        Some(Value::Array(kinds)) => kinds.iter().any(|kind| kind == "object"),
        Some(_) => false,
    }
}

/// `input`, with the definition a top-level local `$ref` names merged in
/// (what `input` says itself wins): providers read no `$ref` there, and the
/// model would see no arguments.
fn with_top_reference_resolved(input: &JsonObject) -> JsonObject {
    let mut schema = input.clone();
    let Some(definition) = input
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|reference| definition(input, reference))
        .and_then(Value::as_object)
    else {
        return schema;
    };
    schema.remove("$ref");
    for (key, value) in definition {
        schema.entry(key.clone()).or_insert_with(|| value.clone());
    }
    schema
}

/// `branch`, or the definition its local `$ref` names in `root`.
fn resolved<'a>(root: &'a JsonObject, branch: &'a Value) -> &'a Value {
    branch
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|reference| definition(root, reference))
        .unwrap_or(branch)
}

/// The definition a local `reference` (`#/$defs/…`, `#/definitions/…`)
/// names in `root`.
fn definition<'a>(root: &'a JsonObject, reference: &str) -> Option<&'a Value> {
    ["$defs", "definitions"].iter().find_map(|defs| {
        let name = reference.strip_prefix(&format!("#/{defs}/"))?;
        root.get(*defs)?.get(name)
    })
}

/// `mcp__<server>__<tool>`, with every character providers refuse made `_`,
/// and no longer than they accept: a longer one is cut, and ends in a hash
/// of the whole, so two tools whose names differ only past the cut keep
/// names of their own, the same from one start to the next.
fn exposed_name(server: &str, tool: &str) -> String {
    let tidy = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let name = format!("{PREFIX}{}__{}", tidy(server), tidy(tool));
    if name.len() <= NAME_LIMIT {
        return name;
    }
    let hash = Sha256::digest(format!("{server}\0{tool}").as_bytes());
    let suffix = format!("_{}", hex::encode(&hash[..4]));
    // Only ASCII is left: any byte is a character boundary.
    format!("{}{suffix}", &name[..NAME_LIMIT - suffix.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_names_are_what_providers_accept() {
        assert_eq!(exposed_name("files", "read"), "mcp__files__read");
        assert_eq!(
            exposed_name("my server", "do.it/now"),
            "mcp__my_server__do_it_now"
        );
        let long = exposed_name(&"s".repeat(50), &"t".repeat(50));
        assert_eq!(long.len(), NAME_LIMIT);
    }

    #[test]
    fn the_tools_the_model_is_given_are_shared_fairly_among_servers() {
        assert_eq!(fair_shares(&[178, 5, 30]), [65, 5, 30]);
        assert_eq!(fair_shares(&[178, 178]), [50, 50]);
        assert_eq!(fair_shares(&[10, 20]), [10, 20]);
        assert_eq!(fair_shares(&[0, 178]), [0, 100]);
        assert_eq!(fair_shares(&[]), Vec::<usize>::new());
        let three = fair_shares(&[178, 178, 178]);
        assert_eq!(three.iter().sum::<usize>(), MOST_TOOLS);
        assert!(
            three.iter().all(|&share| share == 33 || share == 34),
            "{three:?}"
        );
    }

    #[test]
    fn pictures_sent_as_resources_are_pictures_and_broken_ones_go_to_no_one() {
        let answer: CallToolResult = serde_json::from_value(json!({"content": [
            {"type": "resource", "resource": {"uri": "file:///a.png", "mimeType": "image/png", "blob": "iVBORw0KGgo="}},
            {"type": "image", "mimeType": "image/png", "data": "not base64!"}
        ]}))
        .unwrap();
        let result = result(answer);
        assert_eq!(result.images.len(), 1);
        assert_eq!(result.images[0].mime_type, "image/png");
        assert_eq!(
            result.text,
            "[an image, image/png, shown to the user and, after the tool results, to you]\n\
             [an image, image/png, not shown: its data is not valid base64]"
        );
    }

    #[test]
    fn tools_whose_names_differ_past_the_cut_keep_names_of_their_own() {
        let server = "atlassian-confluence-cloud-prod";
        let one = exposed_name(server, "confluence_get_page_children_recursive");
        let two = exposed_name(
            server,
            "confluence_get_page_children_recursive_with_attachments",
        );
        assert_ne!(one, two);
        for name in [&one, &two] {
            assert_eq!(name.len(), NAME_LIMIT, "{name}");
            assert!(name.starts_with("mcp__atlassian-confluence-cloud-prod__confluence_"));
        }
        assert_eq!(
            one,
            exposed_name(server, "confluence_get_page_children_recursive")
        );
    }

    #[test]
    fn a_top_level_reference_gives_the_model_its_properties() {
        let given = object(json!({
            "$ref": "#/$defs/Args",
            "$defs": {"Args": {
                "type": "object",
                "properties": {"repository": {"type": "string"}},
                "required": ["repository"]
            }}
        }));
        let schema = arguments_schema(&given).unwrap();
        assert_eq!(
            schema["properties"],
            json!({"repository": {"type": "string"}})
        );
        assert_eq!(schema["required"], json!(["repository"]));
        assert!(schema.get("$ref").is_none(), "{schema}");
    }

    fn object(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn input_schemas_are_made_what_providers_take() {
        let given = object(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"a": {"type": "number"}},
        }));
        assert_eq!(
            arguments_schema(&given),
            Some(json!({"type": "object", "properties": {"a": {"type": "number"}}}))
        );
        assert_eq!(
            arguments_schema(&object(json!({}))),
            Some(json!({"type": "object", "properties": {}}))
        );
        assert_eq!(
            arguments_schema(&object(json!({"type": ["object", "null"], "enum": [{}]}))),
            Some(json!({"type": "object", "properties": {}}))
        );
        assert_eq!(arguments_schema(&object(json!({"type": "string"}))), None);
    }

    #[test]
    fn top_level_combinations_become_plain_properties() {
        let given = object(json!({
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "anyOf": [
                {"properties": {"a": {"type": "number"}}, "required": ["a"]},
                {"$ref": "#/$defs/B"}
            ],
            "allOf": [{"properties": {"c": {"type": "string"}}, "required": ["c"]}],
            "not": {"required": ["d"]},
            "$defs": {"B": {"properties": {"b": {"type": "number"}}, "required": ["b"]}}
        }));
        assert_eq!(
            arguments_schema(&given),
            Some(json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "a": {"type": "number"},
                    "b": {"type": "number"},
                    "c": {"type": "string"}
                },
                "required": ["c"],
                "$defs": {"B": {"properties": {"b": {"type": "number"}}, "required": ["b"]}}
            }))
        );
    }
}
