//! A session's settings as ACP clients see and change them: its model and
//! its permission mode. Both are sent as config options (`configOptions`,
//! with `category` `model` and `mode`), and the mode also as a session mode,
//! for clients that know only `session/set_mode`. Any attached client may
//! change them; the others are told with `config_option_update` (and
//! `current_mode_update`).
//!
//! It words the options and checks the values; the settings themselves are
//! [`crate::session`]'s, the models on offer [`crate::model`]'s.

use agent_client_protocol::Error;
use agent_client_protocol::v1::schema::{
    ConfigOptionUpdate, CurrentModeUpdate, SessionConfigOption, SessionConfigOptionCategory,
    SessionConfigSelectOption, SessionMode, SessionModeState, SessionNotification, SessionUpdate,
};

use super::errors;
use crate::session::Session;
use crate::tools::PermissionMode;

/// The id of the option that picks the session's model.
pub const MODEL_OPTION: &str = "model";

/// The id of the option that picks the session's permission mode.
pub const MODE_OPTION: &str = "mode";

/// The session's options now; `models` are those on offer, the server's
/// default first.
pub fn config_options(session: &Session, models: &[String]) -> Vec<SessionConfigOption> {
    vec![model_option(session, models), mode_option(session.mode())]
}

/// The session's mode, as the older way of modes shows it.
pub fn mode_state(session: &Session) -> SessionModeState {
    let modes = PermissionMode::ALL
        .iter()
        .map(|mode| {
            SessionMode::new(mode.id(), mode.name()).description(mode.description().to_owned())
        })
        .collect();
    SessionModeState::new(session.mode().id(), modes)
}

fn model_option(session: &Session, models: &[String]) -> SessionConfigOption {
    let current = session.model_spec();
    let mut choices: Vec<SessionConfigSelectOption> = models
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let choice = SessionConfigSelectOption::new(spec.clone(), spec.clone());
            if index == 0 {
                choice.description("The server's default".to_owned())
            } else {
                choice
            }
        })
        .collect();
    // A session may have been given a model nobody offers any more.
    if !models.contains(&current) {
        choices.push(SessionConfigSelectOption::new(
            current.clone(),
            current.clone(),
        ));
    }
    SessionConfigOption::select(MODEL_OPTION, "Model", current, choices)
        .description("The model this session's next prompt goes to".to_owned())
        .category(SessionConfigOptionCategory::Model)
}

fn mode_option(mode: PermissionMode) -> SessionConfigOption {
    let choices: Vec<SessionConfigSelectOption> = PermissionMode::ALL
        .iter()
        .map(|mode| {
            SessionConfigSelectOption::new(mode.id(), mode.name())
                .description(mode.description().to_owned())
        })
        .collect();
    SessionConfigOption::select(MODE_OPTION, "Mode", mode.id(), choices)
        .description("What Punie may do without asking you".to_owned())
        .category(SessionConfigOptionCategory::Mode)
}

/// The mode named `id`, or an error that lists the modes there are.
pub fn mode_named(method: &str, id: &str) -> Result<PermissionMode, Error> {
    PermissionMode::named(id).map_err(|problem| errors::invalid_params(method, problem))
}

/// What the other attached clients are told after a change: the options,
/// and, when the mode changed, the mode the older way.
pub fn change_notices(
    session: &Session,
    options: Vec<SessionConfigOption>,
    mode_changed: bool,
) -> Vec<SessionNotification> {
    let mut updates = vec![SessionUpdate::ConfigOptionUpdate(ConfigOptionUpdate::new(
        options,
    ))];
    if mode_changed {
        updates.push(SessionUpdate::CurrentModeUpdate(CurrentModeUpdate::new(
            session.mode().id(),
        )));
    }
    updates
        .into_iter()
        .map(|update| SessionNotification::new(session.id().clone(), update))
        .collect()
}
