//! Finding the models a person could pick: those the local model servers on
//! this machine (Ollama, LM Studio) have installed, by asking each for its
//! OpenAI-compatible model list. A server that is not running, or does not
//! answer in time, simply offers nothing.
//!
//! It only reads the lists; choosing and calling a model is the rest of
//! [`crate::model`]'s business.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::ModelError;
use super::http;
use super::openai::{LMSTUDIO_BASE_URL, ollama_base_url};

/// How long a local server may take to list its models.
const LIST_TIMEOUT: Duration = Duration::from_millis(500);

/// Most models taken from one server's list.
const MAX_MODELS_PER_SERVER: usize = 100;

/// `GET /v1/models`, as OpenAI-compatible servers answer it.
#[derive(Deserialize)]
struct ModelList {
    data: Vec<ListedModel>,
}

#[derive(Deserialize)]
struct ListedModel {
    id: String,
}

/// The model specs of every model the local servers offer now, e.g.
/// `ollama:qwen3:8b`, `lmstudio:openai/gpt-oss-20b`. `ollama_host` is the
/// value of `OLLAMA_HOST`, read as `ollama:` models read it.
pub async fn local_models(ollama_host: Option<&str>) -> Vec<String> {
    let ollama = listed("ollama", ollama_base_url(ollama_host));
    let lmstudio = listed(
        "lmstudio",
        http::parse_base_url(LMSTUDIO_BASE_URL, "the LM Studio URL"),
    );
    let (mut models, lmstudio) = tokio::join!(ollama, lmstudio);
    models.extend(lmstudio);
    models
}

/// The models the server at `base` (…/v1) lists, as `prefix:id` specs.
async fn listed(prefix: &str, base: Result<Url, ModelError>) -> Vec<String> {
    let Ok(base) = base else {
        return Vec::new();
    };
    let Ok(client) = http::client_for(&base) else {
        return Vec::new();
    };
    let url = http::join(&base, "models");
    let list = async {
        client
            .get(url.clone())
            .timeout(LIST_TIMEOUT)
            .send()
            .await?
            .error_for_status()?
            .json::<ModelList>()
            .await
    };
    match list.await {
        Ok(list) => list
            .data
            .into_iter()
            .take(MAX_MODELS_PER_SERVER)
            .map(|model| format!("{prefix}:{}", model.id))
            .collect(),
        Err(error) => {
            tracing::debug!(%url, "no model list: {error}");
            Vec::new()
        }
    }
}
