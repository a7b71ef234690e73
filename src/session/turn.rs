//! One turn: the model answers the prompt, calling tools as it goes, until it
//! stops, the turn is cancelled, or it has used up its rounds of tool calls.
//! What the model produces reaches the client as it arrives.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agent_client_protocol::v1::schema::{
    ContentBlock, ContentChunk, SessionId, SessionInfoUpdate, SessionUpdate, StopReason,
    ToolCallContent, ToolCallId, ToolCallStatus, ToolCallUpdate, ToolCallUpdateFields, UsageUpdate,
};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::context::{self, Conversation};
use super::history;
use super::{Prompt, Session, SessionPort};
use crate::mcp::McpTools;
use crate::model::{
    Message, Model, ModelError, ModelEvent, ModelRequest, Reasoning, Stop, ToolCall, ToolSpec,
};
use crate::tools::{self, ClientPort, ToolContext, ToolOutcome};

/// What the model is told about the tool calls of a reply cut off by its
/// output limit.
const CUT_OFF: &str = "not run: the reply was cut off at the output token limit, so its tool \
                       calls may be incomplete; the turn ended";

/// How long a turn waits for its MCP servers before it says it is waiting.
const MCP_WAIT_TOLD_AFTER: Duration = Duration::from_secs(3);

/// What the model is told when MCP servers add tools.
const MCP_NOTE: &str = " Tools whose names start with `mcp__` come from MCP servers the user connected; \
                        they do what their descriptions say, and ask the user first unless they only read.";

/// Why a turn ended without a stop reason.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A turn that has been admitted to its session; [`Turn::run`] plays it out.
///
/// Dropping a turn, run or not, records what happened and frees the session
/// for the next prompt.
pub struct Turn {
    /// How the turn reaches clients; it holds the session too.
    port: SessionPort,
    /// The session's model when the turn began.
    model: Arc<dyn Model>,
    /// Which prompt of the session this is, counting from 1.
    number: usize,
    /// The conversation, growing as the turn goes on.
    conversation: Conversation,
    /// The provider's id of every tool call of this turn's model replies,
    /// as they arrive: the conversation knows those before them.
    call_ids_this_turn: HashSet<String>,
    new_title: Option<String>,
    /// What the model is told of itself and its tools: the session's, and
    /// the MCP tools of its servers once the turn has found them.
    system: Arc<str>,
    tools: Arc<Vec<ToolSpec>>,
    /// What the system prompt and the tools cost in the context window, as
    /// estimated.
    fixed_tokens: u64,
    cancel: CancellationToken,
    /// What the person has been told of how model calls went, this turn.
    notices: HashSet<String>,
    /// Pictures came with the prompt.
    prompt_has_pictures: bool,
    /// How long the conversation was before this turn's prompt: a refused
    /// turn leaves it so.
    before_prompt: usize,
    recorded: bool,
}

/// What one call of the model produced.
struct Round {
    text: String,
    tool_calls: Vec<Requested>,
    /// The model has shown its reasoning: its reply has begun.
    thought: bool,
    reasoning: Reasoning,
    stop: Stop,
    /// The turn was cancelled (or the client left) while the model spoke.
    cancelled: bool,
}

/// How much of the conversation one model call was sent, as estimated.
struct Sent {
    tokens: u64,
    can_send_less: bool,
}

/// A tool call the model asked for.
struct Requested {
    /// As the provider sent it; the model's conversation refers to its id.
    call: ToolCall,
    /// The id clients know the call by, unique in the session: clients (and
    /// the replay) key tool calls by it, and some providers repeat their ids
    /// (local servers that number every reply's calls from `call_0`).
    client_id: ToolCallId,
}

impl Turn {
    pub(super) fn new(
        port: SessionPort,
        model: Arc<dyn Model>,
        prompt: Prompt,
        number: usize,
        conversation: Conversation,
        new_title: Option<String>,
        cancel: CancellationToken,
    ) -> Self {
        let conversation_len = conversation.messages.len();
        let system = port.session.system_prompt.clone();
        let tools = port.session.settings.tools.clone();
        let fixed_tokens = port.session.fixed_tokens;
        let mut turn = Self {
            system,
            tools,
            fixed_tokens,
            port,
            model,
            number,
            conversation,
            call_ids_this_turn: HashSet::new(),
            new_title,
            cancel,
            notices: HashSet::new(),
            prompt_has_pictures: !prompt.pictures.is_empty(),
            before_prompt: conversation_len,
            recorded: false,
        };
        turn.push(Message::User(prompt.text));
        for picture in prompt.pictures {
            turn.push(Message::Picture(picture));
        }
        turn
    }

