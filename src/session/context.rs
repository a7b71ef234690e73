//! What of a long conversation the model is sent: as much of it as fits its
//! context window, dropping the oldest prompts (each with everything that
//! answered it) first, and saying so in the system prompt. A session lives
//! for weeks; without this, once its history outgrew the window every
//! prompt would fail.
//!
//! Tokens are estimated, not counted: providers count them differently and
//! most offer no way to count before sending. The estimate is generous, and
//! only input is budgeted against [`INPUT_SHARE`] of the window, leaving the
//! rest for the reply. The conversation itself is never changed: it stays
//! whole in memory and in the store.

use std::sync::Arc;

use crate::model::{Message, ToolSpec};

/// The part of the context window the input may fill, in hundredths; the
/// rest is left for the reply and for the estimate's error.
const INPUT_SHARE: u64 = 75;

/// Bytes of text per token, estimated low (English and code run 3.5 to 4.5)
/// so that the estimate errs towards sending less.
const BYTES_PER_TOKEN: u64 = 3;

/// What a message costs beyond its text: role and framing.
const TOKENS_PER_MESSAGE: u64 = 8;

/// What a picture costs: about what a large one does with either cloud API.
const TOKENS_PER_PICTURE: u64 = 1_600;

/// The conversation the model is sent, and what its system prompt must add.
pub struct Fitted {
    pub messages: Arc<Vec<Message>>,
    /// How many of the earliest prompts were left out, with their replies.
    pub prompts_left_out: usize,
}

/// The newest part of `messages` that fits `context_window` tokens beside
/// `system` and `tools`: whole prompts with everything after them, never
/// less than the newest prompt's. Shares `messages` when it all fits.
pub fn fit(
    messages: &Arc<Vec<Message>>,
    system: &str,
    tools: &[ToolSpec],
    context_window: u64,
) -> Fitted {
    let budget = context_window.saturating_mul(INPUT_SHARE) / 100;
    let fixed = text_tokens(system) + tools.iter().map(tool_tokens).sum::<u64>();
    let whole = Fitted {
        messages: messages.clone(),
        prompts_left_out: 0,
    };
    let mut cost = fixed;
    let mut kept_from = messages.len();
    let mut prompts_kept = 0;
    // Walk back from the newest message, a prompt (and all after it) at a time.
    for (at, message) in messages.iter().enumerate().rev() {
        cost = cost.saturating_add(message_tokens(message));
        if !matches!(message, Message::User(_)) {
            continue;
        }
        if cost > budget && prompts_kept > 0 {
            break;
        }
        kept_from = at;
        prompts_kept += 1;
    }
    if kept_from == 0 || prompts_kept == 0 {
        return whole;
    }
    let prompts_left_out = messages[..kept_from]
        .iter()
        .filter(|message| matches!(message, Message::User(_)))
        .count();
    if prompts_left_out == 0 {
        return whole;
    }
    Fitted {
        messages: Arc::new(messages[kept_from..].to_vec()),
        prompts_left_out,
    }
}

/// What the system prompt says of prompts left out.
pub fn left_out_note(prompts: usize) -> String {
    let which = match prompts {
        1 => "its first prompt, and the replies and tool calls that followed it, are".to_owned(),
        n => {
            format!("its first {n} prompts, and the replies and tool calls that followed them, are")
        }
    };
    format!(
        "\n\nThis conversation outgrew your context window: {which} no longer shown to you. \
         If something from earlier matters, ask the user or look at the workspace again."
    )
}

fn text_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(BYTES_PER_TOKEN)
}

fn tool_tokens(tool: &ToolSpec) -> u64 {
    text_tokens(&tool.name)
        + text_tokens(&tool.description)
        + text_tokens(&tool.parameters.to_string())
}

