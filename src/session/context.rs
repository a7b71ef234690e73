//! What of a long conversation the model is sent: as much of it as fits its
//! context window, dropping the oldest prompts (each with everything that
//! answered it) first, and saying so in the system prompt. A session lives
//! for weeks; without this, once its history outgrew the window every
//! prompt would fail.
//!
//! Tokens are estimated, not counted: providers count them differently and
//! most offer no way to count before sending. The estimate is generous, and
//! only input is budgeted against [`INPUT_SHARE`] of the window, leaving the
//! rest for the reply. A model server that refuses a conversation as too
//! long anyway has told the session its window is smaller:
//! [`smaller_window`] says what to try next. The conversation itself is
//! never changed: it stays whole in memory and in the store.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use crate::model::{Message, Reasoning, ToolSpec};

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

/// A conversation and what it costs in the context window, counted once
/// and kept as it grows: fitting it to the window then costs nothing while
/// it fits, however long it is, and a turn begins without reading it all.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub messages: Arc<Vec<Message>>,
    /// What the messages cost, their reasoning aside.
    pub tokens: u64,
    /// What their reasoning costs, for each model that reasoned: only that
    /// model is sent it back.
    pub reasoning: Vec<(String, u64)>,
    /// How many of the messages are prompts.
    prompts: usize,
    /// The provider's id of every tool call the model asked for. Shared
    /// like the messages: copied only if another holds them.
    call_ids: Arc<HashSet<String>>,
}

impl Conversation {
    pub fn new(messages: Vec<Message>) -> Self {
        let mut conversation = Self::default();
        conversation.count(&messages);
        conversation.messages = Arc::new(messages);
        conversation
    }

    /// Keep only the first `len` messages.
    pub fn truncate(&mut self, len: usize) {
        if len < self.messages.len() {
            let messages = Arc::make_mut(&mut self.messages);
            messages.truncate(len);
            let kept = self.messages.clone();
            (self.tokens, self.reasoning, self.prompts) = (0, Vec::new(), 0);
            self.call_ids = Arc::default();
            self.count(&kept);
        }
    }

    /// Add `message`; the messages are copied only if another holds them.
    pub fn push(&mut self, message: Message) {
        self.count(std::slice::from_ref(&message));
        Arc::make_mut(&mut self.messages).push(message);
    }

    /// What it costs sent to `model`: its messages, and the reasoning that
    /// model is sent back.
    pub fn tokens_for(&self, model: &str) -> u64 {
        let reasoning = self
            .reasoning
            .iter()
            .find(|(reasoned, _)| reasoned == model)
            .map_or(0, |(_, tokens)| *tokens);
        self.tokens + reasoning
    }

    /// Whether the model asked for a tool call with this id before.
    pub fn has_call_id(&self, id: &str) -> bool {
        self.call_ids.contains(id)
    }

    fn count(&mut self, messages: &[Message]) {
        for message in messages {
            self.tokens += tokens(message);
            match message {
                Message::User(_) => self.prompts += 1,
                Message::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                    let ids = Arc::make_mut(&mut self.call_ids);
                    ids.extend(tool_calls.iter().map(|call| call.id.clone()));
                }
                _ => {}
            }
            if let Message::Assistant { reasoning, .. } = message
                && !reasoning.is_empty()
            {
                let cost = reasoning_tokens(reasoning);
                match self
                    .reasoning
                    .iter_mut()
                    .find(|(model, _)| *model == reasoning.model)
                {
                    Some((_, tokens)) => *tokens += cost,
                    None => self.reasoning.push((reasoning.model.clone(), cost)),
                }
            }
        }
    }
}

/// What of a conversation the model is sent, and what its system prompt
/// must add.
pub struct Fitted {
    /// How many of the oldest messages are left out.
    pub messages_left_out: usize,
    /// How many of the earliest prompts were left out, with their replies.
    pub prompts_left_out: usize,
    /// Whether a prompt could be left out: more than one is sent.
    pub can_send_less: bool,
    /// What is sent, system prompt and tools included, as estimated.
    pub tokens: u64,
}

