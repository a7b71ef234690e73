//! Finding the models a person could pick: the server's default, those its
//! owner offers (`--offer-model`), and those the local model servers on this
//! machine (Ollama, LM Studio) have installed, found by asking each for its
//! OpenAI-compatible model list. A server that is not running, or does not
//! answer in time, simply offers nothing.
//!
//! It only reads the lists; choosing and calling a model is the rest of
//! [`crate::model`]'s business.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;

use super::ModelError;
use super::http;
use super::openai::{LMSTUDIO_BASE_URL, ollama_base_url};

/// How long a local server may take to list its models.
const LIST_TIMEOUT: Duration = Duration::from_millis(500);

/// Most models taken from one server's list.
const MAX_MODELS_PER_SERVER: usize = 100;

/// How long the local servers' lists are taken as current: pickers show
/// them without waiting, and a list older than this is asked for again, by
/// one caller at a time.
const LISTS_KEPT_FOR: Duration = Duration::from_secs(60);

/// The models a session may be given, as pickers list them.
pub struct ModelCatalogue {
    /// The server's default, then those its owner offers.
    configured: Vec<String>,
    found: Mutex<Found>,
    /// `OLLAMA_HOST`, read as `ollama:` models read it.
    ollama_host: Option<String>,
}

/// What the local servers listed.
#[derive(Default)]
struct Found {
    models: Vec<String>,
    /// When they listed it; `None` before they were first asked.
    at: Option<Instant>,
    /// Someone is asking them now: nobody else need.
    asking: bool,
}

impl ModelCatalogue {
    /// A catalogue of `default` and `offered`, and the local servers' models
    /// once they are asked for them.
    pub fn new(default: &str, offered: &[String], ollama_host: Option<String>) -> Self {
        let mut configured = vec![default.to_owned()];
        add_new(&mut configured, offered.iter().cloned());
        Self {
            configured,
            found: Mutex::default(),
            ollama_host,
        }
    }

    /// Every model known now, without waiting for the local servers: the
    /// default first.
    pub fn known(&self) -> Vec<String> {
        let mut models = self.configured.clone();
        add_new(&mut models, self.lock().models.iter().cloned());
        models
    }

    /// Every model, with the local servers asked again.
    pub async fn refreshed(&self) -> Vec<String> {
        let models = local_models(self.ollama_host.as_deref()).await;
        *self.lock() = Found {
            models,
            at: Some(Instant::now()),
            asking: false,
        };
        self.known()
    }

    /// Whether the local servers' lists should be asked for again now: they
    /// are old, and nobody is asking already. True makes the caller the one
    /// who asks, with [`Self::refreshed`].
    pub fn claim_refresh(&self) -> bool {
        let mut found = self.lock();
        let stale = found.at.is_none_or(|at| at.elapsed() > LISTS_KEPT_FOR);
        if !stale || found.asking {
            return false;
        }
        found.asking = true;
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Found> {
        self.found
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Append to `models` those of `more` it lacks, in order.
fn add_new(models: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for model in more {
        if !models.contains(&model) {
            models.push(model);
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_caller_at_a_time_asks_the_local_servers_and_only_when_their_lists_are_old() {
        // Nothing listens on port 9 of loopback: the servers list nothing.
        let catalogue = ModelCatalogue::new(
            "test",
            &["test".to_owned(), "openai:gpt-5".to_owned()],
            Some("127.0.0.1:9".to_owned()),
        );
        assert_eq!(catalogue.known(), ["test", "openai:gpt-5"]);
        assert!(catalogue.claim_refresh());
        assert!(!catalogue.claim_refresh(), "one is asking already");
        catalogue.refreshed().await;
        assert!(!catalogue.claim_refresh(), "the lists are fresh");
    }
}
