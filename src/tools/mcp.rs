//! Calls of the tools MCP servers offer a session: asked first like any
//! change, unless the server says the tool only reads, then shown with what
//! it returned. Starting servers and speaking MCP is [`crate::mcp`]'s part.

use agent_client_protocol::v1::schema::{
    ContentBlock, ImageContent, ToolCallContent, ToolCallStatus,
};
use serde_json::Value;

use super::{
    ClientPort, Report, Stop, ToolContext, ToolOutcome, for_the_model, permission, text_content,
};
use crate::mcp::McpTool;
use crate::model::{Picture, is_base64, picture_type};

/// The most of a call's arguments the person is shown when asked: enough
/// to see what is allowed, not a whole file the model wrote.
const ARGUMENTS_SHOWN: usize = 2_000;

pub(super) async fn call<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    tool: &McpTool,
    arguments: &Value,
) -> Result<ToolOutcome, Stop> {
    if !tool.read_only {
        let title = report.title().to_owned();
        let asked = vec![text_content(&arguments_shown(arguments))];
        permission::ask(context, report, &tool.permission_key, &title, asked)
            .await
            .or_stop("the tool was not called")?;
    }
    report.progress(Vec::new());
    let result = tokio::select! {
        biased;
        () = context.cancel.cancelled() => return Err(Stop::Cancelled),
        result = tool.call(arguments) => result?,
    };
    let text = for_the_model(&result.text);
    let mut content = vec![text_content(&text)];
    content.extend(result.images.iter().map(|image| {
        ToolCallContent::from(ContentBlock::Image(ImageContent::new(
            image.data.clone(),
            image.mime_type.clone(),
        )))
    }));
    let pictures = result
        .images
        .into_iter()
        .filter_map(|image| {
            let mime_type = picture_type(&image.mime_type)?;
            // A malformed one would have the provider refuse every picture.
            if !is_base64(&image.data) {
                return None;
            }
            Some(Picture {
                mime_type: mime_type.to_owned(),
                data: image.data,
            })
        })
        .collect();
    let status = if result.is_error {
        ToolCallStatus::Failed
    } else {
        ToolCallStatus::Completed
    };
    report.finish(status, content);
    Ok(ToolOutcome::Result {
        content: text,
        is_error: result.is_error,
        pictures,
    })
}

/// A call's arguments as the person is shown them when asked, as a built-in
/// tool shows its diff or command: pretty JSON, cut to [`ARGUMENTS_SHOWN`]
/// bytes with a mark saying how much more there was.
fn arguments_shown(arguments: &Value) -> String {
    let pretty = serde_json::to_string_pretty(arguments).unwrap_or_else(|_| arguments.to_string());
    if pretty.len() <= ARGUMENTS_SHOWN {
        return pretty;
    }
    let kept = pretty.floor_char_boundary(ARGUMENTS_SHOWN);
    let more = pretty.len() - kept;
    format!("{}\n… ({more} more bytes not shown)", &pretty[..kept])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_person_is_shown_a_calls_arguments_cut_to_a_sane_size() {
        let shown = arguments_shown(&json!({"repository": "acme/production-db", "force": true}));
        assert_eq!(
            shown,
            "{\n  \"repository\": \"acme/production-db\",\n  \"force\": true\n}"
        );
        let shown = arguments_shown(&json!({"text": "é".repeat(5_000)}));
        assert!(shown.len() < ARGUMENTS_SHOWN + 50, "{}", shown.len());
        assert!(shown.ends_with("more bytes not shown)"), "{shown}");
    }
}
