//! The browser app's files, built into the binary from `web/` so that the
//! server needs nothing beside itself and the page loads nothing from the
//! network.
//!
//! Only the files listed here are served; every file in `web/` must be listed
//! (a test checks). Third-party code lives in `web/vendor/`, each file with
//! its licence. This module holds bytes and their types only: no routes, no
//! headers, nothing read from disk at run time.

/// One file of the app.
#[derive(Debug)]
pub struct Asset {
    /// Its path under `/app/` (and under `web/` in the repository).
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $content_type:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
        }),*]
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The page served at `/`.
pub const INDEX: &str = "index.html";

/// Every file of the app.
pub static ASSETS: &[Asset] = assets![
    "index.html" => HTML,
    "style.css" => CSS,
    "icon.svg" => SVG,
    "app.js" => JS,
    "acp.js" => JS,
    "transcript.js" => JS,
    "markdown.js" => JS,
    "diff.js" => JS,
    "text.js" => JS,
    "vendor/marked.esm.js" => JS,
    "vendor/purify.es.mjs" => JS,
    "vendor/highlight/core.js" => JS,
    "vendor/highlight/languages/bash.js" => JS,
    "vendor/highlight/languages/c.js" => JS,
    "vendor/highlight/languages/cpp.js" => JS,
    "vendor/highlight/languages/css.js" => JS,
    "vendor/highlight/languages/diff.js" => JS,
    "vendor/highlight/languages/go.js" => JS,
    "vendor/highlight/languages/ini.js" => JS,
    "vendor/highlight/languages/java.js" => JS,
    "vendor/highlight/languages/javascript.js" => JS,
    "vendor/highlight/languages/json.js" => JS,
    "vendor/highlight/languages/markdown.js" => JS,
    "vendor/highlight/languages/plaintext.js" => JS,
    "vendor/highlight/languages/python.js" => JS,
    "vendor/highlight/languages/rust.js" => JS,
    "vendor/highlight/languages/shell.js" => JS,
    "vendor/highlight/languages/sql.js" => JS,
    "vendor/highlight/languages/typescript.js" => JS,
    "vendor/highlight/languages/xml.js" => JS,
    "vendor/highlight/languages/yaml.js" => JS,
];

/// Files in `web/` that are not served: the licences of the vendored code.
#[cfg(test)]
const NOT_SERVED: &[&str] = &[
    "vendor/marked.LICENSE",
    "vendor/purify.LICENSE",
    "vendor/highlight/LICENSE",
    "vendor/README.md",
];

/// The asset at `path` (relative to `/app/`), if there is one.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn files_under(dir: &Path, root: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, root, found);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn every_file_of_the_app_is_served_and_nothing_else() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut on_disk = Vec::new();
        files_under(&root, &root, &mut on_disk);
        on_disk.retain(|path| !NOT_SERVED.contains(&path.as_str()));
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        served.sort();
        assert_eq!(served, on_disk);
    }

    /// Every `/app/…` path and every relative module import in the app names
    /// a served file, and nothing names another host.
    #[test]
    fn the_app_refers_only_to_its_own_files() {
        for asset in ASSETS.iter().filter(|a| !a.path.starts_with("vendor/")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for (index, _) in text.match_indices("/app/") {
                let rest = &text[index + "/app/".len()..];
                let end = rest.find(['"', '\'', ')', '`']).unwrap();
                let named = &rest[..end];
                assert!(find(named).is_some(), "{} names /app/{named}", asset.path);
            }
            for line in text.lines().filter(|line| line.starts_with("import ")) {
                let Some(from) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let base = Path::new(asset.path).parent().unwrap();
                let resolved = base.join(from.trim_start_matches("./"));
                let resolved = resolved.to_string_lossy();
                assert!(find(&resolved).is_some(), "{} imports {from}", asset.path);
            }
            // An SVG names its XML namespace by URL; nothing is fetched from it.
            let fetches_nothing = asset.content_type == SVG
                || !(text.contains("http://") || text.contains("https://"));
            assert!(fetches_nothing, "{} refers to another host", asset.path);
        }
    }
}
