//! The offline default model, `test`: deterministic, no network, nothing to
//! install, so every part of Punie works on a bare machine.
//!
//! Its reply depends on the prompt and on the turn number, so a client can see
//! that the session remembers the conversation:
//!
//! - turn 1: `Turn 1. You said: "<prompt>". That is the first thing you said.`
//! - later:  `Turn N. You said: "<prompt>". Before that you said: "<previous prompt>".`
//!
//! streamed in four chunks. A prompt of the form `count to N` (N up to
//! 100,000) is answered `1 2 3 … N`, one number per chunk, 20 ms apart: a
//! long, steadily streaming turn to watch or cancel.

use std::time::Duration;

use futures::StreamExt as _;

use super::{Model, ModelEvent, ModelRequest, ModelStream, Role};

/// The pause between numbers when the test model counts.
pub const COUNT_INTERVAL: Duration = Duration::from_millis(20);

/// The highest number the test model counts to.
pub const COUNT_LIMIT: u64 = 100_000;

/// The `test` model.
#[derive(Debug, Clone)]
pub struct TestModel {
    count_interval: Duration,
}

impl Default for TestModel {
    fn default() -> Self {
        Self {
            count_interval: COUNT_INTERVAL,
        }
    }
}

impl Model for TestModel {
    fn id(&self) -> &str {
        "test"
    }

    fn stream(&self, request: ModelRequest) -> ModelStream {
        // Read from the end: a long conversation costs no more than a short one.
        let previous = request
            .history
            .iter()
            .rev()
            .find(|message| message.role == Role::User)
            .map(|message| message.text.as_str());
        // Every earlier turn left a prompt and a reply.
        let turn = request.history.len() / 2 + 1;
        if let Some(n) = count_directive(&request.prompt) {
            return count_to(n, self.count_interval);
        }
        let chunks = reply_chunks(turn, &request.prompt, previous);
        futures::stream::iter(chunks.into_iter().map(|chunk| Ok(ModelEvent::Text(chunk)))).boxed()
    }
}

fn reply_chunks(turn: usize, prompt: &str, previous: Option<&str>) -> Vec<String> {
    let memory = match previous {
        Some(previous) => format!("Before that you said: \"{previous}\"."),
        None => "That is the first thing you said.".to_owned(),
    };
    vec![
        format!("Turn {turn}. "),
        "You said: ".to_owned(),
        format!("\"{prompt}\". "),
        memory,
    ]
}

/// `count to N` → `Some(N)`, for 1 ≤ N ≤ [`COUNT_LIMIT`].
fn count_directive(prompt: &str) -> Option<u64> {
    let words: Vec<&str> = prompt.split_whitespace().collect();
    match words.as_slice() {
        [count, to, n] if count.eq_ignore_ascii_case("count") && to.eq_ignore_ascii_case("to") => {
            n.parse().ok().filter(|n| (1..=COUNT_LIMIT).contains(n))
        }
        _ => None,
    }
}

fn count_to(n: u64, interval: Duration) -> ModelStream {
    async_stream::stream! {
        for i in 1..=n {
            if i > 1 {
                tokio::time::sleep(interval).await;
                yield Ok(ModelEvent::Text(format!(" {i}")));
            } else {
                yield Ok(ModelEvent::Text(i.to_string()));
            }
        }
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    async fn reply(model: &TestModel, history: Vec<Message>, prompt: &str) -> Vec<String> {
        let request = ModelRequest {
            history: history.into(),
            prompt: prompt.into(),
        };
        model
            .stream(request)
            .map(|event| match event {
                Ok(ModelEvent::Text(text)) => text,
                Err(error) => panic!("the test model failed: {error}"),
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn the_first_turn_quotes_the_prompt_in_several_chunks() {
        let chunks = reply(&TestModel::default(), vec![], "hello").await;
        assert_eq!(chunks.len(), 4);
        assert_eq!(
            chunks.concat(),
            "Turn 1. You said: \"hello\". That is the first thing you said."
        );
    }

    #[tokio::test]
    async fn later_turns_remember_the_previous_prompt() {
        let history = vec![Message::user("first"), Message::assistant("Turn 1. …")];
        let chunks = reply(&TestModel::default(), history, "second").await;
        assert_eq!(
            chunks.concat(),
            "Turn 2. You said: \"second\". Before that you said: \"first\"."
        );
    }

    #[tokio::test]
    async fn counting_streams_one_number_per_chunk() {
        let model = TestModel {
            count_interval: Duration::ZERO,
        };
        let chunks = reply(&model, vec![], "Count to 5").await;
        assert_eq!(chunks, ["1", " 2", " 3", " 4", " 5"]);
    }

    #[test]
    fn only_a_well_formed_count_is_a_directive() {
        assert_eq!(count_directive("count to 3"), Some(3));
        assert_eq!(count_directive("  COUNT TO 100000 "), Some(100_000));
        assert_eq!(count_directive("count to 0"), None);
        assert_eq!(count_directive("count to 100001"), None);
        assert_eq!(count_directive("count to three"), None);
        assert_eq!(count_directive("please count to 3"), None);
        assert_eq!(count_directive("count"), None);
    }
}
