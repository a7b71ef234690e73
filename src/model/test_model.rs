//! The offline default model, `test`: deterministic, no network, nothing to
//! install, so every part of Punie works on a bare machine.
//!
//! Its reply depends on the prompt and on the turn number, so a client can see
//! that the session remembers the conversation:
//!
//! - turn 1: `Turn 1. You said: "<prompt>". That is the first thing you said.`
//! - later:  `Turn N. You said: "<prompt>". Before that you said: "<previous prompt>".`
//!
//! streamed in four chunks, and a fifth when pictures came with the prompt:
//! ` You showed me 2 pictures (image/png, image/jpeg).` A prompt of the form `count to N` (N up to
//! 100,000) is answered `1 2 3 … N`, one number per chunk, 20 ms apart: a
//! long, steadily streaming turn to watch or cancel.

use std::time::Duration;

use futures::StreamExt as _;

use super::{Message, Model, ModelEvent, ModelRequest, ModelStream, Stop};

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
        let prompt = request.prompt();
        if let Some(n) = count_directive(prompt) {
            return count_to(n, self.count_interval);
        }
        // Read from the end: a long conversation costs no more than a short one.
        let previous = request
            .sent()
            .iter()
            .rev()
            .filter_map(|message| match message {
                Message::User(text) => Some(text.as_str()),
                _ => None,
            })
            .nth(1);
        let mut chunks = reply_chunks(request.turn, prompt, previous);
        chunks.extend(pictures_seen(request.sent()));
        let events = chunks
            .into_iter()
            .map(ModelEvent::Text)
            .chain([ModelEvent::Stop(Stop::Done)])
            .map(Ok);
        futures::stream::iter(events).boxed()
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

/// What the model says of the pictures that came with the newest prompt.
fn pictures_seen(messages: &[Message]) -> Option<String> {
    let prompt = messages
        .iter()
        .rposition(|message| matches!(message, Message::User(_)))?;
    let types: Vec<&str> = messages[prompt + 1..]
        .iter()
        .map_while(|message| match message {
            Message::Picture(picture) => Some(picture.mime_type.as_str()),
            _ => None,
        })
        .collect();
    let (count, plural) = match types.len() {
        0 => return None,
        1 => ("1".to_owned(), ""),
        n => (n.to_string(), "s"),
    };
    Some(format!(
        " You showed me {count} picture{plural} ({}).",
        types.join(", ")
    ))
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
        yield Ok(ModelEvent::Stop(Stop::Done));
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn reply(model: &TestModel, mut history: Vec<Message>, prompt: &str) -> Vec<String> {
        let turn = history
            .iter()
            .filter(|m| matches!(m, Message::User(_)))
            .count()
            + 1;
        history.push(Message::user(prompt));
        let request = ModelRequest {
            messages: history.into(),
            turn,
            ..ModelRequest::default()
        };
        model
            .stream(request)
            .filter_map(|event| async move {
                match event {
                    Ok(ModelEvent::Text(text)) => Some(text),
                    Ok(ModelEvent::Stop(_)) => None,
                    other => panic!("the test model produced {other:?}"),
                }
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

    #[test]
    fn the_pictures_of_the_newest_prompt_are_named_in_order() {
        let picture = |mime_type: &str| {
            Message::Picture(crate::model::Picture {
                mime_type: mime_type.to_owned(),
                data: "aGk=".to_owned(),
            })
        };
        let messages = [
            Message::user("first"),
            picture("image/gif"),
            Message::assistant("Turn 1. …"),
            Message::user("second"),
            picture("image/png"),
            picture("image/jpeg"),
        ];
        assert_eq!(
            pictures_seen(&messages).as_deref(),
            Some(" You showed me 2 pictures (image/png, image/jpeg).")
        );
        assert_eq!(
            pictures_seen(&messages[..4]).as_deref(),
            None,
            "an earlier prompt's pictures are not the newest prompt's"
        );
        assert_eq!(
            pictures_seen(&messages[..2]).as_deref(),
            Some(" You showed me 1 picture (image/gif).")
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