fn message_tokens(message: &Message) -> u64 {
    TOKENS_PER_MESSAGE
        + match message {
            Message::User(text) => text_tokens(text),
            Message::Assistant { text, tool_calls } => {
                text_tokens(text)
                    + tool_calls
                        .iter()
                        .map(|call| {
                            TOKENS_PER_MESSAGE
                                + text_tokens(&call.id)
                                + text_tokens(&call.name)
                                + text_tokens(&call.arguments.to_string())
                        })
                        .sum::<u64>()
            }
            Message::ToolResult {
                call_id, content, ..
            } => text_tokens(call_id) + text_tokens(content),
            Message::Picture(_) => TOKENS_PER_PICTURE,
        }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Picture, ToolCall};

    /// A prompt of `size` bytes, a tool call and its result, and a reply.
    fn exchange(name: &str, size: usize) -> Vec<Message> {
        vec![
            Message::user(format!("{name}{}", "x".repeat(size))),
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: format!("{name}-call"),
                    name: "read_file".to_owned(),
                    arguments: json!({"path": "a"}),
                }],
            },
            Message::ToolResult {
                call_id: format!("{name}-call"),
                name: "read_file".to_owned(),
                content: "contents".to_owned(),
                is_error: false,
            },
            Message::assistant("done"),
        ]
    }

    fn conversation(sizes: &[usize]) -> Arc<Vec<Message>> {
        let names = ["first", "second", "third", "fourth"];
        Arc::new(
            sizes
                .iter()
                .zip(names)
                .flat_map(|(size, name)| exchange(name, *size))
                .collect(),
        )
    }

    fn first_prompt(fitted: &Fitted) -> &str {
        match fitted.messages.first() {
            Some(Message::User(text)) => text,
            other => panic!("the fitted conversation starts with a prompt, not {other:?}"),
        }
    }

    #[test]
    fn a_conversation_that_fits_is_sent_whole_and_shared() {
        let messages = conversation(&[100, 100, 100]);
        let fitted = fit(&messages, "system", &[], 128_000);
        assert!(Arc::ptr_eq(&fitted.messages, &messages));
        assert_eq!(fitted.prompts_left_out, 0);
    }

    #[test]
    fn the_oldest_prompts_go_first_each_with_everything_that_answered_it() {
        // Each exchange costs about 1,060 tokens (3,006 bytes of prompt at
        // three a token, and the call, result and reply); the input may
        // fill three quarters of the window.
        let messages = conversation(&[3_000, 3_000, 3_000, 3_000]);
        let fitted = fit(&messages, "system", &[], 2_500);
        assert_eq!(fitted.prompts_left_out, 3);
        assert!(first_prompt(&fitted).starts_with("fourth"));
        assert_eq!(
            fitted.messages.len(),
            4,
            "the whole exchange, calls and results"
        );

        for (window, left_out, first) in [(3_000, 2, "third"), (4_300, 1, "second")] {
            let fitted = fit(&messages, "system", &[], window);
            assert_eq!(fitted.prompts_left_out, left_out, "a window of {window}");
            assert!(
                first_prompt(&fitted).starts_with(first),
                "a window of {window}"
            );
        }
        let fitted = fit(&messages, "system", &[], 6_000);
        assert!(Arc::ptr_eq(&fitted.messages, &messages));
    }

    #[test]
    fn the_newest_prompt_is_sent_even_when_it_alone_is_too_big() {
        let messages = conversation(&[10, 100_000]);
        let fitted = fit(&messages, "system", &[], 1_000);
        assert_eq!(fitted.prompts_left_out, 1);
        assert!(first_prompt(&fitted).starts_with("second"));
    }

    #[test]
    fn the_system_prompt_tools_and_pictures_count() {
        let mut messages = (*conversation(&[300, 300])).clone();
        let fitted = fit(&Arc::new(messages.clone()), "system", &[], 1_000);
        assert_eq!(fitted.prompts_left_out, 0, "two small exchanges fit");

        let long_system = "s".repeat(1_500);
        let fitted = fit(&Arc::new(messages.clone()), &long_system, &[], 1_000);
        assert_eq!(fitted.prompts_left_out, 1);

        let tool = ToolSpec {
            name: "t".to_owned(),
            description: "d".repeat(1_500),
            parameters: json!({}),
        };
        let fitted = fit(&Arc::new(messages.clone()), "system", &[tool], 1_000);
        assert_eq!(fitted.prompts_left_out, 1);

        messages.insert(
            5,
            Message::Picture(Picture {
                mime_type: "image/png".to_owned(),
                data: "aGk=".to_owned(),
            }),
        );
        let fitted = fit(&Arc::new(messages), "system", &[], 2_000);
        assert_eq!(
            fitted.prompts_left_out, 1,
            "a picture costs more than its bytes"
        );
    }

    #[test]
    fn the_note_counts_what_was_left_out() {
        assert!(left_out_note(1).contains("its first prompt, and the replies and tool calls that followed it, are no longer shown to you"));
        assert!(left_out_note(3).contains(
            "its first 3 prompts, and the replies and tool calls that followed them, are no longer"
        ));
    }
}
