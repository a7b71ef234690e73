//! The files `punie ask --attach` sends with its prompt: pictures as images
//! (the model is shown them), text as embedded resources, anything else as
//! a blob. Each is read before the server is reached, so a file that cannot
//! be sent costs nothing.
//!
//! This module only reads the files it is named; what the server does with
//! them is the server's.

use std::path::Path;

use agent_client_protocol::v1::schema::{
    BlobResourceContents, ContentBlock, EmbeddedResource, EmbeddedResourceResource, ImageContent,
    TextResourceContents,
};
use anyhow::Context as _;
use base64::prelude::{BASE64_STANDARD, Engine as _};

use crate::config::MAX_ATTACHED_BYTES;

/// The content blocks `paths` make, in order.
pub fn attachments(paths: &[impl AsRef<Path>]) -> anyhow::Result<Vec<ContentBlock>> {
    let mut total = 0u64;
    paths
        .iter()
        .map(|path| {
            let path = path.as_ref();
            let bytes = read(path, &mut total)?;
            attachment(path, bytes)
        })
        .collect()
}

/// `path`'s bytes, keeping the total under [`MAX_ATTACHED_BYTES`]. Counted
/// as they are read, not taken from the file's size: a pipe, a device or a
/// file still growing has none that holds.
fn read(path: &Path, total: &mut u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot attach {shown}"))?;
    if file.metadata().is_ok_and(|metadata| metadata.is_dir()) {
        anyhow::bail!("cannot attach {shown}: it is a directory; attach the files in it");
    }
    let room = MAX_ATTACHED_BYTES.saturating_sub(*total);
    let mut bytes = Vec::new();
    file.take(room.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot attach {shown}"))?;
    *total = total.saturating_add(bytes.len() as u64);
    if *total > MAX_ATTACHED_BYTES {
        anyhow::bail!(
            "cannot attach {shown}: the files come to more than {} MiB, which is all one prompt carries",
            MAX_ATTACHED_BYTES / 1024 / 1024
        );
    }
    Ok(bytes)
}

fn attachment(path: &Path, bytes: Vec<u8>) -> anyhow::Result<ContentBlock> {
    if let Some(mime_type) = picture_type(path) {
        if bytes.is_empty() {
            anyhow::bail!("cannot attach {}: the picture is empty", path.display());
        }
        let data = BASE64_STANDARD.encode(&bytes);
        return Ok(ContentBlock::Image(ImageContent::new(data, mime_type)));
    }
    let uri = file_uri(path)?;
    let resource = match String::from_utf8(bytes) {
        Ok(text) => EmbeddedResourceResource::TextResourceContents(
            TextResourceContents::new(text, uri).mime_type("text/plain".to_owned()),
        ),
        Err(not_text) => {
            let blob = BASE64_STANDARD.encode(not_text.as_bytes());
            EmbeddedResourceResource::BlobResourceContents(
                BlobResourceContents::new(blob, uri)
                    .mime_type("application/octet-stream".to_owned()),
            )
        }
    };
    Ok(ContentBlock::Resource(EmbeddedResource::new(resource)))
}

/// The picture type a file's name says it holds, if the model can be shown it.
fn picture_type(path: &Path) -> Option<&'static str> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    match extension.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

/// `file:///…` for `path`, made absolute.
fn file_uri(path: &Path) -> anyhow::Result<String> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("cannot attach {}", path.display()))?;
    reqwest::Url::from_file_path(&absolute)
        .map(String::from)
        .map_err(|()| anyhow::anyhow!("cannot attach {}: not a file path", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_name_says_whether_it_is_a_picture() {
        assert_eq!(picture_type(Path::new("shot.PNG")), Some("image/png"));
        assert_eq!(picture_type(Path::new("a/photo.jpg")), Some("image/jpeg"));
        assert_eq!(picture_type(Path::new("drawing.svg")), None);
        assert_eq!(picture_type(Path::new("png")), None);
    }
}
