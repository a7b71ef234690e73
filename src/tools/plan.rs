//! `update_plan`: the model shows the person its plan for a task. Each call
//! replaces the whole plan, and the client gets it as ACP's `plan` update
//! rather than as a tool call: a plan is something to read, not an action.
//! The plan lives in the session's history like every update; this module
//! keeps none of it.

use agent_client_protocol::v1::schema::{
    Plan, PlanEntry, PlanEntryPriority, PlanEntryStatus, SessionUpdate,
};
use serde::Deserialize;
use serde_json::Value;

use super::{ClientPort, ToolContext, ToolOutcome, arguments, counted};

/// The tool's name, as the model calls it.
pub(super) const NAME: &str = "update_plan";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatePlan {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    content: String,
    status: PlanEntryStatus,
    #[serde(default = "medium")]
    priority: PlanEntryPriority,
}

fn medium() -> PlanEntryPriority {
    PlanEntryPriority::Medium
}

/// Show the plan in `raw` to the person; tell the model it is shown, or what
/// is wrong with it.
pub(super) fn update<C: ClientPort>(context: &ToolContext<'_, C>, raw: &Value) -> ToolOutcome {
    let plan: UpdatePlan = match arguments(NAME, raw) {
        Ok(plan) => plan,
        Err(problem) => return ToolOutcome::error(problem),
    };
    if let Some(step) = plan
        .entries
        .iter()
        .position(|entry| entry.content.trim().is_empty())
    {
        return ToolOutcome::error(format!(
            "step {} of the plan says nothing: give every step its content",
            step + 1
        ));
    }
    let steps = plan.entries.len();
    let done = plan
        .entries
        .iter()
        .filter(|entry| entry.status == PlanEntryStatus::Completed)
        .count();
    let entries = plan
        .entries
        .into_iter()
        .map(|entry| PlanEntry::new(entry.content, entry.priority, entry.status))
        .collect();
    context
        .client
        .notify(SessionUpdate::Plan(Plan::new(entries)));
    ToolOutcome::ok(format!(
        "The user sees the plan: {}, {done} done.",
        counted(steps, "step")
    ))
}