/// A window in which half of what an estimate of `tokens` sent fits, beside
/// the `reply_tokens` kept for the reply (see [`input_budget`]): what to try
/// when a model server refused that much as too long. Halving finds a window
/// that fits in a few tries, whatever the server's real one.
pub fn smaller_window(tokens: u64, reply_tokens: u64) -> u64 {
    let half = tokens / 2;
    (half.saturating_mul(100) / INPUT_SHARE).max(half.saturating_add(reply_tokens))
}

/// How much of `context_window` the input may fill: its usual share, and
/// never what the model was told it may write (`reply_tokens`,
/// `--max-output-tokens`) — a server that counts the two together refuses
/// more, and the session would take that for a smaller window.
pub fn input_budget(context_window: u64, reply_tokens: u64) -> u64 {
    let share = context_window.saturating_mul(INPUT_SHARE) / 100;
    share.min(context_window.saturating_sub(reply_tokens))
}

/// The newest part of `conversation` that fits `budget` tokens (see
/// [`input_budget`]) beside the system prompt and tools (`fixed`): whole
/// prompts with everything after them, never less than the newest prompt's.
/// Costs nothing when it all fits; otherwise a walk back over what is sent.
pub fn fit(conversation: &Conversation, fixed: u64, budget: u64, model: &str) -> Fitted {
    let messages = conversation.messages.as_slice();
    let total = fixed.saturating_add(conversation.tokens_for(model));
    if total <= budget {
        return Fitted {
            messages_left_out: 0,
            prompts_left_out: 0,
            // From the newest back: two prompts are near the end.
            can_send_less: messages
                .iter()
                .rev()
                .filter(|message| matches!(message, Message::User(_)))
                .nth(1)
                .is_some(),
            tokens: total,
        };
    }
    let mut cost = fixed;
    let mut kept = (messages.len(), cost);
    let mut prompts_sent = 0;
    // Walk back from the newest message, a prompt (and all after it) at a time.
    for (at, message) in messages.iter().enumerate().rev() {
        cost = cost.saturating_add(tokens_sent_to(message, model));
        if !matches!(message, Message::User(_)) {
            continue;
        }
        if cost > budget && prompts_sent > 0 {
            break;
        }
        kept = (at, cost);
        prompts_sent += 1;
    }
    let (kept_from, kept_tokens) = kept;
    // Every prompt from `kept_from` on was counted on the way back.
    let prompts_left_out = conversation.prompts - prompts_sent;
    if prompts_left_out == 0 {
        // Whatever comes before the first prompt goes too.
        return Fitted {
            messages_left_out: 0,
            prompts_left_out,
            can_send_less: prompts_sent > 1,
            tokens: total,
        };
    }
    Fitted {
        messages_left_out: kept_from,
        prompts_left_out,
        can_send_less: prompts_sent > 1,
        tokens: kept_tokens,
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

/// What `text` costs, as estimated: for a system prompt.
pub fn text_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(BYTES_PER_TOKEN)
}

/// What `value` costs written out as JSON, estimated without writing it.
fn json_tokens(value: &Value) -> u64 {
    json_bytes(value).div_ceil(BYTES_PER_TOKEN)
}

fn json_bytes(value: &Value) -> u64 {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 4,
        Value::String(text) => text.len() as u64 + 2,
        Value::Array(items) => items.iter().map(|item| json_bytes(item) + 1).sum::<u64>() + 2,
        Value::Object(fields) => {
            fields
                .iter()
                .map(|(key, value)| key.len() as u64 + 4 + json_bytes(value))
                .sum::<u64>()
                + 2
        }
    }
}

/// What offering `tools` costs, as estimated.
pub fn tools_tokens(tools: &[ToolSpec]) -> u64 {
    tools.iter().map(tool_tokens).sum()
}

fn tool_tokens(tool: &ToolSpec) -> u64 {
    text_tokens(&tool.name) + text_tokens(&tool.description) + json_tokens(&tool.parameters)
}

