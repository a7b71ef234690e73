//! What the content blocks of a `session/prompt` become: the text the model
//! reads and the pictures it is shown. Text and resource links are always
//! accepted, embedded resources because Punie advertises `embeddedContext`,
//! images because it advertises `image`; audio is refused. A prompt that
//! starts with a slash command reads as the command's instructions.
//!
//! This module only reads blocks; running the turn is [`crate::session`]'s.

use agent_client_protocol::Error;
use agent_client_protocol::v1::schema::{ContentBlock, EmbeddedResourceResource};

use super::{commands, errors};
use crate::model::{PICTURE_TYPES, Picture, is_base64, picture_type};
use crate::session::Prompt;

const METHOD: &str = "session/prompt";

/// The prompt `blocks` make, or why they make none.
pub(super) fn prompt_from(blocks: Vec<ContentBlock>) -> Result<Prompt, Error> {
    if blocks.is_empty() {
        return Err(errors::invalid_params(
            METHOD,
            "the prompt is empty; send at least one content block",
        ));
    }
    let mut parts = Vec::with_capacity(blocks.len());
    let mut pictures = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        let part = match block {
            ContentBlock::Text(text) => text.text.clone(),
            ContentBlock::ResourceLink(link) => format!("[{}]({})", link.name, link.uri),
            ContentBlock::Resource(embedded) => match &embedded.resource {
                EmbeddedResourceResource::TextResourceContents(file) => {
                    format!("{}:\n{}", file.uri, file.text)
                }
                EmbeddedResourceResource::BlobResourceContents(file) => {
                    match file.mime_type.as_deref().and_then(picture_type) {
                        Some(mime_type) => {
                            pictures.push(picture(index, mime_type, &file.blob)?);
                            format!("[picture {}, shown below]", file.uri)
                        }
                        // Not given to the model, but kept with the prompt
                        // and replayed: it must be what ACP says it is.
                        None if !file.blob.is_empty() && !is_base64(&file.blob) => {
                            return Err(errors::invalid_params(
                                METHOD,
                                format!(
                                    "block {index} holds a blob whose data is not base64 (RFC 4648, with padding)"
                                ),
                            ));
                        }
                        None => format!("[binary content of {}]", file.uri),
                    }
                }
                _ => return Err(unsupported("this kind of embedded resource")),
            },
            ContentBlock::Image(image) => {
                let Some(mime_type) = picture_type(&image.mime_type) else {
                    return Err(errors::invalid_params(
                        METHOD,
                        format!(
                            "block {index} is an image of type `{}`; Punie takes {}",
                            image.mime_type,
                            PICTURE_TYPES.join(", ")
                        ),
                    ));
                };
                pictures.push(picture(index, mime_type, &image.data)?);
                continue;
            }
            ContentBlock::Audio(_) => return Err(unsupported("audio")),
            _ => return Err(unsupported("this kind of")),
        };
        parts.push(part);
    }
    if pictures.is_empty() && parts.iter().all(|part| part.trim().is_empty()) {
        return Err(errors::invalid_params(
            METHOD,
            "the prompt says nothing: its text is empty and it carries no picture or file",
        ));
    }
    let text = parts.join("\n");
    Ok(Prompt {
        shown: blocks,
        text: commands::expand(&text).unwrap_or(text),
        pictures,
    })
}

/// The picture in block `index`, if its data is base64 as the providers
/// take it.
fn picture(index: usize, mime_type: &'static str, data: &str) -> Result<Picture, Error> {
    if data.is_empty() {
        return Err(errors::invalid_params(
            METHOD,
            format!("block {index} holds an empty picture"),
        ));
    }
    if !is_base64(data) {
        return Err(errors::invalid_params(
            METHOD,
            format!(
                "block {index} holds a picture whose data is not base64 (RFC 4648, with padding)"
            ),
        ));
    }
    Ok(Picture {
        mime_type: mime_type.to_owned(),
        data: data.to_owned(),
    })
}

fn unsupported(kind: &str) -> Error {
    errors::invalid_params(
        METHOD,
        format!(
            "{kind} content is not supported; Punie accepts text, images, resource links and \
             embedded resources (see promptCapabilities)"
        ),
    )
}
