//! Punie's slash commands: prompts a person starts with `/name` instead of
//! writing them out, offered to each client that opens a session as ACP's
//! `available_commands_update` (editors list them when `/` is typed). A
//! prompt that begins with a command's name reaches the model as the
//! command's instructions, followed by whatever the person wrote after the
//! name; every client shows the prompt as it was typed.
//!
//! It only rewrites the text the model reads; running the turn is
//! [`crate::session`]'s.

use agent_client_protocol::v1::schema::{
    AvailableCommand, AvailableCommandInput, AvailableCommandsUpdate, SessionUpdate,
    UnstructuredCommandInput,
};

/// One command.
struct Command {
    name: &'static str,
    description: &'static str,
    /// What may follow the name, if anything does.
    hint: &'static str,
    /// What the model is asked.
    instructions: &'static str,
}

const COMMANDS: [Command; 2] = [
    Command {
        name: "init",
        description: "Write an AGENTS.md for this project, or improve the one there is",
        hint: "what else it should cover (optional)",
        instructions: "Study this project and write an AGENTS.md at its root for the coding agents that \
             work in it, or improve the one that is there. Read the README, the build and test \
             configuration and a sample of the code first. Cover, briefly and concretely: the exact \
             commands that build, test and lint it; how the code is laid out; conventions the code \
             follows that are not obvious; and what a newcomer tends to get wrong. Write only what \
             you checked in the project, not guesses; keep what an existing AGENTS.md says that is \
             still true.",
    },
    Command {
        name: "review",
        description: "Review the changes not yet committed, without changing anything",
        hint: "what to look at closely (optional)",
        instructions: "Review the changes in this project that are not committed yet: see them with \
             `git status`, `git diff` and `git diff --staged`, and read the code around them. Look \
             for bugs, missing or weak tests, unclear names and anything that goes against the \
             project's conventions. List the problems from the most to the least serious, each \
             with its file and line and a concrete fix, and say plainly if you find none. Do not \
             change any file.",
    },
];

/// The commands, as a client is told of them.
pub fn available() -> SessionUpdate {
    let commands = COMMANDS
        .iter()
        .map(|command| {
            AvailableCommand::new(command.name, command.description).input(
                AvailableCommandInput::Unstructured(UnstructuredCommandInput::new(command.hint)),
            )
        })
        .collect();
    SessionUpdate::AvailableCommandsUpdate(AvailableCommandsUpdate::new(commands))
}

/// What the model reads for a prompt `text` that starts with a command: its
/// instructions, then what the person added. `None` for any other prompt.
pub fn expand(text: &str) -> Option<String> {
    let invoked = text.trim_start().strip_prefix('/')?;
    let (name, added) = invoked
        .split_once(char::is_whitespace)
        .unwrap_or((invoked, ""));
    let command = COMMANDS.iter().find(|command| command.name == name)?;
    let added = added.trim();
    Some(if added.is_empty() {
        command.instructions.to_owned()
    } else {
        format!("{}\n\nThe user adds: {added}", command.instructions)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_becomes_its_instructions_and_anything_else_stays_as_it_is() {
        let init = expand("/init").unwrap();
        assert!(init.starts_with("Study this project"), "{init}");
        let review = expand("  /review\nthe parser, mostly").unwrap();
        assert!(
            review.ends_with("The user adds: the parser, mostly"),
            "{review}"
        );
        assert_eq!(expand("/initialise"), None);
        assert_eq!(expand("/nothing"), None);
        assert_eq!(expand("please /init"), None);
        assert_eq!(expand("/"), None);
    }
}
