//! Collaborators: the other agents this one may call, which must exist and be live.

use uuid::Uuid;

use super::{Directory, Report};

pub(super) fn check_collaborators(
    agent_id: Uuid,
    collaborators: &[String],
    directory: &dyn Directory,
    report: &mut Report,
) {
    for (i, raw) in collaborators.iter().enumerate() {
        let path = format!("collaborators[{i}]");
        let Ok(id) = Uuid::parse_str(raw) else {
            report.error(
                "unknown_collaborator",
                path,
                format!("collaborator '{raw}' is not an agent id: use the UUID of another agent"),
            );
            continue;
        };
        if id == agent_id {
            report.error(
                "self_collaborator",
                path,
                "an agent cannot be its own collaborator: remove its own id from `collaborators`",
            );
            continue;
        }
        match directory.collaborator(id) {
            None => report.error(
                "unknown_collaborator",
                path,
                format!("no agent has id {id}: use the id of an existing agent, or remove it"),
            ),
            Some(other) if !other.live => report.error(
                "collaborator_not_live",
                path,
                format!(
                    "collaborator '{}' ({id}) is not deployed: deploy it first, or remove it",
                    other.name
                ),
            ),
            Some(_) => {}
        }
    }
}
