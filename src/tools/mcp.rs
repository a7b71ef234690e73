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

pub(super) async fn call<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    tool: &McpTool,
    arguments: &Value,
) -> Result<ToolOutcome, Stop> {
    if !tool.read_only {
        let title = report.title().to_owned();
        permission::ask(context, report, &tool.permission_key, &title, Vec::new())
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
