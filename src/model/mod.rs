//! Model providers: one streaming interface every model implements, and the
//! choice of model from a spec such as `test`.
//!
//! A provider turns a conversation into a stream of events as the model
//! produces them; dropping the stream stops the model. Providers know nothing
//! of ACP, sessions or connections: the turn loop in [`crate::session`] drives
//! them and reports what they produce.

mod test_model;

use std::sync::Arc;

use futures::stream::BoxStream;

pub use test_model::TestModel;

/// Who said a message in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub text: String,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            text: text.into(),
        }
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            text: text.into(),
        }
    }
}

/// What the model is asked: the user's new prompt, after the conversation so far.
#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    /// Earlier turns, oldest first; shared with the session rather than copied.
    pub history: Arc<Vec<Message>>,
    pub prompt: Arc<str>,
}

/// Something the model produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEvent {
    /// A piece of the reply, in order.
    Text(String),
}

/// Why a model could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model `{0}`; the models Punie knows are: test")]
    UnknownModel(String),
    #[error("the model failed: {0}")]
    Provider(String),
}

/// The events of one model call, as they arrive.
pub type ModelStream = BoxStream<'static, Result<ModelEvent, ModelError>>;

/// A model that can hold a conversation.
pub trait Model: Send + Sync + 'static {
    /// The spec this model was chosen by, e.g. `test`.
    fn id(&self) -> &str;

    /// Start answering `request`. The stream ends when the reply is complete.
    fn stream(&self, request: ModelRequest) -> ModelStream;
}

/// The model a spec names.
pub fn from_spec(spec: &str) -> Result<Arc<dyn Model>, ModelError> {
    match spec.trim() {
        "test" => Ok(Arc::new(TestModel::default())),
        other => Err(ModelError::UnknownModel(other.to_owned())),
    }
}