/// What `message` costs sent to `model`, its reasoning included if that
/// model is sent it back.
fn tokens_sent_to(message: &Message, model: &str) -> u64 {
    let reasoning = match message {
        Message::Assistant { reasoning, .. } => {
            reasoning.for_model(model).map_or(0, reasoning_tokens)
        }
        _ => 0,
    };
    tokens(message) + reasoning
}

fn reasoning_tokens(reasoning: &Reasoning) -> u64 {
    (reasoning.text_len() as u64).div_ceil(BYTES_PER_TOKEN)
}

/// What `message` costs, as estimated, its reasoning aside.
pub fn tokens(message: &Message) -> u64 {
    TOKENS_PER_MESSAGE
        + match message {
            Message::User(text) => text_tokens(text),
            Message::Assistant {
                text, tool_calls, ..
            } => {
                text_tokens(text)
                    + tool_calls
                        .iter()
                        .map(|call| {
                            TOKENS_PER_MESSAGE
                                + text_tokens(&call.id)
                                + text_tokens(&call.name)
                                + json_tokens(&call.arguments)
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
                reasoning: Default::default(),
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

    /// [`fit`], with the conversation's tokens counted here.
    fn fit(
        messages: &Arc<Vec<Message>>,
        system: &str,
        tools: &[ToolSpec],
        context_window: u64,
    ) -> Fitted {
        let conversation = Conversation::new(messages.as_ref().clone());
        let fixed = text_tokens(system) + tools_tokens(tools);
        super::fit(
            &conversation,
            fixed,
            input_budget(context_window, 0),
            "test",
        )
    }

    #[test]
    fn the_reply_the_model_may_write_is_kept_out_of_the_input_budget() {
        assert_eq!(input_budget(200_000, 0), 150_000);
        assert_eq!(input_budget(200_000, 8_192), 150_000);
        assert_eq!(input_budget(200_000, 64_000), 136_000);
        assert_eq!(input_budget(8_000, 9_000), 0);
    }

    fn first_prompt<'a>(messages: &'a [Message], fitted: &Fitted) -> &'a str {
        match messages.get(fitted.messages_left_out) {
            Some(Message::User(text)) => text,
            other => panic!("the fitted conversation starts with a prompt, not {other:?}"),
        }
    }

    #[test]
    fn reasoning_counts_only_for_the_model_that_is_sent_it_back() {
        let reply = Message::Assistant {
            text: "ok".to_owned(),
            tool_calls: Vec::new(),
            reasoning: Reasoning {
                blocks: vec![json!({"reasoning_content": "x".repeat(30_000)})],
                model: "local:deepseek".to_owned(),
            },
        };
        let mut conversation = Conversation::new(vec![Message::user("a")]);
        let before = conversation.tokens_for("local:deepseek");
        conversation.push(reply);
        conversation.push(Message::user("b"));
        let for_it = super::fit(
            &conversation,
            0,
            input_budget(1_000_000, 0),
            "local:deepseek",
        )
        .tokens;
        let for_another =
            super::fit(&conversation, 0, input_budget(1_000_000, 0), "openai:gpt-5").tokens;
        assert_eq!(
            for_it - for_another,
            10_000,
            "30,000 bytes at three a token"
        );
        assert!(for_another < before + 100);
        // Fitted to a window too small for it, the reasoning weighs only
        // for its own model.
        let small = super::fit(&conversation, 0, input_budget(8_000, 0), "openai:gpt-5");
        assert_eq!(small.prompts_left_out, 0);
        let small = super::fit(&conversation, 0, input_budget(8_000, 0), "local:deepseek");
        assert_eq!(small.prompts_left_out, 1);
        conversation.truncate(1);
        assert_eq!(conversation.tokens_for("local:deepseek"), before);
    }

    #[test]
    fn prompts_and_tool_calls_are_counted_as_the_conversation_grows_and_shrinks() {
        let mut conversation = Conversation::new(exchange("first", 3_000));
        for message in exchange("second", 3_000) {
            conversation.push(message);
        }
        assert!(conversation.has_call_id("first-call"));
        assert!(conversation.has_call_id("second-call"));
        assert!(!conversation.has_call_id("third-call"));
        // Room for the newest prompt alone: the first goes.
        let fitted = super::fit(&conversation, 0, 1_200, "test");
        assert_eq!(fitted.prompts_left_out, 1);
        assert_eq!(fitted.messages_left_out, 4);

        conversation.truncate(4);
        assert!(conversation.has_call_id("first-call"));
        assert!(!conversation.has_call_id("second-call"));
        let fitted = super::fit(&conversation, 0, 1_200, "test");
        assert_eq!(fitted.prompts_left_out, 0);
        conversation.push(Message::user("again"));
        let fitted = super::fit(&conversation, 0, 100, "test");
        assert_eq!(
            fitted.prompts_left_out, 1,
            "the newest prompt is always sent"
        );
    }

    #[test]
    fn a_conversation_that_fits_is_sent_whole() {
        let messages = conversation(&[100, 100, 100]);
        let fitted = fit(&messages, "system", &[], 128_000);
        assert_eq!(fitted.messages_left_out, 0);
        assert_eq!(fitted.prompts_left_out, 0);
        assert!(fitted.can_send_less);
        assert!(
            (270..310).contains(&fitted.tokens),
            "three exchanges of some 95 tokens: {}",
            fitted.tokens
        );
    }

    #[test]
    fn the_oldest_prompts_go_first_each_with_everything_that_answered_it() {
        // Each exchange costs about 1,060 tokens (3,006 bytes of prompt at
        // three a token, and the call, result and reply); the input may
        // fill three quarters of the window.
        let messages = conversation(&[3_000, 3_000, 3_000, 3_000]);
        let fitted = fit(&messages, "system", &[], 2_500);
        assert_eq!(fitted.prompts_left_out, 3);
        assert!(first_prompt(&messages, &fitted).starts_with("fourth"));
        assert_eq!(
            messages.len() - fitted.messages_left_out,
            4,
            "the whole exchange, calls and results"
        );

        for (window, left_out, first) in [(3_000, 2, "third"), (4_300, 1, "second")] {
            let fitted = fit(&messages, "system", &[], window);
            assert_eq!(fitted.prompts_left_out, left_out, "a window of {window}");
            assert!(
                first_prompt(&messages, &fitted).starts_with(first),
                "a window of {window}"
            );
        }
        let fitted = fit(&messages, "system", &[], 6_000);
        assert_eq!(fitted.messages_left_out, 0);
    }

    #[test]
    fn the_newest_prompt_is_sent_even_when_it_alone_is_too_big() {
        let messages = conversation(&[10, 100_000]);
        let fitted = fit(&messages, "system", &[], 1_000);
        assert_eq!(fitted.prompts_left_out, 1);
        assert!(first_prompt(&messages, &fitted).starts_with("second"));
        assert!(!fitted.can_send_less, "nothing more to leave out");
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
    fn a_smaller_window_fits_half_of_what_was_refused() {
        let messages = conversation(&[3_000, 3_000, 3_000, 3_000]);
        let refused = fit(&messages, "system", &[], 128_000);
        assert_eq!(refused.prompts_left_out, 0);
        let fitted = fit(&messages, "system", &[], smaller_window(refused.tokens, 0));
        assert!(fitted.prompts_left_out > 0);
        assert!(fitted.tokens <= refused.tokens / 2);
    }

    #[test]
    fn a_smaller_window_leaves_half_for_input_beside_the_reply_kept_free() {
        // 32k window, 16k for the reply: 16k of input refused.
        let window = smaller_window(16_000, 16_384);
        assert_eq!(input_budget(window, 16_384), 8_000);
        let window = smaller_window(136_000, 64_000);
        assert_eq!(input_budget(window, 64_000), 68_000);
        // Without a reply kept free, the usual share (to a token's rounding).
        assert!((7_999..=8_000).contains(&input_budget(smaller_window(16_000, 0), 0)));
    }

    #[test]
    fn json_is_measured_about_as_long_as_it_is_written() {
        let value = json!({"path": "src/main.rs", "lines": [1, 2, 3], "all": true, "note": null});
        let written = value.to_string().len() as u64;
        let measured = json_bytes(&value);
        assert!(
            written <= measured && measured <= written + 16,
            "{written} bytes written, {measured} measured"
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