    pub fn session_id(&self) -> &SessionId {
        self.port.session.id()
    }

    /// The token that cancels this turn.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.port.session
    }

    /// Run the turn to its end. It goes on if the client that sent the
    /// prompt leaves; the other attached clients see it through.
    pub async fn run(mut self) -> Result<StopReason, TurnError> {
        let port = self.port.clone();
        if let Some(title) = self.new_title.take() {
            port.notify(SessionUpdate::SessionInfoUpdate(
                SessionInfoUpdate::new().title(title),
            ));
        }
        let outcome = self.converse(&port).await;
        match &outcome {
            Ok(stop_reason) => self.record(stop_reason_name(*stop_reason), None),
            Err(error) => self.record("error", Some(error.to_string())),
        }
        outcome
    }

    async fn converse(&mut self, client: &SessionPort) -> Result<StopReason, TurnError> {
        let session = self.port.session.clone();
        let cancel = self.cancel.clone();
        let tools = session.mcp.tools();
        tokio::pin!(tools);
        let (mcp, unavailable) = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(StopReason::Cancelled),
            found = &mut tools => found,
            () = tokio::time::sleep(MCP_WAIT_TOLD_AFTER) => {
                // A first `npx -y` or `docker run` may take a while: the
                // person is told why nothing happens yet.
                client.notify(history::notice(format!(
                    "Waiting for this session's MCP servers to start (up to {} s, \
                     --mcp-start-timeout)…\n\n",
                    session.settings.mcp_start_timeout.as_secs_f64()
                )));
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok(StopReason::Cancelled),
                    found = &mut tools => found,
                }
            }
        };
        for why in unavailable {
            // For the person, who can fix it; the model just lacks the tools.
            client.notify(history::notice(format!("{why}\n\n")));
        }
        if self.prompt_has_pictures && session.pictures_refused() {
            let told = "This model server does not take pictures, so the prompt's pictures \
                        were named to it in text instead.";
            if let Some(update) = self.notice(told.to_owned()) {
                client.notify(update);
            }
        }
        let instructions = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(StopReason::Cancelled),
            note = session.instructions.note() => note,
        };
        self.fit_to_session(&session, &mcp, &instructions);
        let context = ToolContext {
            session_id: session.id(),
            workspace: &session.workspace,
            client,
            terminals: &session.terminals,
            permissions: &session.permissions,
            mcp: &mcp,
            cancel: &cancel,
        };
        for _ in 0..session.settings.max_rounds {
            let round = self.ask_model(client).await?;
            let Round {
                text,
                tool_calls,
                mut reasoning,
                stop,
                cancelled,
                ..
            } = round;
            if !reasoning.is_empty() {
                reasoning.model = self.model.id().to_owned();
            }
            self.push(Message::Assistant {
                text,
                tool_calls: tool_calls.iter().map(|asked| asked.call.clone()).collect(),
                reasoning,
            });
            if cancelled {
                self.skip(&tool_calls);
                return Ok(StopReason::Cancelled);
            }
            if tool_calls.is_empty() {
                return Ok(stop_reason(stop));
            }
            if stop == Stop::Refusal {
                // What a refused reply asks for is not done.
                return Ok(StopReason::Refusal);
            }
            if stop == Stop::MaxTokens {
                // The last call's arguments were cut off, and whatever the
                // model meant to do after its calls went unsaid: run none.
                self.answer_unrun(&tool_calls, CUT_OFF);
                return Ok(StopReason::MaxTokens);
            }
            for (done, asked) in tool_calls.iter().enumerate() {
                let call = &asked.call;
                match tools::run(&context, call, asked.client_id.clone()).await {
                    ToolOutcome::Result {
                        content,
                        is_error,
                        pictures,
                    } => {
                        self.push(Message::ToolResult {
                            call_id: call.id.clone(),
                            name: call.name.clone(),
                            content,
                            is_error,
                        });
                        for picture in pictures {
                            self.push(Message::Picture(picture));
                        }
                    }
                    ToolOutcome::Cancelled { stopped } => {
                        let mut not_started = done;
                        if let Some(so_far) = &stopped {
                            let content = self.stopped(so_far);
                            self.push(Message::ToolResult {
                                call_id: call.id.clone(),
                                name: call.name.clone(),
                                content,
                                is_error: true,
                            });
                            not_started += 1;
                        }
                        self.explain_cancel(asked, stopped.as_deref());
                        self.skip(&tool_calls[not_started..]);
                        return Ok(StopReason::Cancelled);
                    }
                }
                if self.cancel.is_cancelled() {
                    self.skip(&tool_calls[done + 1..]);
                    return Ok(StopReason::Cancelled);
                }
            }
        }
        Ok(StopReason::MaxTurnRequests)
    }

    /// The system prompt and the tools for this turn: the session's, with
    /// the MCP servers' tools, what the session's mode offers and asks, and
    /// the person's instructions. Unchanged, they are shared, not copied.
    fn fit_to_session(&mut self, session: &Session, mcp: &McpTools, instructions: &str) {
        let mode = session.permissions.mode();
        let offers_all = session
            .settings
            .tools
            .iter()
            .all(|tool| mode.offers(&tool.name));
        let changes_tools = !offers_all || !mcp.is_empty();
        if changes_tools {
            let mut tools: Vec<ToolSpec> = session
                .settings
                .tools
                .iter()
                .filter(|tool| mode.offers(&tool.name))
                .cloned()
                .collect();
            tools.extend(mcp.specs(mode.offers_asking_tools()));
            self.tools = Arc::new(tools);
        }
        let mcp_note = if mcp.is_empty() { "" } else { MCP_NOTE };
        let added = [mcp_note, mode.note(), instructions];
        let adds_text = added.iter().any(|text| !text.is_empty());
        if adds_text {
            self.system = [&*session.system_prompt]
                .into_iter()
                .chain(added)
                .collect::<String>()
                .into();
        }
        if adds_text || changes_tools {
            self.fixed_tokens =
                context::text_tokens(&self.system) + context::tools_tokens(&self.tools);
        }
    }

    /// Call the model once, passing on what it says as it says it. A model
    /// server that refuses the conversation as too long before saying
    /// anything is asked again with less of it.
    async fn ask_model(&mut self, client: &SessionPort) -> Result<Round, TurnError> {
        let session = self.port.session.clone();
        'call: loop {
            let (request, sent) = self.request(session.context_window());
            let mut stream = self.model.stream(request);
            let mut round = Round {
                text: String::new(),
                tool_calls: Vec::new(),
                thought: false,
                reasoning: Reasoning::default(),
                stop: Stop::Done,
                cancelled: false,
            };
            loop {
                let event = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => {
                        round.cancelled = true;
                        break;
                    }
                    event = stream.next() => event,
                };
                let update = match event {
                    None => break,
                    Some(Err(ModelError::TooLong(why)))
                        if round.text.is_empty()
                            && round.tool_calls.is_empty()
                            && !round.thought =>
                    {
                        drop(stream);
                        self.send_less(client, &sent, why)?;
                        continue 'call;
                    }
                    Some(Err(error)) => {
                        // What the client saw stays in the conversation.
                        drop(stream);
                        self.push(Message::assistant(round.text));
                        return Err(TurnError::Model(error));
                    }
                    Some(Ok(ModelEvent::Stop(stop))) => {
                        round.stop = stop;
                        continue;
                    }
                    Some(Ok(ModelEvent::ToolCall(call))) => {
                        let call = with_id(call);
                        let client_id = self.client_id(&call);
                        round.tool_calls.push(Requested { call, client_id });
                        continue;
                    }
                    Some(Ok(ModelEvent::Text(text))) => {
                        round.text.push_str(&text);
                        SessionUpdate::AgentMessageChunk(ContentChunk::new(ContentBlock::from(
                            text,
                        )))
                    }
                    Some(Ok(ModelEvent::Thought(text))) => {
                        round.thought = true;
                        SessionUpdate::AgentThoughtChunk(ContentChunk::new(ContentBlock::from(
                            text,
                        )))
                    }
                    Some(Ok(ModelEvent::SendBack(block))) => {
                        round.reasoning.blocks.push(block);
                        continue;
                    }
                    Some(Ok(ModelEvent::Usage(usage))) => {
                        SessionUpdate::UsageUpdate(UsageUpdate::new(
                            usage.input_tokens + usage.output_tokens,
                            // The window the conversation is fitted to: less
                            // than configured once the model server refused it.
                            session.context_window(),
                        ))
                    }
                    Some(Ok(ModelEvent::PicturesRefused { why, for_good })) => {
                        match self.pictures_refused(why, for_good) {
                            Some(update) => update,
                            None => continue,
                        }
                    }
                    // Each wait is told, however alike: the person sees why
                    // nothing comes this time too.
                    Some(Ok(ModelEvent::Waiting(words))) => history::notice(format!("{words}\n\n")),
                };
                if !client.notify(update) {
                    round.cancelled = true;
                    break;
                }
            }
            return Ok(round);
        }
    }

    /// The model server refused what was `sent` as longer than its context
    /// window, saying `why`: fit the session's calls to a smaller window from
    /// now on, and say so; or, when only the prompt being answered was sent,
    /// end the turn.
    fn send_less(
        &mut self,
        client: &SessionPort,
        sent: &Sent,
        why: String,
    ) -> Result<(), TurnError> {
        // The server's own sentence goes on with Punie's.
        let why = why.trim_end_matches(['.', ' ']);
        if !sent.can_send_less {
            // As after any failed call: the conversation goes on with an
            // answer, if an empty one, to this prompt.
            self.push(Message::assistant(""));
            return Err(TurnError::Model(ModelError::TooLong(format!(
                "{why}: even the newest prompt alone is more than the model takes; give it a \
                 larger context, or ask with less"
            ))));
        }
        let session = &self.port.session;
        session.shrink_context_window(context::smaller_window(
            sent.tokens,
            session.settings.reply_tokens,
        ));
        let notice = format!(
            "{why}; sent again without the conversation's oldest prompts (set --context-window \
             to the model's size to spare this round trip)"
        );
        if let Some(update) = self.notice(notice) {
            client.notify(update);
        }
        Ok(())
    }

    /// The model server refused the conversation's pictures, saying `why`,
    /// and was asked again without them; `for_good` when it reads none, and
    /// the session names them in text from now on. What to tell the person,
    /// unless told already.
    fn pictures_refused(&mut self, why: String, for_good: bool) -> Option<SessionUpdate> {
        let from_now_on = if for_good {
            self.port.session.refuse_pictures();
            ", as they will be from now on in this session"
        } else {
            ""
        };
        self.notice(format!(
            "{why}; asked again with the conversation's pictures named in text instead{from_now_on}"
        ))
    }

    /// `notice` as agent text, unless the person was told it this turn:
    /// each round may meet the same trouble.
    fn notice(&mut self, notice: String) -> Option<SessionUpdate> {
        if !self.notices.insert(notice.clone()) {
            return None;
        }
        Some(history::notice(format!("{notice}\n\n")))
    }

    /// What the model is asked: as much of the conversation as fits its
    /// context window, newest first; and what that came to.
    fn request(&self, context_window: u64) -> (ModelRequest, Sent) {
        let reply_tokens = self.port.session.settings.reply_tokens;
        let fitted = context::fit(
            &self.conversation,
            self.fixed_tokens,
            context::input_budget(context_window, reply_tokens),
            self.model.id(),
        );
        let system = match fitted.prompts_left_out {
            0 => self.system.clone(),
            prompts => {
                tracing::debug!(
                    session = %self.session_id(),
                    prompts,
                    "the conversation outgrew the context window; its oldest prompts are left out"
                );
                format!("{}{}", self.system, context::left_out_note(prompts)).into()
            }
        };
        let sent = Sent {
            tokens: fitted.tokens,
            can_send_less: fitted.can_send_less,
        };
        let request = ModelRequest {
            system,
            messages: self.conversation.messages.clone(),
            left_out: fitted.messages_left_out,
            without_pictures: self.port.session.pictures_refused(),
            tools: self.tools.clone(),
            turn: self.number,
        };
        (request, sent)
    }

    /// Add `message` to the conversation, in memory and in the store.
    fn push(&mut self, message: Message) {
        self.port.session.remember(&message);
        self.conversation.push(message);
    }

    /// The id clients will know `call` by: the provider's, unless this
    /// session has used it already.
    fn client_id(&mut self, call: &ToolCall) -> ToolCallId {
        let used = self.conversation.has_call_id(&call.id)
            || !self.call_ids_this_turn.insert(call.id.clone());
        if !used {
            ToolCallId::new(call.id.clone())
        } else {
            ToolCallId::new(format!("{}-{}", call.id, uuid::Uuid::new_v4().simple()))
        }
    }

    /// Answer the tool calls a cancelled turn never got to.
    fn skip(&mut self, calls: &[Requested]) {
        let not_run = self.not_run();
        self.answer_unrun(calls, &not_run);
    }

    /// Every tool call the model asked for gets an answer, even one never run:
    /// providers refuse a conversation with unanswered calls.
    fn answer_unrun(&mut self, calls: &[Requested], why: &str) {
        for Requested { call, .. } in calls {
            self.push(Message::ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                content: why.to_owned(),
                is_error: true,
            });
        }
    }

    /// Why the turn was cancelled: the person did it, unless the turn noted
    /// another reason (no client left to answer it, say).
    fn why_cancelled(&self) -> String {
        match self.port.session.turn_end_note() {
            Some(note) => format!("{note}; the turn was cancelled"),
            None => "the user cancelled the turn".to_owned(),
        }
    }

    /// What the model is told of tool calls the cancelled turn never ran.
    fn not_run(&self) -> String {
        format!("not run: {}", self.why_cancelled())
    }

    /// What the model is told of the call that was running when the turn
    /// was cancelled: it began, so it may have changed things, and it did
    /// not finish. `so_far` says what it had done, if anything is known.
    fn stopped(&self, so_far: &str) -> String {
        let mut told = format!(
            "started, then stopped before it finished: {}",
            self.why_cancelled()
        );
        if !so_far.is_empty() {
            told.push_str("; ");
            told.push_str(so_far);
        }
        told
    }

    /// The tool call cut short by a cancel the person did not ask for ends
    /// saying why, both live and in what `session/load` replays (its final
    /// state). `stopped` is what it had done, if it had begun.
    fn explain_cancel(&self, asked: &Requested, stopped: Option<&str>) {
        if self.port.session.turn_end_note().is_none() {
            return;
        }
        let why = match stopped {
            Some(so_far) => self.stopped(so_far),
            None => self.not_run(),
        };
        let why = ToolCallContent::from(ContentBlock::from(why));
        let fields = ToolCallUpdateFields::new()
            .status(ToolCallStatus::Failed)
            .content(vec![why]);
        self.port
            .notify(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
                asked.client_id.clone(),
                fields,
            )));
    }

    fn record(&mut self, outcome: &str, error: Option<String>) {
        self.recorded = true;
        if outcome == REFUSAL {
            // As ACP has it: the refused prompt and all after it are left
            // out of the next one, which a model would otherwise refuse too.
            // The store knows it by the turn's end (`history::conversation`).
            let after_text = matches!(
                self.conversation.messages.last(),
                Some(Message::Assistant { text, .. }) if !text.is_empty()
            );
            self.conversation.truncate(self.before_prompt);
            let gap = if after_text { "\n\n" } else { "" };
            self.port
                .notify(history::notice(format!("{gap}{REFUSAL_NOTICE}")));
        }
        self.port
            .session
            .end_turn(self.conversation.clone(), outcome, error);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.recorded {
            self.record("cancelled", None);
        }
    }
}

/// How ACP spells a refusal.
const REFUSAL: &str = "refusal";

/// What the person is told when the model refused a prompt.
const REFUSAL_NOTICE: &str = "The model refused this prompt. It is left out of what the model \
     is sent from now on, with the reply to it, so the conversation can go on.";

/// A stop reason as ACP spells it.
fn stop_reason_name(stop_reason: StopReason) -> &'static str {
    match stop_reason {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::MaxTurnRequests => "max_turn_requests",
        StopReason::Refusal => REFUSAL,
        StopReason::Cancelled => "cancelled",
        _ => "other",
    }
}

/// A call without an id gets one: results and the client both refer to it.
fn with_id(mut call: ToolCall) -> ToolCall {
    if call.id.is_empty() {
        call.id = format!("call_{}", uuid::Uuid::new_v4().simple());
    }
    call
}

fn stop_reason(stop: Stop) -> StopReason {
    match stop {
        Stop::Done => StopReason::EndTurn,
        Stop::MaxTokens => StopReason::MaxTokens,
        Stop::Refusal => StopReason::Refusal,
    }
}
